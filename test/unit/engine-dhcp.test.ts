/**
 * The engine's DHCP around the server: with the pool used up, a new guest gets no offer and the
 * log says so once (not once per retried DISCOVER), counted in dhcp.poolExhausted.
 */
import { afterEach, expect, test, vi } from 'vitest';
import { Engine } from '../../src/engine.ts';
import { parseArgs } from '../../src/config.ts';
import { MemoryLink } from '../helpers/memorylink.ts';
import { eth, ipv4, udp } from '../helpers/fuzzframes.ts';


/** A DHCP message of `type` (1 DISCOVER, 3 REQUEST) from `mac`, asking for `requested` if given. */
function dhcp(mac: number[], type: number, requested?: number[]): Uint8Array {
  const opts = [99, 130, 83, 99, 53, 1, type, ...(requested ? [50, 4, ...requested, 54, 4, 10, 0, 2, 2] : []), 255];
  const d = new Uint8Array(240 + opts.length + 20);
  d[0] = 1;
  d[1] = 1;
  d[2] = 6;
  d[7] = mac[5]!;
  d.set(mac, 28);
  d.set(opts, 236);
  const body = udp([0, 0, 0, 0], [255, 255, 255, 255], 68, 67, d);
  return eth([255, 255, 255, 255, 255, 255], mac, 0x0800, ipv4(17, [0, 0, 0, 0], [255, 255, 255, 255], body));
}

/** yiaddr of the last DHCP reply the link got, or undefined. */
function lastOffer(link: MemoryLink): number[] | undefined {
  const f = link.sent.at(-1);
  if (f === undefined || f[23] !== 17 || f[35] !== 67) return undefined;
  return [...f.subarray(42 + 16, 42 + 20)];
}

let engine: Engine | undefined;
afterEach(async () => {
  await engine?.close();
  engine = undefined;
  vi.restoreAllMocks();
});

test('a used-up pool: no offer, one warning in the log, every miss counted', () => {
  const parsed = parseArgs(['--fd', '3', '--anti-spoof', 'off', '--net', '10.0.2.0/27', '--dns-server', '127.0.0.1:9', '--dhcp-lease-time', '600']);
  if (parsed.action !== 'run') throw new Error('parse');
  engine = new Engine(parsed.config);
  const link = new MemoryLink();
  engine.attach(link);
  const stderr: string[] = [];
  vi.spyOn(process.stderr, 'write').mockImplementation((s: string | Uint8Array) => {
    stderr.push(String(s));
    return true;
  });
  // .15 … .30: sixteen guests each lease one (all on one port here, so anti-spoofing is off).
  for (let i = 0; i < 16; i++) {
    const mac = [0x52, 0x54, 0, 0, 1, i];
    link.handler!([dhcp(mac, 1)]);
    const offered = lastOffer(link);
    expect(offered, `guest ${i}`).toEqual([10, 0, 2, 15 + i]);
    link.handler!([dhcp(mac, 3, offered)]);
  }
  const before = link.sent.length;
  link.handler!([dhcp([0x52, 0x54, 0, 0, 2, 1], 1)]);
  link.handler!([dhcp([0x52, 0x54, 0, 0, 2, 1], 1)]);
  link.handler!([dhcp([0x52, 0x54, 0, 0, 2, 2], 1)]);
  expect(link.sent.length).toBe(before);
  const stats = engine.stats() as { dhcp: { poolExhausted: number; ack: number } };
  expect(stats.dhcp.ack).toBe(16);
  expect(stats.dhcp.poolExhausted).toBe(3);
  const warnings = stderr.filter((l) => l.includes('exhausted'));
  expect(warnings).toHaveLength(1);
  expect(warnings[0]).toMatch(/vmnat: warn: dhcp: the pool 10\.0\.2\.15-10\.0\.2\.30 is exhausted/);
  expect(engine.leases().map((l) => l.expires_in_s)).toEqual(Array(16).fill(600));
});
