/**
 * Port forwarding, host side: the rule table and one host listener per forwarded port.
 *
 * Theory of operation: `add(rule)` binds every host port of the rule (a `net.Server` for TCP, a
 * `dgram` socket for UDP) before the rule becomes visible; if any bind fails, the ports already
 * bound are closed again and `add` rejects with a `ForwardError` whose `code` is the errno
 * (`EADDRINUSE`: CLI exit 2 / API 409). This module never touches the guest: each accepted host
 * connection and each new UDP client is handed to the injected `GuestDialer` (the NAT's data
 * path), which opens the guest side from the gateway address and splices the two.
 *
 * - TCP: sockets are accepted paused (`pauseOnConnect`), so no byte is read before the dialer
 *   knows the guest accepted (dial first, as design.md §9); the dialer resumes it. `remove(name)`
 *   closes the listeners at once (new clients get ECONNREFUSED) and leaves accepted connections
 *   alone: they finish on their own. A dialer that throws is a bug; it is counted and the client
 *   is reset, never propagated.
 * - UDP: one flow per host client address:port per listener, ended after `udpIdleTimeoutMs`
 *   without traffic either way (swept every second or so), by LRU eviction beyond `maxUdpFlows`,
 *   or when its rule is removed. Replies from the guest go back from the listening socket, so the
 *   client sees them come from the address it sent to.
 * - A unix socket host side (`proto: 'unix'`): one `net.Server` on the socket file, bound as the
 *   control API's (unix-socket.ts: born 0600, a stale file replaced, a live one or a non-socket
 *   refused, in a directory only we or root can change); its connections are TCP connections
 *   into the guest like any other. The file is removed with the rule (if it is still ours).
 * - An empty guest address is passed on as `guestIp: undefined`: the dialer resolves it to the
 *   current lease when the connection or flow opens, so the rule follows the lease.
 *
 * Events (`subscribe`): `{type:'forward', event:'added'|'removed', rule}` for the control API.
 */
import net from 'node:net';
import dgram from 'node:dgram';
import { debuglog } from 'node:util';
import fs from 'node:fs';
import { parseIp, type IpAddr } from '../stack/wire/addr.ts';
import { listenPrivate, replaceStaleSocket, fileIdentity, UnixSocketError } from '../unix-socket.ts';
import { checkSocketParent, RuntimeDirError } from '../runtime-dir.ts';
import {
  DEFAULT_HOST_ADDR,
  checkRuleForNetwork,
  defaultRuleName,
  formatHostSide,
  guestPortFor,
  ruleToJson,
  type ForwardProto,
  type ForwardRule,
  type ForwardRuleJson,
  type GuestNetwork,
} from './rules.ts';

const trace = debuglog('vmnat-portfwd');

/** What the dialer is asked to reach, for one host connection or UDP client. */
export interface ForwardTarget {
  /** The rule's name (to tag flows in listings and events). */
  rule: string;
  proto: ForwardProto;
  /** The guest address; undefined: the guest's current lease (the dialer resolves it now). */
  guestIp: IpAddr | undefined;
  guestPort: number;
  /** The host client as the listener saw it. */
  clientAddr: string;
  clientPort: number;
  /** The listener's port that was reached (differs from the rule's first port within a range). */
  hostPort: number;
}

/**
 * What carries a forwarded TCP connection once the dialer has taken it: the accepted socket, a
 * net.Socket that replaced it, or a socket the addon owns. Its 'close' ends the rule's live count.
 */
export interface ForwardedConnection {
  once(event: 'close', listener: () => void): unknown;
}

/** The host end of a forwarded UDP flow, given to the dialer. */
export interface HostUdpPeer {
  /** A datagram from the guest to the host client (copied out at once; sent from the listener). */
  send(payload: Uint8Array): void;
  /** The dialer ends the flow (guest unreachable, …); the forwarder forgets it without calling back `close()`. */
  close(): void;
}

/** The guest end of a forwarded UDP flow, returned by the dialer. */
export interface GuestUdpFlow {
  /** A datagram from the host client for the guest; `payload` is valid only during the call. */
  send(payload: Uint8Array): void;
  /** The forwarder ended the flow (idle, evicted, rule removed, shutdown). Called at most once. */
  close(): void;
}

/**
 * The data path into the guest, implemented by the NAT. Neither method may throw (a throw is
 * counted in `stats.dialerThrew` and the client reset / datagram dropped).
 */
