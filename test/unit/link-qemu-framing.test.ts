import { describe, expect, it } from 'vitest';
import { fc, test } from '@fast-check/vitest';
import { QEMU_MAX_FRAME, QemuFrameDecoder, writeQemuHeader } from '../../src/link/qemu-framing.ts';
import { diffFrames, frame } from './link-helpers.ts';

function encode(frames: readonly Uint8Array[]): Uint8Array {
  const total = frames.reduce((n, f) => n + 4 + f.length, 0);
  const out = new Uint8Array(total);
  let off = 0;
  for (const f of frames) {
    writeQemuHeader(out, off, f.length);
    out.set(f, off + 4);
    off += 4 + f.length;
  }
  return out;
}

/** Feeds `stream` cut at `cuts`; copies frames out during each call (views die at the next one). */
function decodeChunks(stream: Uint8Array, cuts: readonly number[]): { frames: Uint8Array[]; ok: boolean } {
  const d = new QemuFrameDecoder();
  const frames: Uint8Array[] = [];
  const points = [...new Set(cuts.map((c) => Math.min(c, stream.length)))].sort((a, b) => a - b);
  let prev = 0;
  for (const p of [...points, stream.length]) {
    const out: Uint8Array[] = [];
    const r = d.decode(stream.subarray(prev, p), out);
    for (const f of out) frames.push(f.slice());
    if (!r.ok) return { frames, ok: false };
    prev = p;
  }
  return { frames, ok: d.buffered === 0 };
}

describe('qemu stream framing', () => {
  it('writes a 4-byte big-endian length', () => {
    const b = new Uint8Array(6).fill(0xa5);
    writeQemuHeader(b, 1, 0x0102_0304);
    expect([...b]).toEqual([0xa5, 1, 2, 3, 4, 0xa5]);
  });

  it('decodes many frames in one chunk as views into it', () => {
    const frames = [frame(14, 1), frame(60, 2), frame(1514, 3)];
    const stream = encode(frames);
    const out: Uint8Array[] = [];
    expect(new QemuFrameDecoder().decode(stream, out)).toEqual({ ok: true });
    expect(diffFrames(out, frames)).toBe('same');
    expect(out[1]?.buffer).toBe(stream.buffer); // no copy
  });

  it('reassembles frames and length prefixes split byte by byte', () => {
    const frames = [frame(60, 1), frame(65535, 2), frame(42, 3), frame(QEMU_MAX_FRAME, 4)];
    const stream = encode(frames);
    const cuts = Array.from({ length: stream.length }, (_, i) => i);
    const r = decodeChunks(stream, cuts);
    expect(r.ok).toBe(true);
    expect(diffFrames(r.frames, frames)).toBe('same');
  });

  it('keeps a frame completed at the start of a chunk intact while the next one starts at its end', () => {
    // chunk 2 = tail of A + A complete + head of B: both live in assembly buffers at once.
    const a = frame(100, 1);
    const b = frame(100, 2);
    const stream = encode([a, b]);
    const d = new QemuFrameDecoder();
    d.decode(stream.subarray(0, 50), []);
    const out: Uint8Array[] = [];
    d.decode(stream.subarray(50, 150), out); // completes A, then starts B in the same call
    expect(diffFrames(out, [a])).toBe('same'); // B's head did not overwrite A
    const out2: Uint8Array[] = [];
    d.decode(stream.subarray(150), out2);
    expect(diffFrames(out2, [b])).toBe('same');
  });

  it('rejects a zero or oversized length', () => {
    for (const len of [0, QEMU_MAX_FRAME + 1, 0xffff_ffff]) {
      const bad = new Uint8Array(8);
      writeQemuHeader(bad, 0, len);
      const out: Uint8Array[] = [];
      expect(new QemuFrameDecoder().decode(bad, out)).toEqual({ ok: false, badLength: len });
    }
    // Frames before the bad prefix are still delivered.
    const good = encode([frame(60, 1)]);
    const s = new Uint8Array(good.length + 4);
    s.set(good);
    const out: Uint8Array[] = [];
    expect(new QemuFrameDecoder().decode(s, out).ok).toBe(false);
    expect(diffFrames(out, [frame(60, 1)])).toBe('same');
  });

  test.prop([
    fc.array(fc.integer({ min: 1, max: 9000 }), { minLength: 1, maxLength: 30 }),
    fc.array(fc.nat(), { maxLength: 40 }),
  ])('decode ∘ encode = identity for any chunking', (lengths, rawCuts) => {
    const frames = lengths.map((l, i) => frame(l, i));
    const stream = encode(frames);
    const r = decodeChunks(stream, rawCuts.map((c) => c % (stream.length + 1)));
    expect(r.ok).toBe(true);
    expect(diffFrames(r.frames, frames)).toBe('same');
  });

  test.prop([fc.uint8Array({ maxLength: 3000 }), fc.array(fc.nat(), { maxLength: 10 })])(
    'arbitrary bytes never throw',
    (bytes, rawCuts) => {
      expect(() => decodeChunks(bytes, rawCuts.map((c) => c % (bytes.length + 1)))).not.toThrow();
    },
  );
});
