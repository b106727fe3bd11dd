/**
 * The TFTP server's own rules, driven through a stand-in for the stack (what busybox's client in
 * the e2e test cannot ask for): the windowsize option (RFC 7440), tsize in the OACK, a window
 * resent when its ACK does not come, a transfer dropped after its retries, and a stray sender.
 */
import { afterAll, expect, test } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { TftpServer } from '../../src/tftp/server.ts';
import type { Stack, UdpDatagram, UdpHandler } from '../../src/stack/stack.ts';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), `vmnat-tftp-${process.pid}-`));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
const data = Buffer.alloc(5000);
for (let i = 0; i < data.length; i++) data[i] = (i * 13) & 0xff;
fs.writeFileSync(path.join(dir, 'f.bin'), data);

const GW = 0x0a000202;
const GUEST = 0x0a00020f;

class FakeStack {
  readonly bound = new Map<number, UdpHandler>();
  readonly sent: { srcPort: number; dstPort: number; payload: Buffer }[] = [];
  bindUdp(_ip: number, port: number, h: UdpHandler): void {
    this.bound.set(port, h);
  }
  unbindUdp(_ip: number, port: number): void {
    this.bound.delete(port);
  }
  isUdpBound(_ip: number, port: number): boolean {
    return this.bound.has(port);
  }
  sendUdp(_s: number, srcPort: number, _d: number, dstPort: number, payload: Uint8Array): boolean {
    this.sent.push({ srcPort, dstPort, payload: Buffer.from(payload) });
    return true;
  }
  deliver(port: number, payload: Buffer, from = GUEST, fromPort = 3000, now = 0): void {
    const d: UdpDatagram = { srcMac: 1, srcIp: from, srcPort: fromPort, dstIp: GW, dstPort: port, buf: payload, off: 0, len: payload.length };
    this.bound.get(port)!(d, now);
  }
}

const rrq = (name: string, opts: Record<string, string> = {}) =>
  Buffer.concat([Buffer.of(0, 1), Buffer.from(`${name}\0octet\0`), ...Object.entries(opts).map(([k, v]) => Buffer.from(`${k}\0${v}\0`))]);
const ack = (n: number) => Buffer.of(0, 4, n >> 8, n & 0xff);
const op = (p: Buffer) => p[1];
const block = (p: Buffer) => (p[2]! << 8) | p[3]!;

test('windowsize 4 with blksize 1000: OACK with tsize, then 4 blocks per ACK, the last one short', () => {
  const stack = new FakeStack();
  const srv = new TftpServer(stack as unknown as Stack, GW, dir, 1500, () => 0);
  stack.deliver(69, rrq('f.bin', { blksize: '1000', windowsize: '4', tsize: '0' }));
  const oack = stack.sent.shift()!.payload;
  expect(op(oack)).toBe(6);
  expect(oack.subarray(2).toString('latin1').split('\0')).toEqual(['blksize', '1000', 'tsize', '5000', 'windowsize', '4', '']);
  const port = [...stack.bound.keys()].find((p) => p !== 69)!;
  stack.deliver(port, ack(0));
  expect(stack.sent.map((s) => block(s.payload))).toEqual([1, 2, 3, 4]);
  stack.sent.length = 0;
  stack.deliver(port, ack(4));
  expect(stack.sent.map((s) => [block(s.payload), s.payload.length - 4])).toEqual([[5, 1000], [6, 0]]);
  stack.deliver(port, ack(6));
  expect(srv.stats.completed).toBe(1);
  expect(stack.bound.has(port)).toBe(false);
});

test('no ACK: the window is resent after the timeout, and the transfer ends after its retries', () => {
  const stack = new FakeStack();
  let now = 0;
  const srv = new TftpServer(stack as unknown as Stack, GW, dir, 1500, () => now);
  stack.deliver(69, rrq('f.bin'));
  expect(block(stack.sent[0]!.payload)).toBe(1);
  const port = [...stack.bound.keys()].find((p) => p !== 69)!;
  // A stranger on the transfer's port gets "unknown transfer id" and changes nothing.
  stack.deliver(port, ack(1), GUEST + 1, 4000);
  expect(op(stack.sent.at(-1)!.payload)).toBe(5);
  for (let i = 1; i <= 6; i++) {
    now = srv.nextDeadline()!;
    srv.poll(now);
  }
  expect(srv.stats.retransmits).toBe(5);
  expect(srv.stats.timedOut).toBe(1);
  expect(stack.bound.has(port)).toBe(false);
  expect(srv.nextDeadline()).toBeUndefined();
});
