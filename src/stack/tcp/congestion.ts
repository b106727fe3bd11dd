/**
 * Congestion control: NewReno (RFC 5681, RFC 6582), with RFC 6675's pipe when SACK is in use.
 *
 * Theory of operation: `cwnd` bounds the bytes in flight. Slow start grows it by up to 2 SMSS per
 * ACK (RFC 3465 appropriate byte counting, L = 2) until `ssthresh`; congestion avoidance then adds
 * one SMSS per cwnd of acknowledged bytes. Loss detected by duplicate ACKs (or by SACK) halves the
 * window and enters fast recovery until everything sent before the loss (`recover`) is
 * acknowledged:
 *  - without SACK, classic NewReno: cwnd = ssthresh + 3 SMSS, inflated by one SMSS per further
 *    duplicate ACK, deflated on partial ACKs (RFC 6582 §3.2), where the sender retransmits the
 *    next unacknowledged segment;
 *  - with SACK, cwnd = ssthresh and the sender compares it with its pipe estimate (RFC 6675),
 *    retransmitting holes before sending new data.
 * An RTO collapses cwnd to one SMSS (RFC 5681 §3.1, loss window) and ends recovery.
 * The sender (sender.ts) owns sequence state and decides what to send; this holds only the numbers.
 *
 * Limits: cwnd is capped at `maxCwnd` (the send buffer size: flight can never exceed it), so an
 * app-limited connection cannot grow it without bound. No HyStart/CUBIC: on a local link the RTT is
 * tiny and slow start reaches any useful window within a few round trips.
 */
import type { Seq } from './seq.ts';

/** Duplicate ACKs that trigger fast retransmit (RFC 5681 DupThresh). */
export const DUP_THRESH = 3;

export class NewReno {
  cwnd: number;
  ssthresh = 0x7fff_ffff;
  inRecovery = false;
  /** SND.MAX when recovery began (RFC 6582 "recover"). */
  recover: Seq;
  dupAcks = 0;
  private caAcked = 0;

  constructor(
    private mss: number,
    private readonly initialSegments: number,
    private readonly maxCwnd: number,
    iss: Seq,
  ) {
    this.cwnd = this.initialWindow();
    this.recover = iss;
  }

  /** RFC 6928 initial window, bounded by the cap. */
  initialWindow(): number {
    return Math.min(this.maxCwnd, Math.max(2 * this.mss, this.initialSegments * this.mss));
  }

  /** The send MSS changed (handshake): restart from the initial window. */
  setMss(mss: number): void {
    this.mss = mss;
    this.cwnd = this.initialWindow();
  }

  /** New data acknowledged outside recovery (RFC 5681 §3.1). */
  onAck(acked: number): void {
    if (this.cwnd < this.ssthresh) {
      this.cwnd += Math.min(acked, 2 * this.mss);
    } else {
      this.caAcked += acked;
      if (this.caAcked >= this.cwnd) {
        this.caAcked -= this.cwnd;
        this.cwnd += this.mss;
      }
    }
    if (this.cwnd > this.maxCwnd) this.cwnd = this.maxCwnd;
  }

  /** Loss detected by duplicate ACKs/SACK (RFC 5681 §3.2 step 2, RFC 6675 §5 step 4). */
  enterRecovery(flight: number, sndMax: Seq, sack: boolean): void {
    this.ssthresh = Math.max(Math.floor(flight / 2), 2 * this.mss);
    this.cwnd = sack ? this.ssthresh : this.ssthresh + DUP_THRESH * this.mss;
    this.inRecovery = true;
    this.recover = sndMax;
    this.caAcked = 0;
  }

  /** A further duplicate ACK during non-SACK recovery (RFC 5681 §3.2 step 4: inflate). */
  inflate(): void {
    this.cwnd = Math.min(this.cwnd + this.mss, this.maxCwnd + DUP_THRESH * this.mss);
  }

  /** Partial ACK during non-SACK recovery (RFC 6582 §3.2 step 5: deflate). */
  partialAck(acked: number): void {
    this.cwnd = Math.max(this.cwnd - acked + (acked >= this.mss ? this.mss : 0), this.mss);
  }

  /** Full ACK: leave recovery (RFC 6582 §3.2 step 3, option 1). */
  exitRecovery(flight: number): void {
    this.cwnd = Math.min(this.ssthresh, Math.max(flight, this.mss) + this.mss);
    this.inRecovery = false;
    this.dupAcks = 0;
  }

  /** Retransmission timeout (RFC 5681 §3.1 eq. 4; RFC 6582 §4: recover = SND.MAX). */
  onTimeout(flight: number, sndMax: Seq): void {
    this.ssthresh = Math.max(Math.floor(flight / 2), 2 * this.mss);
    this.cwnd = this.mss;
    this.inRecovery = false;
    this.dupAcks = 0;
    this.caAcked = 0;
    this.recover = sndMax;
  }

  /** Restart after idle (RFC 5681 §4.1): no burst of a stale window. */
  restartAfterIdle(): void {
    this.cwnd = Math.min(this.cwnd, this.initialWindow());
  }
}


