/**
 * Copies of guest payload on their way into host sockets, carved from reusable slabs.
 *
 * Theory of operation: a guest segment's payload lives in the link's receive buffer, which the
 * next batch overwrites, so it must be copied before `socket.write` (which completes later).
 * `Buffer.from` per segment allocates a fresh ArrayBuffer for anything over 4 KiB — at a few
 * Gbit/s of 64 KiB TSO segments that is a GB/s of external memory, and garbage collection ate
 * ~18 % of vmnat's CPU guest→host. Instead, copies are bump-allocated from 1 MiB slabs. Each slab
 * counts its copies still in flight; `release(slab)` (from the write's callback, which Node calls
 * once the bytes are in the kernel or the write failed) lowers the count, and a slab that is
 * full and back to zero goes to a small free list for reuse. A slab whose release never comes
 * (a callback Node never calls) is simply not reused: the garbage collector takes it, so a
 * missed release costs memory once, never correctness.
 *
 * `append(prev, src)` grows the last copy in place when nothing was carved after it, so a flow's
 * segments of one frame batch become one contiguous Buffer and one socket write.
 *
 * Memory: bounded by the bytes in flight (each flow's receive window bounds its own), plus at most
 * one partly used slab and `keepFree` idle slabs.
 */

export class WriteSlab {
  used = 0;
  inFlight = 0;
  constructor(readonly buf: Buffer) {}
}

export class WriteSlabs {
  private current: WriteSlab | undefined;
  private readonly free: WriteSlab[] = [];
  /** The slab the last `copy` came from (undefined: it was allocated on its own). */
  lastSlab: WriteSlab | undefined;
  /** Where the last copy ends in `current` (before alignment): where `append` may continue. */
  private lastEnd = -1;
  readonly stats = { slabsAllocated: 0, slabsReused: 0, oversized: 0 };

  constructor(
    private readonly slabBytes = 1 << 20,
    private readonly keepFree = 8,
  ) {}

  /** A copy of `src` that stays valid until `release(this.lastSlab)` is called for it. */
  copy(src: Uint8Array): Buffer {
    const len = src.length;
    if (len > this.slabBytes >>> 2) {
      this.stats.oversized++;
      this.lastSlab = undefined;
      return Buffer.from(src);
    }
    let slab = this.current;
    if (slab === undefined || slab.used + len > this.slabBytes) {
      if (slab !== undefined) this.retire(slab);
      slab = this.take();
      this.current = slab;
      this.lastEnd = -1;
    }
    const off = slab.used;
    slab.buf.set(src, off);
    this.lastEnd = off + len;
    slab.used = (off + len + 7) & ~7; // keep copies 8-byte aligned
    slab.inFlight++;
    this.lastSlab = slab;
    return slab.buf.subarray(off, off + len);
  }

  /**
   * `prev` (the latest copy, not yet written) grown by `src`, in place: the same copy as far as
   * `release` is concerned. Undefined if `prev` is not the latest copy or the slab has no room;
   * then the caller copies `src` on its own.
   */
  append(prev: Buffer, src: Uint8Array): Buffer | undefined {
    const slab = this.current;
    if (slab === undefined || prev.buffer !== slab.buf.buffer) return undefined;
    const start = prev.byteOffset - slab.buf.byteOffset;
    const end = start + prev.length;
    if (end !== this.lastEnd || end + src.length > this.slabBytes) return undefined;
    slab.buf.set(src, end);
    this.lastEnd = end + src.length;
    slab.used = (this.lastEnd + 7) & ~7;
    return slab.buf.subarray(start, this.lastEnd);
  }

  /** One copy from `slab` is no longer needed. */
  release(slab: WriteSlab | undefined): void {
    if (slab === undefined) return;
    slab.inFlight--;
    if (slab.inFlight !== 0) return;
    if (slab === this.current) {
      slab.used = 0; // start over in memory that is still in cache
      this.lastEnd = -1;
    }
    else this.recycle(slab);
  }

  private take(): WriteSlab {
    const reused = this.free.pop();
    if (reused !== undefined) {
      this.stats.slabsReused++;
      reused.used = 0;
      return reused;
    }
    this.stats.slabsAllocated++;
    return new WriteSlab(Buffer.allocUnsafeSlow(this.slabBytes));
  }

  /** `slab` is full: it is recycled once its last copy is released (now, if none is out). */
  private retire(slab: WriteSlab): void {
    if (slab.inFlight === 0) this.recycle(slab);
  }

  private recycle(slab: WriteSlab): void {
    if (this.free.length < this.keepFree) this.free.push(slab);
  }
}
