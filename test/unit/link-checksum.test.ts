/**
 * The native links sum TCP/UDP checksums in C: they verify received frames (RX_L4_CHECKSUM_OK)
 * and complete the checksum of frames sent with COMPLETE_L4_CHECKSUM. Checked against the
 * stack's own JavaScript checksum on real IPv4/IPv6 TCP and UDP frames, odd lengths included.
 */
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { RX_L4_CHECKSUM_OK, RX_LENGTH_MASK } from '../../src/link/native.ts';
import { COMPLETE_L4_CHECKSUM } from '../../src/link/types.ts';
import { completeL4Checksum, foldChecksum, foldSum, sumBytes } from '../../src/stack/wire/checksum.ts';
import { native, waitFor } from './link-helpers.ts';

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0).reverse()) c();
});

type Family = 4 | 6;

/** An Ethernet frame carrying TCP (proto 6) or UDP (17) with `payload`; checksum field = the pseudo-header sum (partial) or the real checksum. */
function l4Frame(family: Family, proto: 6 | 17, payload: Uint8Array, partial: boolean): Uint8Array {
  const l4hdr = proto === 6 ? 20 : 8;
  const l4len = l4hdr + payload.length;
  const iphdr = family === 4 ? 20 : 40;
  const f = new Uint8Array(14 + iphdr + l4len);
  f.set([2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2], 0);
  const l4 = 14 + iphdr;
  if (family === 4) {
    f.set([0x08, 0x00], 12);
    f.set([0x45, 0, (20 + l4len) >> 8, (20 + l4len) & 0xff, 0, 1, 0x40, 0, 64, proto, 0, 0, 10, 0, 2, 2, 10, 0, 2, 15], 14);
  } else {
    f.set([0x86, 0xdd], 12);
    f.set([0x60, 0, 0, 0, l4len >> 8, l4len & 0xff, proto, 64], 14);
    f.set([0xfd, 0, 0, 0x10, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2], 22);
    f.set([0xfd, 0, 0, 0x10, 0, 0, 0, 2, 0x50, 0x54, 0, 0xff, 0xfe, 0x12, 0x34, 0x56], 38);
  }
  f.set([0x1f, 0x90, 0xc3, 0x50], l4); // ports 8080 → 50000
  if (proto === 6) f.set([0, 0, 0, 1, 0, 0, 0, 2, 0x50, 0x18, 0xff, 0xff], l4 + 4);
  else f.set([l4len >> 8, l4len & 0xff], l4 + 4);
  f.set(payload, l4 + l4hdr);
  const field = l4 + (proto === 6 ? 16 : 6);
  const pseudo = family === 4 ? sumBytes(f, 26, 8) + proto + l4len : sumBytes(f, 22, 32) + proto + l4len;
  if (partial) {
    const p = foldSum(pseudo);
    f[field] = p >> 8;
    f[field + 1] = p & 0xff;
  } else {
    let ck = foldChecksum(sumBytes(f, l4, l4len, pseudo));
    if (proto === 17 && ck === 0) ck = 0xffff;
    f[field] = ck >> 8;
    f[field + 1] = ck & 0xff;
  }
  return f;
}

/** Two native ports on a socketpair; `b` keeps each received frame with its checksum-ok bit. */
function ports(): { a: InstanceType<typeof native.FramePort>; got: { frame: Uint8Array; ok: boolean }[] } {
  const [fa, fb] = native.socketpairDgram();
  const got: { frame: Uint8Array; ok: boolean }[] = [];
  const a = new native.FramePort(fa, { kind: 'dgram', onFrames: () => {} });
  const b = new native.FramePort(fb, {
    kind: 'dgram',
    onFrames: (slab, offsets, count) => {
      for (let i = 0; i < count; i++) {
        const off = offsets[2 * i] ?? 0;
        const word = offsets[2 * i + 1] ?? 0;
        got.push({ frame: slab.subarray(off, off + (word & RX_LENGTH_MASK)).slice(), ok: (word & RX_L4_CHECKSUM_OK) !== 0 });
      }
    },
  });
  a.start();
  b.start();
  cleanups.push(() => a.close(), () => b.close());
  return { a, got };
}

const cases: [Family, 6 | 17][] = [[4, 6], [4, 17], [6, 6], [6, 17]];

describe('checksums summed by the native links', () => {
  it.each(cases)('IPv%s proto %s: a frame sent with COMPLETE_L4_CHECKSUM arrives with the checksum JavaScript computes', async (family, proto) => {
    const { a, got } = ports();
    const payloads = [0, 1, 2, 3, 7, 31, 33, 1000, 1447, 1448].map((n) => Uint8Array.from({ length: n }, (_, i) => (i * 131 + n) & 0xff));
    for (const p of payloads) expect(a.send(l4Frame(family, proto, p, true), COMPLETE_L4_CHECKSUM)).toBe(true);
    a.flush();
    await waitFor(() => got.length === payloads.length, 'all frames');
    payloads.forEach((p, i) => {
      expect(Buffer.from(got[i]!.frame).equals(Buffer.from(l4Frame(family, proto, p, false)))).toBe(true);
      expect(got[i]!.ok).toBe(true); // and the receiving port verified it
    });
  });

  it('receive: a corrupted byte, a UDP/IPv4 checksum of 0 and a fragment are not vouched for', async () => {
    const { a, got } = ports();
    const good = l4Frame(4, 6, new Uint8Array(100).fill(7), false);
    const bad = good.slice();
    bad[bad.length - 1] = bad[bad.length - 1]! ^ 1;
    const noSum = l4Frame(4, 17, new Uint8Array(10), false);
    noSum[14 + 20 + 6] = 0;
    noSum[14 + 20 + 7] = 0;
    const frag = good.slice();
    frag[14 + 6] = 0x20; // MF
    for (const f of [good, bad, noSum, frag]) a.send(f);
    a.flush();
    await waitFor(() => got.length === 4, 'four frames');
    expect(got.map((g) => g.ok)).toEqual([true, false, false, false]);
  });

  it('completeL4Checksum (the capture\'s copy) agrees with the full sum for any payload', () => {
    fc.assert(
      fc.property(fc.constantFrom(...cases), fc.uint8Array({ maxLength: 1500 }), ([family, proto], payload) => {
        const f = l4Frame(family, proto, payload, true);
        expect(completeL4Checksum(f)).toBe(true);
        expect(Buffer.from(f).equals(Buffer.from(l4Frame(family, proto, payload, false)))).toBe(true);
      }),
      { numRuns: 300 },
    );
  });
});

