/**
 * The fault barrier (src/fault.ts): a bug met while handling one frame costs that frame, not the
 * batch or the process; it is counted and its stack logged once. The bug is injected into a real
 * engine (a throwing stack input for marked frames) fed by an in-memory link.
 */
import { afterEach, expect, test } from 'vitest';
import { FaultBarrier } from '../../src/fault.ts';
import { Engine } from '../../src/engine.ts';
import { parseArgs } from '../../src/config.ts';
import { MemoryLink } from '../helpers/memorylink.ts';
import { GUEST_MAC, dhcpDiscover, eth, ipv4, udp } from '../helpers/fuzzframes.ts';


let engine: Engine | undefined;
afterEach(async () => {
  await engine?.close();
  engine = undefined;
});

test('a stack that throws on one frame: the next frame of the batch is still served, the fault counted and logged once', () => {
  const config = parseArgs(['--socket', '/nonexistent/vmnat-fault-test.sock', '--dns-server', '127.0.0.1:9']);
  if (config.action !== 'run') throw new Error('parse');
  engine = new Engine(config.config);
  const logged: string[] = [];
  // Replace the engine's barrier's log to see what it says (the barrier is the engine's own).
  (engine.faults as unknown as { logError: (m: string) => void }).logError = (m) => logged.push(m);
  const link = new MemoryLink();
  engine.attach(link);
  const realInput = engine.stack.input.bind(engine.stack);
  engine.stack.input = (frame: Uint8Array, now: number) => {
    if (frame[frame.length - 1] === 0xee) throw new RangeError('injected bug');
    realInput(frame, now);
  };
  const poison = eth([0x52, 0x55, 10, 0, 2, 2], GUEST_MAC, 0x0800, ipv4(17, [10, 0, 2, 15], [10, 0, 2, 2], udp([10, 0, 2, 15], [10, 0, 2, 2], 1000, 2000, new Uint8Array([1, 2, 0xee]))));
  const discover = (xid: number) => eth([255, 255, 255, 255, 255, 255], GUEST_MAC, 0x0800, ipv4(17, [0, 0, 0, 0], [255, 255, 255, 255], udp([0, 0, 0, 0], [255, 255, 255, 255], 68, 67, dhcpDiscover(GUEST_MAC, xid))));
  link.handler!([poison, discover(1), poison, discover(2)]);
  // Both DISCOVERs got an OFFER (UDP 67 → 68), though a frame before each threw.
  const offers = link.sent.filter((f) => f[23] === 17 && f[34] === 0 && f[35] === 67);
  expect(offers.length).toBe(2);
  const stats = engine.stats() as { engine: { internalErrors: number } };
  expect(stats.engine.internalErrors).toBe(2);
  expect(logged.length).toBe(1);
  expect(logged[0]).toMatch(/internal error while handling a guest frame.*RangeError: injected bug/s);
});

test('FaultBarrier: counts every fault, logs each distinct stack once', () => {
  const lines: string[] = [];
  const b = new FaultBarrier((m) => lines.push(m));
  const e1 = new Error('one');
  const e2 = new Error('two');
  b.caught('x', e1);
  b.caught('x', e1);
  b.caught('x', e2);
  b.caught('y', e1);
  expect(b.internalErrors).toBe(4);
  expect(lines.length).toBe(3);
  expect(lines[0]).toContain('Error: one');
});
