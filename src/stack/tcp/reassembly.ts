/**
 * Out-of-order receive queue and the SACK blocks that describe it (RFC 9293 §3.10.7.4, RFC 2018).
 *
 * Theory of operation: in-order data never comes here — the receiver hands it to the app straight
 * from the guest's frame. A segment that starts beyond RCV.NXT is copied (only the bytes not already
 * held) into chunks kept sorted by sequence number and never overlapping. When RCV.NXT reaches the
 * first chunk, `takeFirst` yields chunks in order until a hole remains. Adjacent chunks form runs;
 * runs are what SACK reports. The first SACK block is the run holding the most recently received
 * segment, then the other recently changed runs, then the rest (RFC 2018 §4).
 *
 * Limits: bytes are bounded by the receive window (the receiver only inserts in-window data), by
 * `maxBytes` per connection and by the engine-wide budget (budget.ts: out-of-order data is the
 * first thing refused under memory pressure), and the number of chunks by `maxChunks` (a guest sending many tiny out-of-order segments cannot make
 * us keep unbounded bookkeeping). Past the chunk budget new out-of-order data is refused and
 * counted; the peer retransmits it later. Copies happen only on this loss/reorder path.
 */
import { type Seq, seqAdd, seqGe, seqGt, seqLe, seqLt, seqSub } from './seq.ts';
import type { BufferBudget } from './budget.ts';

export interface OooChunk {
  start: Seq;
  end: Seq;
  data: Uint8Array;
}

const RECENT = 4;

export class Reassembly {
  private chunks: OooChunk[] = [];
  /** Bytes held. */
  bytes = 0;
  /** Bytes the last `insert` refused for lack of chunk budget. */
  lastRefused = 0;
  private readonly used: number[] = [];
  /** A sequence number inside each recently changed run, most recent first. */
  private readonly recent: Seq[] = [];
  private runsDirty = true;
  private runStart: Seq[] = [];
  private runEnd: Seq[] = [];

  constructor(
    private readonly maxChunks: number,
    /** Most bytes held (a per-connection cap, below the window). */
    private readonly maxBytes = Infinity,
    /** The engine-wide buffer budget, charged per byte held (budget.ts). */
    private readonly budget?: BufferBudget,
  ) {}

  get isEmpty(): boolean {
    return this.chunks.length === 0;
  }

  get chunkCount(): number {
    return this.chunks.length;
  }

  /** Highest sequence number held + 1, or undefined when empty. */
  get highest(): Seq | undefined {
    return this.chunks[this.chunks.length - 1]?.end;
  }

  /**
   * Stores the bytes of [start, start + len) not already held (copying them out of `buf`).
   * Returns the number of new bytes stored; `lastRefused` says how many were refused because the
   * chunk budget ran out. The caller guarantees start > RCV.NXT and the range lies in the window.
   */
  insert(start: Seq, buf: Uint8Array, off: number, len: number): number {
    const end = seqAdd(start, len);
    const chunks = this.chunks;
    // Common case: appending beyond the last chunk; search from the back.
    let i = chunks.length;
    while (i > 0 && seqGt(chunks[i - 1]!.end, start)) i--;
    let cur = start;
    let stored = 0;
    let refused = 0;
    while (seqLt(cur, end)) {
      const c = chunks[i];
      if (c !== undefined && seqLe(c.start, cur)) {
        if (seqGt(c.end, cur)) cur = c.end;
        i++;
        continue;
      }
      const gapEnd = c !== undefined && seqLt(c.start, end) ? c.start : end;
      const n = seqSub(gapEnd, cur);
      if (chunks.length >= this.maxChunks || this.bytes + n > this.maxBytes || (this.budget !== undefined && !this.budget.tryCharge(n))) {
        if (this.budget !== undefined && chunks.length < this.maxChunks && this.bytes + n <= this.maxBytes) this.budget.stats.oooRefused++;
        refused += n;
      } else {
        const from = off + seqSub(cur, start);
        chunks.splice(i, 0, { start: cur, end: gapEnd, data: buf.slice(from, from + n) });
        i++;
        stored += n;
        this.bytes += n;
      }
      cur = gapEnd;
    }
    this.touch(start);
    this.runsDirty = true;
    this.lastRefused = refused;
    return stored;
  }

  /**
   * Removes and returns the first chunk if it starts at or before `rcvNxt`, or undefined. Chunks
   * wholly below `rcvNxt` (their bytes arrived in order meanwhile) are discarded on the way.
   */
  takeFirst(rcvNxt: Seq): OooChunk | undefined {
    for (;;) {
      const c = this.chunks[0];
      if (c === undefined || seqGt(c.start, rcvNxt)) return undefined;
      this.chunks.shift();
      this.bytes -= c.data.length;
      this.budget?.refund(c.data.length);
      this.runsDirty = true;
      if (seqGt(c.end, rcvNxt)) return c;
    }
  }

  /** Drops everything. */
  clear(): void {
    this.budget?.refund(this.bytes);
    this.chunks = [];
    this.bytes = 0;
    this.recent.length = 0;
    this.runsDirty = true;
  }

  /**
   * Writes up to `max` SACK blocks (start, end pairs) into `out`, most recently changed run first.
   * Runs below `rcvNxt` are skipped. Returns the number of blocks.
   */
  sackBlocks(out: Uint32Array, max: number, rcvNxt: Seq): number {
    if (this.chunks.length === 0 || max <= 0) return 0;
    if (this.runsDirty) this.computeRuns();
    const rs = this.runStart;
    const re = this.runEnd;
    let n = 0;
    const used = this.used;
    used.length = 0;
    for (const s of this.recent) {
      if (n >= max) break;
      const r = this.runIndexOf(s);
      if (r < 0 || used.includes(r) || seqLe(re[r]!, rcvNxt)) continue;
      used.push(r);
      out[2 * n] = rs[r]!;
      out[2 * n + 1] = re[r]!;
      n++;
    }
    for (let r = 0; r < rs.length && n < max; r++) {
      if (used.includes(r) || seqLe(re[r]!, rcvNxt)) continue;
      out[2 * n] = rs[r]!;
      out[2 * n + 1] = re[r]!;
      n++;
    }
    return n;
  }

  private touch(s: Seq): void {
    const r = this.recent;
    const k = r.indexOf(s);
    if (k >= 0) r.splice(k, 1);
    r.unshift(s);
    if (r.length > RECENT) r.length = RECENT;
  }

  private runIndexOf(s: Seq): number {
    const rs = this.runStart;
    const re = this.runEnd;
    for (let r = 0; r < rs.length; r++) {
      if (seqGe(s, rs[r]!) && seqLt(s, re[r]!)) return r;
    }
    return -1;
  }

  private computeRuns(): void {
    const rs: Seq[] = [];
    const re: Seq[] = [];
    for (const c of this.chunks) {
      const last = re.length - 1;
      if (last >= 0 && re[last] === c.start) re[last] = c.end;
      else {
        rs.push(c.start);
        re.push(c.end);
      }
    }
    this.runStart = rs;
    this.runEnd = re;
    this.runsDirty = false;
  }
}
