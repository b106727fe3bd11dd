/**
 * TCP through the NAT: guest connections terminated by vmnat's own TCP (src/stack/tcp) and
 * carried over ordinary host sockets.
 *
 * Theory of operation. A flow is the 4-tuple (guest address:port → destination address:port), a
 * `TcpConnection` on the guest side and a host endpoint on the other: for a flow the guest opens
 * to a numeric address, a socket the addon owns (`NativeEndpoint` over native/src/host_tcp.cc:
 * an fd and a uv_poll, reads into one shared buffer, writes straight to send()); for port
 * forwards and guest forwards to unix sockets, a `net.Socket`; the DNS forwarder for 10.0.2.3:53.
 * Host events run as a batch of the engine's (TcpNatOptions.hostBatch): what they send to the
 * guest is flushed once when the event ends.
 *  - Dial the host first: a guest SYN with no flow starts a host connect and is remembered; the
 *    guest's SYN retransmissions meanwhile are dropped. Success → `acceptSyn` (SYN-ACK); refused →
 *    RST; unreachable or a connect timeout → ICMP destination unreachable quoting the SYN. Flows in
 *    this state are "half-open" and capped (`maxHalfOpen`), as is the whole table (`maxFlows`).
 *  - Guest → host: in-order bytes arrive in `onData` as views into the frame; they are copied into
 *    a slab (write-slabs.ts), a flow's segments of one frame batch side by side, and written to the
 *    socket once at the end of the batch (one write per flow and batch; cork/uncork put every
 *    write through the stream's buffered path and an array of chunks). Should a flow's copies not be
 *    contiguous (a slab filled up), the earlier one is written at once with the socket corked until
 *    the batch ends, so it is still one writev. Each write's callback returns that many bytes of receive credit
 *    to the connection, so a host socket that stops draining shuts the guest's window:
 *    backpressure without an unbounded queue.
 *  - Host → guest: socket data goes into the connection's bounded send buffer; what does not fit
 *    is held (one chunk) and the socket is paused until `onWritable`.
 *  - Half-close both ways: guest FIN → `socket.end()`; host 'end' → `shutdownWrite` (FIN to the
 *    guest after the data). A host error or reset → RST to the guest; a guest RST or a TCP timeout
 *    → the host socket is reset.
 *  - Timers: each connection has one deadline; a heap (deadlines.ts) gives the engine the earliest.
 *  - Segments for no flow get the RFC 9293 CLOSED-state answer (RST), except RSTs.
 *  - A full table gives a new guest flow the place of the oldest flow in TIME-WAIT
 *    (evictTimeWait): such a flow holds no data and no socket, only its 4-tuple.
 */
import fs from 'node:fs';
import net from 'node:net';
import { debuglog, getSystemErrorName } from 'node:util';
import type { Stack } from '../stack/stack.ts';
import type { Ipv4View } from '../stack/wire/ipv4.ts';
import { Ipv6View } from '../stack/wire/ipv6.ts';
import { ipv4AddrSum } from '../stack/wire/checksum.ts';
import { TcpFlag, TcpView, createTcpOptions } from '../stack/wire/tcp.ts';
import { IcmpType, IcmpUnreachCode } from '../stack/wire/icmpv4.ts';
import { formatIpPort, type IpAddr, type Ipv4Addr, type MacAddr } from '../stack/wire/addr.ts';
import {
  TcpConnection,
  TcpOutSegment,
  TcpSegment,
  createTcpStats,
  fillSegment,
  rstForSegment,
  type CloseReason,
  type TcpConfig,
  type TcpHost,
  type TcpStats,
} from '../stack/tcp/index.ts';
import { DeadlineHeap, type Scheduled } from './deadlines.ts';
import { WriteSlabs, type WriteSlab } from './write-slabs.ts';
import type { FaultBarrier } from '../fault.ts';
import { HOST_TCP_CONNECTED_NOW, HOST_TCP_READ_EOF, HostTcpEvent, socketDescriptor, type NativeHostTcp, type NativeHostTcpCallback } from '../link/native.ts';
import { emptyList } from '../lists.ts';
import { FlowTable, sideKey, type FlowAdmission, type FlowEntry, type FlowIndex, type SideKey } from './flows.ts';

const trace = debuglog('vmnat');
/** How often idle flows are looked for: the timeout is coarse (hours by default), so is this. */
const SWEEP_MS = 10_000;
/** One read from a dialed host socket: Node's own default read size. */
const HOST_READ_BYTES = 64 * 1024;
/** Closed dialed sockets kept for reuse (see DialSocket); a burst of closes beyond it is collected. */
const DIAL_POOL_MAX = 256;
/** HostTcp.connect's answer for a host that is not a numeric address (-EINVAL). */
const EINVAL_ERRNO = 22;

export interface TcpNatOptions {
  maxFlows: number;
  /** A flow with no segment either way for this long is reset both ways (0 = never). */
  idleTimeoutMs: number;
  maxHalfOpen: number;
  dialTimeoutMs: number;
  gateway: Ipv4Addr;
  /** The addon's dup(): lets port forwards re-wrap accepted sockets to read with `onread`. */
  dupFd?: (fd: number) => number;
  /** Where a bug met in one flow is counted and logged (the flow is then reset); see fault.ts. */
  faults?: FaultBarrier;
  /** The engine's flow table (flows.ts); a NAT made alone keeps a table of its own. */
  table?: FlowTable;
  /** The filter's say on each new outbound flow (flows.ts); absent = every flow may open. */
  admit?: FlowAdmission;
  /**
   * Port forwards have a budget apart from the guests' own flows, so that whoever reaches a
   * forward cannot fill the table and cost the guests their connections: at most this many
   * forwarded connections, this many still waiting for the guest's SYN-ACK, and this many from
   * one client address. Defaults: 4096, 128, 256.
   */
  maxForwardFlows?: number;
  maxForwardHalfOpen?: number;
  maxForwardPerSource?: number;
  /**
   * The addon's host sockets (native/src/host_tcp.cc): dialed flows to numeric addresses use
   * them instead of net.Socket. Absent (unit tests, or VMNAT_HOST_SOCKETS=node): Node sockets.
   */
  hostTcp?: (onEvent: NativeHostTcpCallback, readBuffer: Buffer) => NativeHostTcp;
  /**
   * Host events run inside this bracket (the engine's): what they send to the guests goes out in
   * one flush when the outermost event ends, with no setImmediate in between.
   */
  hostBatch?: { begin(): boolean; end(opened: boolean): void };
}

