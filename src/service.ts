/**
 * Services: everything in the engine that keeps time or counts something, behind one interface.
 *
 * Theory of operation: the engine runs one timer for all of vmnat (design: sans-I/O machines say
 * when they next need a poll). A service — the stack, DHCP, the DNS forwarder, the NATs, the
 * switch, and whatever comes next (TFTP, NDP) — is registered once under its name: the engine
 * polls it when its deadline is due, asks every service for its next deadline to arm the timer,
 * gathers `counters()` under `name` for `/stats` and SIGUSR1, and closes services in reverse order
 * of registration at exit. Adding a service therefore touches no constructor, timer or stats code.
 */
export interface Service {
  /** Its key in the stats (`dhcp`, `tcpNat`, …). */
  readonly name: string;
  /** Runs what is due at `now` (ms, monotonic). */
  poll(now: number): void;
  /** When it next needs a poll, or undefined for never (until new input arrives). */
  nextDeadline(): number | undefined;
  /** Its counters, a plain object (copied out by the caller). */
  counters(): object;
  /** Stops it at exit: sockets closed, timers gone. */
  close(): void | Promise<void>;
}

/** A service from the parts an existing machine already has (most keep `stats` as a field). */
export function service(
  name: string,
  machine: { poll?(now: number): void; nextDeadline?(): number | undefined },
  counters: () => object,
  close: () => void | Promise<void> = () => undefined,
): Service {
  const out: Service = {
    name,
    poll: (now) => machine.poll?.(now),
    nextDeadline: () => machine.nextDeadline?.(),
    counters,
    close,
  };
  if (machine.nextDeadline === undefined) untimed.add(out);
  return out;
}

/** Services made from a machine without deadlines: `Services.nextDeadline` skips them. */
const untimed = new WeakSet<Service>();

/** The engine's registry: one list, polled and closed in order. */
export class Services {
  private readonly list: Service[] = [];
  /**
   * Those that can have a deadline: the engine asks after every frame batch and host event, so
   * the dozen that never have one (counters only) are not asked each time.
   */
  private readonly timed: Service[] = [];

  register(s: Service): void {
    if (this.list.some((x) => x.name === s.name)) throw new Error(`service ${s.name} registered twice`);
    this.list.push(s);
    if (!untimed.has(s)) this.timed.push(s);
  }

  get all(): readonly Service[] {
    return this.list;
  }

  /** The earliest deadline any service reported. */
  nextDeadline(): number {
    let at = Infinity;
    for (const s of this.timed) {
      const d = s.nextDeadline();
      if (d !== undefined && d < at) at = d;
    }
    return at;
  }

  counters(): Record<string, object> {
    const out: Record<string, object> = {};
    for (const s of this.list) out[s.name] = s.counters();
    return out;
  }

  async close(): Promise<void> {
    for (const s of [...this.list].reverse()) await s.close();
  }
}
