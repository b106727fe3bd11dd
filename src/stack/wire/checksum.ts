/**
 * The Internet checksum (RFC 1071): ones-complement sum of 16-bit big-endian words.
 *
 * Theory of operation: the checksum is on every hot path (IPv4 header, ICMP, UDP, TCP, both
 * directions), so `sumBytes` is written for V8. Short ranges (< 48 bytes: headers) are summed as
 * byte pairs. Longer ranges are summed as aligned 32-bit words through a `Uint32Array` over the
 * same memory, which reads 4 bytes per load instead of 1. That sum is in host byte order; RFC 1071
 * §2(B) says the ones-complement sum is byte-order independent up to a final byte swap, so we fold
 * the word sum to 16 bits and swap it on little-endian hosts. If the aligned middle starts at an
 * odd position of the range, its contribution is swapped once more (§2(B) again). Measured on the
 * 2-core dev machine (Node 20, a quiet core): 1460 B in ~160–195 ns at any alignment, vs ~650–700 ns
 * for the best byte-pair loop (notes/node-io.md had 300–420 ns as the best pure JS seen before); a
 * 20-byte header in ~30 ns.
 *
 * Sums are *unfolded*: `sumBytes` returns a non-negative safe integer congruent (mod 0xffff) to the
 * ones-complement sum. Several sums (pseudo-header + header + payload) can simply be added with `+`
 * (thousands of them stay exact in a double) and folded once with `foldChecksum`. Ranges chained
 * this way must each start at an even offset of the checksummed data (every header length is), as
 * an odd-length range is padded with a zero byte as RFC 1071 prescribes for the *end* of the data.
 *
 * The aligned path keeps one cached `Uint32Array` over the last ArrayBuffer it saw, so summing
 * frames from a pool allocates nothing.
 */

import type { Ipv4Addr } from './addr.ts';

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Below this many bytes the byte-pair loop wins over setting up the word loop. */
const WORD_PATH_MIN = 48;
/** Words summed between folds; 2^16 words of up to 2^32 keep the accumulator below 2^53. */
const WORD_CHUNK = 0x1_0000;

let cachedBuffer: ArrayBufferLike | undefined;
let cachedWords: Uint32Array = new Uint32Array(0);

function wordsOf(buffer: ArrayBufferLike, firstWord: number, nWords: number): Uint32Array {
  // Re-create on a new buffer, and also when a resizable buffer grew past the cached view.
  if (buffer !== cachedBuffer || firstWord + nWords > cachedWords.length) {
    cachedBuffer = buffer;
    cachedWords = new Uint32Array(buffer, 0, buffer.byteLength >>> 2);
  }
  return cachedWords;
}

/** Big-endian byte-pair sum; an odd last byte is the high byte of a zero-padded word. */
function sumPairs(buf: Uint8Array, off: number, len: number, initial: number): number {
  let s = initial;
  let i = off;
  const end = off + (len & ~1);
  const end8 = off + (len & ~7);
  for (; i < end8; i += 8) {
    s +=
      ((buf[i]! << 8) | buf[i + 1]!) +
      ((buf[i + 2]! << 8) | buf[i + 3]!) +
      ((buf[i + 4]! << 8) | buf[i + 5]!) +
      ((buf[i + 6]! << 8) | buf[i + 7]!);
  }
  for (; i < end; i += 2) s += (buf[i]! << 8) | buf[i + 1]!;
  if (len & 1) s += buf[end]! << 8;
  return s;
}

/** Folds any non-negative safe integer to 16 bits with end-around carry (not complemented). */
export function foldSum(sum: number): number {
  const lo = sum >>> 0;
  const hi = (sum - lo) / 0x1_0000_0000;
  let x = (lo & 0xffff) + (lo >>> 16) + (hi & 0xffff) + (hi >>> 16);
  x = (x & 0xffff) + (x >>> 16);
  return (x & 0xffff) + (x >>> 16);
}

function swap16(x: number): number {
  return ((x & 0xff) << 8) | (x >>> 8);
}

/**
 * Adds the 16-bit big-endian words of `buf[off, off+len)` to `initial` (ones-complement
 * arithmetic, unfolded; see the module comment). An odd `len` pads the last byte with zero.
 * Throws RangeError if the range is outside `buf` (a caller bug, never guest input).
 */
export function sumBytes(buf: Uint8Array, off: number, len: number, initial = 0): number {
  if (off < 0 || len < 0 || off + len > buf.length) {
    throw new RangeError(`sumBytes: range ${off}+${len} outside buffer of ${buf.length}`);
  }
  if (len < WORD_PATH_MIN) return sumPairs(buf, off, len, initial);

  const abs = buf.byteOffset + off;
  const head = (4 - (abs & 3)) & 3;
  let s = head === 0 ? initial : sumPairs(buf, off, head, initial);
  const nWords = (len - head) >>> 2;
  const first = (abs + head) >>> 2;
  const words = wordsOf(buf.buffer, first, nWords);

  let k = first;
  const end = first + nWords;
  let mid = 0;
  while (k < end) {
    const chunkEnd = Math.min(end, k + WORD_CHUNK);
    const chunkEnd4 = k + ((chunkEnd - k) & ~3);
    let a = 0;
    let b = 0;
    for (; k < chunkEnd4; k += 4) {
      a += words[k]! + words[k + 1]!;
      b += words[k + 2]! + words[k + 3]!;
    }
    for (; k < chunkEnd; k++) a += words[k]!;
    mid += foldSum(a + b);
  }
  let m = foldSum(mid);
  if (LITTLE_ENDIAN) m = swap16(m);
  // The word region starts `head` bytes into the range: an odd start shifts every byte's lane.
  if (head & 1) m = swap16(m);
  s += m;

  const tailOff = off + head + nWords * 4;
  const tailLen = len - head - nWords * 4;
  if (tailLen > 0) {
    let t = foldSum(sumPairs(buf, tailOff, tailLen, 0));
    if (head & 1) t = swap16(t);
    s += t;
  }
  return s;
}