describe('software GSO (sendGso): one large TCP frame cut into MTU-sized frames in C', () => {
  it.each([4, 6] as const)('IPv%s: each piece is the frame the stack would have built for that MSS (lengths, sequence numbers, PSH/FIN on the last, IPv4 ids, checksums)', async (family) => {
    const { a, got } = ports();
    const mss = 1448;
    for (const total of [mss * 3, mss * 3 + 1, 65_000 - (65_000 % mss) + 17, mss + 1]) {
      got.length = 0;
      const payload = Uint8Array.from({ length: total }, (_, i) => (i * 7 + total) & 0xff);
      const big = l4Frame(family, 6, payload, true);
      const l4 = family === 4 ? 34 : 54;
      big[l4 + 13] = 0x19; // ACK|PSH|FIN on the whole: PSH and FIN belong to the last piece only
      expect(a.sendGso(big, mss)).toBe(true);
      a.flush();
      const n = Math.ceil(total / mss);
      await waitFor(() => got.length === n, `${n} pieces of ${total}`);
      for (let i = 0; i < n; i++) {
        const piece = payload.subarray(i * mss, Math.min(total, (i + 1) * mss));
        const expected = l4Frame(family, 6, piece, true);
        const seq = 1 + i * mss; // l4Frame's sequence number is 1
        expected.set([seq >>> 24, (seq >>> 16) & 0xff, (seq >>> 8) & 0xff, seq & 0xff], l4 + 4);
        expected[l4 + 13] = i === n - 1 ? 0x19 : 0x10;
        if (family === 4) {
          const id = 1 + i; // l4Frame's IPv4 id is 1; each piece takes the next
          expected[18] = id >> 8;
          expected[19] = id & 0xff;
          expected[24] = expected[25] = 0;
          const ipck = foldChecksum(sumBytes(expected, 14, 20));
          expected[24] = ipck >> 8;
          expected[25] = ipck & 0xff;
        }
        expect(completeL4Checksum(expected)).toBe(true);
        expect(Buffer.from(got[i]!.frame).equals(Buffer.from(expected)), `piece ${i} of ${total}`).toBe(true);
        expect(got[i]!.ok).toBe(true);
      }
    }
    expect(a.stats().txGsoFrames).toBe(4);
  });

  it('a frame within one segment goes whole with its checksum completed; a frame that is not TCP is dropped and counted', async () => {
    const { a, got } = ports();
    const small = l4Frame(4, 6, new Uint8Array(100).fill(3), true);
    expect(a.sendGso(small, 1448)).toBe(true);
    expect(a.sendGso(l4Frame(4, 17, new Uint8Array(3000), true), 1448)).toBe(false);
    a.flush();
    await waitFor(() => got.length === 1, 'one frame');
    expect(Buffer.from(got[0]!.frame).equals(Buffer.from(l4Frame(4, 6, new Uint8Array(100).fill(3), false)))).toBe(true);
    expect(a.stats().txDropped).toBe(1);
  });
});

describe('gsoInto: the same software GSO for the stream transport (pieces with qemu length prefixes)', () => {
  it.each([4, 6] as const)('IPv%s: the pieces are exactly what sendGso sends, each after its 4-byte big-endian length', async (family) => {
    const { a, got } = ports();
    const payload = Uint8Array.from({ length: 1448 * 5 + 9 }, (_, i) => (i * 11) & 0xff);
    const big = l4Frame(family, 6, payload, true);
    expect(a.sendGso(big, 1448)).toBe(true);
    a.flush();
    await waitFor(() => got.length === 6, 'six pieces');
    const dst = new Uint8Array(80_000);
    const counts = new Uint32Array(1);
    const n = native.gsoInto(big, 1448, dst, 100, true, counts);
    expect(counts[0]).toBe(6);
    let at = 100;
    for (const g of got) {
      const len = (dst[at]! << 24) | (dst[at + 1]! << 16) | (dst[at + 2]! << 8) | dst[at + 3]!;
      expect(len).toBe(g.frame.length);
      expect(Buffer.from(dst.subarray(at + 4, at + 4 + len)).equals(Buffer.from(g.frame))).toBe(true);
      at += 4 + len;
    }
    expect(n).toBe(at - 100);
    expect(native.gsoInto(big, 1448, new Uint8Array(1000), 0, true, counts)).toBe(0); // no room: nothing written
    expect(native.gsoInto(l4Frame(family, 17, payload, true), 1448, dst, 0, true, counts)).toBe(-1); // not TCP
  });
});
