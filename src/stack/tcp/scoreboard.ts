/**
 * The sender's SACK scoreboard (RFC 2018, RFC 6675 §3): which bytes above SND.UNA the peer has
 * reported holding.
 *
 * Theory of operation: a short sorted list of disjoint, merged ranges [start, end) within
 * (SND.UNA, SND.MAX]. Each ACK's SACK blocks are clipped to that span and merged in; a cumulative
 * ACK trims the front. Loss recovery asks for the next hole (un-SACKed bytes below the highest
 * SACKed byte) to retransmit, and for byte counts to compute RFC 6675's "pipe".
 *
 * Limits: at most `MAX_RANGES` ranges are kept; past that the highest ones are forgotten (we may
 * then retransmit bytes the peer already has — harmless). Blocks below SND.UNA (D-SACK, RFC 2883)
 * and blocks beyond what we sent are ignored. The scoreboard is cleared on RTO, which also covers a
 * peer that reneged on SACKed data.
 */
import { type Seq, seqGe, seqGt, seqLe, seqLt, seqMax, seqMin, seqSub } from './seq.ts';

const MAX_RANGES = 32;

export class Scoreboard {
  private readonly starts: Seq[] = [];
  private readonly ends: Seq[] = [];
  /** Total bytes SACKed. */
  sacked = 0;

  get isEmpty(): boolean {
    return this.starts.length === 0;
  }

  /** One past the highest SACKed byte; `una` when nothing is SACKed. */
  highest(una: Seq): Seq {
    const n = this.ends.length;
    return n === 0 ? una : this.ends[n - 1]!;
  }

  /**
   * Merges one SACK block, clipped to (una, max]. Returns the number of newly SACKed bytes.
   */
  add(start: Seq, end: Seq, una: Seq, max: Seq): number {
    if (!seqLt(start, end)) return 0;
    const s = seqMax(start, una);
    const e = seqMin(end, max);
    if (!seqLt(s, e)) return 0;
    const starts = this.starts;
    const ends = this.ends;
    // Find the first range that ends at or after s (may merge with it).
    let i = 0;
    while (i < starts.length && seqLt(ends[i]!, s)) i++;
    let ns = s;
    let ne = e;
    let j = i;
    let covered = 0;
    while (j < starts.length && seqLe(starts[j]!, ne)) {
      const os = starts[j]!;
      const oe = ends[j]!;
      // Bytes of the old range inside [ns0, ne0) were already counted.
      covered += seqSub(oe, os);
      ns = seqMin(ns, os);
      ne = seqMax(ne, oe);
      j++;
    }
    const merged = seqSub(ne, ns);
    const added = merged - covered;
    starts.splice(i, j - i, ns);
    ends.splice(i, j - i, ne);
    this.sacked += added;
    if (starts.length > MAX_RANGES) {
      const last = starts.length - 1;
      this.sacked -= seqSub(ends[last]!, starts[last]!);
      starts.pop();
      ends.pop();
    }
    return added;
  }

  /** Forgets everything below `una` (a cumulative ACK). */
  advance(una: Seq): void {
    const starts = this.starts;
    const ends = this.ends;
    let k = 0;
    while (k < starts.length && seqLe(ends[k]!, una)) {
      this.sacked -= seqSub(ends[k]!, starts[k]!);
      k++;
    }
    if (k > 0) {
      starts.splice(0, k);
      ends.splice(0, k);
    }
    if (starts.length > 0 && seqLt(starts[0]!, una)) {
      this.sacked -= seqSub(una, starts[0]!);
      starts[0] = una;
    }
  }

  clear(): void {
    this.starts.length = 0;
    this.ends.length = 0;
    this.sacked = 0;
  }

  isSacked(x: Seq): boolean {
    const starts = this.starts;
    const ends = this.ends;
    for (let i = 0; i < starts.length; i++) {
      if (seqLt(x, starts[i]!)) return false;
      if (seqLt(x, ends[i]!)) return true;
    }
    return false;
  }

  /** SACKed bytes inside [from, to). */
  sackedBetween(from: Seq, to: Seq): number {
    let n = 0;
    const starts = this.starts;
    const ends = this.ends;
    for (let i = 0; i < starts.length; i++) {
      const s = seqMax(starts[i]!, from);
      const e = seqMin(ends[i]!, to);
      if (seqLt(s, e)) n += seqSub(e, s);
      if (seqGe(starts[i]!, to)) break;
    }
    return n;
  }

  /**
   * The next hole at or after `from` and below `limit`: sets `holeStart` and returns its length
   * (0 when there is none). A hole ends at the next SACKed range or at `limit`.
   */
  nextHole(from: Seq, limit: Seq): number {
    let x = from;
    const starts = this.starts;
    const ends = this.ends;
    for (let i = 0; i < starts.length; i++) {
      if (seqLe(ends[i]!, x)) continue;
      if (seqGt(starts[i]!, x)) {
        const e = seqMin(starts[i]!, limit);
        if (!seqLt(x, e)) return 0;
        this.holeStart = x;
        return seqSub(e, x);
      }
      x = ends[i]!; // x inside a SACKed range: skip it
    }
    if (!seqLt(x, limit)) return 0;
    this.holeStart = x;
    return seqSub(limit, x);
  }

  /** Start of the hole found by the last `nextHole`. */
  holeStart: Seq = 0 as Seq;
}
