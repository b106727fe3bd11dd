/**
 * The send side of a connection: sequence variables, what to transmit next, ACK processing, loss
 * recovery and the retransmission/persist timer (RFC 9293 §3.10, RFC 5681, 6582, 6675, 6298).
 *
 * Theory of operation. Sequence space is [ISS] SYN, then data bytes held in the send buffer from
 * `bufSeq` (the oldest unacknowledged data byte) to `dataEnd()`, then — once the app shut down
 * writing — the FIN at `finSeq` (= `dataEnd()` at that moment; no more data can follow).
 * Variables: UNA (oldest unacknowledged), NXT (next to send; rewound to UNA after an RTO: go-back-N),
 * MAX (highest ever sent + 1; acceptable ACKs are ≤ MAX), WND (peer window, scaled).
 *
 * `output` sends, in order of priority:
 *  1. during SACK recovery, holes below the highest SACKed byte not yet retransmitted
 *     (RFC 6675 NextSeg rule 1), while pipe < cwnd;
 *  2. data from NXT limited by the peer window and cwnd, with sender SWS avoidance (a segment
 *     shorter than the MSS goes only if it empties the buffer, nothing is in flight, or it is at
 *     least half the peer's largest window — RFC 9293 §3.8.6.2.1; no Nagle: the host app's writes
 *     were already coalesced by the host kernel);
 *  3. the FIN, once all data is sent (not limited by window or cwnd).
 * Every payload is one slice of the send buffer, cut at the ring's end.
 *
 * One timer slot serves three timers that never run together: the RTO while data is in flight
 * (RFC 6298 §5); the tail loss probe (RFC 8985 §7) in its place when it can fire sooner (SACK on,
 * more than one segment in flight, not in recovery: PTO = max(2·SRTT, tlpMinMs)); the persist
 * timer while the peer's window is zero with data waiting — each expiry sends one byte beyond the
 * window as a probe (RFC 9293 §3.8.6.1). An RTO retransmits the segment at UNA regardless of the
 * window, collapses cwnd, clears the scoreboard (RFC 2018 §8) and goes back to UNA.
 *
 * Loss detection: 3 duplicate ACKs (RFC 5681), or with SACK ≥ 3·SMSS SACKed above UNA
 * (RFC 6675 IsLost, simplified: every hole below the highest SACKed byte counts as lost), or a
 * SACKed tail loss probe; a retransmission is itself found lost when data sent after it is SACKed.
 */
import { type Seq, seqAdd, seqGe, seqGt, seqLe, seqLt, seqMax, seqSub } from './seq.ts';
import type { TcpSegment } from './segment.ts';
import { TcpFlag } from './segment.ts';
import type { TcpConfig, TcpStats } from './config.ts';
import { SendBuffer } from './sendbuf.ts';
import { Scoreboard } from './scoreboard.ts';
import { DUP_THRESH, NewReno } from './congestion.ts';
import { RtoEstimator } from './rto.ts';

/** Where the sender's segments go (implemented by the connection, which adds ACK/window/options). */
export interface SenderOutput {
  /**
   * Transmit [seq, seq + len) of data — `len` bytes at `off` in `SendBuffer.buffer` — and the
   * FIN after it if `fin`. Returns the data bytes actually sent: fewer than `len` when the
   * segment's options (SACK blocks) take room from the payload, as Linux's mss_now does; the FIN
   * then goes with a later segment.
   */
  transmitData(seq: Seq, off: number, len: number, fin: boolean): number;
}

/** What `processAck` concluded (RFC 9293 §3.10.7.4 fifth check; RFC 5961 §5.2). */
export const AckVerdict = {
  /** Processed (new, duplicate or old-but-plausible ACK). */
  Ok: 0,
  /** Acknowledges something never sent: send an ACK, drop the segment. */
  Unsent: 1,
  /** Older than SND.UNA − MAX.SND.WND: send an ACK, drop the segment. */
  TooOld: 2,
} as const;
export type AckVerdict = (typeof AckVerdict)[keyof typeof AckVerdict];

export const TimerKind = { None: 0, Rtx: 1, Persist: 2, Probe: 3 } as const;
export type TimerKind = (typeof TimerKind)[keyof typeof TimerKind];

