/**
 * The receive side of a connection: RCV.NXT, the advertised window, segment acceptability,
 * in-order delivery, out-of-order reassembly and ACK scheduling (RFC 9293 §3.10.7.4, RFC 1122
 * §4.2.3.2–3, RFC 5681 §4.2, RFC 7323 §2).
 *
 * Theory of operation — flow control is a credit: the app may hold `recvWindow` bytes. Every byte
 * delivered to it (`deliver`) is counted in `held` until the app calls back with
 * `TcpConnection.recvConsumed(n)`. The window offered is what is left, `recvWindow − held`, so
 * in-window data is never dropped: the peer cannot send more than the app can still absorb. The
 * right edge we advertised (`rightEdge`) never moves left (RFC 9293 MUST-35); it moves right only in
 * steps of at least min(recvWindow/2, MSS) (receiver SWS avoidance, RFC 9293 §3.8.6.2.2), and the
 * scaled field is rounded up so the edge does not shrink by rounding.
 *
 * In-order payload is handed to the app straight from the guest's frame (no copy); out-of-order
 * payload is copied into the reassembly queue and drained once the hole fills. A FIN is taken
 * once everything before it has arrived.
 *
 * ACKs: immediate for out-of-order data, for data that fills a hole, for a FIN, for trimmed or
 * unacceptable segments. Once more than one full segment is unacknowledged (RFC 5681 §4.2 /
 * RFC 1122 "every second full-sized segment", as Linux counts it) an ACK is owed `ackSoon`: the
 * connection sends it at the end of the frame batch when its host can defer it (one ACK for all
 * the in-order segments of a batch — a stretch ACK, what Linux's GRO gives a sender behind a NIC:
 * MTU-sized frames from a VM otherwise cost one ACK frame per two segments), and at once
 * otherwise, or as soon as `stretchAckBytes` are unacknowledged. Other data waits at most
 * `delayedAckMs`, which also bounds a deferred ACK the host failed to flush.
 */
import { type Seq, seqAdd, seqGt, seqInRange, seqLt, seqOf, seqSub } from './seq.ts';
import { TcpFlag, type TcpSegment } from './segment.ts';
import type { TcpConfig, TcpStats } from './config.ts';
import { Reassembly } from './reassembly.ts';
import { PRESSURE_WINDOW } from './budget.ts';

/**
 * A deferred ACK goes at once when this much is unacknowledged: 64 KiB, the most a GRO segment
 * holds on Linux, so a guest's sender never waits on a long batch for its first ACK.
 */
export const STRETCH_ACK_BYTES = 65_536;

/** What the receiver calls for in-order data. */
export interface ReceiverSink {
  /** In-order bytes for the app; valid during the call. */
  deliver(buf: Uint8Array, off: number, len: number): void;
  /** False once the app closed the connection from inside `deliver` (abort): stop at once. */
  readonly alive: boolean;
}

export class TcpReceiver {
  irs: Seq;
  nxt: Seq;
  /** RCV.NXT + RCV.WND as last advertised. */
  rightEdge: Seq;
  /** Our window-scale shift (0 unless both sides sent the option). */
  wscale = 0;
  /** Bytes delivered to the app and not yet consumed. */
  held = 0;
  /** Out-of-order queue, created on the first gap and dropped again once it drains. */
  private ooo: Reassembly | undefined;
  /** Sequence number of the peer's FIN, once seen (possibly ahead of missing data). */
  finSeq: Seq | undefined;
  finReceived = false;

  // ACK scheduling
  ackNow = false;
  /** An ACK is owed for "every second full segment"; it may wait for the end of the batch. */
  ackSoon = false;
  /** Bytes received since the last ACK we sent. */
  unacked = 0;
  delAckDeadline = Infinity;
  /**
   * The peer's full segment size, for "every second full segment": the handshake's effective MSS
   * (not the largest seen, which GSO frames from a TAP with offloads would inflate).
   */
  mss: number;
  private readonly swsStep: number;

  constructor(
    private readonly config: TcpConfig,
    private readonly stats: TcpStats,
  ) {
    this.irs = seqOf(0);
    this.nxt = seqOf(1);
    this.rightEdge = this.nxt;
    this.mss = config.mss;
    this.swsStep = Math.max(1, Math.min(config.recvWindow >>> 1, config.mss));
  }