export function createTcpNatStats() {
  return {
    flowsOpened: 0, flowsClosed: 0, dialsRefused: 0, dialsUnreachable: 0, dialTimeouts: 0,
    synWhileDialing: 0, halfOpenLimit: 0, idleTimeouts: 0, forwardsOpened: 0, forwardsRewrapped: 0, dialSocketsReused: 0, forwardFailed: 0, flowLimit: 0, localServiceLimit: 0, refusedByPolicy: 0, rstForUnknown: 0,
    malformed: 0, badOptions: 0, bytesFromGuest: 0, bytesToGuest: 0, hostResets: 0, hostErrors: 0, internalErrors: 0,
    refusedByFilter: 0, closedByFilter: 0,
    forwardLimit: 0, forwardHalfOpenLimit: 0, forwardPerSourceLimit: 0, fdExhausted: 0,
    /** Dials through the addon's HostTcp, forwarded connections handed to it, and its sockets open now. */
    nativeDials: 0, nativeForwards: 0, nativeSocketsOpen: 0,
    /** Native dials whose connect had completed inside connect() (loopback): SYN-ACK at once. */
    dialsConnectedAtOnce: 0,
    /** Writes to an addon socket the kernel did not take whole (the rest waited for POLLOUT). */
    hostWritesBlocked: 0,
    /** Host answers taken by the read right after a write (readAfterWrites), a loop turn early. */
    readsAfterWrite: 0,
    /** Flows in TIME-WAIT closed early to make room for a new one (the table was full). */
    timeWaitEvicted: 0,
  };
}
export type TcpNatStats = ReturnType<typeof createTcpNatStats>;

/** The host side of a flow: a socket, or a local service (the DNS forwarder over TCP). */
export interface HostEndpoint {
  /** Writes guest bytes; `done` runs once they have left our process (credit goes back then). */
  write(data: Buffer, done: () => void): void;
  /** The guest half-closed. */
  end(): void;
  /** Tears down; `reset` asks for a RST to the host peer where that exists. */
  destroy(reset: boolean): void;
  pause(): void;
  resume(): void;
  cork(): void;
  uncork(): void;
}

/** A host connection the addon owns, as openToGuest hands it back: it reports when it closes. */
export interface HostConnection {
  once(event: 'close', listener: () => void): unknown;
}

/** What a host endpoint reports back to its flow. */
export interface HostEvents {
  /** Returns false when the sender should stop (the flow paused its source). */
  data(chunk: Uint8Array): boolean;
  end(): void;
  error(code: string | undefined): void;
}

/**
 * A factory for local services reached over TCP (10.0.2.3:53 → the DNS forwarder); undefined
 * refuses the connection (the service is at its connection cap): the guest gets a RST.
 */
export type LocalServiceFactory = (events: HostEvents) => HostEndpoint | undefined;

