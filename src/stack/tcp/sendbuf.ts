/**
 * The send buffer: bytes the app wrote that the peer has not acknowledged yet.
 *
 * Theory of operation: a byte ring. The oldest byte (offset 0) is the first unacknowledged data
 * byte; `write` appends a copy (the app's buffer is free again on return), `consume` drops
 * acknowledged bytes from the front, `view` returns a contiguous run at an offset so a segment's
 * payload is one (buf, off, len) slice that the output path copies straight into the frame.
 * A run never crosses the end of the ring: a segment that would straddle it is cut short there
 * (one short segment per trip round the ring).
 *
 * Limits: capacity starts at 0 and grows by doubling (from 16 KiB) only as data is queued, up to
 * `limit` bytes — idle connections cost nothing, bulk ones reach the full size. The ring is never
 * shrunk while the connection lives; `release()` frees it when the connection can no longer send.
 * `write` accepts at most `free` bytes and returns how many it took (no unbounded growth); with
 * an engine-wide budget (budget.ts) the ring grows only while the budget allows, past a floor
 * of 16 KiB, so `write` may take fewer.
 */

import type { BufferBudget } from './budget.ts';

const EMPTY = new Uint8Array(0);
const MIN_CAPACITY = 16 * 1024;

export class SendBuffer {
  private ring: Uint8Array = EMPTY;
  private head = 0;
  private size = 0;
  /** Offset into `buffer` of the run returned by the last `view` call. */
  viewOff = 0;

  constructor(
    readonly limit: number,
    /** The engine-wide buffer budget, charged per byte of ring capacity (budget.ts). */
    private readonly budget?: BufferBudget,
  ) {}

  /** Bytes queued (unacknowledged, sent or not). */
  get length(): number {
    return this.size;
  }

  /** Bytes `write` would accept now. */
  get free(): number {
    return this.limit - this.size;
  }

  /** The backing store; valid until the next `write` (which may grow it). */
  get buffer(): Uint8Array {
    return this.ring;
  }

  /** Copies up to `free` bytes of src[off, off+len); returns the count taken. */
  write(src: Uint8Array, off: number, len: number): number {
    let n = Math.min(len, this.limit - this.size);
    if (n <= 0) return 0;
    if (this.size + n > this.ring.length) {
      this.grow(this.size + n);
      n = Math.min(n, this.ring.length - this.size); // the budget may have allowed less
      if (n <= 0) return 0;
    }
    const cap = this.ring.length;
    let tail = this.head + this.size;
    if (tail >= cap) tail -= cap;
    const first = Math.min(n, cap - tail);
    this.ring.set(src.subarray(off, off + first), tail);
    if (n > first) this.ring.set(src.subarray(off + first, off + n), 0);
    this.size += n;
    return n;
  }

  /** Drops `n` acknowledged bytes from the front (n ≤ length). */
  consume(n: number): void {
    if (n <= 0) return;
    if (n >= this.size) {
      this.head = 0;
      this.size = 0;
      return;
    }
    this.head += n;
    if (this.head >= this.ring.length) this.head -= this.ring.length;
    this.size -= n;
  }

  /**
   * Contiguous run of at most `max` bytes starting `at` bytes after the oldest byte: returns its
   * length and sets `viewOff` (the run is `buffer[viewOff, viewOff + length)`).
   */
  view(at: number, max: number): number {
    const cap = this.ring.length;
    if (at >= this.size || max <= 0) {
      this.viewOff = 0;
      return 0;
    }
    let idx = this.head + at;
    if (idx >= cap) idx -= cap;
    this.viewOff = idx;
    return Math.min(max, this.size - at, cap - idx);
  }

  /** Frees the storage and forgets all data (the connection will send no more). */
  release(): void {
    this.budget?.refund(this.ring.length);
    this.ring = EMPTY;
    this.head = 0;
    this.size = 0;
  }

  private grow(needed: number): void {
    let cap = Math.max(MIN_CAPACITY, this.ring.length * 2);
    while (cap < needed) cap *= 2;
    cap = Math.min(cap, this.limit);
    const budget = this.budget;
    if (budget !== undefined) {
      const old = this.ring.length;
      if (old === 0) {
        budget.charge(Math.min(cap, MIN_CAPACITY)); // every connection's floor
        if (cap > MIN_CAPACITY && !budget.tryCharge(cap - MIN_CAPACITY)) {
          budget.stats.sendGrowthRefused++;
          cap = MIN_CAPACITY;
        }
      } else if (!budget.tryCharge(cap - old)) {
        budget.stats.sendGrowthRefused++;
        return; // keep the ring as it is: the host socket is read more slowly
      }
    }
    const next = new Uint8Array(cap);
    // Linearise: oldest byte at index 0.
    const old = this.ring;
    const first = Math.min(this.size, old.length - this.head);
    next.set(old.subarray(this.head, this.head + first), 0);
    if (this.size > first) next.set(old.subarray(0, this.size - first), first);
    this.ring = next;
    this.head = 0;
  }
}