export class TcpSender {
  una: Seq;
  nxt: Seq;
  max: Seq;
  /** Peer's window in bytes (scale applied). */
  wnd = 0;
  wl1: Seq;
  wl2: Seq;
  /** Largest window the peer ever offered (RFC 5961 MAX.SND.WND; SWS). */
  maxWnd = 0;
  /** Peer's window-scale shift (0 unless both sides sent the option). */
  wscale = 0;
  /** Effective send MSS. */
  mss: number;
  sack = false;

  readonly buf: SendBuffer;
  /** Sequence number of the send buffer's oldest byte. */
  bufSeq: Seq;
  finQueued = false;
  finSeq: Seq;

  readonly sb = new Scoreboard();
  readonly cc: NewReno;
  readonly rto: RtoEstimator;
  /** Highest sequence retransmitted in this SACK recovery (RFC 6675 HighRxt). */
  private highRxt: Seq;
  /**
   * Lost-retransmission detection (as Linux's tcp_mark_lost_retrans): when the segment at UNA
   * is retransmitted we remember SND.MAX then (`rtxUnaMark`). If the peer later SACKs bytes above
   * that mark while UNA has not moved, data sent after the retransmission arrived and the
   * retransmission did not: it was lost too, so the hole pass restarts at UNA instead of waiting
   * for an RTO.
   */
  private rtxUnaSeq: Seq;
  private rtxUnaMark: Seq;

  // Karn-style RTT timing of one segment per round trip.
  private timing = false;
  private rttSeq: Seq;
  private rttStart = 0;

  timerKind: TimerKind = TimerKind.None;
  deadline = Infinity;
  /** Consecutive RTOs or unanswered persist probes. */
  retries = 0;
  private persistBackoff = 0;
  private lastSend = -Infinity;
  /** A tail loss probe is out and not yet covered by the cumulative ACK (RFC 8985 TLPRxtOut). */
  private tlpOut = false;
  private tlpHigh: Seq;

  constructor(
    readonly iss: Seq,
    private readonly config: TcpConfig,
    private readonly stats: TcpStats,
  ) {
    this.una = iss;
    this.nxt = seqAdd(iss, 1);
    this.max = this.nxt;
    this.wl1 = iss;
    this.wl2 = iss;
    this.bufSeq = seqAdd(iss, 1);
    this.finSeq = this.bufSeq;
    this.highRxt = iss;
    this.rtxUnaSeq = iss;
    this.rtxUnaMark = iss;
    this.rttSeq = iss;
    this.tlpHigh = iss;
    this.mss = Math.min(config.mss, 536);
    this.buf = new SendBuffer(config.sendBufferSize, config.budget);
    this.cc = new NewReno(this.mss, config.initialCwndSegments, config.sendBufferSize, iss);
    this.rto = new RtoEstimator(config.initialRtoMs, config.minRtoMs, config.maxRtoMs);
  }

  /** Sequence number after the last queued data byte. */
  dataEnd(): Seq {
    return seqAdd(this.bufSeq, this.buf.length);
  }

  /** Sets the MSS negotiated in the handshake (RFC 9293 §3.7.1; RFC 6691: peer's value is a cap). */
  setMss(peerMss: number): void {
    const peer = peerMss > 0 ? peerMss : 536;
    this.mss = Math.max(64, Math.min(this.config.mss, peer));
    this.cc.setMss(this.mss);
  }

  /** Queues the FIN after the data already written (app shut down writing). */
  queueFin(): void {
    if (this.finQueued) return;
    this.finQueued = true;
    this.finSeq = this.dataEnd();
  }

  /** True once the FIN was sent and acknowledged. */
  get finAcked(): boolean {
    return this.finQueued && seqGt(this.una, this.finSeq);
  }

  /** Bytes in flight per RFC 6675 when in SACK recovery, else NXT − UNA. */
  pipe(): number {
    if (!(this.cc.inRecovery && this.sack)) return seqSub(this.nxt, this.una);
    const hs = this.sb.highest(this.una);
    const lostFrom = seqMax(this.highRxt, this.una);
    const lostNotRetransmitted = seqGt(hs, lostFrom) ? seqSub(hs, lostFrom) - this.sb.sackedBetween(lostFrom, hs) : 0;
    return seqSub(this.max, this.una) - this.sb.sacked - lostNotRetransmitted;
  }

