/**
 * Sockets to one upstream resolver (the forwarder's I/O adapter).
 *
 * Theory of operation:
 *   - UDP goes through a *connected* socket per upstream, so the kernel drops datagrams from any
 *     other source and reports an ICMP port-unreachable as ECONNREFUSED: a dead upstream is
 *     detected in one round trip instead of a timeout. Each query attempt gets a fresh random id
 *     (never the guest's), registered on the socket until the guest query finishes, so two guest
 *     queries with the same id never collide and a late answer from an earlier attempt is still
 *     recognised. After `QUERIES_PER_SOCKET` sends the socket is retired (closed once its last
 *     attempt is released) and a new one with a new random source port takes over; so is a socket
 *     older than `SOCKET_MAX_AGE_MS`. An off-path spoofer has to guess both a 16-bit id and a port
 *     that keeps moving (RFC 5452): one port serves at most 100 queries or 10 seconds.
 *   - TCP uses one connection per attempt (RFC 1035 §4.2.2 framing); guest TCP queries are rare
 *     (after a TC answer, zone transfers), and per-query connections need no pipelining state or
 *     idle handling. The forwarder caps how many are open.
 *   - `downUntil` records when the upstream last failed (timeout, refused); the forwarder tries
 *     healthy upstreams first and a failed one again only after that time or as a last resort.
 * Errors never throw out of here: they become onError callbacks to the waiting attempt.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { randomFillSync } from 'node:crypto';
import { readId, writeId, writeU16 } from './wire.ts';

/** Sends per UDP socket before it is replaced by one on a fresh random port. */
export const QUERIES_PER_SOCKET = 100;
/** Age after which a UDP socket takes no new queries, however few it sent (a quiet guest too). */
export const SOCKET_MAX_AGE_MS = 10_000;

/** What a waiting query attempt is told. `msg` is the raw answer (its id is ours). */
export interface UpstreamClient {
  onAnswer(msg: Buffer, ticket: Ticket): void;
  onError(ticket: Ticket, reason: string): void;
}

/** One attempt: a UDP registration (channel + id) or a TCP connection. */
export type Ticket = UdpTicket | TcpTicket;

export interface UdpTicket {
  readonly kind: 'udp';
  readonly upstream: Upstream;
  readonly channel: UdpChannel;
  readonly id: number;
}

export interface TcpTicket {
  readonly kind: 'tcp';
  readonly upstream: Upstream;
  readonly socket: net.Socket;
  /** Answered, failed or released: no further callback. */
  settled: boolean;
}

// Random ids in batches: one getrandom() per 512 ids rather than one per query.
const idPool = new Uint16Array(512);
let idPoolLeft = 0;
function randomId(): number {
  if (idPoolLeft === 0) {
    randomFillSync(idPool);
    idPoolLeft = idPool.length;
  }
  return idPool[--idPoolLeft]!;
}

class UdpChannel {
  readonly socket: dgram.Socket;
  /** Attempts waiting here, by our id; the ticket object is what clients compare. */
  readonly waiting = new Map<number, { client: UpstreamClient; ticket: UdpTicket }>();
  sent = 0;
  readonly createdAt = performance.now();
  private state: 'connecting' | 'ready' | 'failed' | 'closed' = 'connecting';
  private queue: Array<{ msg: Uint8Array; ticket: UdpTicket; client: UpstreamClient }> = [];

  constructor(
    private readonly upstream: Upstream,
    private readonly onStray: () => void,
  ) {
    this.socket = dgram.createSocket({ type: upstream.family === 6 ? 'udp6' : 'udp4' });
    this.socket.on('message', (msg) => this.onMessage(msg));
    // ECONNREFUSED (ICMP port unreachable) and friends arrive here on a connected socket; they
    // concern this upstream only, so every attempt still waiting for its answer here fails over.
    this.socket.on('error', (err: NodeJS.ErrnoException) => this.failAll(err.code ?? err.message));
    const onConnect = (err?: Error) => {
      if (this.state !== 'connecting') return;
      if (err) {
        // connect() failed (no route, a denied destination): Node then leaves the socket
        // unconnected, and a send() on it would throw. Every attempt fails over instead.
        this.failAll((err as NodeJS.ErrnoException).code ?? err.message);
        return;
      }
      this.state = 'ready';
      const q = this.queue;
      this.queue = [];
      for (const item of q) this.transmit(item.msg, item.ticket, item.client);
    };
    try {
      this.socket.connect(upstream.port, upstream.ip, onConnect);
    } catch (err) {
      // Bad arguments (port 0) throw synchronously; fail like a connect error, one tick later.
      queueMicrotask(() => onConnect(err as Error));
    }
  }

  get usable(): boolean {
    return this.state === 'connecting' || this.state === 'ready';
  }

  /** Registers `client` under a fresh id, writes it into `msg` (a private copy) and sends. */
  send(msg: Uint8Array, client: UpstreamClient): UdpTicket {
    let id = randomId();
    while (this.waiting.has(id)) id = randomId();
    writeId(msg, id);
    const ticket: UdpTicket = { kind: 'udp', upstream: this.upstream, channel: this, id };
    this.waiting.set(id, { client, ticket });
    this.sent++;
    if (this.state === 'ready') this.transmit(msg, ticket, client);
    else if (this.state === 'connecting') this.queue.push({ msg, ticket, client });
    else queueMicrotask(() => client.onError(ticket, 'socket failed'));
    return ticket;
  }

