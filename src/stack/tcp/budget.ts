/**
 * One budget for the bytes every TCP connection buffers (`--max-buffer-memory`).
 *
 * Theory of operation: each connection's buffers are bounded on their own (a send ring of at most
 * `sendBufferSize`, an out-of-order queue of at most `maxOooBytes`), but thousands of connections
 * multiply that into gigabytes — a guest (or whoever reaches a forward) that opens many and fills
 * them could exhaust the host. So every byte of send-ring capacity and of out-of-order data is
 * charged here, and refunded when freed:
 *  - out-of-order data is what goes first: past the budget it is refused (the guest's TCP
 *    retransmits it; nothing acknowledged is ever lost);
 *  - a send ring grows only while the budget allows; every connection may always have its first
 *    16 KiB (so none stalls), beyond that a host socket is simply read more slowly;
 *  - under pressure (above 3/4 of the budget) receive windows stop growing past 64 KiB, so the
 *    data in flight towards vmnat shrinks too.
 * The budget is a soft ceiling by at most that 16 KiB floor per connection, and `--max-flows`
 * bounds the number of connections.
 */
export class BufferBudget {
  /** Bytes charged now. */
  used = 0;
  /** The most ever charged. */
  peak = 0;
  readonly stats = { oooRefused: 0, sendGrowthRefused: 0 };

  constructor(readonly limit: number) {}

  /** Charges `n` bytes if they fit; false (nothing charged) if not. */
  tryCharge(n: number): boolean {
    if (this.used + n > this.limit) return false;
    this.charge(n);
    return true;
  }

  /** Charges `n` bytes whatever the limit (a guaranteed floor). */
  charge(n: number): void {
    this.used += n;
    if (this.used > this.peak) this.peak = this.used;
  }

  refund(n: number): void {
    this.used -= n;
  }

  /** Above 3/4 of the limit: windows stop growing. */
  get pressure(): boolean {
    return this.used > this.limit * 0.75;
  }
}

/** What a receive window may grow to under pressure. */
export const PRESSURE_WINDOW = 64 * 1024;