  /** Arms the SYN/SYN-ACK timer (handshake states share the RTO slot). */
  armHandshakeTimer(now: number): void {
    this.timerKind = TimerKind.Rtx;
    this.deadline = now + this.rto.rto;
  }

  /** Starts timing the handshake segment (its ACK gives the first RTT sample). */
  timeHandshake(now: number, retransmission: boolean): void {
    if (retransmission) {
      this.timing = false;
      return;
    }
    this.timing = true;
    this.rttSeq = seqAdd(this.iss, 1);
    this.rttStart = now;
  }

  /** The peer's SYN gave its first window (never scaled, RFC 7323 §2.2). */
  initPeerWindow(seg: TcpSegment): void {
    this.wnd = seg.window;
    this.maxWnd = seg.window;
    this.wl1 = seg.seq;
    this.wl2 = this.una;
  }

  /** SYN-SENT: a SYN-ACK acknowledged our SYN (RFC 9293 §3.10.7.3). */
  onSynAck(seg: TcpSegment, now: number): void {
    if (this.timing && seqGe(seg.ack, this.rttSeq)) this.rto.sample(now - this.rttStart);
    this.timing = false;
    this.una = seg.ack;
    this.initPeerWindow(seg);
    this.wl2 = seg.ack;
    this.retries = 0;
    this.rto.resetBackoff();
    this.stopTimer();
  }

  stopTimer(): void {
    this.timerKind = TimerKind.None;
    this.deadline = Infinity;
  }

  /** Sends whatever the windows allow. Returns the number of segments sent. */
  output(now: number, out: SenderOutput): number {
    let sent = 0;
    for (;;) {
      const sackRecovery = this.cc.inRecovery && this.sack;
      const pipe = this.pipe();
      if (sackRecovery) {
        // RFC 6675 §5 step (C): while cwnd − pipe ≥ 1 SMSS, NextSeg rule 1 first.
        if (this.cc.cwnd - pipe < this.mss) break;
        const from = seqMax(this.highRxt, this.una);
        const hole = this.sb.nextHole(from, this.sb.highest(this.una));
        if (hole > 0) {
          const s = this.sb.holeStart;
          if (s === this.una) this.markRtxUna();
          const n = this.sendRange(s, Math.min(hole, this.mss), now, out, true, false);
          if (n <= 0) break;
          this.highRxt = seqAdd(s, n);
          sent++;
          continue;
        }
      }
      const end = this.dataEnd();
      const unsent = seqSub(end, this.nxt);
      const finPending = this.finQueued && seqLe(this.nxt, this.finSeq);
      if (unsent <= 0) {
        // Only the FIN is left; it is not subject to window or cwnd.
        if (finPending) {
          this.sendRange(this.nxt, 0, now, out, seqLt(this.nxt, this.max), true);
          sent++;
        }
        break;
      }
      const wndRoom = seqSub(seqAdd(this.una, this.wnd), this.nxt);
      const cwndRoom = this.cc.cwnd - pipe;
      const room = Math.min(unsent, this.tsoLen(), wndRoom, cwndRoom);
      // An offloaded segment carries whole MSSs (a short tail only when it ends the data), so the
      // guest sees exactly the segments it would have seen without offload.
      const len = room > this.mss && room < unsent ? room - (room % this.mss) : room;
      const inFlight = seqSub(this.nxt, this.una);
      if (len <= 0) {
        if (wndRoom <= 0 && inFlight === 0 && this.timerKind === TimerKind.None) this.armPersist(now);
        break;
      }
      if (len < this.mss && len < unsent && inFlight > 0 && len < this.maxWnd >>> 1) break; // SWS
      if (inFlight === 0 && now - this.lastSend > this.rto.rto) this.cc.restartAfterIdle();
      const n = this.sendRange(this.nxt, len, now, out, seqLt(this.nxt, this.max), true);
      if (n <= 0) break;
      sent++;
    }
    return sent;
  }

  /**
   * Transmits [seq, seq + at most maxLen) (data from the buffer, plus the FIN when the range
   * reaches it). Returns the sequence space sent (data + FIN).
   */
  /** Most new data in one segment: one MSS, or whole MSSs up to tsoMaxBytes with offload. */
  private tsoLen(): number {
    const tso = this.config.tsoMaxBytes;
    return tso > this.mss ? Math.floor(tso / this.mss) * this.mss : this.mss;
  }