  /** Starts the receive sequence space from the peer's SYN (RFC 9293: RCV.NXT = IRS + 1). */
  init(irs: Seq): void {
    this.irs = irs;
    this.nxt = seqAdd(irs, 1);
    this.rightEdge = seqAdd(this.nxt, Math.min(this.space(), 0xffff));
  }

  /** Free credit: what the window could be now. */
  space(): number {
    const free = Math.max(0, this.config.recvWindow - this.held);
    // Under memory pressure the window stops growing past PRESSURE_WINDOW (it never shrinks:
    // the right edge already advertised stays).
    return this.config.budget?.pressure === true ? Math.min(free, PRESSURE_WINDOW) : free;
  }

  /** The window field for a SYN or SYN-ACK (never scaled, RFC 7323 §2.2). */
  synWindow(): number {
    const w = Math.min(this.space(), 0xffff);
    this.rightEdge = seqAdd(this.nxt, w);
    return w;
  }

  /**
   * The (scaled) window field for an outgoing segment; records the right edge it advertises.
   * Call only for a segment that is actually sent.
   */
  windowField(): number {
    let right = this.rightEdge;
    const cand = seqAdd(this.nxt, this.space());
    const step = seqSub(cand, right);
    // Move the right edge only by a worthwhile step (SWS), or to reopen a closed window.
    if (step >= this.swsStep || (step > 0 && seqSub(right, this.nxt) <= 0 && this.space() >= this.swsStep)) right = cand;
    let wnd = seqSub(right, this.nxt);
    if (wnd < 0) wnd = 0;
    const shift = this.wscale;
    let field = wnd >>> shift;
    if (field << shift < wnd) field++; // round up: never advertise less than before
    if (field > 0xffff) field = 0xffff;
    const edge = seqAdd(this.nxt, field << shift); // ≤ 0xffff << 14: fits in 31 bits
    if (seqGt(edge, this.rightEdge)) this.rightEdge = edge;
    return field;
  }

  /** Whether consumption opened the window enough to tell the peer now (Linux tcp_cleanup_rbuf rule). */
  windowUpdateWorthwhile(): boolean {
    const current = Math.max(0, seqSub(this.rightEdge, this.nxt));
    const possible = this.space();
    return possible >= 2 * current && possible - current >= this.swsStep;
  }

  /** RFC 9293 §3.10.7.4 first check: is the segment acceptable? */
  acceptable(seg: TcpSegment): boolean {
    const len = seg.payloadLen + (seg.flags & TcpFlag.SYN ? 1 : 0) + (seg.flags & TcpFlag.FIN ? 1 : 0);
    const wnd = Math.max(0, seqSub(this.rightEdge, this.nxt));
    const seq = seg.seq;
    if (wnd === 0) return seq === this.nxt; // a zero-window probe is "acceptable" for its ACK; the data is trimmed
    const end = seqAdd(this.nxt, wnd);
    if (len === 0) return seqInRange(seq, this.nxt, end);
    return seqInRange(seq, this.nxt, end) || seqInRange(seqAdd(seq, len - 1), this.nxt, end);
  }