/** A host socket's end as `ss` shows it: `ip:port`, `[ipv6]:port`. */
function socketEnd(address: string, port: number): string {
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

class SocketEndpoint implements HostEndpoint {
  /**
   * `owner`: for a pooled socket (DialSocket), the flow this endpoint belongs to. Once the socket
   * has closed and serves another flow, calls through an old endpoint do nothing.
   */
  constructor(
    readonly socket: net.Socket,
    private readonly owner?: { dial: DialSocket; flow: TcpFlow },
  ) {}
  private stale(): boolean {
    return this.owner !== undefined && this.owner.dial.flow !== this.owner.flow;
  }
  write(data: Buffer, done: () => void): void {
    if (this.stale()) return; // the flow is gone: its slab copy is left to the garbage collector
    this.socket.write(data, done);
  }
  end(): void {
    if (!this.socket.destroyed && !this.stale()) this.socket.end();
  }
  destroy(reset: boolean): void {
    if (this.socket.destroyed || this.stale()) return;
    if (reset && typeof this.socket.resetAndDestroy === 'function' && !this.socket.connecting) {
      try {
        this.socket.resetAndDestroy();
      } catch {
        this.socket.destroy(); // not TCP (a unix socket forward): no RST to give
      }
    } else {
      this.socket.destroy();
    }
  }
  pause(): void {
    if (!this.stale()) this.socket.pause();
  }
  resume(): void {
    if (!this.stale()) this.socket.resume();
  }
  cork(): void {
    if (!this.stale()) this.socket.cork();
  }
  uncork(): void {
    if (!this.stale()) this.socket.uncork();
  }
  /**
   * The host socket's two ends as `ip:port` (what `ss`/netstat show for vmnat's process), so a
   * user can match a guest flow to a host connection; undefined once the socket is gone or serves
   * another flow.
   */
  ends(): { local: string; peer: string } | undefined {
    if (this.stale() || this.socket.destroyed) return undefined;
    const s = this.socket;
    if (s.localAddress === undefined || s.localPort === undefined || s.remoteAddress === undefined || s.remotePort === undefined) return undefined;
    return { local: socketEnd(s.localAddress, s.localPort), peer: socketEnd(s.remoteAddress, s.remotePort) };
  }
}

/**
 * A dialed flow's host socket owned by the addon (HostTcp). Writes go straight to the kernel;
 * what it does not take at once waits here, in order, until the socket is writable, and a FIN
 * (end) waits behind it. Once the host has ended and we have ended too, with nothing queued, the
 * socket is closed: both directions are done (Node's allowHalfOpen sockets destroy themselves at
 * that point as well).
 */
class NativeEndpoint implements HostEndpoint, HostConnection {
  private queue: { data: Uint8Array; done: () => void }[] | undefined = undefined;
  private endPending = false;
  private ended = false;
  /** The host's FIN was read. */
  eof = false;
  /** Queued for one read at the end of the batch (TcpNat.readAfterWrites). */
  readAfterWrite = false;
  gone = false;

  constructor(
    private readonly nat: TcpNat,
    private readonly sockets: NativeHostTcp,
    readonly slot: number,
    readonly flow: TcpFlow,
  ) {}

  write(data: Buffer, done: () => void): void {
    if (this.gone || this.ended || this.endPending) return;
    if (this.queue !== undefined) {
      this.queue.push({ data, done });
      return;
    }
    const n = this.sockets.write(this.slot, data);
    if (n === data.length) {
      // Out of our process: the credit goes back at the end of the batch (not inside the
      // connection's own input processing, where this write may have been made).
      this.nat.writesDone.push(done);
      if (!this.readAfterWrite) {
        this.readAfterWrite = true;
        this.nat.wroteNative.push(this);
      }
      return;
    }
    if (n < 0) {
      this.failed(n);
      return;
    }
    this.nat.stats.hostWritesBlocked++;
    this.queue = [{ data: data.subarray(n), done }];
  }

  /** The kernel takes bytes again (HostTcpEvent.Writable). */
  writable(): void {
    const q = this.queue;
    if (q === undefined || this.gone) return;
    while (q.length > 0) {
      const head = q[0]!;
      const n = this.sockets.write(this.slot, head.data);
      if (n < 0) {
        this.failed(n);
        return;
      }
      if (n < head.data.length) {
        head.data = head.data.subarray(n);
        return; // the addon watches for POLLOUT again
      }
      q.shift();
      head.done();
      if (this.gone) return;
    }
    this.queue = undefined;
    if (this.endPending) {
      this.endPending = false;
      this.end();
    }
  }

  /** A write failed (EPIPE, ECONNRESET): the flow hears it as a host error, after this call. */
  private failed(negErrno: number): void {
    const code = getSystemErrorName(negErrno);
    const f = this.flow;
    queueMicrotask(() => {
      if (!this.gone) this.nat.guard(f, 'handling a host socket write error', (g) => g.error(code));
    });
  }

  end(): void {
    if (this.gone) return;
    if (this.ended) {
      this.closeIfDone();
      return;
    }
    if (this.queue !== undefined) {
      this.endPending = true;
      return;
    }
    this.ended = true;
    this.sockets.shutdownWrite(this.slot);
    this.closeIfDone();
  }

  closeIfDone(): void {
    if (this.ended && this.eof && this.queue === undefined) this.destroy(false);
  }

  destroy(reset: boolean): void {
    if (this.gone) return;
    this.gone = true;
    this.queue = undefined; // their slab copies are left to the garbage collector
    this.sockets.close(this.slot, reset);
    this.nat.forgetSlot(this.slot, this);
    const closed = this.closeListener;
    this.closeListener = undefined;
    closed?.();
  }

  /** A port forward's connection: the forwarder hears when it closes (ForwardedConnection). */
  private closeListener: (() => void) | undefined = undefined;
  once(_event: 'close', listener: () => void): this {
    if (this.gone) queueMicrotask(listener);
    else this.closeListener = listener;
    return this;
  }

  pause(): void {
    if (!this.gone) this.sockets.setReading(this.slot, false);
  }
  resume(): void {
    if (!this.gone && !this.eof) this.sockets.setReading(this.slot, true);
  }
  // Each write is already one send() of the batch's whole copy: nothing to gather.
  cork(): void {}
  uncork(): void {}

  ends(): { local: string; peer: string } | undefined {
    if (this.gone) return undefined;
    const e = this.sockets.ends(this.slot);
    if (e === undefined) return undefined;
    return { local: socketEnd(e[0], e[1]), peer: socketEnd(e[2], e[3]) };
  }
}

/**
 * A dialed host socket that outlives its flow. Constructing a net.Socket (stream states, emitter,
 * listeners) and collecting it afterwards was a large share of vmnat's CPU per connection in the
 * connect+close benchmark; Node documents `connect()` again on a socket whose 'close' has fired,
 * so closed sockets go back to a small pool and the next dial reuses one (15–18 % less CPU per
 * connection). The listeners are attached once and dispatch to `flow`, the flow the socket serves
 * now; 'close' detaches it.
 */
class DialSocket {
  readonly socket: net.Socket;
  flow: TcpFlow | undefined;

  constructor(nat: TcpNat, readBuffer: Buffer, pool: DialSocket[], poolMax: number) {
    // `onread` is read by the Socket constructor; @types/node declares it on connect options only.
    const options: net.SocketConstructorOpts & Pick<net.TcpSocketConnectOpts, 'onread' | 'noDelay'> = {
      allowHalfOpen: true,
      noDelay: true,
      // Returning false stops reading, as pause() would; f.data has paused the socket already.
      onread: {
        buffer: readBuffer,
        callback: (n: number, buf: Uint8Array) => {
          const f = this.flow;
          if (f === undefined) return false;
          const opened = nat.hostBatchBegin();
          try {
            return f.data(buf.subarray(0, n));
          } catch (err) {
            nat.fault(f, 'reading a host socket', err);
            return false;
          } finally {
            nat.hostBatchEnd(opened);
          }
        },
      },
    };
    const socket = new net.Socket(options);
    this.socket = socket;
    socket.on('connect', () => {
      if (this.flow !== undefined) nat.guard(this.flow, 'completing a dial', (f) => nat.dialed(f));
    });
    socket.on('end', () => {
      if (this.flow !== undefined) nat.guard(this.flow, 'ending a host socket', (f) => f.end());
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (this.flow !== undefined) nat.guard(this.flow, 'handling a host socket error', (f) => f.error(err.code));
    });
    socket.on('close', () => {
      this.flow = undefined;
      // A paused or corked stream would carry that state into its next connection: not reused.
      if (pool.length < poolMax && !socket.isPaused() && socket.writableCorked === 0) pool.push(this);
    });
  }
}
export class TcpFlow implements TcpHost, HostEvents, Scheduled, FlowEntry {
  readonly proto = 'tcp' as const;
  /** The guests' network (one today; see flows.ts). */
  readonly net = 0;
  scheduledAt: number | undefined = undefined;
  conn: TcpConnection | undefined;
  host: HostEndpoint | undefined;
  /** While dialing: the guest's SYN and the start of its packet (for an ICMP error's quote). */
  syn: TcpSegment | undefined;
  synQuote: Uint8Array | undefined;
  dialTimer: NodeJS.Timeout | undefined;
  /** Host bytes the connection's send buffer could not take yet (the socket is paused meanwhile). */
  pendingFromHost: Buffer | undefined;
  hostEnded = false;
  corked = false;
  /** Guest payload of this batch not yet written to the host socket (one slab copy). */
  private unwritten: Buffer | undefined;
  private unwrittenSlab: WriteSlab | undefined;
  closed = false;
  bytesFromGuest = 0;
  bytesToGuest = 0;
  readonly openedAt: number;
  lastActive: number;

  constructor(
    private readonly nat: TcpNat,
    readonly guestMac: MacAddr,
    readonly guestIp: IpAddr,
    readonly guestPort: number,
    readonly dstIp: IpAddr,
    readonly dstPort: number,
    readonly hostAddress: string,
    now: number,
  ) {
    this.openedAt = now;
    this.lastActive = now;
  }

  // ---- TcpHost: the connection talks to us ----
  emit(seg: TcpOutSegment): void {
    this.nat.stack.sendTcp(this.guestMac, this.dstIp, this.dstPort, this.guestIp, this.guestPort, seg);
  }
  /** Set for flows into the guest (port forwards): the host socket waits for the handshake. */
  established: (() => void) | undefined;
  /** The port-forward rule that opened this flow, for listings. */
  forward: string | undefined;
  /**
   * A guest forward's host socket (--guestfwd): dialed instead of hostAddress:dstPort, and shown
   * in listings as `hostShown` (`unix:/PATH`, `tcp:HOST:PORT`).
   */
  connectTo: { path: string } | { host: string; port: number } | undefined = undefined;
  hostShown: string | undefined = undefined;
  /** A forwarded flow the guest has not answered yet (counted against the half-open budget). */
  forwardHalfOpen = false;
  onEstablished(): void {
    const hook = this.established;
    this.established = undefined;
    hook?.();
  }
  onData(buf: Uint8Array, off: number, len: number): void {
    const host = this.host;
    if (host === undefined) return;
    this.bytesFromGuest += len;
    this.nat.stats.bytesFromGuest += len;
    const slabs = this.nat.writeSlabs;
    const src = buf.subarray(off, off + len);
    const prev = this.unwritten;
    if (prev !== undefined) {
      const grown = slabs.append(prev, src);
      if (grown !== undefined) {
        this.unwritten = grown;
        return;
      }
      if (!this.corked) {
        this.corked = true;
        host.cork();
      }
      this.writeUnwritten();
    } else {
      this.nat.writers.push(this);
    }
    this.unwritten = slabs.copy(src);
    this.unwrittenSlab = slabs.lastSlab;
  }
  private dropUnwritten(): void {
    if (this.unwritten === undefined) return;
    this.nat.writeSlabs.release(this.unwrittenSlab);
    this.unwritten = undefined;
    this.unwrittenSlab = undefined;
  }
  /** End of the batch (or an earlier copy that cannot grow): hand the bytes to the socket. */
  writeUnwritten(): void {
    const data = this.unwritten;
    const host = this.host;
    if (data === undefined) return;
    if (host === undefined) {
      this.dropUnwritten();
      return;
    }
    const slab = this.unwrittenSlab;
    this.unwritten = undefined;
    this.unwrittenSlab = undefined;
    const slabs = this.nat.writeSlabs;
    const len = data.length;
    host.write(data, () => {
      slabs.release(slab);
      const conn = this.conn;
      if (conn === undefined || this.closed) return;
      conn.recvConsumed(len, this.nat.now());
      this.nat.touched(this);
    });
  }
  onPeerFin(): void {
    this.writeUnwritten(); // the bytes before the FIN go first
    this.host?.end();
  }
  deferAck(): void {
    this.nat.ackers.push(this);
  }
  onTimeWait(): void {
    this.nat.enteredTimeWait(this);
  }
  onWritable(): void {
    const pending = this.pendingFromHost;
    const conn = this.conn;
    if (pending === undefined || conn === undefined) return;
    const n = conn.write(pending, 0, pending.length, this.nat.now());
    this.bytesToGuest += n;
    this.nat.stats.bytesToGuest += n;
    if (n < pending.length) {
      this.pendingFromHost = pending.subarray(n);
      return;
    }
    this.pendingFromHost = undefined;
    if (this.hostEnded) conn.shutdownWrite(this.nat.now());
    else this.host?.resume();
  }
  onClose(reason: CloseReason): void {
    if (reason === 'fin') this.writeUnwritten();
    else this.dropUnwritten();
    this.nat.remove(this, reason);
    // A clean close already sent (or is sending) the host's FIN; anything else resets the peer.
    if (reason === 'fin') this.host?.end();
    else this.host?.destroy(true);
  }

  // ---- HostEvents: the host side talks to us ----
  /**
   * Bytes from the host. `chunk` may be a shared read buffer, valid only during this call: what
   * the send buffer cannot take now is copied. Returns false when the socket should stop reading.
   */
  data(chunk: Uint8Array): boolean {
    const conn = this.conn;
    if (conn === undefined || this.closed) return false;
    this.lastActive = this.nat.now();
    if (this.pendingFromHost !== undefined) {
      // A chunk that was already on its way when we paused the socket.
      this.pendingFromHost = Buffer.concat([this.pendingFromHost, chunk]);
      return false;
    }
    const n = conn.write(chunk, 0, chunk.length, this.nat.now());
    this.bytesToGuest += n;
    this.nat.stats.bytesToGuest += n;
    this.nat.touched(this);
    if (n < chunk.length) {
      this.pendingFromHost = Buffer.from(chunk.subarray(n));
      this.host?.pause();
      return false;
    }
    return true;
  }
  end(): void {
    const conn = this.conn;
    if (conn === undefined || this.closed) return;
    this.hostEnded = true;
    if (this.pendingFromHost === undefined) conn.shutdownWrite(this.nat.now());
    this.nat.touched(this);
  }
  error(code: string | undefined): void {
    if (this.closed) return;
    if (this.conn === undefined) {
      this.nat.dialFailed(this, code);
      return;
    }
    this.nat.stats.hostErrors++;
    if (code === 'ECONNRESET') this.nat.stats.hostResets++;
    trace('tcp: host error %s on %s', code, this.describe());
    this.conn.abort(this.nat.now());
    this.nat.touched(this);
  }

  describe(): string {
    return `${formatIpPort(this.guestIp, this.guestPort)} -> ${formatIpPort(this.dstIp, this.dstPort)}`;
  }

  get stateName(): string {
    return this.conn?.state ?? 'dialing';
  }

  hostSocketEnds(): { local: string; peer: string } | undefined {
    return this.host instanceof SocketEndpoint || this.host instanceof NativeEndpoint ? this.host.ends() : undefined;
  }
}

export class TcpNat {
  readonly stats = createTcpNatStats();
  readonly tcpStats: TcpStats = createTcpStats();
  /** Flows with guest payload to write at the end of this frame batch. */
  readonly writers: TcpFlow[] = [];
  /** Flows owing the guest a stretch ACK at the end of this batch (TcpHost.deferAck). */
  readonly ackers: TcpFlow[] = [];
  /** Guest payload copied for host socket writes (see write-slabs.ts). */
  readonly writeSlabs = new WriteSlabs();
  /** Callbacks of host writes the kernel took whole in this batch: run at its end (afterBatch). */
  readonly writesDone: (() => void)[] = [];
  /** Addon sockets written in this batch: each gets one read at its end (readAfterWrites). */
  readonly wroteNative: NativeEndpoint[] = [];
  /** Flows that entered TIME-WAIT, oldest first, from `timeWaitHead` on (see evictTimeWait). */
  private readonly timeWait: TcpFlow[] = [];
  private timeWaitHead = 0;
  /** The addon's host sockets (created at the first dial) and the endpoint in each slot. */
  private hostTcp: NativeHostTcp | undefined;
  private readonly bySlot: (NativeEndpoint | undefined)[] = [];
  /** Flow open/close, for the control API's event stream. */
  onFlowEvent: ((event: 'open' | 'close', flow: TcpFlow, reason?: string) => void) | undefined;
  /** This NAT's flows, filed in the engine's one flow table. */
  private readonly flows: FlowIndex<TcpFlow>;
  private readonly table: FlowTable;
  /** Port-forward flows: in all, still half-open, and by client address (their own budget). */
  private forwardFlows = 0;
  private forwardHalfOpen = 0;
  private readonly forwardsBySource = new Map<string, number>();
  private halfOpen = 0;
  private readonly heap = new DeadlineHeap<TcpFlow>();
  private readonly seg = new TcpSegment();
  private readonly opts = createTcpOptions();
  private readonly rst = new TcpOutSegment();
  /**
   * Where every dialed host socket reads into (net's `onread`): the bytes are copied into the
   * flow's send buffer before the callback returns, so one buffer serves all flows, and a bulk
   * download no longer allocates a fresh 64 KiB Buffer per read (that churn was ~20 % of vmnat's
   * CPU in garbage collection host→guest). Accepted sockets (port forwards) cannot take `onread`.
   */
  private readonly hostReadBuffer = Buffer.allocUnsafe(HOST_READ_BYTES);
  /** Closed dialed sockets ready for the next dial (see DialSocket). */
  private readonly dialPool: DialSocket[] = [];
  private nextSweep: number | undefined;
  private nextEphemeral = 49152 + Math.floor(Math.random() * 16384);

  constructor(
    readonly stack: Stack,
    private readonly config: TcpConfig,
    private readonly options: TcpNatOptions,
    readonly now: () => number,
    private readonly wake: () => void,
    private readonly localService: LocalServiceFactory | undefined,
  ) {
    this.table = options.table ?? new FlowTable();
    this.flows = this.table.index<TcpFlow>('tcp');
    this.flows.closer = (f) => {
      this.stats.closedByFilter++;
      if (f.conn !== undefined) f.conn.abort(this.now());
      else this.remove(f, 'filter');
      f.host?.destroy(true);
      this.wake();
    };
  }

  get size(): number {
    return this.flows.size;
  }

  /**
   * A TCP packet from a guest. `hostAddress` is where the policy sends it; 'dns' means the local
   * DNS service; undefined means refuse (RST).
   */
  input(ip: Ipv4View | Ipv6View, srcMac: MacAddr, now: number, hostAddress: string | 'dns' | undefined, connectTo?: { path: string } | { host: string; port: number }): void {
    const v6 = ip instanceof Ipv6View;
    const addrSum = v6 ? ip.addrSum : ipv4AddrSum(ip.src, ip.dst);
    const view = TcpView.checkedSum(ip.buf, ip.payloadOff, ip.payloadLen, addrSum, v6 ? this.stack.ipv6?.rxL4ChecksumOk === true : this.stack.rxL4ChecksumOk);
    if (typeof view === 'string') {
      this.stats.malformed++;
      trace('tcp: drop %s', view);
      return;
    }
    const seg = this.seg;
    if (!fillSegment(seg, view, this.opts)) {
      this.stats.badOptions++;
      return;
    }
    const src = ip.src;
    const dst = ip.dst;
    const guestKey = sideKey(src, view.srcPort);
    const dstKey = sideKey(dst, view.dstPort);
    const flow = this.flows.get(0, guestKey, dstKey);
    if (flow !== undefined) {
      flow.lastActive = now;
      const conn = flow.conn;
      if (conn !== undefined) {
        let r;
        try {
          r = conn.input(seg, now);
        } catch (err) {
          this.fault(flow, 'handling a guest segment', err);
          return;
        }
        this.touchedNoWake(flow);
        if (r === 'ok') return;
        // 'reuse': the old connection closed in TIME-WAIT; this SYN starts a new flow below.
      } else {
        if (seg.flags & TcpFlag.RST) this.dialFailed(flow, 'GUEST_RST');
        else if (seg.flags & TcpFlag.SYN) this.stats.synWhileDialing++;
        return;
      }
    }
    if ((seg.flags & (TcpFlag.SYN | TcpFlag.ACK | TcpFlag.RST)) !== TcpFlag.SYN) {
      if (seg.flags & TcpFlag.RST) return;
      this.stats.rstForUnknown++;
      this.sendRst(srcMac, dst, view.dstPort, src, view.srcPort);
      return;
    }
    if (hostAddress === undefined) {
      this.stats.refusedByPolicy++;
      this.sendRst(srcMac, dst, view.dstPort, src, view.srcPort);
      return;
    }
    // vmnat's own DNS service is not a way out, and is never filtered (as DHCP).
    if (hostAddress !== 'dns' && this.options.admit !== undefined && !this.options.admit('tcp', src, view.srcPort, dst, view.dstPort)) {
      this.stats.refusedByFilter++;
      this.sendRst(srcMac, dst, view.dstPort, src, view.srcPort);
      return;
    }
    if ((this.flows.size - this.forwardFlows >= this.options.maxFlows || this.table.guestFull) && !this.evictTimeWait(now)) {
      this.stats.flowLimit++;
      this.sendRst(srcMac, dst, view.dstPort, src, view.srcPort);
      return;
    }
    const f = new TcpFlow(this, srcMac, src, view.srcPort, dst, view.dstPort, hostAddress === 'dns' ? 'dns' : hostAddress, now);
    if (hostAddress === 'dns') {
      if (this.localService === undefined) {
        this.stats.refusedByPolicy++;
        this.sendRst(srcMac, dst, view.dstPort, src, view.srcPort);
        return;
      }
      const endpoint = this.localService(f);
      if (endpoint === undefined) {
        this.stats.localServiceLimit++;
        this.sendRst(srcMac, dst, view.dstPort, src, view.srcPort);
        return;
      }
      this.add(f, guestKey, dstKey);
      f.host = endpoint;
      f.conn = TcpConnection.acceptSyn(seg, f, now, { config: this.configFor(f), stats: this.tcpStats });
      this.touchedNoWake(f);
      return;
    }
    if (this.halfOpen >= this.options.maxHalfOpen) {
      this.stats.halfOpenLimit++; // the guest retransmits its SYN; by then a slot may be free
      return;
    }
    if (connectTo !== undefined) {
      f.connectTo = connectTo;
      f.hostShown = hostAddress;
    }
    this.add(f, guestKey, dstKey);
    this.dial(f, seg, ip);
  }

  private add(f: TcpFlow, guestKey: SideKey, dstKey: SideKey): void {
    if (this.nextSweep === undefined && this.options.idleTimeoutMs > 0) this.nextSweep = f.openedAt + this.sweepMs();
    this.flows.add(f, guestKey, dstKey);
    this.stats.flowsOpened++;
    this.onFlowEvent?.('open', f);
  }

  private dial(f: TcpFlow, seg: TcpSegment, ip: Ipv4View | Ipv6View): void {
    this.halfOpen++;
    const syn = new TcpSegment();
    syn.seq = seg.seq;
    syn.ack = seg.ack;
    syn.flags = seg.flags;
    syn.window = seg.window;
    syn.mss = seg.mss;
    syn.windowScale = seg.windowScale;
    syn.sackPermitted = seg.sackPermitted;
    f.syn = syn;
    // ICMPv4 quotes the header and 8 bytes (RFC 792); ICMPv6 as much as fits (the SYN is small).
    const quoteLen = ip instanceof Ipv6View ? Math.min(ip.totalLen, 1232) : Math.min(ip.headerLen + 8, ip.totalLen);
    f.synQuote = ip.buf.slice(ip.off, ip.off + quoteLen);
    if (f.connectTo === undefined || !('path' in f.connectTo)) {
      const target = f.connectTo ?? { host: f.hostAddress, port: f.dstPort };
      if (this.dialNative(f, target.host, target.port)) return;
    }
    let dial = this.dialPool.pop();
    if (dial !== undefined) this.stats.dialSocketsReused++;
    else dial = new DialSocket(this, this.hostReadBuffer, this.dialPool, DIAL_POOL_MAX);
    dial.flow = f;
    f.host = new SocketEndpoint(dial.socket, { dial, flow: f });
    f.dialTimer = setTimeout(() => this.dialFailed(f, 'ETIMEDOUT'), this.options.dialTimeoutMs);
    dial.socket.connect(f.connectTo ?? { host: f.hostAddress, port: f.dstPort });
  }

  /**
   * Dials through the addon's HostTcp. False when it cannot (no addon, or `host` is a name, not
   * an address): the caller dials with a net.Socket. A refusal the kernel gives at once (no
   * route, out of descriptors) fails the dial here and now.
   */
  private dialNative(f: TcpFlow, host: string, port: number): boolean {
    const make = this.options.hostTcp;
    if (make === undefined) return false;
    const sockets = (this.hostTcp ??= make(this.onHostTcpEvent, this.hostReadBuffer));
    const r = sockets.connect(host, port);
    if (r === -EINVAL_ERRNO) return false;
    if (r < 0) {
      f.host = undefined;
      this.dialFailed(f, getSystemErrorName(r));
      return true;
    }
    const connectedNow = r >= HOST_TCP_CONNECTED_NOW;
    const slot = connectedNow ? r - HOST_TCP_CONNECTED_NOW : r;
    const ep = new NativeEndpoint(this, sockets, slot, f);
    this.bySlot[slot] = ep;
    this.stats.nativeDials++;
    this.stats.nativeSocketsOpen++;
    f.host = ep;
    if (connectedNow) {
      // A loopback destination: the handshake ran inside connect(). The SYN-ACK goes out with
      // this batch instead of after one more event-loop turn.
      this.stats.dialsConnectedAtOnce++;
      this.dialed(f);
      return true;
    }
    f.dialTimer = setTimeout(() => this.dialFailed(f, 'ETIMEDOUT'), this.options.dialTimeoutMs);
    return true;
  }

  /** A NativeEndpoint closed its socket: its slot may be handed out again. */
  forgetSlot(slot: number, ep: NativeEndpoint): void {
    this.stats.nativeSocketsOpen--;
    if (this.bySlot[slot] === ep) this.bySlot[slot] = undefined;
  }

  /** One event of an addon-owned host socket (see native/src/host_tcp.cc). */
  private readonly onHostTcpEvent = (kind: number, slot: number, n: number, code: string | undefined): void => {
    const ep = this.bySlot[slot];
    if (ep === undefined || ep.gone) return;
    const f = ep.flow;
    const opened = this.hostBatchBegin();
    try {
      switch (kind) {
        case HostTcpEvent.Data:
          f.data(this.hostReadBuffer.subarray(0, n));
          break;
        case HostTcpEvent.Writable:
          ep.writable();
          break;
        case HostTcpEvent.Connected:
          this.dialed(f);
          break;
        case HostTcpEvent.Eof:
          ep.eof = true;
          f.end();
          ep.closeIfDone();
          break;
        case HostTcpEvent.ConnectFailed:
        case HostTcpEvent.Error:
          f.error(code);
          break;
      }
    } catch (err) {
      this.fault(f, 'handling a host socket event', err);
    } finally {
      this.hostBatchEnd(opened);
    }
  };

  /**
   * One read from each addon socket this batch wrote to. A host that answers at once — a local
   * server on the same CPU, which ran while vmnat was preempted in send() — has its answer taken
   * now and sent with this batch, instead of one event-loop turn later (the 1-byte round trip's
   * second wake-up). Where nothing has come yet, this costs one read() that finds nothing.
   */
  private readAfterWrites(): void {
    // Host data handled here sends to the guest and writes nothing to hosts: the list stays put.
    const list = this.wroteNative;
    const sockets = this.hostTcp!;
    for (let i = 0; i < list.length; i++) {
      const ep = list[i]!;
      ep.readAfterWrite = false;
      if (ep.gone) continue;
      const n = sockets.readNow(ep.slot);
      if (n === 0) continue;
      this.stats.readsAfterWrite++;
      if (n > 0) this.onHostTcpEvent(HostTcpEvent.Data, ep.slot, n, undefined);
      else if (n === HOST_TCP_READ_EOF) this.onHostTcpEvent(HostTcpEvent.Eof, ep.slot, 0, undefined);
      else this.onHostTcpEvent(HostTcpEvent.Error, ep.slot, 0, getSystemErrorName(n));
    }
    emptyList(list);
  }

  /** The host accepted the dial: SYN-ACK to the guest. */
  dialed(f: TcpFlow): void {
    if (f.closed || f.syn === undefined) return;
    clearTimeout(f.dialTimer);
    f.dialTimer = undefined;
    this.halfOpen--;
    const syn = f.syn;
    f.syn = undefined;
    f.synQuote = undefined;
    f.conn = TcpConnection.acceptSyn(syn, f, this.now(), { config: this.configFor(f), stats: this.tcpStats });
    this.touched(f);
  }

  /** The dial failed: RST for a refusal, ICMP unreachable for anything else. */
  dialFailed(f: TcpFlow, code: string | undefined): void {
    if (f.closed || f.syn === undefined) return;
    // A guest forward's unix socket that is missing or not ours to open: "refused", as a closed port.
    if (f.connectTo !== undefined && 'path' in f.connectTo && (code === 'ENOENT' || code === 'EACCES' || code === 'ENOTSOCK')) code = 'ECONNREFUSED';
    const syn = f.syn;
    const quote = f.synQuote!;
    this.remove(f, code === 'ECONNREFUSED' ? 'refused' : code === 'GUEST_RST' ? 'rst' : 'unreachable');
    f.host?.destroy(false);
    if (code === 'GUEST_RST') return;
    if (code === 'EMFILE' || code === 'ENFILE') {
      // Out of descriptors here, not a fault of the destination: refuse at once (RST), counted.
      this.stats.fdExhausted++;
      if (rstForSegment(syn, this.rst)) this.stack.sendTcp(f.guestMac, f.dstIp, f.dstPort, f.guestIp, f.guestPort, this.rst);
    } else if (code === 'ECONNREFUSED') {
      this.stats.dialsRefused++;
      if (rstForSegment(syn, this.rst)) this.stack.sendTcp(f.guestMac, f.dstIp, f.dstPort, f.guestIp, f.guestPort, this.rst);
    } else {
      if (code === 'ETIMEDOUT') this.stats.dialTimeouts++;
      else this.stats.dialsUnreachable++;
      const icmpCode = code === 'ENETUNREACH' ? IcmpUnreachCode.Net : IcmpUnreachCode.Host;
      this.stack.sendIcmpErrorQuoting(quote, f.guestMac, this.options.gateway, f.guestIp, IcmpType.DestUnreachable, icmpCode);
    }
    this.wake();
  }

  private sendRst(guestMac: MacAddr, srcIp: IpAddr, srcPort: number, dstIp: IpAddr, dstPort: number): void {
    if (rstForSegment(this.seg, this.rst)) this.stack.sendTcp(guestMac, srcIp, srcPort, dstIp, dstPort, this.rst);
  }

  /**
   * A flow into the guest for a host connection accepted by a port forward: vmnat opens the TCP
   * connection from `srcIp` (the gateway) on an ephemeral port to `guestIp:guestPort`, with the
   * same engine, backpressure and half-close as outbound flows. The socket must be paused; it is
   * resumed once the guest completes the handshake. If the guest is unknown, refuses or does not
   * answer, the host client sees a reset. Returns what carries the connection from now on: the
   * addon's socket (HostTcp.adopt; the usual case), else `accepted` itself or its re-wrapped
   * replacement; undefined if none was attempted.
   */
  /**
   * A forwarded connection into the guest. `opts.clientLabel`: how listings and the per-source
   * budget name the client (a unix socket's peer has no address); `opts.srcPortWanted`: the
   * client's own port, used when free (--hostfwd-source client); `opts.rewrap` false: the caller
   * already handed `accepted` on as the connection's socket.
   */
  openToGuest(
    accepted: net.Socket,
    srcIp: IpAddr,
    guestIp: IpAddr,
    guestPort: number,
    forward: string,
    opts: { clientLabel?: string | undefined; srcPortWanted?: number | undefined; rewrap?: boolean } = {},
  ): net.Socket | HostConnection | undefined {
    const guestMac = this.stack.lookupNeighbour(guestIp);
    const srcPortWanted = opts.srcPortWanted;
    const rewrap = opts.rewrap ?? true;
    // The client's own port when vmnat speaks as the client (--hostfwd-source client) and it is
    // free toward this guest port; else an ephemeral one.
    const wantedFree = srcPortWanted !== undefined && this.flows.ofGuest(0, sideKey(guestIp, guestPort))?.get(sideKey(srcIp, srcPortWanted)) === undefined;
    const srcPort = guestMac === undefined ? undefined : wantedFree ? srcPortWanted : this.ephemeralPort(guestIp, guestPort, srcIp);
    // The client as listings and the per-source budget name it (a unix socket's peer has no address).
    const client = opts.clientLabel ?? accepted.remoteAddress ?? '';
    const fromClient = this.forwardsBySource.get(client) ?? 0;
    let limit: 'forwardLimit' | 'forwardHalfOpenLimit' | 'forwardPerSourceLimit' | undefined;
    if (this.forwardFlows >= (this.options.maxForwardFlows ?? 4096)) limit = 'forwardLimit';
    else if (this.forwardHalfOpen >= (this.options.maxForwardHalfOpen ?? 128)) limit = 'forwardHalfOpenLimit';
    else if (fromClient >= (this.options.maxForwardPerSource ?? 256)) limit = 'forwardPerSourceLimit';
    if (guestMac === undefined || srcPort === undefined || limit !== undefined) {
      if (limit !== undefined) this.stats[limit]++;
      this.stats.forwardFailed++;
      try {
        accepted.resetAndDestroy();
      } catch {
        accepted.destroy(); // not TCP: no RST to give
      }
      return undefined;
    }
    const now = this.now();
    const f = new TcpFlow(this, guestMac, guestIp, guestPort, srcIp, srcPort, client, now);
    f.forward = forward;
    f.forwardHalfOpen = true;
    this.forwardFlows++;
    this.forwardHalfOpen++;
    this.forwardsBySource.set(client, fromClient + 1);
    // `rewrap` false: the caller already handed `accepted` on as the connection's socket.
    const adopted = rewrap ? this.adoptNative(accepted, f) : undefined;
    if (adopted !== undefined) {
      f.host = adopted;
      // Not read until the guest has answered our SYN (the addon starts it paused).
      f.established = () => {
        this.forwardEstablished(f);
        adopted.resume();
      };
      this.add(f, sideKey(guestIp, guestPort), sideKey(srcIp, srcPort));
      this.stats.forwardsOpened++;
      f.conn = TcpConnection.connect(f, now, { config: this.configFor(f), stats: this.tcpStats });
      this.touched(f);
      return adopted;
    }
    const rewrapped = rewrap ? this.rewrapWithOnread(accepted, f) : undefined;
    const socket = rewrapped ?? accepted;
    f.host = new SocketEndpoint(socket);
    f.established = () => {
      this.forwardEstablished(f);
      socket.resume();
    };
    // Explicitly paused: adding a 'data' listener would otherwise start the flow of host bytes
    // (and 'end') before the guest has even answered our SYN.
    socket.pause();
    socket.setNoDelay(true);
    if (rewrapped === undefined) socket.on('data', (chunk: Buffer) => this.guard(f, 'reading a forwarded socket', (g) => g.data(chunk)));
    socket.on('end', () => this.guard(f, 'ending a forwarded socket', (g) => g.end()));
    socket.on('error', (err: NodeJS.ErrnoException) => this.guard(f, 'handling a forwarded socket error', (g) => g.error(err.code)));
    this.add(f, sideKey(guestIp, guestPort), sideKey(srcIp, srcPort));
    this.stats.forwardsOpened++;
    f.conn = TcpConnection.connect(f, now, { config: this.configFor(f), stats: this.tcpStats });
    this.touched(f);
    return socket;
  }

  /**
   * The accepted connection handed to the addon (HostTcp.adopt), as dialed flows' sockets are:
   * its descriptor is duplicated, the accepted net.Socket destroyed (closing only Node's
   * descriptor: no FIN, no RST), and the copy read and written in C from then on. Undefined (the
   * caller keeps a net.Socket) without the addon, or when the descriptor is not reachable (it
   * comes from Node's internal `_handle.fd`).
   */
  private adoptNative(accepted: net.Socket, f: TcpFlow): NativeEndpoint | undefined {
    const make = this.options.hostTcp;
    const dupFd = this.options.dupFd;
    const fd = socketDescriptor(accepted);
    if (make === undefined || dupFd === undefined || fd === undefined) return undefined;
    let copy: number;
    try {
      copy = dupFd(fd);
    } catch {
      return undefined;
    }
    const sockets = (this.hostTcp ??= make(this.onHostTcpEvent, this.hostReadBuffer));
    const slot = sockets.adopt(copy); // the copy is the addon's now, also on failure
    if (slot < 0) return undefined;
    accepted.destroy();
    const ep = new NativeEndpoint(this, sockets, slot, f);
    this.bySlot[slot] = ep;
    this.stats.nativeForwards++;
    this.stats.nativeSocketsOpen++;
    return ep;
  }

  /**
   * Node's net.Server cannot read with `onread`, so an accepted socket allocates a 64 KiB Buffer
   * per read (garbage collection was ~18 % of vmnat's CPU through a forward). Its descriptor is
   * duplicated and wrapped in a new net.Socket that reads into the shared buffer like dialed
   * sockets; the accepted one is destroyed (closing only Node's descriptor: no FIN, no RST).
   * Undefined (keep `accepted`) when the descriptor is not reachable — it comes from Node's
   * internal `_handle.fd`, so a Node that hides it just costs the speed-up.
   */
  private rewrapWithOnread(accepted: net.Socket, f: TcpFlow): net.Socket | undefined {
    const dupFd = this.options.dupFd;
    const fd = socketDescriptor(accepted);
    if (dupFd === undefined || fd === undefined) return undefined;
    let copy: number;
    try {
      copy = dupFd(fd);
    } catch {
      return undefined;
    }
    let socket: net.Socket;
    try {
      // `onread` is read by the Socket constructor (net.connect passes its options through it);
      // @types/node declares it on connect options only.
      const options: net.SocketConstructorOpts & Pick<net.TcpSocketConnectOpts, 'onread'> = {
        fd: copy,
        readable: true,
        writable: true,
        allowHalfOpen: true,
        onread: {
          buffer: this.hostReadBuffer,
          callback: (n: number, buf: Uint8Array) => {
            try {
              return f.data(buf.subarray(0, n));
            } catch (err) {
              this.fault(f, 'reading a forwarded socket', err);
              return false;
            }
          },
        },
      };
      socket = new net.Socket(options);
    } catch {
      fs.closeSync(copy);
      return undefined;
    }
    socket.pause();
    accepted.destroy();
    this.stats.forwardsRewrapped++;
    return socket;
  }

  /** Large segments on or off (the engine's view of its links); open connections follow at once. */
  setTsoMaxBytes(n: number): void {
    this.config.tsoMaxBytes = n;
    if (this.config6 !== undefined) this.config6.tsoMaxBytes = n;
  }

  /** The TCP configuration for a flow's family: IPv6's header is 20 bytes longer, so its MSS is 20 smaller. */
  private configFor(f: TcpFlow): TcpConfig {
    if (typeof f.guestIp !== 'string') return this.config;
    return (this.config6 ??= { ...this.config, mss: this.config.mss - 20 });
  }
  private config6: TcpConfig | undefined;

  /** A free source port on `srcIp` for a new flow to guestIp:guestPort (49152..65535, rotating). */
  private ephemeralPort(guestIp: IpAddr, guestPort: number, srcIp: IpAddr): number | undefined {
    const perGuest = this.flows.ofGuest(0, sideKey(guestIp, guestPort));
    for (let i = 0; i < 16384; i++) {
      this.nextEphemeral = this.nextEphemeral >= 65535 ? 49152 : this.nextEphemeral + 1;
      if (perGuest?.get(sideKey(srcIp, this.nextEphemeral)) === undefined) return this.nextEphemeral;
    }
    return undefined;
  }

  /** A flow entered TIME-WAIT: queued, oldest first, in case the table needs its place. */
  enteredTimeWait(f: TcpFlow): void {
    const q = this.timeWait;
    // Entries whose flow has gone since (TIME-WAIT ran out: the oldest go first) leave the queue
    // here, so it stays about as long as the number of flows in TIME-WAIT.
    while (this.timeWaitHead < q.length && q[this.timeWaitHead]!.closed) this.timeWaitHead++;
    if (this.timeWaitHead > 1024 && this.timeWaitHead * 2 > q.length) {
      q.splice(0, this.timeWaitHead);
      this.timeWaitHead = 0;
    }
    q.push(f);
  }

  /**
   * The table is full and a guest opens a new flow: the oldest flow in TIME-WAIT gives up its
   * place (it holds no data and no host socket, only its 4-tuple), as Linux drops TIME-WAIT
   * sockets beyond tcp_max_tw_buckets. A guest that opens and closes connections faster than
   * TIME-WAIT (1 s) lets them go would otherwise be refused. False: no flow in TIME-WAIT.
   */
  private evictTimeWait(now: number): boolean {
    const q = this.timeWait;
    while (this.timeWaitHead < q.length) {
      const f = q[this.timeWaitHead++]!;
      if (f.closed || f.conn === undefined || f.conn.state !== 'time-wait') continue;
      f.conn.abort(now); // silent in TIME-WAIT; closes and removes the flow
      this.stats.timeWaitEvicted++;
      return true;
    }
    q.length = 0;
    this.timeWaitHead = 0;
    return false;
  }

  /** Removes a flow from the table (its connection is closed or never existed). */
  /** A forwarded flow's guest answered: it no longer counts as half-open. */
  private forwardEstablished(f: TcpFlow): void {
    if (!f.forwardHalfOpen) return;
    f.forwardHalfOpen = false;
    this.forwardHalfOpen--;
  }

  remove(f: TcpFlow, reason = 'closed'): void {
    if (f.closed) return;
    f.closed = true;
    if (f.forward !== undefined) {
      this.forwardEstablished(f);
      this.forwardFlows--;
      const n = (this.forwardsBySource.get(f.hostAddress) ?? 1) - 1;
      if (n <= 0) this.forwardsBySource.delete(f.hostAddress);
      else this.forwardsBySource.set(f.hostAddress, n);
    }
    if (f.syn !== undefined) {
      this.halfOpen--;
      clearTimeout(f.dialTimer);
      f.syn = undefined;
    }
    f.scheduledAt = undefined;
    this.flows.delete(f, sideKey(f.guestIp, f.guestPort), sideKey(f.dstIp, f.dstPort));
    this.stats.flowsClosed++;
    this.onFlowEvent?.('close', f, reason);
  }

  /** After a connection call outside the engine's poll/batch: reschedule and wake the timer. */
  touched(f: TcpFlow): void {
    this.touchedNoWake(f);
    this.wake();
  }

  private touchedNoWake(f: TcpFlow): void {
    if (f.closed || f.conn === undefined) return;
    this.heap.schedule(f, f.conn.nextDeadline());
  }

  /** End of a frame batch: one write (or writev) per socket that got data in it. */
  afterBatch(): void {
    const writers = this.writers;
    for (let i = 0; i < writers.length; i++) {
      const f = writers[i]!;
      f.writeUnwritten();
      if (f.corked) {
        f.corked = false;
        f.host?.uncork();
      }
    }
    emptyList(writers);
    const writesDone = this.writesDone;
    if (writesDone.length > 0) {
      // Only the callbacks there now: one that wrote again (none does today) would add more.
      const n = writesDone.length;
      for (let i = 0; i < n; i++) writesDone[i]!();
      if (writesDone.length === n) emptyList(writesDone);
      else writesDone.splice(0, n);
    }
    if (this.wroteNative.length > 0) this.readAfterWrites();
    const ackers = this.ackers;
    if (ackers.length === 0) return;
    const now = this.now();
    for (let i = 0; i < ackers.length; i++) {
      const f = ackers[i]!;
      if (f.closed || f.conn === undefined) continue;
      try {
        f.conn.flushDeferredAck(now);
      } catch (err) {
        this.fault(f, 'sending an ACK', err);
        continue;
      }
      this.touchedNoWake(f);
    }
    emptyList(ackers);
  }

  poll(now: number): void {
    if (this.nextSweep !== undefined && now >= this.nextSweep) this.sweepIdle(now);
    this.heap.popDue(now, (f) => {
      if (f.closed || f.conn === undefined) return;
      const d = f.conn.nextDeadline();
      try {
        if (d !== undefined && d <= now) f.conn.poll(now);
      } catch (err) {
        this.fault(f, 'running a TCP timer', err);
        return;
      }
      this.touchedNoWake(f);
    });
  }

  /** The engine's host-event bracket (TcpNatOptions.hostBatch): true when this call opened it. */
  hostBatchBegin(): boolean {
    return this.options.hostBatch?.begin() ?? false;
  }
  hostBatchEnd(opened: boolean): void {
    if (opened) this.options.hostBatch!.end(true);
  }

  /** Runs a host event of `f` behind the fault barrier. */
  guard(f: TcpFlow, where: string, fn: (f: TcpFlow) => void): void {
    try {
      fn(f);
    } catch (err) {
      this.fault(f, where, err);
    }
  }

  /**
   * A bug met while handling `f`: counted and logged (fault.ts), and `f` alone pays: its state can
   * no longer be trusted, so it is reset both ways and forgotten. Every other flow goes on.
   */
  fault(f: TcpFlow, where: string, err: unknown): void {
    this.stats.internalErrors++;
    if (this.options.faults !== undefined) this.options.faults.caught(where, err);
    else throw err; // no barrier (unit tests): let the bug show
    try {
      f.conn?.abort(this.now());
    } catch {
      // the connection is what is broken: forget it below without its RST
    }
    try {
      f.host?.destroy(true);
    } catch {
      // already gone
    }
    this.remove(f, 'internal error');
    this.wake();
  }

  nextDeadline(): number | undefined {
    const a = this.heap.peek();
    const b = this.nextSweep;
    return a === undefined ? b : b === undefined ? a : Math.min(a, b);
  }

  private sweepMs(): number {
    return Math.min(SWEEP_MS, Math.max(500, this.options.idleTimeoutMs / 4));
  }

  /** Resets flows idle for longer than the idle timeout (both ways: RST to the guest and the host). */
  private sweepIdle(now: number): void {
    const limit = now - this.options.idleTimeoutMs;
    for (const f of [...this.flows.values()]) {
      if (f.lastActive > limit || f.conn === undefined) continue;
      this.stats.idleTimeouts++;
      f.conn.abort(now);
    }
    this.nextSweep = this.flows.size > 0 ? now + this.sweepMs() : undefined;
  }

  /** This NAT's flows (the engine lists every protocol's through the flow table). */
  values(): IterableIterator<TcpFlow> {
    return this.flows.values();
  }

  /** Exit: reset every guest connection and close every host socket. */
  closeAll(): void {
    const now = this.now();
    for (const f of [...this.flows.values()]) {
      if (f.conn !== undefined) f.conn.abort(now);
      else this.remove(f);
      f.host?.destroy(true);
    }
  }
}