  private transmit(msg: Uint8Array, ticket: UdpTicket, client: UpstreamClient): void {
    try {
      this.socket.send(msg, (err) => {
        if (err && this.waiting.get(ticket.id)?.ticket === ticket) client.onError(ticket, (err as NodeJS.ErrnoException).code ?? err.message);
      });
    } catch (err) {
      // send() throws synchronously only on a closed socket or bad arguments.
      queueMicrotask(() => client.onError(ticket, String(err)));
    }
  }

  private onMessage(msg: Buffer): void {
    const w = msg.length >= 2 ? this.waiting.get(readId(msg)) : undefined;
    if (!w) {
      this.onStray();
      return;
    }
    w.client.onAnswer(msg, w.ticket);
  }

  private failAll(reason: string): void {
    if (this.state === 'connecting') {
      // connect() itself failed (no route, bad scope): this socket is useless.
      this.state = 'failed';
      for (const item of this.queue) queueMicrotask(() => item.client.onError(item.ticket, reason));
      this.queue = [];
    }
    for (const w of [...this.waiting.values()]) w.client.onError(w.ticket, reason);
  }

  release(id: number): void {
    this.waiting.delete(id);
  }

  close(): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.queue = [];
    this.waiting.clear();
    this.socket.close();
  }
}

export class Upstream {
  readonly key: string;
  readonly family: 4 | 6;
  /** performance.now() until which this upstream is tried after the healthy ones (0 = healthy). */
  downUntil = 0;
  private active: UdpChannel | undefined;
  private readonly retiring = new Set<UdpChannel>();
  private readonly tcpSockets = new Set<net.Socket>();
  private removed = false;

  constructor(
    readonly ip: string,
    readonly port: number,
    private readonly onStray: () => void,
    private readonly rotation: { queries: number; maxAgeMs: number } = { queries: QUERIES_PER_SOCKET, maxAgeMs: SOCKET_MAX_AGE_MS },
  ) {
    this.key = upstreamKey(ip, port);
    this.family = ip.includes(':') ? 6 : 4;
  }

  /** Sends `msg` (a private copy the id is written into) over UDP. */
  sendUdp(msg: Uint8Array, client: UpstreamClient): UdpTicket {
    let a = this.active;
    if (!a || !a.usable || a.sent >= this.rotation.queries || performance.now() - a.createdAt >= this.rotation.maxAgeMs) {
      if (a) this.retire(a);
      a = new UdpChannel(this, this.onStray);
      this.active = a;
    }
    return a.send(msg, client);
  }

  /** Sends `msg` over a new TCP connection with a fresh id; the answer ends the connection. */
  sendTcp(msg: Uint8Array, client: UpstreamClient): TcpTicket {
    const framed = new Uint8Array(msg.length + 2);
    writeU16(framed, 0, msg.length);
    framed.set(msg, 2);
    writeId(framed.subarray(2), randomId());
    const socket = net.connect({ host: this.ip, port: this.port, noDelay: true });
    const ticket: TcpTicket = { kind: 'tcp', upstream: this, socket, settled: false };
    this.tcpSockets.add(socket);
    const expectId = readId(framed.subarray(2));
    let buf: Buffer = Buffer.alloc(0);
    const settle = (): boolean => {
      if (ticket.settled) return false;
      ticket.settled = true;
      return true;
    };
    socket.on('connect', () => socket.write(framed));
    socket.on('data', (chunk: Buffer) => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        const len = buf.readUInt16BE(0);
        const answer = buf.subarray(2, 2 + len);
        buf = buf.subarray(2 + len);
        // Our connection, our one query: any other id is not an answer to it.
        if (answer.length >= 2 && readId(answer) === expectId) {
          if (settle()) client.onAnswer(answer, ticket);
          socket.destroy();
          return;
        }
        this.onStray();
      }
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (settle()) client.onError(ticket, err.code ?? err.message);
    });
    socket.on('close', () => {
      this.tcpSockets.delete(socket);
      if (settle()) client.onError(ticket, 'connection closed before an answer');
      this.maybeFinish();
    });
    return ticket;
  }

  /** Ends one attempt: forgets its id, or closes its connection. */
  release(ticket: Ticket): void {
    if (ticket.kind === 'tcp') {
      ticket.settled = true;
      ticket.socket.destroy();
      return;
    }
    ticket.channel.release(ticket.id);
    if (ticket.channel !== this.active && ticket.channel.waiting.size === 0) {
      ticket.channel.close();
      this.retiring.delete(ticket.channel);
    }
    this.maybeFinish();
  }

  /** Removed and with nothing left open. */
  get drained(): boolean {
    return this.removed && !this.active && this.retiring.size === 0 && this.tcpSockets.size === 0;
  }

  get openTcp(): number {
    return this.tcpSockets.size;
  }

  /** This upstream left the configuration: close sockets as soon as nothing waits on them. */
  remove(): void {
    this.removed = true;
    if (this.active) this.retire(this.active);
    this.active = undefined;
    this.maybeFinish();
  }

  /** Closes everything now (the forwarder is closing). */
  close(): void {
    this.removed = true;
    this.active?.close();
    this.active = undefined;
    for (const c of this.retiring) c.close();
    this.retiring.clear();
    for (const s of this.tcpSockets) s.destroy();
    this.tcpSockets.clear();
  }

  private retire(channel: UdpChannel): void {
    if (channel.waiting.size === 0) channel.close();
    else this.retiring.add(channel);
  }

  private maybeFinish(): void {
    if (!this.removed) return;
    for (const c of this.retiring) {
      if (c.waiting.size === 0) {
        c.close();
        this.retiring.delete(c);
      }
    }
  }
}

export function upstreamKey(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}
