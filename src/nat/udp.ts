/**
 * UDP through the NAT: one connected host socket per guest flow.
 *
 * Theory of operation: a flow is the 4-tuple (guest address:port → destination address:port).
 * Its host side is a `udp4` (or, for IPv6, `udp6`) socket connect()ed to the destination the policy chose (the gateway
 * becomes 127.0.0.1), so the kernel filters replies to that peer only and reports ICMP port
 * unreachable as ECONNREFUSED, which we turn into an ICMP port unreachable to the guest (quoting
 * the guest's own header, as a router would). Replies go back to the guest from the address it
 * sent to. Mapping is endpoint-dependent (like libslirp): simple, and a guest gets no datagrams from
 * peers it never addressed.
 *
 * Limits: `maxFlows` (the least recently active flow is closed to admit a new one), an idle
 * timeout (default 60 s) swept once a second, and a bounded queue of datagrams waiting for the
 * socket's connect. Broadcast and multicast are not forwarded (counted by the caller).
 *
 * Send queues: when the kernel's socket buffer is full (a slow uplink), libuv queues every
 * `send` in user space, holding its Buffer — a guest flooding such a destination grew vmnat's
 * memory by the size of the flood. So the bytes a flow has handed to its socket and not yet seen
 * completed (plus those waiting for its connect) are capped per flow (`maxQueuedBytesPerFlow`,
 * 256 KiB) and over all flows (`maxQueuedBytes`, 16 MiB); a datagram beyond either is dropped and
 * counted (`flowQueueFull`, `totalQueueFull`), as a full router queue would drop it. UDP promises
 * nothing more; the guest's own congestion control (QUIC, a rate-limited sender) copes.
 *
 * Failures are the guest's answer, never an exception: port 0 is refused before any socket exists
 * (Node's connect() throws on it); a connect() the host refuses (no route, a directed broadcast, a
 * cgroup/BPF deny) answers the guest with the matching ICMP unreachable and closes the flow, so
 * nothing is ever sent on a socket Node left unconnected (that send() would throw).
 */
import dgram from 'node:dgram';
import type { IpAddr, MacAddr } from '../stack/wire/addr.ts';
import { writeIpv6 } from '../stack/wire/ipv6.ts';
import type { Stack } from '../stack/stack.ts';
import { IdleSweep } from './idle.ts';
import { IcmpType, IcmpUnreachCode } from '../stack/wire/icmpv4.ts';
import { IpProto, writeIpv4 } from '../stack/wire/ipv4.ts';
import { FlowTable, sideKey, type FlowAdmission, type FlowEntry, type FlowIndex } from './flows.ts';

export interface UdpNatOptions {
  idleTimeoutMs: number;
  maxFlows: number;
  /** The engine's flow table (flows.ts); a NAT made alone keeps a table of its own. */
  table?: FlowTable;
  /** The filter's say on each new flow (flows.ts); absent = every flow may open. */
  admit?: FlowAdmission;
  /** Bytes one flow may have queued towards its socket (default 256 KiB). */
  maxQueuedBytesPerFlow?: number;
  /** Bytes all flows together may have queued (default 16 MiB). */
  maxQueuedBytes?: number;
}

export const UDP_MAX_QUEUED_PER_FLOW = 256 * 1024;
export const UDP_MAX_QUEUED_TOTAL = 16 * 1024 * 1024;

export function createUdpNatStats() {
  return {
    flowsOpened: 0, flowsClosed: 0, flowsExpired: 0, flowsEvicted: 0,
    datagramsFromGuest: 0, datagramsToGuest: 0, bytesFromGuest: 0, bytesToGuest: 0,
    refused: 0, sendErrors: 0, pendingDropped: 0, badPort: 0, connectFailed: 0, flowLimit: 0, refusedByFilter: 0, closedByFilter: 0,
    /** Datagrams dropped: their flow had maxQueuedBytesPerFlow queued / all flows had maxQueuedBytes. */
    flowQueueFull: 0, totalQueueFull: 0,
    /** Gauge: bytes queued towards host sockets now, all flows. */
    queuedBytes: 0,
  };
}

interface UdpFlow extends FlowEntry {
  readonly proto: 'udp';
  /** Position in the LRU map. */
  key: number;
  guestIp: IpAddr;
  guestPort: number;
  guestMac: MacAddr;
  dstIp: IpAddr;
  dstPort: number;
  hostAddress: string;
  socket: dgram.Socket;
  connected: boolean;
  pending: Buffer[];
  /** Bytes sent or pending whose send has not completed. */
  queued: number;
  lastActive: number;
  bytesFromGuest: number;
  bytesToGuest: number;
  closed: boolean;
}

const MAX_PENDING = 64;

export class UdpNat {
  readonly stats = createUdpNatStats();
  /** By creation number; Map order = recency (LRU), for eviction. */
  private readonly flows = new Map<number, UdpFlow>();
  /** The same flows by their two sides, in the engine's flow table. */
  private readonly index: FlowIndex<UdpFlow>;
  private readonly table: FlowTable;
  private readonly idle: IdleSweep;
  private flowSeq = 0;
  private readonly maxPerFlow: number;
  private readonly maxTotal: number;