  private sendRange(seq: Seq, maxLen: number, now: number, out: SenderOutput, rtx: boolean, advance: boolean): number {
    const at = seqSub(seq, this.bufSeq);
    let len = 0;
    let off = 0;
    if (maxLen > 0 && at >= 0 && at < this.buf.length) {
      len = this.buf.view(at, maxLen);
      off = this.buf.viewOff;
    }
    let fin = this.finQueued && seqAdd(seq, len) === this.finSeq;
    if (len === 0 && !fin) return 0;
    const sent = out.transmitData(seq, off, len, fin);
    if (sent < len) {
      len = sent;
      fin = false;
    }
    const end = seqAdd(seq, len + (fin ? 1 : 0));
    this.lastSend = now;
    if (rtx) {
      this.stats.retransSegs++;
      this.timing = false; // Karn: never time a retransmitted segment
    } else if (!this.timing) {
      this.timing = true;
      this.rttSeq = end;
      this.rttStart = now;
    }
    if (advance && seqGt(end, this.nxt)) this.nxt = end;
    if (seqGt(end, this.max)) this.max = end;
    const kind = this.timerKind;
    if (kind === TimerKind.None || kind === TimerKind.Persist || (kind === TimerKind.Probe && !rtx)) {
      this.armRtxOrProbe(now);
    } else if (kind === TimerKind.Rtx && !rtx) {
      // New data in flight may make a tail loss probe due sooner than the running RTO.
      const pto = now + this.pto();
      if (pto < this.deadline) {
        this.timerKind = TimerKind.Probe;
        this.deadline = pto;
      }
    }
    return seqSub(end, seq);
  }

  /**
   * (Re)starts the timer for data in flight: a tail loss probe (RFC 8985 §7) when it can come
   * sooner than the RTO, else the RTO (RFC 6298 §5.1, §5.3).
   */
  private armRtxOrProbe(now: number): void {
    const pto = this.pto();
    if (pto < this.rto.rto) {
      this.timerKind = TimerKind.Probe;
      this.deadline = now + pto;
    } else {
      this.timerKind = TimerKind.Rtx;
      this.deadline = now + this.rto.rto;
    }
  }

  /** The probe timeout if a tail loss probe may be armed now, else Infinity. */
  private pto(): number {
    const tlpMin = this.config.tlpMinMs;
    if (
      tlpMin <= 0 ||
      !this.sack ||
      this.tlpOut ||
      this.cc.inRecovery ||
      !this.rto.hasSample ||
      seqSub(this.nxt, this.una) <= this.mss // one segment alone may wait for a delayed ACK
    ) {
      return Infinity;
    }
    return Math.max(2 * this.rto.srtt, tlpMin);
  }

  private armPersist(now: number): void {
    this.timerKind = TimerKind.Persist;
    this.deadline = now + Math.min(this.config.maxRtoMs, this.rto.rto * 2 ** this.persistBackoff);
  }

