/**
 * DNS over TCP for a guest connection to 10.0.2.3:53 (RFC 1035 §4.2.2, RFC 7766): the host side
 * of a TCP NAT flow that is not a socket but the forwarder.
 *
 * Theory of operation: the guest's byte stream is split into messages by their 2-byte length
 * prefix; each goes to the forwarder as a TCP query, and each answer goes back with its prefix, in
 * whatever order they complete (RFC 7766 allows out-of-order answers; the ids tell them apart).
 * When the guest half-closes, we finish the answers still owed and then end our side.
 *
 * Ownership: the bytes `write` gets are a view into a write slab (src/nat/write-slabs.ts) that is
 * reused for other flows as soon as we call `done`. So every byte kept past `write` is copied
 * first, and `done` (the receive credit the flow returns to the guest) is called only once the
 * write's bytes are consumed: parsed into a query we dispatched, or held as the one incomplete
 * message at the head of the stream (bounded by the 16-bit length). Bytes beyond that while we
 * are blocked stay unconsumed, so the guest's window closes: TCP backpressure, not our memory.
 *
 * Blocked means: `MAX_OUTSTANDING` answers owed (in flight at the forwarder plus waiting to go to
 * the guest), or `MAX_QUEUED_BYTES` of answers waiting. Answers honour the flow's backpressure:
 * once `events.data` returns false (the flow paused us) nothing more is handed over until
 * `resume()`, so the flow never has to concatenate answers it cannot send (a zero-window guest
 * used to make that quadratic and unbounded).
 *
 * `DnsTcpService` counts live connections and refuses beyond `maxConnections` (the flow gets a
 * RST): each connection may hold up to a message and its owed answers, so their number is bounded.
 */
import type { HostEndpoint, HostEvents } from '../nat/tcp.ts';
import type { DnsForwarder } from './forwarder.ts';

/** Answers owed per connection (in flight + queued): RFC 7766 §6.2.1.1 pipelining, bounded. */
export const MAX_OUTSTANDING = 32;
/** Answer bytes waiting for the guest's window before we stop reading queries. */
export const MAX_QUEUED_BYTES = 128 * 1024;
/** DNS-over-TCP connections at once (engine-wide) unless configured otherwise. */
export const DEFAULT_MAX_DNS_TCP_CONNECTIONS = 64;

export function createDnsTcpStats() {
  return {
    /** Gauge: connections open now. */
    connections: 0,
    connectionsOpened: 0,
    /** Guest connections refused (RST) because `maxConnections` were open. */
    connectionLimit: 0,
    queries: 0,
    answers: 0,
    /** Times reading queries stopped because too many answers were owed or queued. */
    blocked: 0,
    /** Bytes of an incomplete message dropped when the guest closed or the flow ended. */
    partialDropped: 0,
  };
}
export type DnsTcpStats = ReturnType<typeof createDnsTcpStats>;

/** The part of the forwarder this endpoint uses (tests substitute their own). */
export type DnsQueryFn = Pick<DnsForwarder, 'query'>;

/** Makes endpoints for guest connections to the DNS address, within a connection cap. */
export class DnsTcpService {
  readonly stats = createDnsTcpStats();
  constructor(
    private readonly forwarder: DnsQueryFn,
    private readonly maxConnections = DEFAULT_MAX_DNS_TCP_CONNECTIONS,
  ) {}

  /** An endpoint for a new guest connection, or undefined when at the cap (the flow sends RST). */
  open(events: HostEvents): DnsTcpEndpoint | undefined {
    if (this.stats.connections >= this.maxConnections) {
      this.stats.connectionLimit++;
      return undefined;
    }
    this.stats.connections++;
    this.stats.connectionsOpened++;
    return new DnsTcpEndpoint(this.forwarder, events, this.stats);
  }
}

interface Credit {
  /** Stream offset just past this write's bytes. */
  end: number;
  done: () => void;
}

export class DnsTcpEndpoint implements HostEndpoint {
  /** Owned copies of received bytes not yet parsed, oldest first. */
  private readonly chunks: Buffer[] = [];
  private buffered = 0;
  /** Stream offsets: bytes received so far, and bytes consumed (credited) so far. */
  private received = 0;
  private consumed = 0;
  private readonly credits: Credit[] = [];
  /** Answers (with their prefix) waiting to go to the guest, and their bytes. */
  private readonly out: Buffer[] = [];
  private outBytes = 0;
  private inFlight = 0;
  private paused = false;
  private guestEnded = false;
  private done = false;
  private released = false;
  private wasBlocked = false;

  constructor(
    private readonly forwarder: DnsQueryFn,
    private readonly events: HostEvents,
    private readonly stats: DnsTcpStats = createDnsTcpStats(),
  ) {}

