/**
 * TCP sequence numbers (RFC 9293 §3.4): 32-bit values compared modulo 2^32.
 *
 * Theory of operation: a `Seq` is an unsigned 32-bit number carrying a type brand, so a byte count
 * cannot be passed where a sequence number is expected (and vice versa) without going through
 * `seqAdd` / `seqSub`. Comparisons use the signed 32-bit difference (`(a - b) | 0`), which is
 * correct as long as the two values are less than 2^31 apart — always true for values inside one
 * connection's windows (RFC 7323 caps the window at 2^30). Never compare two `Seq` with `<`.
 * Everything here is a plain function on numbers: no allocation, inlinable by V8.
 */

declare const seqBrand: unique symbol;

/** A TCP sequence number (unsigned 32-bit, wrapping). */
export type Seq = number & { readonly [seqBrand]: true };

/** Wraps any integer into a sequence number. */
export function seqOf(n: number): Seq {
  return (n >>> 0) as Seq;
}

/** `a + n` modulo 2^32; `n` is a byte count (may be negative). */
export function seqAdd(a: Seq, n: number): Seq {
  return ((a + n) >>> 0) as Seq;
}

/** Signed distance `a - b` in bytes, in [-2^31, 2^31). */
export function seqSub(a: Seq, b: Seq): number {
  return (a - b) | 0;
}

export function seqLt(a: Seq, b: Seq): boolean {
  return ((a - b) | 0) < 0;
}

export function seqLe(a: Seq, b: Seq): boolean {
  return ((a - b) | 0) <= 0;
}

export function seqGt(a: Seq, b: Seq): boolean {
  return ((a - b) | 0) > 0;
}

export function seqGe(a: Seq, b: Seq): boolean {
  return ((a - b) | 0) >= 0;
}

export function seqMax(a: Seq, b: Seq): Seq {
  return ((a - b) | 0) >= 0 ? a : b;
}

export function seqMin(a: Seq, b: Seq): Seq {
  return ((a - b) | 0) <= 0 ? a : b;
}

/** `lo <= x < hi` in sequence space. */
export function seqInRange(x: Seq, lo: Seq, hi: Seq): boolean {
  return ((x - lo) | 0) >= 0 && ((x - hi) | 0) < 0;
}
