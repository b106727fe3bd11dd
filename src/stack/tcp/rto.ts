/**
 * Retransmission timeout (RFC 6298).
 *
 * Theory of operation: SRTT and RTTVAR are updated from one sample per round trip (the sender times
 * one segment at a time and discards the timing when that segment is retransmitted: Karn's
 * algorithm). RTO = SRTT + max(G, 4·RTTVAR), clamped to [minRto, maxRto]. Each expiry doubles the
 * timeout (exponential backoff, RFC 6298 §5.5); the backoff is cleared when new data is
 * acknowledged. Before the first sample the RTO is `initialRto` (1 s, RFC 6298 §2.1).
 *
 * Choices: min RTO defaults to 200 ms (Linux's TCP_RTO_MIN), not RFC 6298's 1 s — the link is
 * local and a guest behind it uses 200 ms too. Times are milliseconds (fractions allowed).
 */

/** Clock granularity G in ms (RFC 6298 §2). */
const GRANULARITY_MS = 1;
const MAX_BACKOFF = 16;

export class RtoEstimator {
  srtt = 0;
  rttvar = 0;
  hasSample = false;
  /** Backoff exponent: RTO is doubled this many times. */
  backoff = 0;
  /** The current timeout, backoff applied (kept up to date: read on every ACK). */
  rto: number;
  private base: number;

  constructor(
    private readonly initial: number,
    private readonly min: number,
    private readonly max: number,
  ) {
    this.base = initial;
    this.rto = initial;
  }

  private update(): void {
    this.rto = Math.min(this.max, this.base * 2 ** this.backoff);
  }

  /** Feeds one RTT measurement (RFC 6298 §2.2, §2.3). */
  sample(rtt: number): void {
    const r = Math.max(0, rtt);
    if (!this.hasSample) {
      this.srtt = r;
      this.rttvar = r / 2;
      this.hasSample = true;
    } else {
      this.rttvar = 0.75 * this.rttvar + 0.25 * Math.abs(this.srtt - r);
      this.srtt = 0.875 * this.srtt + 0.125 * r;
    }
    this.base = Math.min(this.max, Math.max(this.min, this.srtt + Math.max(GRANULARITY_MS, 4 * this.rttvar)));
    this.backoff = 0;
    this.update();
  }

  /** A retransmission timer expired (RFC 6298 §5.5). */
  onTimeout(): void {
    if (this.backoff < MAX_BACKOFF) this.backoff++;
    this.update();
  }

  resetBackoff(): void {
    if (this.backoff === 0) return;
    this.backoff = 0;
    this.update();
  }

  /** Back to the initial RTO, keeping nothing (RFC 6298 §5.7 after SYN retransmissions). */
  resetToInitial(): void {
    this.base = this.initial;
    this.update();
  }
}