  write(data: Buffer, done: () => void): void {
    if (this.done) return queueMicrotask(done);
    if (data.length > 0) {
      // A copy: `data` lives in a slab that another flow's bytes overwrite once `done` has run.
      this.chunks.push(Buffer.from(data));
      this.buffered += data.length;
      this.received += data.length;
    }
    this.credits.push({ end: this.received, done });
    this.parse();
  }

  private blocked(): boolean {
    return this.inFlight + this.out.length >= MAX_OUTSTANDING || this.outBytes >= MAX_QUEUED_BYTES;
  }

  /** Dispatches every complete message we may; then credits what is consumed. */
  private parse(): void {
    let incomplete = false;
    while (!this.done) {
      if (this.blocked()) {
        if (!this.wasBlocked) this.stats.blocked++;
        this.wasBlocked = true;
        break;
      }
      this.wasBlocked = false;
      if (this.buffered < 2) {
        incomplete = true;
        break;
      }
      const len = this.peekLength();
      if (this.buffered < 2 + len) {
        incomplete = true;
        break;
      }
      const msg = this.take(2 + len).subarray(2);
      this.consumed += 2 + len;
      this.dispatch(msg);
    }
    // The incomplete message at the head is held in our own bounded copy: its bytes count as
    // consumed, so a message larger than a small window still arrives whole.
    if (incomplete || this.done) this.consumed = this.received;
    this.credit();
  }

  private dispatch(msg: Buffer): void {
    this.inFlight++;
    this.stats.queries++;
    this.forwarder.query(msg, 'tcp', (answer) => {
      this.inFlight--;
      if (this.done) return;
      this.stats.answers++;
      const framed = Buffer.allocUnsafe(2 + answer.length);
      framed.writeUInt16BE(answer.length, 0);
      framed.set(answer, 2);
      this.out.push(framed);
      this.outBytes += framed.length;
      this.flush();
      this.parse();
      this.maybeEnd();
    });
  }

  /** Hands queued answers to the flow until it pauses us. */
  private flush(): void {
    while (!this.paused && !this.done && this.out.length > 0) {
      const a = this.out.shift()!;
      this.outBytes -= a.length;
      // False: the flow took `a` (holding what did not fit) and paused us; pause() has run.
      if (!this.events.data(a)) this.paused = true;
    }
  }

  /**
   * Returns credit for consumed writes, on a microtask: `done` reopens the guest's window, which
   * must not happen inside the connection's own input processing that called `write`.
   */
  private credit(): void {
    const due: (() => void)[] = [];
    while (this.credits.length > 0 && this.credits[0]!.end <= this.consumed) due.push(this.credits.shift()!.done);
    if (due.length > 0) queueMicrotask(() => due.forEach((d) => d()));
  }

  private peekLength(): number {
    const first = this.chunks[0]!;
    if (first.length >= 2) return first.readUInt16BE(0);
    return (first[0]! << 8) | this.chunks[1]![0]!;
  }

  /** Removes and returns the first `n` buffered bytes (a view when they lie in one chunk). */
  private take(n: number): Buffer {
    this.buffered -= n;
    const first = this.chunks[0]!;
    if (first.length > n) {
      this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    if (first.length === n) {
      this.chunks.shift();
      return first;
    }
    const out = Buffer.allocUnsafe(n);
    let at = 0;
    while (at < n) {
      const c = this.chunks[0]!;
      const k = Math.min(c.length, n - at);
      out.set(c.subarray(0, k), at);
      at += k;
      if (k === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
    }
    return out;
  }

  private maybeEnd(): void {
    if (!this.guestEnded || this.done || this.inFlight > 0 || this.out.length > 0) return;
    if (this.buffered >= 2 && this.buffered >= 2 + this.peekLength()) return; // more to parse
    this.finish();
    this.events.end();
  }

  /** No more answers: drop what is held, give back all credit, leave the connection count. */
  private finish(): void {
    this.done = true;
    if (this.buffered > 0) this.stats.partialDropped += this.buffered;
    this.chunks.length = 0;
    this.buffered = 0;
    this.out.length = 0;
    this.outBytes = 0;
    this.consumed = this.received;
    this.credit();
    if (!this.released) {
      this.released = true;
      this.stats.connections--;
    }
  }

  end(): void {
    this.guestEnded = true;
    this.parse();
    this.maybeEnd();
  }

  destroy(): void {
    if (!this.done) this.finish();
  }
  pause(): void {
    this.paused = true;
  }
  resume(): void {
    this.paused = false;
    this.flush();
    this.parse();
    this.maybeEnd();
  }
  cork(): void {}
  uncork(): void {}
}