export interface GuestDialer {
  /**
   * Takes ownership of an accepted host socket (paused). Open a TCP connection into the guest
   * at target.guestIp (or the current lease) : target.guestPort and splice: on the guest's
   * SYN-ACK `socket.resume()`; if the guest refuses (RST), there is no lease, or the handshake
   * times out, `socket.resetAndDestroy()` so the host client sees a reset. Half-close and
   * backpressure both ways are the dialer's. Returns the socket that carries the connection from
   * then on when the dialer replaced `socket` with its own (see TcpNat.openToGuest).
   */
  dialTcp(socket: net.Socket, target: ForwardTarget): ForwardedConnection | void;
  /**
   * A first datagram from a new host client. Return the guest side of the flow, or undefined to
   * refuse it (no lease yet, flow table full): the datagram is dropped and counted.
   */
  openUdp(target: ForwardTarget, host: HostUdpPeer): GuestUdpFlow | undefined;
}

/** `EPATH`: a unix socket path that cannot be used (not a socket, unsafe directory, …). */
export type ForwardErrorCode = 'EADDRINUSE' | 'EACCES' | 'EADDRNOTAVAIL' | 'EEXIST' | 'ECLOSED' | 'EPATH' | 'ENOTSUP' | 'ESYSTEM';

/** `add` failed for a reason outside the rule's text. `rule` names the rule. */
export class ForwardError extends Error {
  override readonly name = 'ForwardError';
  constructor(
    readonly code: ForwardErrorCode,
    readonly rule: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export interface ForwardEvent {
  type: 'forward';
  event: 'added' | 'removed';
  rule: ForwardRuleJson;
}

export interface PortForwarderOptions {
  dialer: GuestDialer;
  /** Idle timeout of a forwarded UDP flow (default 60 s, like the UDP NAT). */
  udpIdleTimeoutMs?: number;
  /** Most forwarded UDP flows at once, all rules together (default 4096). */
  maxUdpFlows?: number;
  /** When given, fixed guest addresses must be guest addresses of this network. */
  guestNetwork?: GuestNetwork;
  /** Set when no forward can work (host-only/bridged mode: no NAT): why, for the refusal. */
  refuseAll?: string;
  /** False: a TCP forward on 127.0.0.1 does not also listen on ::1 (default: it does, when it can). */
  loopback6?: boolean;
}

export function createPortfwdStats() {
  return {
    rulesAdded: 0, rulesRemoved: 0, addFailed: 0,
    tcpAccepted: 0, tcpSocketErrors: 0,
    udpFlowsOpened: 0, udpFlowsClosed: 0, udpFlowsExpired: 0, udpFlowsEvicted: 0, udpRefused: 0,
    datagramsFromHost: 0, datagramsToHost: 0, bytesFromHost: 0, bytesToHost: 0, udpSendErrors: 0,
    dialerThrew: 0, listenerErrors: 0,
    /** ::1 twins of 127.0.0.1 forwards that could not listen (no IPv6, or the port taken there). */
    loopback6Skipped: 0,
  };
}
export type PortfwdStats = ReturnType<typeof createPortfwdStats>;

/** A rule as listed: the rule plus live counters. */
export interface ForwardEntry {
  rule: ForwardRule;
  /** TCP connections accepted since the rule was added / open now. */
  tcpAccepted: number;
  tcpActive: number;
  /** UDP flows open now. */
  udpFlows: number;
}

interface UdpFlowState {
  key: string;
  entry: Entry;
  guest: GuestUdpFlow;
  lastActive: number;
  closed: boolean;
}

interface Entry {
  rule: ForwardRule;
  servers: net.Server[];
  sockets: dgram.Socket[];
  tcpAccepted: number;
  tcpActive: number;
  udpFlows: Set<UdpFlowState>;
  /** A unix forward's socket file as bound (so only that file is removed with the rule). */
  socketIdentity?: string | undefined;
}

const SWEEP_MAX_MS = 1000;

export class PortForwarder {
  readonly stats = createPortfwdStats();
  private readonly entries = new Map<string, Entry>();
  /** Names of rules whose listeners are being opened (so a concurrent add of the name fails). */
  private readonly pending = new Set<string>();
  /** All UDP flows by `name|port|clientAddr|clientPort`; Map order = recency (LRU). */
  private readonly udpFlows = new Map<string, UdpFlowState>();
  private readonly listeners = new Set<(e: ForwardEvent) => void>();
  private readonly dialer: GuestDialer;
  private readonly udpIdleMs: number;
  private readonly maxUdpFlows: number;
  private sweepTimer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(private readonly options: PortForwarderOptions) {
    this.dialer = options.dialer;
    this.udpIdleMs = options.udpIdleTimeoutMs ?? 60_000;
    this.maxUdpFlows = options.maxUdpFlows ?? 4096;
  }

  /**
   * Opens the rule's host listeners and adds it. Rejects with ForwardRuleError (guest address not
   * in the network) or ForwardError (`EEXIST` name taken, `EADDRINUSE` port taken, `EACCES`,
   * `EADDRNOTAVAIL`, …); on rejection nothing stays open. Resolves to the rule as added: host
   * port 0 replaced by the port bound (and a generated name by one naming that port).
   */
  async add(rule: ForwardRule): Promise<ForwardRule> {
    if (this.closed) throw new ForwardError('ECLOSED', rule.name, 'vmnat is shutting down');
    if (this.options.refuseAll !== undefined) {
      this.stats.addFailed++;
      throw new ForwardError('ENOTSUP', rule.name, this.options.refuseAll);
    }
    if (this.options.guestNetwork !== undefined) checkRuleForNetwork(rule, this.options.guestNetwork);
    // Host port 0 with a generated name: named after the port the kernel picks, once bound.
    const anyPort = rule.proto !== 'unix' && rule.hostPort === 0;
    const renamed = anyPort && rule.name === defaultRuleName(rule.proto, rule.hostAddr, 0, rule.portCount);
    if (rule.proto === 'unix' && [...this.entries.values()].some((e) => e.rule.proto === 'unix' && e.rule.hostAddr === rule.hostAddr)) {
      this.stats.addFailed++;
      throw new ForwardError('EADDRINUSE', rule.name, `${rule.hostAddr} is already a forward of this vmnat`);
    }
    if (!renamed && (this.entries.has(rule.name) || this.pending.has(rule.name))) {
      this.stats.addFailed++;
      throw new ForwardError('EEXIST', rule.name, `a forward named ${rule.name} already exists`);
    }
    const pendingName = renamed ? undefined : rule.name;
    if (pendingName !== undefined) this.pending.add(pendingName);
    const entry: Entry = { rule: { ...rule }, servers: [], sockets: [], tcpAccepted: 0, tcpActive: 0, udpFlows: new Set() };
    try {
      for (let i = 0; i < rule.portCount; i++) {
        const port = rule.hostPort + i;
        if (rule.proto === 'unix') entry.servers.push(await this.listenUnix(entry));
        else if (rule.proto === 'tcp') entry.servers.push(await this.listenTcp(entry, port));
        else entry.sockets.push(await this.bindUdp(entry, port));
      }
      if (anyPort) {
        const bound = rule.proto === 'tcp' ? (entry.servers[0]!.address() as net.AddressInfo).port : entry.sockets[0]!.address().port;
        entry.rule.hostPort = bound;
        if (renamed) entry.rule.name = defaultRuleName(rule.proto, rule.hostAddr, bound, 1);
        if (this.entries.has(entry.rule.name)) throw new ForwardError('EEXIST', entry.rule.name, `a forward named ${entry.rule.name} already exists`);
      }
      // `localhost` may resolve to ::1 (podman users meet exactly this): a forward on 127.0.0.1
      // listens on ::1 too, on the same port, when it can (best effort: a host without IPv6, or
      // ::1's port taken by someone else, leaves the IPv4 listener alone).
      if (rule.hostAddr === DEFAULT_HOST_ADDR && this.options.loopback6 !== false) {
        for (let i = 0; i < rule.portCount; i++) {
          const port = entry.rule.hostPort + i;
          try {
            if (rule.proto === 'tcp') entry.servers.push(await this.listenTcp(entry, port, '::1'));
            else entry.sockets.push(await this.bindUdp(entry, port, '::1'));
          } catch (err) {
            this.stats.loopback6Skipped++;
            trace('no ::1 twin for %s port %d: %o', rule.name, port, err);
          }
        }
      }
      if (this.closed) throw new ForwardError('ECLOSED', rule.name, 'vmnat is shutting down');
    } catch (err) {
      this.stats.addFailed++;
      await this.closeListeners(entry);
      throw err;
    } finally {
      if (pendingName !== undefined) this.pending.delete(pendingName);
    }
    this.entries.set(entry.rule.name, entry);
    this.stats.rulesAdded++;
    trace('added %s %s', entry.rule.name, formatHostSide(entry.rule));
    this.emit({ type: 'forward', event: 'added', rule: ruleToJson(entry.rule) });
    return { ...entry.rule };
  }

  /**
   * Removes a rule: its listeners close now (new clients are refused) and its UDP flows end;
   * TCP connections already accepted carry on until they finish. False if no such rule.
   */
  async remove(name: string): Promise<boolean> {
    const entry = this.entries.get(name);
    if (entry === undefined) return false;
    this.entries.delete(name);
    for (const flow of [...entry.udpFlows]) this.endUdpFlow(flow, 'closed');
    await this.closeListeners(entry);
    this.stats.rulesRemoved++;
    trace('removed %s', name);
    this.emit({ type: 'forward', event: 'removed', rule: ruleToJson(entry.rule) });
    return true;
  }

  get(name: string): ForwardRule | undefined {
    const e = this.entries.get(name);
    return e === undefined ? undefined : { ...e.rule };
  }

  /** Rules in the order they were added, with live counters. */
  list(): ForwardEntry[] {
    return [...this.entries.values()].map((e) => ({
      rule: { ...e.rule },
      tcpAccepted: e.tcpAccepted,
      tcpActive: e.tcpActive,
      udpFlows: e.udpFlows.size,
    }));
  }

  get size(): number {
    return this.entries.size;
  }

  /** Forward events (added/removed). Returns the unsubscribe function. */
  subscribe(listener: (e: ForwardEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Closes every listener and UDP flow (shutdown). Accepted TCP connections are the dialer's. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const names = [...this.entries.keys()];
    await Promise.all(names.map((n) => this.remove(n)));
    if (this.sweepTimer !== undefined) clearInterval(this.sweepTimer);
    this.sweepTimer = undefined;
  }

  private emit(e: ForwardEvent): void {
    for (const l of this.listeners) {
      try {
        l(e);
      } catch (err) {
        trace('event listener threw: %o', err);
      }
    }
  }

  // ── TCP ─────────────────────────────────────────────────────────────────────────────────────

  private listenTcp(entry: Entry, port: number, hostAddr?: string): Promise<net.Server> {
    const rule = entry.rule;
    const host = hostAddr ?? rule.hostAddr;
    // allowHalfOpen: a client that half-closes must still get the rest of the guest's reply.
    // `port` 0: the kernel picks one; connections are told the port actually bound.
    let bound = port;
    const server = net.createServer({ pauseOnConnect: true, allowHalfOpen: true }, (socket) => this.onTcpConnection(entry, bound, socket));
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => reject(listenError(rule, port, err));
      server.once('error', onError);
      server.listen({ host, port, ipv6Only: host.includes(':'), exclusive: true }, () => {
        server.off('error', onError);
        bound = (server.address() as net.AddressInfo).port;
        server.on('error', (err) => {
          this.stats.listenerErrors++;
          trace('listener %s:%d: %o', rule.hostAddr, port, err);
        });
        resolve(server);
      });
    });
  }

  private async listenUnix(entry: Entry): Promise<net.Server> {
    const rule = entry.rule;
    const p = rule.hostAddr;
    const server = net.createServer({ pauseOnConnect: true, allowHalfOpen: true }, (socket) => this.onTcpConnection(entry, 0, socket));
    try {
      checkSocketParent(p);
      await replaceStaleSocket(p, 'give another path, or stop it');
      entry.socketIdentity = await listenPrivate(server, p);
    } catch (err) {
      if (server.listening) server.close();
      if (err instanceof RuntimeDirError) throw new ForwardError('EPATH', rule.name, `${p}: ${err.message} (forward ${rule.name})`, { cause: err });
      if (err instanceof UnixSocketError) {
        const code = err.code === 'EADDRINUSE_LIVE' ? 'EADDRINUSE' : err.code === 'EPATH_NOT_SOCKET' ? 'EPATH' : (err.cause as NodeJS.ErrnoException | undefined)?.code === 'EACCES' ? 'EACCES' : 'ESYSTEM';
        throw new ForwardError(code, rule.name, `${err.message} (forward ${rule.name})`, { cause: err });
      }
      throw err;
    }
    server.on('error', (err) => {
      this.stats.listenerErrors++;
      trace('listener %s: %o', p, err);
    });
    return server;
  }

  private onTcpConnection(entry: Entry, port: number, socket: net.Socket): void {
    this.stats.tcpAccepted++;
    entry.tcpAccepted++;
    entry.tcpActive++;
    // A client that resets before the dialer attaches its handlers must not crash the process.
    socket.on('error', () => this.stats.tcpSocketErrors++);
    // A unix socket's peer has no address: the rule's path stands for it (listings, budgets).
    const unix = entry.rule.proto === 'unix';
    const target = this.target(entry, port, unix ? `unix:${entry.rule.hostAddr}` : (socket.remoteAddress ?? ''), socket.remotePort ?? 0);
    let live: ForwardedConnection = socket;
    try {
      live = this.dialer.dialTcp(socket, target) ?? socket;
    } catch (err) {
      this.stats.dialerThrew++;
      trace('dialTcp threw: %o', err);
      resetSocket(socket);
    }
    if (live !== socket && live instanceof net.Socket) live.on('error', () => this.stats.tcpSocketErrors++);
    live.once('close', () => entry.tcpActive--);
  }

  // ── UDP ─────────────────────────────────────────────────────────────────────────────────────

  private bindUdp(entry: Entry, port: number, hostAddr?: string): Promise<dgram.Socket> {
    const rule = entry.rule;
    const host = hostAddr ?? rule.hostAddr;
    const v6 = host.includes(':');
    const socket = dgram.createSocket({ type: v6 ? 'udp6' : 'udp4', ipv6Only: v6 });
    return new Promise((resolve, reject) => {
      const onError = (err: Error): void => {
        socket.close();
        reject(listenError(rule, port, err));
      };
      socket.once('error', onError);
      socket.bind({ address: host, port, exclusive: true }, () => {
        socket.off('error', onError);
        socket.on('error', (err) => {
          this.stats.listenerErrors++;
          trace('udp %s:%d: %o', rule.hostAddr, port, err);
        });
        const bound = socket.address().port; // differs from `port` when that is 0
        socket.on('message', (msg, rinfo) => this.onDatagram(entry, bound, socket, msg, rinfo));
        resolve(socket);
      });
    });
  }

  private onDatagram(entry: Entry, port: number, socket: dgram.Socket, msg: Buffer, rinfo: dgram.RemoteInfo): void {
    if (!this.entries.has(entry.rule.name)) return; // removed while datagrams were queued
    this.stats.datagramsFromHost++;
    this.stats.bytesFromHost += msg.length;
    const key = `${entry.rule.name}|${port}|${rinfo.address}|${rinfo.port}`;
    const now = Date.now();
    let flow = this.udpFlows.get(key);
    if (flow !== undefined) {
      this.udpFlows.delete(key); // re-insert: most recent last
      this.udpFlows.set(key, flow);
    } else {
      if (this.udpFlows.size >= this.maxUdpFlows) {
        const oldest = this.udpFlows.values().next();
        if (!oldest.done) this.endUdpFlow(oldest.value, 'evicted');
      }
      const state: UdpFlowState = { key, entry, guest: NO_FLOW, lastActive: now, closed: false };
      const peer: HostUdpPeer = {
        send: (payload) => {
          if (state.closed) return;
          state.lastActive = Date.now();
          this.stats.datagramsToHost++;
          this.stats.bytesToHost += payload.length;
          // A copy: `payload` is a view into the link's receive buffer, which the next batch of
          // frames overwrites, and dgram reads it later (after its address lookup, or from
          // libuv's queue when the socket buffer is full).
          socket.send(Buffer.from(payload), rinfo.port, rinfo.address, (err) => {
            if (err) this.stats.udpSendErrors++;
          });
        },
        close: () => {
          if (state.closed) return;
          state.guest = NO_FLOW; // the dialer ended it: do not call it back
          this.endUdpFlow(state, 'closed');
        },
      };
      let guest: GuestUdpFlow | undefined;
      try {
        guest = this.dialer.openUdp(this.target(entry, port, rinfo.address, rinfo.port), peer);
      } catch (err) {
        this.stats.dialerThrew++;
        trace('openUdp threw: %o', err);
      }
      if (guest === undefined) {
        this.stats.udpRefused++;
        return;
      }
      state.guest = guest;
      flow = state;
      this.udpFlows.set(key, flow);
      entry.udpFlows.add(flow);
      this.stats.udpFlowsOpened++;
      this.armSweep();
    }
    flow.lastActive = now;
    try {
      flow.guest.send(msg);
    } catch (err) {
      this.stats.dialerThrew++;
      trace('udp send threw: %o', err);
    }
  }

  private endUdpFlow(flow: UdpFlowState, why: 'closed' | 'expired' | 'evicted'): void {
    if (flow.closed) return;
    flow.closed = true;
    this.udpFlows.delete(flow.key);
    flow.entry.udpFlows.delete(flow);
    this.stats.udpFlowsClosed++;
    if (why === 'expired') this.stats.udpFlowsExpired++;
    if (why === 'evicted') this.stats.udpFlowsEvicted++;
    try {
      flow.guest.close();
    } catch (err) {
      this.stats.dialerThrew++;
      trace('udp close threw: %o', err);
    }
    if (this.udpFlows.size === 0 && this.sweepTimer !== undefined) {
      clearInterval(this.sweepTimer);
      this.sweepTimer = undefined;
    }
  }

  private armSweep(): void {
    if (this.sweepTimer !== undefined) return;
    const every = Math.max(10, Math.min(SWEEP_MAX_MS, Math.floor(this.udpIdleMs / 2)));
    this.sweepTimer = setInterval(() => this.sweep(), every);
    this.sweepTimer.unref();
  }

  private sweep(): void {
    const deadline = Date.now() - this.udpIdleMs;
    // Map order is recency order for traffic from the host, but guest replies refresh
    // lastActive without reordering, so look at every flow (bounded by maxUdpFlows).
    for (const flow of [...this.udpFlows.values()]) if (flow.lastActive <= deadline) this.endUdpFlow(flow, 'expired');
  }

  // ── shared ──────────────────────────────────────────────────────────────────────────────────

  private target(entry: Entry, port: number, clientAddr: string, clientPort: number): ForwardTarget {
    const rule = entry.rule;
    return {
      rule: rule.name,
      proto: rule.proto,
      guestIp: rule.guestAddr === undefined ? undefined : parseIp(rule.guestAddr),
      guestPort: guestPortFor(rule, port),
      clientAddr,
      clientPort,
      hostPort: port,
    };
  }

  private closeListeners(entry: Entry): Promise<void> {
    const done: Promise<void>[] = [];
    // net.Server.close() closes the listening handle now; its callback would wait for every
    // accepted connection, which remove() deliberately does not.
    for (const s of entry.servers) if (s.listening) s.close();
    if (entry.rule.proto === 'unix' && entry.socketIdentity !== undefined) {
      // libuv unlinks a listening pipe's path on close; make sure, but never a file someone else
      // bound there since.
      if (fileIdentity(entry.rule.hostAddr) === entry.socketIdentity) {
        try {
          fs.unlinkSync(entry.rule.hostAddr);
        } catch {
          // already gone
        }
      }
      entry.socketIdentity = undefined;
    }
    for (const s of entry.sockets) {
      done.push(
        new Promise((resolve) => {
          try {
            s.close(() => resolve());
          } catch {
            resolve(); // already closed
          }
        }),
      );
    }
    entry.servers.length = 0;
    entry.sockets.length = 0;
    return Promise.all(done).then(() => undefined);
  }
}

/**
 * Ends a host connection so its client sees a reset where one exists: a TCP RST, or a plain close
 * for a unix socket (Node's resetAndDestroy throws on anything but TCP).
 */
export function resetSocket(socket: net.Socket): void {
  try {
    socket.resetAndDestroy();
  } catch {
    socket.destroy();
  }
}

const NO_FLOW: GuestUdpFlow = { send: () => undefined, close: () => undefined };

function listenError(rule: ForwardRule, port: number, err: unknown): ForwardError {
  const code = typeof err === 'object' && err !== null && 'code' in err ? String((err as { code: unknown }).code) : '';
  const addr = rule.hostAddr.includes(':') ? `[${rule.hostAddr}]:${port}` : `${rule.hostAddr}:${port}`;
  const what = `${rule.proto} ${addr}`;
  switch (code) {
    case 'EADDRINUSE':
      return new ForwardError('EADDRINUSE', rule.name, `${what} is already in use (forward ${rule.name})`, { cause: err });
    case 'EACCES':
      return new ForwardError('EACCES', rule.name, `${what}: permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE) (forward ${rule.name})`, { cause: err });
    case 'EADDRNOTAVAIL':
    case 'EAFNOSUPPORT':
    case 'EINVAL':
      return new ForwardError('EADDRNOTAVAIL', rule.name, `${what}: ${rule.hostAddr} is not an address of this host (forward ${rule.name})`, { cause: err });
    default:
      return new ForwardError('ESYSTEM', rule.name, `${what}: ${err instanceof Error ? err.message : String(err)} (forward ${rule.name})`, { cause: err });
  }
}
