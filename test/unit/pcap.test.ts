/**
 * PcapWriter: the classic pcap format tcpdump reads, and timestamps that never go backwards
 * (readers show frames in file order; a timestamp that went back made tcpdump print a FIN before
 * the data it followed).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, expect, test } from 'vitest';
import { PcapWriter } from '../../src/pcap.ts';

let dir: string | undefined;
afterEach(() => {
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

test('writes a pcap header and records with non-decreasing µs timestamps near the wall clock', () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'vmnat-pcap-'));
  const file = path.join(dir, 'x.pcap');
  const w = new PcapWriter(file);
  const before = Date.now() * 1000;
  const frame = new Uint8Array(60).fill(0xab);
  // Enough frames, written back to back, to cross many millisecond boundaries.
  const count = 20_000;
  for (let i = 0; i < count; i++) {
    frame[0] = i & 0xff;
    w.write(frame);
  }
  w.close();
  const after = Date.now() * 1000;
  const b = readFileSync(file);
  expect(b.readUInt32LE(0)).toBe(0xa1b2c3d4);
  expect(b.readUInt32LE(20)).toBe(1); // LINKTYPE_ETHERNET
  let off = 24;
  let last = 0;
  let n = 0;
  while (off < b.length) {
    const us = b.readUInt32LE(off) * 1_000_000 + b.readUInt32LE(off + 4);
    expect(b.readUInt32LE(off + 4)).toBeLessThan(1_000_000);
    expect(us).toBeGreaterThanOrEqual(last);
    // Within the writer's lifetime (a ms of slack for the wall clock's resolution at open).
    expect(us).toBeGreaterThanOrEqual(before - 1000);
    expect(us).toBeLessThanOrEqual(after + 1000);
    expect(b.readUInt32LE(off + 8)).toBe(60);
    expect(b[off + 16]).toBe(n & 0xff);
    last = us;
    off += 16 + b.readUInt32LE(off + 8);
    n++;
  }
  expect(n).toBe(count);
});
