/**
 * The fault barrier: a bug met while handling one frame or one host event costs that frame or
 * that flow, never the process.
 *
 * Theory of operation: guest input never throws by design (every drop is a named counter), so an
 * exception inside vmnat is a bug — but a bug a hostile guest may be able to trigger on purpose,
 * and vmnat serves every other flow and forward of every guest. So each entry point where work
 * arrives catches what escapes it: the engine around each frame of a batch and around each
 * machine's `poll`; the TCP NAT around each flow's host events and timers (and then resets that
 * flow, whose state can no longer be trusted); the CLI, last, with `uncaughtException` for host
 * events of any other service. Each catch lands here: `internalErrors` counts it, and the first
 * fault of each distinct stack is logged with that stack (a guest repeating one fault cannot flood
 * the log; a second, different bug is still seen).
 */

/** Distinct stacks remembered for "log once": beyond this, faults are counted, not logged. */
const MAX_DISTINCT = 64;

export class FaultBarrier {
  /** Every fault caught, logged or not (`engine.internalErrors` in the stats). */
  internalErrors = 0;
  private readonly seen = new Set<string>();

  constructor(private readonly logError: (msg: string) => void) {}

  /** Records a fault caught while doing `where`; logs its stack the first time that stack is seen. */
  caught(where: string, err: unknown): void {
    this.internalErrors++;
    const stack = err instanceof Error ? (err.stack ?? `${err.name}: ${err.message}`) : String(err);
    const key = `${where}\n${stack}`;
    if (this.seen.has(key) || this.seen.size >= MAX_DISTINCT) return;
    this.seen.add(key);
    this.logError(`internal error while ${where} (counted in engine.internalErrors; vmnat goes on): ${stack}`);
  }
}
