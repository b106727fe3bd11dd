import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  adjustChecksum16,
  adjustChecksum32,
  foldChecksum,
  foldSum,
  internetChecksum,
  pseudoHeaderSum,
  sumBytes,
} from '../../src/stack/wire/checksum.ts';
import { ICMP_ECHO_REQUEST, TCP_SYN, hex } from './wire-captures.ts';

/** The textbook definition: 16-bit big-endian words, odd byte padded, end-around carry each step. */
function referenceChecksum(buf: Uint8Array, off: number, len: number, initial = 0): number {
  let s = initial;
  for (let i = 0; i < len; i += 2) {
    const w = (buf[off + i]! << 8) | (i + 1 < len ? buf[off + i + 1]! : 0);
    s += w;
    s = (s & 0xffff) + (s >>> 16);
  }
  return ~s & 0xffff;
}

describe('checksum', () => {
  it('matches the RFC 1071 §3 worked example', () => {
    // Bytes 00 01 f2 03 f4 f5 f6 f7: sum ddf2 (after carries), checksum 220d.
    const b = hex('0001f203f4f5f6f7');
    expect(foldSum(sumBytes(b, 0, 8))).toBe(0xddf2);
    expect(internetChecksum(b, 0, 8)).toBe(0x220d);
  });

  it('verifies the IPv4 header and ICMP message of a captured echo request', () => {
    expect(internetChecksum(ICMP_ECHO_REQUEST, 14, 20)).toBe(0);
    expect(internetChecksum(ICMP_ECHO_REQUEST, 34, 64)).toBe(0);
    const corrupted = ICMP_ECHO_REQUEST.slice();
    corrupted[60] = corrupted[60]! ^ 0x10;
    expect(internetChecksum(corrupted, 34, 64)).not.toBe(0);
  });

  it('verifies a captured TCP SYN with the pseudo-header', () => {
    const sum = sumBytes(TCP_SYN, 34, 40, pseudoHeaderSum(0x0a630001, 0x0a630002, 6, 40));
    expect(foldChecksum(sum)).toBe(0);
    // Wrong pseudo-header (address) → not zero.
    const bad = sumBytes(TCP_SYN, 34, 40, pseudoHeaderSum(0x0a630003, 0x0a630002, 6, 40));
    expect(foldChecksum(bad)).not.toBe(0);
  });

  it('equals the reference for every alignment, offset and length (property)', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 0, maxLength: 3000, size: 'max' }),
        fc.nat(7),
        fc.nat(3000),
        fc.nat(3000),
        fc.nat(0xffff),
        (bytes, shift, a, b, initial) => {
          // Place the bytes at `shift` inside a bigger buffer so byteOffset alignment varies.
          const big = new Uint8Array(bytes.length + 8);
          big.set(bytes, shift);
          const buf = big.subarray(shift, shift + bytes.length);
          const off = Math.min(a, buf.length);
          const len = Math.min(b, buf.length - off);
          expect(foldChecksum(sumBytes(buf, off, len, initial))).toBe(referenceChecksum(buf, off, len, initial));
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('handles large ranges (65,535 bytes of 0xff) without losing carries', () => {
    const b = new Uint8Array(65535).fill(0xff);
    expect(foldChecksum(sumBytes(b, 0, b.length))).toBe(referenceChecksum(b, 0, b.length));
    expect(foldChecksum(sumBytes(b, 1, b.length - 1))).toBe(referenceChecksum(b, 1, b.length - 1));
  });

  it('chains partial sums: header + payload = whole', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 600, size: 'max' }), fc.nat(300), (bytes, cut) => {
        const c = Math.min(cut, bytes.length) & ~1; // chained ranges start at even offsets
        const whole = foldChecksum(sumBytes(bytes, 0, bytes.length));
        const split = foldChecksum(sumBytes(bytes, 0, c) + sumBytes(bytes, c, bytes.length - c));
        expect(split).toBe(whole);
      }),
    );
  });

  it('gives correct results when alternating between buffers and after a resizable buffer grows', () => {
    const x = new Uint8Array(200).map((_, i) => i * 3);
    const y = new Uint8Array(300).map((_, i) => i * 5 + 1);
    for (let k = 0; k < 3; k++) {
      expect(internetChecksum(x, 0, 200)).toBe(referenceChecksum(x, 0, 200));
      expect(internetChecksum(y, 4, 290)).toBe(referenceChecksum(y, 4, 290));
    }
    const Resizable = ArrayBuffer as unknown as new (
      n: number,
      o: { maxByteLength: number },
    ) => ArrayBuffer & { resize(n: number): void };
    const ab = new Resizable(128, { maxByteLength: 4096 });
    const view = new Uint8Array(ab); // length-tracking
    view.fill(7);
    expect(internetChecksum(view, 0, 128)).toBe(referenceChecksum(view, 0, 128));
    ab.resize(4096);
    view.fill(9, 128);
    expect(internetChecksum(view, 0, 4096)).toBe(referenceChecksum(view, 0, 4096));
  });

  it('throws RangeError for a range outside the buffer (caller bug)', () => {
    const b = new Uint8Array(10);
    expect(() => sumBytes(b, 5, 6)).toThrow(RangeError);
    expect(() => sumBytes(b, -1, 2)).toThrow(RangeError);
  });

  it('pseudoHeaderSum adds the RFC 768 fields', () => {
    const ph = hex('0a6300010a6300020011002a'); // src, dst, 0, proto 17, length 42
    expect(foldSum(pseudoHeaderSum(0x0a630001, 0x0a630002, 17, 42))).toBe(foldSum(sumBytes(ph, 0, 12)));
  });

  it('adjustChecksum16/32 (RFC 1624) equal a full recomputation', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 20, maxLength: 20, size: 'max' }), fc.nat(0xffff), fc.nat(0xffffffff), (hdr, port, addr) => {
        const b = hdr.slice();
        b[10] = 0;
        b[11] = 0;
        const ck = internetChecksum(b, 0, 20);
        b[10] = ck >>> 8;
        b[11] = ck & 0xff;
        // Rewrite the 16-bit word at 0 and the 32-bit word at 12, then compare.
        const oldWord = (b[0]! << 8) | b[1]!;
        const oldAddr = ((b[12]! << 24) | (b[13]! << 16) | (b[14]! << 8) | b[15]!) >>> 0;
        let adj = adjustChecksum16(ck, oldWord, port);
        adj = adjustChecksum32(adj, oldAddr, addr);
        b[0] = port >>> 8;
        b[1] = port & 0xff;
        b[12] = addr >>> 24;
        b[13] = (addr >>> 16) & 0xff;
        b[14] = (addr >>> 8) & 0xff;
        b[15] = addr & 0xff;
        b[10] = adj >>> 8;
        b[11] = adj & 0xff;
        // The adjusted checksum verifies (0 and 0xffff are the same ones-complement zero).
        expect(foldSum(sumBytes(b, 0, 20))).toBe(0xffff);
      }),
    );
  });
});