  /**
   * Processes SEG.ACK, the window and SACK blocks of an acceptable segment in a synchronized
   * state. `dataLen` is the segment's payload length (for duplicate-ACK detection).
   */
  processAck(seg: TcpSegment, now: number, out: SenderOutput): AckVerdict {
    const ack = seg.ack;
    if (seqGt(ack, this.max)) {
      this.stats.ackOfUnsent++;
      return AckVerdict.Unsent;
    }
    if (seqLt(ack, seqAdd(this.una, -Math.max(this.maxWnd, 1)))) {
      this.stats.badAck++;
      return AckVerdict.TooOld;
    }
    if (seqLt(ack, this.una)) return AckVerdict.Ok; // old duplicate: ignore the ACK field
    // Any acceptable ACK shows the peer is alive: a persist probe was answered.
    if (this.timerKind === TimerKind.Persist) this.retries = 0;

    // Window update (RFC 9293 §3.10.7.4: SND.WL1/WL2 guard against old segments).
    let windowChanged = false;
    if (seqLt(this.wl1, seg.seq) || (this.wl1 === seg.seq && seqLe(this.wl2, ack))) {
      const w = seg.window << this.wscale; // ≤ 0xffff << 14: fits in 31 bits
      windowChanged = w !== this.wnd;
      this.wnd = w;
      this.wl1 = seg.seq;
      this.wl2 = ack;
      if (w > this.maxWnd) this.maxWnd = w;
    }

    let newlySacked = 0;
    if (this.sack && seg.sackCount > 0) {
      const b = seg.sackBlocks;
      for (let i = 0; i < seg.sackCount; i++) {
        newlySacked += this.sb.add(b[2 * i]! as Seq, b[2 * i + 1]! as Seq, ack, this.max);
      }
    }

    if (seqGt(ack, this.una)) {
      this.onNewAck(ack, now, out);
    } else if (
      seg.payloadLen === 0 &&
      (seg.flags & (TcpFlag.SYN | TcpFlag.FIN)) === 0 &&
      seqGt(this.nxt, this.una) && // a window probe's byte does not count as outstanding
      this.wnd > 0 && // answers to probes of a closed window are not loss signals

      (this.sack ? newlySacked > 0 || !windowChanged : !windowChanged)
    ) {
      // Duplicate ACK (RFC 5681 §2; with SACK, RFC 6675 counts ACKs carrying new SACK information).
      this.stats.dupAcksIn++;
      this.cc.dupAcks++;
      if (this.cc.inRecovery && !this.sack) this.cc.inflate();
    }

    if (
      this.cc.inRecovery &&
      this.sack &&
      this.una === this.rtxUnaSeq &&
      seqGt(this.sb.highest(this.una), this.rtxUnaMark) &&
      seqGt(this.highRxt, this.una)
    ) {
      this.stats.lostRetransmits++;
      this.highRxt = this.una; // the next output pass retransmits the still-missing holes
      this.rtxUnaMark = this.max;
    }
    if (
      !this.cc.inRecovery &&
      seqGt(this.max, this.una) &&
      seqGe(this.una, this.cc.recover) &&
      (this.cc.dupAcks >= DUP_THRESH ||
        (this.sack && this.sb.sacked >= DUP_THRESH * this.mss) ||
        (this.tlpOut && this.sb.sacked > 0)) // the probe was SACKed above a hole: RFC 8985 §7.4
    ) {
      this.enterRecovery(now, out);
    }
    // The window may have opened: leave persist mode (output re-arms the right timer).
    if (this.timerKind === TimerKind.Persist && this.wnd > 0) {
      this.stopTimer();
      this.persistBackoff = 0;
    }
    return AckVerdict.Ok;
  }

  private onNewAck(ack: Seq, now: number, out: SenderOutput): void {
    const acked = seqSub(ack, this.una);
    if (this.timing && seqGe(ack, this.rttSeq)) {
      this.rto.sample(now - this.rttStart);
      this.timing = false;
    }
    this.una = ack;
    if (seqLt(this.nxt, ack)) this.nxt = ack;
    const dataAcked = Math.min(seqSub(ack, this.bufSeq), this.buf.length);
    if (dataAcked > 0) {
      this.buf.consume(dataAcked);
      this.bufSeq = seqAdd(this.bufSeq, dataAcked);
    }
    this.sb.advance(ack);
    this.retries = 0;
    this.rto.resetBackoff();

    const cc = this.cc;
    if (cc.inRecovery) {
      if (seqGe(ack, cc.recover)) {
        cc.exitRecovery(seqSub(this.max, this.una));
      } else if (!this.sack) {
        // Partial ACK (RFC 6582 §3.2 step 5): retransmit the next segment, deflate.
        cc.partialAck(acked);
        this.sendRange(this.una, this.mss, now, out, true, false);
      }
    } else {
      cc.dupAcks = 0;
      cc.onAck(acked);
    }

    if (this.tlpOut && seqGe(ack, this.tlpHigh)) this.tlpOut = false;
    if (this.una === this.max) this.stopTimer();
    else this.armRtxOrProbe(now); // RFC 6298 §5.3; RFC 8985 §7.2
  }