/** Folds an unfolded sum and complements it: the value to store in a checksum field. */
export function foldChecksum(sum: number): number {
  return ~foldSum(sum) & 0xffff;
}

/** Sum of the IPv4 pseudo-header (RFC 768, RFC 9293 §3.1) for UDP/TCP, unfolded. */
export function pseudoHeaderSum(src: Ipv4Addr, dst: Ipv4Addr, proto: number, l4len: number): number {
  return (src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff) + proto + l4len;
}

/** The complemented, folded checksum of `buf[off, off+len)`; 0 when verifying a correct range. */
export function internetChecksum(buf: Uint8Array, off: number, len: number): number {
  return foldChecksum(sumBytes(buf, off, len));
}

/**
 * Incremental update (RFC 1624 eqn. 3) of a stored checksum when one 16-bit word of the covered
 * data changes from `oldWord` to `newWord`: for NAT rewrites without re-summing the payload.
 */
export function adjustChecksum16(checksum: number, oldWord: number, newWord: number): number {
  return ~foldSum((~checksum & 0xffff) + (~oldWord & 0xffff) + (newWord & 0xffff)) & 0xffff;
}

/** As `adjustChecksum16` for a 32-bit field (an IPv4 address). */
export function adjustChecksum32(checksum: number, oldValue: number, newValue: number): number {
  return (
    ~foldSum(
      (~checksum & 0xffff) +
        (~(oldValue >>> 16) & 0xffff) +
        (~oldValue & 0xffff) +
        (newValue >>> 16) +
        (newValue & 0xffff),
    ) & 0xffff
  );
}

/**
 * Completes the TCP or UDP checksum of Ethernet frame `f` (IPv4, not a fragment; or IPv6 without
 * extension headers) whose checksum field holds only the pseudo-header sum: what the native links
 * do in C for frames sent with COMPLETE_L4_CHECKSUM, for the copies that stay in JavaScript (the
 * capture). Returns false, leaving `f` as it is, for a frame it cannot place.
 */
export function completeL4Checksum(f: Uint8Array): boolean {
  if (f.length < 34) return false;
  const type = (f[12]! << 8) | f[13]!;
  let start: number;
  let end: number;
  let proto: number;
  if (type === 0x0800) {
    const ihl = (f[14]! & 0x0f) * 4;
    const total = (f[16]! << 8) | f[17]!;
    if (ihl < 20 || total < ihl || 14 + total > f.length || ((f[20]! & 0x3f) | f[21]!) !== 0) return false;
    start = 14 + ihl;
    end = 14 + total;
    proto = f[23]!;
  } else if (type === 0x86dd) {
    if (f.length < 54) return false;
    end = 54 + ((f[18]! << 8) | f[19]!);
    if (end > f.length) return false;
    start = 54;
    proto = f[20]!;
  } else {
    return false;
  }
  const field = proto === 6 ? 16 : proto === 17 ? 6 : -1;
  if (field < 0 || start + field + 2 > end) return false;
  let ck = foldChecksum(sumBytes(f, start, end - start));
  if (proto === 17 && ck === 0) ck = 0xffff;
  f[start + field] = ck >>> 8;
  f[start + field + 1] = ck & 0xff;
  return true;
}

/*
 * Pseudo-header sums by family (the "IPv6 seam"): TCP, UDP and ICMPv6 views and writers take the
 * sum of the two addresses (`addrSum`) and add the protocol and their own length, so one code path
 * serves IPv4 (RFC 768) and IPv6 (RFC 8200 §8.1: 128-bit addresses, a 32-bit length, the next
 * header as protocol). Lengths stay below 2^16 (no jumbograms), so adding them whole is exact.
 */

/** Sum of two IPv4 addresses for a pseudo-header, unfolded. */
export function ipv4AddrSum(src: Ipv4Addr, dst: Ipv4Addr): number {
  return (src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff);
}

/** Sum of the source and destination addresses of the IPv6 header at `ipOff`, unfolded. */
export function ipv6AddrSum(buf: Uint8Array, ipOff: number): number {
  return sumBytes(buf, ipOff + 8, 32);
}

/** Sum of two 16-byte IPv6 addresses, unfolded. */
export function ipv6AddrSumOf(src: Uint8Array, dst: Uint8Array): number {
  return sumBytes(src, 0, 16) + sumBytes(dst, 0, 16);
}