  constructor(
    private readonly stack: Stack,
    private readonly options: UdpNatOptions,
    private readonly now: () => number,
    private readonly wake: () => void,
  ) {
    this.idle = new IdleSweep(options.idleTimeoutMs);
    this.maxPerFlow = options.maxQueuedBytesPerFlow ?? UDP_MAX_QUEUED_PER_FLOW;
    this.maxTotal = options.maxQueuedBytes ?? UDP_MAX_QUEUED_TOTAL;
    this.table = options.table ?? new FlowTable();
    this.index = this.table.index<UdpFlow>('udp');
    this.index.closer = (f) => {
      this.stats.closedByFilter++;
      this.close(f);
    };
  }

  get size(): number {
    return this.flows.size;
  }

  /** A datagram from the guest for `hostAddress` (already decided by the policy). */
  output(guestMac: MacAddr, guestIp: IpAddr, guestPort: number, dstIp: IpAddr, dstPort: number, hostAddress: string, payload: Uint8Array, now: number): void {
    if (dstPort === 0) {
      // Reserved (RFC 768 has no port 0 service) and Node's connect() throws on it: as a host
      // would, say "port unreachable".
      this.stats.badPort++;
      this.portUnreachable(guestMac, guestIp, guestPort, dstIp, dstPort);
      return;
    }
    let flow = this.index.get(0, sideKey(guestIp, guestPort), sideKey(dstIp, dstPort));
    if (flow === undefined) {
      if (this.options.admit !== undefined && !this.options.admit('udp', guestIp, guestPort, dstIp, dstPort)) {
        this.stats.refusedByFilter++;
        this.unreachable(guestMac, guestIp, guestPort, dstIp, dstPort, IcmpUnreachCode.AdminProhibited);
        return;
      }
      flow = this.open(guestMac, guestIp, guestPort, dstIp, dstPort, hostAddress, now);
      if (flow === undefined) return;
      this.index.add(flow, sideKey(guestIp, guestPort), sideKey(dstIp, dstPort));
    } else {
      // Refresh recency: the Map's insertion order is the LRU order.
      this.flows.delete(flow.key);
      this.flows.set(flow.key, flow);
    }
    flow.lastActive = now;
    flow.guestMac = guestMac;
    this.stats.datagramsFromGuest++;
    this.stats.bytesFromGuest += payload.length;
    flow.bytesFromGuest += payload.length;
    const len = payload.length;
    if (flow.queued + len > this.maxPerFlow) {
      this.stats.flowQueueFull++;
      return;
    }
    if (this.stats.queuedBytes + len > this.maxTotal) {
      this.stats.totalQueueFull++;
      return;
    }
    if (!flow.connected && flow.pending.length >= MAX_PENDING) {
      this.stats.pendingDropped++;
      return;
    }
    const data = Buffer.from(payload); // copies: the frame's buffer is reused after this call
    flow.queued += len;
    this.stats.queuedBytes += len;
    if (!flow.connected) {
      flow.pending.push(data);
      return;
    }
    this.send(flow, data);
  }

  /** Sends `data` (already counted in the queues); its completion (or failure) uncounts it. */
  private send(flow: UdpFlow, data: Buffer): void {
    const len = data.length;
    let counted = true;
    const done = (): void => {
      // A closed flow gave all its queued bytes back at close (libuv may or may not call back).
      if (!counted || flow.closed) return;
      counted = false;
      flow.queued -= len;
      this.stats.queuedBytes -= len;
    };
    try {
      flow.socket.send(data, (err) => {
        done();
        if (err) this.onSocketError(flow, err as NodeJS.ErrnoException);
      });
    } catch (err) {
      // Only a closed socket or bad arguments throw here: count it, keep the flow's state.
      done();
      this.onSocketError(flow, err as NodeJS.ErrnoException);
    }
  }

  /** A closed flow's queued bytes (sent or pending) leave the global count at once. */
  private uncountAll(flow: UdpFlow): void {
    this.stats.queuedBytes -= flow.queued;
    flow.queued = 0;
    flow.pending = [];
  }