  private enterRecovery(now: number, out: SenderOutput): void {
    const flight = seqSub(this.max, this.una);
    this.cc.enterRecovery(flight, this.max, this.sack);
    if (this.timerKind === TimerKind.Probe) {
      this.timerKind = TimerKind.Rtx; // no probes during recovery: the RTO guards it
      this.deadline = now + this.rto.rto;
    }
    this.stats.fastRetransmits++;
    if (this.sack) this.stats.sackRecoveries++;
    // Retransmit the first segment presumed lost (RFC 5681 §3.2 step 2; RFC 6675 §5 step 4.2).
    let len = this.mss;
    if (this.sack) {
      const hole = this.sb.nextHole(this.una, this.sb.highest(this.una));
      if (hole > 0) len = Math.min(hole, this.mss);
    }
    this.markRtxUna();
    const n = this.sendRange(this.una, len, now, out, true, false);
    this.highRxt = seqAdd(this.una, n);
  }

  private markRtxUna(): void {
    this.rtxUnaSeq = this.una;
    this.rtxUnaMark = this.max;
  }

  /**
   * The RTO or persist timer expired (synchronized states). Returns false when the connection
   * must be given up (too many retries).
   */
  onTimer(now: number, out: SenderOutput): boolean {
    const kind = this.timerKind;
    this.stopTimer();
    if (kind === TimerKind.Persist) return this.onPersist(now, out);
    if (this.una === this.max) return true;
    if (kind === TimerKind.Probe) {
      this.sendProbe(now, out);
      return true;
    }
    if (kind !== TimerKind.Rtx) return true;
    if (++this.retries > this.config.maxRetransmits) {
      this.stats.retransmitTimeouts++;
      return false;
    }
    this.stats.rtoTimeouts++;
    this.rto.onTimeout();
    this.cc.onTimeout(seqSub(this.max, this.una), this.max);
    this.sb.clear();
    this.timing = false;
    this.tlpOut = false;
    this.nxt = this.una;
    this.highRxt = this.una;
    // The segment at UNA goes regardless of the window: after a shrink to zero it is the probe.
    this.sendRange(this.una, this.mss, now, out, true, true);
    return true;
  }

  /**
   * Tail loss probe (RFC 8985 §7.3): new data if the window allows, else the last segment sent,
   * so that a loss at the tail of a flight draws a SACK (→ fast recovery) instead of an RTO.
   */
  private sendProbe(now: number, out: SenderOutput): void {
    this.stats.tailLossProbes++;
    const unsent = seqSub(this.dataEnd(), this.nxt);
    const wndRoom = seqSub(seqAdd(this.una, this.wnd), this.nxt);
    if (unsent > 0 && wndRoom >= Math.min(unsent, this.mss)) {
      this.sendRange(this.nxt, Math.min(unsent, this.mss), now, out, seqLt(this.nxt, this.max), true);
    } else {
      const lastEnd = this.finQueued && seqGt(this.max, this.finSeq) ? this.finSeq : this.max;
      const start = seqMax(this.una, seqAdd(lastEnd, -this.mss));
      this.sendRange(start, seqSub(lastEnd, start), now, out, true, false);
    }
    this.tlpOut = true;
    this.tlpHigh = this.max;
    this.timerKind = TimerKind.Rtx;
    this.deadline = now + this.rto.rto;
  }

  private onPersist(now: number, out: SenderOutput): boolean {
    if (this.wnd > 0 || seqSub(this.dataEnd(), this.nxt) <= 0) return true; // output takes over
    if (++this.retries > this.config.maxRetransmits) {
      this.stats.retransmitTimeouts++;
      return false;
    }
    this.stats.windowProbes++;
    // One byte beyond the window; NXT stays, MAX covers it so an ACK of it is acceptable.
    this.sendRange(this.nxt, 1, now, out, false, false);
    this.timing = false;
    this.persistBackoff++;
    this.armPersist(now);
    return true;
  }

  /**
   * The sequence number for a segment without data (pure ACK, RST): SND.MAX — never the
   * rewound NXT of a go-back-N retransmission, which the peer (whose RCV.NXT may already be past
   * it) would find unacceptable and answer with an ACK of its own, forever — but not beyond the
   * peer's window (Linux tcp_acceptable_seq).
   */
  ackSeq(): Seq {
    const edge = seqAdd(this.una, this.wnd);
    return seqLe(this.max, edge) ? this.max : seqMax(edge, this.una);
  }

  /** Whether data or FIN is outstanding (sent, unacknowledged). */
  get outstanding(): boolean {
    return this.una !== this.max;
  }
}