  /**
   * Processes the text and FIN of an acceptable segment (RFC 9293 seventh and eighth checks).
   * Returns true when the peer's FIN was taken by this call (RCV.NXT now covers it).
   */
  processText(seg: TcpSegment, now: number, sink: ReceiverSink): boolean {
    let seq = seg.seq;
    let off = seg.payloadOff;
    let len = seg.payloadLen;
    let fin = (seg.flags & TcpFlag.FIN) !== 0;
    if (this.finReceived) return false; // nothing follows a FIN

    // Trim what we already have (a retransmission overlapping RCV.NXT); it means the peer missed
    // an ACK, so answer at once.
    const dup = seqSub(this.nxt, seq);
    if (dup > 0) {
      this.stats.dupDataSegs++;
      this.ackNow = true;
      if (dup > len) return false; // data and any FIN all old
      off += dup;
      len -= dup;
      seq = this.nxt;
    }
    // Trim what lies beyond the window (RFC 9293: keep only in-window data; a FIN past it is dropped).
    const room = seqSub(this.rightEdge, seq);
    if (len > room) {
      const cut = len - Math.max(room, 0);
      this.stats.trimmedBytes += cut;
      len -= cut;
      fin = false;
      this.ackNow = true;
    }

    if (seq === this.nxt) {
      if (len > 0) {
        this.nxt = seqAdd(this.nxt, len);
        this.held += len;
        this.unacked += len;
        this.stats.bytesIn += len;
        const hadOoo = this.ooo !== undefined;
        sink.deliver(seg.payload, off, len);
        if (!sink.alive) return false;
        if (hadOoo) {
          this.ackNow = true; // filled (part of) a hole: ACK at once (RFC 5681 §4.2)
          if (!this.drainOoo(sink)) return false;
        } else if (this.config.delayedAckMs <= 0 || this.unacked >= STRETCH_ACK_BYTES) {
          this.ackNow = true;
        } else if (this.unacked > this.mss) {
          this.ackSoon = true;
          if (this.delAckDeadline === Infinity) this.delAckDeadline = now + this.config.delayedAckMs;
        } else if (this.delAckDeadline === Infinity) {
          this.delAckDeadline = now + this.config.delayedAckMs;
          this.stats.delayedAcks++;
        }
      }
      if (fin) this.finSeq = seqAdd(seq, len);
    } else if (seqGt(seq, this.nxt)) {
      // Out of order: keep a copy, ACK at once so the peer sees the hole (RFC 5681 §4.2).
      this.stats.oooSegs++;
      if (len > 0) {
        const q = (this.ooo ??= new Reassembly(this.config.maxOooChunks, this.config.maxOooBytes, this.config.budget));
        q.insert(seq, seg.payload, off, len);
        if (q.lastRefused > 0) this.stats.oooDropped++;
        if (q.isEmpty) this.ooo = undefined;
      }
      if (fin) this.finSeq = seqAdd(seq, len);
      this.ackNow = true;
    }
    return this.takeFin();
  }

  /** Delivers queued out-of-order chunks that became in-order. Returns false if the sink died. */
  private drainOoo(sink: ReceiverSink): boolean {
    for (;;) {
      const q = this.ooo;
      if (q === undefined) return true;
      const c = q.takeFirst(this.nxt);
      if (c === undefined) {
        if (q.isEmpty) this.ooo = undefined;
        return true;
      }
      const skip = seqSub(this.nxt, c.start);
      const n = c.data.length - skip;
      this.nxt = c.end;
      this.held += n;
      this.stats.bytesIn += n;
      sink.deliver(c.data, skip, n);
      if (!sink.alive) return false;
    }
  }

  private takeFin(): boolean {
    if (this.finReceived || this.finSeq === undefined || this.finSeq !== this.nxt) return false;
    this.nxt = seqAdd(this.nxt, 1);
    this.finReceived = true;
    this.ackNow = true;
    this.clearOoo(); // nothing can lie beyond the FIN
    return true;
  }

  /** Bytes held out of order. */
  get oooBytes(): number {
    return this.ooo?.bytes ?? 0;
  }

  /** Drops the out-of-order queue (the connection can no longer use it). */
  clearOoo(): void {
    this.ooo?.clear(); // refunds the budget
    this.ooo = undefined;
  }

  /** SACK blocks for the out-of-order queue (RFC 2018), at most `max`; returns the count. */
  sackBlocks(out: Uint32Array, max: number): number {
    return this.ooo === undefined ? 0 : this.ooo.sackBlocks(out, max, this.nxt);
  }

  /** Everything an outgoing ACK carries has been sent. */
  ackSent(): void {
    this.ackNow = false;
    this.ackSoon = false;
    this.unacked = 0;
    this.delAckDeadline = Infinity;
  }

  /** Whether an ACK is owed now (immediate, or the delayed-ACK deadline has passed). */
  ackDue(now: number): boolean {
    return this.ackNow || now >= this.delAckDeadline;
  }

  /** True when `seq` lies before RCV.NXT (an old retransmission). */
  isOld(seq: Seq): boolean {
    return seqLt(seq, this.nxt);
  }
}
