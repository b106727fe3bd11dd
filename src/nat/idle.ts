/**
 * Idle expiry for a table of flows, behind the engine's one timer.
 *
 * Theory of operation: a flow records `lastActive`; rather than a timer per flow, the table is
 * swept at most once per `everyMs` while it holds flows (the timeouts are seconds long, so a
 * second of slack is fine), and the sweep stops when the table is empty. `arm` says whether the
 * engine's timer must be woken for a newly armed sweep.
 */
export class IdleSweep {
  private next: number | undefined;

  constructor(
    private readonly timeoutMs: number,
    private readonly everyMs = 1000,
  ) {}

  /** A flow was added: start sweeping if we were not. True if the caller must wake the timer. */
  arm(now: number): boolean {
    if (this.next !== undefined) return false;
    this.next = now + this.everyMs;
    return true;
  }

  /** If a sweep is due, calls `expire` for every flow idle past the timeout. */
  run<F extends { lastActive: number }>(now: number, flows: Iterable<F>, expire: (flow: F) => void, remaining: () => number): void {
    if (this.next === undefined || now < this.next) return;
    const limit = now - this.timeoutMs;
    for (const flow of [...flows]) if (flow.lastActive <= limit) expire(flow);
    this.next = remaining() > 0 ? now + this.everyMs : undefined;
  }

  get deadline(): number | undefined {
    return this.next;
  }

  stop(): void {
    this.next = undefined;
  }
}