  private open(guestMac: MacAddr, guestIp: IpAddr, guestPort: number, dstIp: IpAddr, dstPort: number, hostAddress: string, now: number): UdpFlow | undefined {
    if (this.flows.size >= this.options.maxFlows || this.table.guestFull) {
      // The least recently active flow of ours makes room; with none, the guests' budget is taken
      // by other protocols' flows and this one is refused.
      const oldest = this.flows.values().next();
      if (oldest.done) {
        this.stats.flowLimit++;
        return undefined;
      }
      this.stats.flowsEvicted++;
      this.close(oldest.value);
    }
    const socket = dgram.createSocket({ type: hostAddress.includes(':') ? 'udp6' : 'udp4' });
    const key = ++this.flowSeq;
    const flow: UdpFlow = {
      proto: 'udp', net: 0, openedAt: now, stateName: 'active',
      key,
      guestIp, guestPort, guestMac, dstIp, dstPort, hostAddress, socket,
      connected: false, pending: [], queued: 0, lastActive: now, bytesFromGuest: 0, bytesToGuest: 0, closed: false,
    };
    this.flows.set(key, flow);
    this.stats.flowsOpened++;
    socket.on('message', (msg) => this.onMessage(flow, msg));
    socket.on('error', (err) => this.onSocketError(flow, err as NodeJS.ErrnoException));
    const onConnect = (err?: Error) => {
      if (flow.closed) return;
      if (err) {
        this.connectFailed(flow, err as NodeJS.ErrnoException);
        return;
      }
      flow.connected = true;
      const pending = flow.pending;
      flow.pending = [];
      for (const data of pending) this.send(flow, data);
    };
    try {
      socket.connect(dstPort, hostAddress, onConnect);
    } catch (err) {
      queueMicrotask(() => onConnect(err as Error));
    }
    if (this.idle.arm(now)) this.wake();
    return flow;
  }

  private onMessage(flow: UdpFlow, msg: Buffer): void {
    if (flow.closed) return;
    flow.lastActive = this.now();
    flow.bytesToGuest += msg.length;
    this.stats.datagramsToGuest++;
    this.stats.bytesToGuest += msg.length;
    this.stack.sendUdp(flow.dstIp, flow.dstPort, flow.guestIp, flow.guestPort, msg, flow.guestMac);
  }

  private onSocketError(flow: UdpFlow, err: NodeJS.ErrnoException): void {
    if (flow.closed) return;
    if (err.code === 'ECONNREFUSED') {
      this.stats.refused++;
      this.portUnreachable(flow.guestMac, flow.guestIp, flow.guestPort, flow.dstIp, flow.dstPort);
      return;
    }
    this.stats.sendErrors++;
  }

  /**
   * The host refused connect(): the guest hears it as a router would say it (no route → net or
   * host unreachable; a policy deny or a broadcast → administratively prohibited), and the flow
   * ends, so its next datagram tries afresh.
   */
  private connectFailed(flow: UdpFlow, err: NodeJS.ErrnoException): void {
    this.stats.connectFailed++;
    const code =
      err.code === 'ENETUNREACH' ? IcmpUnreachCode.Net
      : err.code === 'EACCES' || err.code === 'EPERM' ? IcmpUnreachCode.AdminProhibited
      : IcmpUnreachCode.Host;
    this.unreachable(flow.guestMac, flow.guestIp, flow.guestPort, flow.dstIp, flow.dstPort, code);
    this.close(flow);
  }

  /** ICMP port unreachable to the guest, quoting the header of a datagram it sent on this flow. */
  private portUnreachable(guestMac: MacAddr, guestIp: IpAddr, guestPort: number, dstIp: IpAddr, dstPort: number): void {
    this.unreachable(guestMac, guestIp, guestPort, dstIp, dstPort, IcmpUnreachCode.Port);
  }

  private unreachable(guestMac: MacAddr, guestIp: IpAddr, guestPort: number, dstIp: IpAddr, dstPort: number, code: number): void {
    // The quote: an IP header as the guest sent it and the UDP header (its length; no payload).
    const v6 = typeof guestIp === 'string' && typeof dstIp === 'string';
    const h = v6 ? 40 : 20;
    const quote = new Uint8Array(h + 8);
    if (typeof guestIp === 'string' && typeof dstIp === 'string') writeIpv6(quote, 0, 8, IpProto.UDP, 64, guestIp, dstIp);
    else if (typeof guestIp === 'number' && typeof dstIp === 'number') writeIpv4(quote, 0, 28, 0, 0, 64, IpProto.UDP, guestIp, dstIp);
    else return;
    quote[h] = guestPort >>> 8;
    quote[h + 1] = guestPort & 0xff;
    quote[h + 2] = dstPort >>> 8;
    quote[h + 3] = dstPort & 0xff;
    quote[h + 5] = 8;
    this.stack.sendIcmpErrorQuoting(quote, guestMac, dstIp, guestIp, IcmpType.DestUnreachable, code);
  }

  private close(flow: UdpFlow): void {
    if (flow.closed) return;
    flow.closed = true;
    this.uncountAll(flow);
    this.flows.delete(flow.key);
    this.index.delete(flow, sideKey(flow.guestIp, flow.guestPort), sideKey(flow.dstIp, flow.dstPort));
    flow.socket.close();
    this.stats.flowsClosed++;
  }

  poll(now: number): void {
    this.idle.run(
      now,
      this.flows.values(),
      (flow) => {
        this.stats.flowsExpired++;
        this.close(flow);
      },
      () => this.flows.size,
    );
  }

  nextDeadline(): number | undefined {
    return this.idle.deadline;
  }

  closeAll(): void {
    for (const flow of [...this.flows.values()]) this.close(flow);
    this.idle.stop();
  }
}

