/**
 * ICMP echo through the NAT: a guest's pings to outside addresses leave through unprivileged
 * ICMP "ping" sockets (socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP), native/src/icmp.cc).
 *
 * Theory of operation: a flow is (guest address, guest echo identifier, destination). Its host side
 * is one ping socket, for which the kernel picked an identifier of its own: it rewrites the
 * identifier of every request we send and delivers to us only the replies that carry it. Sequence
 * numbers and data pass through untouched, so the mapping is the identifier alone: a reply gets the
 * guest's identifier back and goes to the guest from the address it pinged (the gateway for
 * 127.0.0.1). Only real replies are relayed, duplicates included; nothing is ever made up for an
 * address that did not answer. One socket per flow (rather than one shared socket rewriting
 * sequence numbers) keeps sequence numbers intact, lets `ping -f` run without a table of requests
 * in flight, and gives each flow the kernel's own demultiplexing.
 *
 * Hops: nat.ts already answers TTL ≤ 1 with "time exceeded" from the gateway. Requests leave with
 * the guest's TTL minus one (vmnat is a hop), and ICMP errors that routers send back about them
 * (destination unreachable, time exceeded, parameter problem; IP_RECVERR) are relayed to the guest
 * from the router that sent them, quoting the guest's request as it sent it. So traceroute works
 * past vmnat. A request the host cannot route at all (ENETUNREACH/EHOSTUNREACH from the send) gets
 * "destination unreachable" from the gateway, as a router without a route would send. Other error
 * types (redirect, source quench) and replies are dropped and counted.
 *
 * Permission: ping sockets need the process's group in net.ipv4.ping_group_range (per network
 * namespace; the kernel default "1 0" allows nobody, root included). The constructor probes once;
 * if the kernel refuses, one clear line is logged and every ping to an outside address is dropped
 * and counted (`dropped.notPermitted`). Pings to vmnat's own addresses are answered by the stack
 * and never come here.
 *
 * Limits: `maxFlows` sockets (the least recently active flow is closed to admit a new one), an
 * idle timeout (default 30 s) swept once a second.
 */
import type { Stack } from '../stack/stack.ts';
import { IdleSweep } from './idle.ts';
import type { Ipv4View } from '../stack/wire/ipv4.ts';
import { IpProto, IPV4_HLEN, writeIpv4 } from '../stack/wire/ipv4.ts';
import { IcmpTimeExceededCode, IcmpType, IcmpUnreachCode, Icmpv4View } from '../stack/wire/icmpv4.ts';
import { adjustChecksum16 } from '../stack/wire/checksum.ts';
import { formatIp, formatIpv4, parseIp, type IpAddr, type Ipv4Addr, type MacAddr } from '../stack/wire/addr.ts';
import { IPV6_HLEN, Ipv6Next, Ipv6View, writeIpv6 } from '../stack/wire/ipv6.ts';
import { Icmpv6Type, Icmpv6UnreachCode, Icmpv6View } from '../stack/wire/icmpv6.ts';
import { loadNative, type NativePingSocket, type NativePingSocketOptions } from '../link/native.ts';
import { FlowTable, sideKey, type FlowAdmission, type FlowEntry, type FlowIndex } from './flows.ts';

export interface IcmpNatOptions {
  idleTimeoutMs: number;
  maxFlows: number;
  /** The engine's flow table (flows.ts); a NAT made alone keeps a table of its own. */
  table?: FlowTable;
  /** The filter's say on each new flow (flows.ts); absent = every flow may open. */
  admit?: FlowAdmission;
  /** vmnat's gateway address: the source of errors the host itself raises. */
  gateway: Ipv4Addr;
}

/** The host side of a flow: what the native PingSocket offers (a fake in unit tests). */
export type PingHandle = Pick<NativePingSocket, 'ident' | 'send' | 'close'>;

/** Opens a ping socket for `hostAddress`; throws an Error with `code` (EACCES, EMFILE, …). */
export type PingOpener = (hostAddress: string, events: NativePingSocketOptions) => PingHandle;

/** The native addon's PingSocket (the only I/O adapter of this module). */
export function nativePingOpener(): PingOpener {
  return (hostAddress, events) => new (loadNative().PingSocket)(hostAddress, events);
}

export interface IcmpNatLog {
  warn(msg: string): void;
}

export function createIcmpNatStats() {
  return {
    flowsOpened: 0, flowsClosed: 0, flowsExpired: 0, flowsEvicted: 0,
    requestsFromGuest: 0, repliesToGuest: 0, errorsToGuest: 0, unreachableToGuest: 0,
    bytesFromGuest: 0, bytesToGuest: 0, sendErrors: 0, openErrors: 0, flowLimit: 0, refusedByFilter: 0, closedByFilter: 0,
    dropped: {
      notPermitted: 0, truncated: 0, badChecksum: 0, notEchoRequest: 0, badCode: 0,
      foreignSource: 0, badReply: 0, errorType: 0, errorNoOffender: 0, errorTruncated: 0,
    },
  };
}

interface IcmpFlow extends FlowEntry {
  readonly proto: 'icmp';
  bytesFromGuest: number;
  bytesToGuest: number;
  /** Position in the LRU map. */
  key: number;
  guestIp: IpAddr;
  guestIdent: number;
  guestMac: MacAddr;
  /** The destination as the guest addressed it. */
  dstIp: IpAddr;
  /** Where the policy sends it on the host (127.0.0.1 for the gateway, ::1 for the IPv6 one). */
  hostAddress: string;
  hostIp: IpAddr;
  socket: PingHandle;
  /** The kernel's identifier for this socket (what the host-side messages carry). */
  hostIdent: number;
  /** TTL and ICMP length of the guest's latest request: for the quote in a relayed error. */
  lastTtl: number;
  lastLen: number;
  lastActive: number;
  requests: number;
  replies: number;
  closed: boolean;
}

/** Quote at most this much of the guest's ICMP message in a relayed error (576-byte error, RFC 1812). */
const MAX_QUOTED_ICMP = 576 - IPV4_HLEN - 8 - IPV4_HLEN;

export class IcmpNat {
  readonly stats = createIcmpNatStats();
  /** Why ping sockets cannot be used (an errno name), or undefined when they can. */
  notPermitted: string | undefined;
  private readonly flows = new Map<number, IcmpFlow>();
  /** The same flows by (guest address, identifier) and destination, in the engine's flow table. */
  private readonly index: FlowIndex<IcmpFlow>;
  private readonly table: FlowTable;
  private readonly idle: IdleSweep;
  private flowSeq = 0;
  private readonly quote = new Uint8Array(IPV4_HLEN + MAX_QUOTED_ICMP);

  constructor(
    private readonly stack: Stack,
    private readonly options: IcmpNatOptions,
    private readonly opener: PingOpener,
    private readonly now: () => number,
    private readonly wake: () => void,
    private readonly log: IcmpNatLog,
  ) {
    this.idle = new IdleSweep(options.idleTimeoutMs);
    this.table = options.table ?? new FlowTable();
    this.index = this.table.index<IcmpFlow>('icmp');
    this.index.closer = (f) => {
      this.stats.closedByFilter++;
      this.close(f);
    };
    this.probe();
  }

  get size(): number {
    return this.flows.size;
  }

  /** Opens and closes one socket, so that a refusal is reported at start rather than at the first ping. */
  private probe(): void {
    let handle: PingHandle | undefined;
    try {
      handle = this.opener('127.0.0.1', { onMessage: () => {}, onError: () => {} });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EACCES' || code === 'EPERM' || code === 'EPROTONOSUPPORT' || code === 'EAFNOSUPPORT' || code === undefined) {
        this.disable(code ?? (err as Error).message);
      }
      // Anything else (EMFILE, …) may pass: flows will try again and count their failures.
    }
    handle?.close();
  }

  private disable(reason: string): void {
    if (this.notPermitted !== undefined) return;
    this.notPermitted = reason;
    this.log.warn(
      `ICMP echo to outside addresses is off: ping sockets are not permitted (${reason}); ` +
        (process.platform === 'linux'
          ? `allow this process's group with sysctl net.ipv4.ping_group_range (e.g. "0 2147483647"). `
          : `this system refused an unprivileged SOCK_DGRAM/IPPROTO_ICMP socket. `) +
        `Pings to ${formatIpv4(this.options.gateway)} still work; other pings are dropped (counted).`,
    );
  }

  /** An ICMP message from the guest for `hostAddress` (already decided by the policy; TTL > 1). */
  input(ip: Ipv4View | Ipv6View, guestMac: MacAddr, now: number, hostAddress: string): void {
    if (ip instanceof Ipv6View) return this.input6(ip, guestMac, now, hostAddress);
    const icmp = Icmpv4View.checked(ip.buf, ip.payloadOff, ip.payloadLen);
    if (typeof icmp === 'string') {
      this.stats.dropped[icmp]++;
      return;
    }
    if (icmp.type !== IcmpType.EchoRequest) {
      this.stats.dropped.notEchoRequest++;
      return;
    }
    if (icmp.code !== 0) {
      this.stats.dropped.badCode++; // the kernel refuses them (EINVAL)
      return;
    }
    if (this.notPermitted !== undefined) {
      this.stats.dropped.notPermitted++;
      return;
    }
    // The kernel copies the message and rewrites its identifier and checksum: no copy here.
    const err = this.relayEcho(guestMac, ip.src, icmp.ident, ip.dst, hostAddress, now, ip.ttl, ip.buf.subarray(icmp.off, icmp.off + icmp.len), icmp.payloadLen, () =>
      this.stack.sendIcmpError(ip, guestMac, this.options.gateway, IcmpType.DestUnreachable, IcmpUnreachCode.AdminProhibited),
    );
    if (err === undefined) return;
    if (err === 'ENETUNREACH' || err === 'EHOSTUNREACH') {
      // The host has no route: say so as a router would, from the gateway.
      this.stats.unreachableToGuest++;
      const code = err === 'ENETUNREACH' ? IcmpUnreachCode.Net : IcmpUnreachCode.Host;
      this.stack.sendIcmpError(ip, guestMac, this.options.gateway, IcmpType.DestUnreachable, code);
      return;
    }
    this.stats.sendErrors++;
  }

  /**
   * ICMPv6 echo (RFC 4443 §4) through an IPv6 ping socket: the same flows and rules as IPv4; an
   * error vmnat raises itself goes out as ICMPv6 from the IPv6 gateway.
   */
  private input6(ip: Ipv6View, guestMac: MacAddr, now: number, hostAddress: string): void {
    const six = this.stack.ipv6;
    if (six === undefined) return;
    const icmp = Icmpv6View.checked(ip.buf, ip.payloadOff, ip.payloadLen, ip.addrSum);
    if (typeof icmp === 'string') {
      this.stats.dropped[icmp]++;
      return;
    }
    if (icmp.type !== Icmpv6Type.EchoRequest) {
      this.stats.dropped.notEchoRequest++;
      return;
    }
    if (icmp.code !== 0) {
      this.stats.dropped.badCode++;
      return;
    }
    if (this.notPermitted !== undefined) {
      this.stats.dropped.notPermitted++;
      return;
    }
    const err = this.relayEcho(guestMac, ip.src, icmp.ident, ip.dst, hostAddress, now, ip.hopLimit, ip.buf.subarray(icmp.off, icmp.off + icmp.len), icmp.payloadLen, () =>
      six.sendErrorAbout(ip, guestMac, Icmpv6Type.DestUnreachable, Icmpv6UnreachCode.AdminProhibited),
    );
    if (err === undefined) return;
    if (err === 'ENETUNREACH' || err === 'EHOSTUNREACH') {
      this.stats.unreachableToGuest++;
      six.sendErrorAbout(ip, guestMac, Icmpv6Type.DestUnreachable, err === 'ENETUNREACH' ? Icmpv6UnreachCode.NoRoute : Icmpv6UnreachCode.Address);
      return;
    }
    this.stats.sendErrors++;
  }

  /**
   * One echo request from either family through its flow: found (and made most recent) or opened
   * if the filter admits it (`refused` answers the guest otherwise), counted, and handed to the
   * ping socket with the hop limit one lower. Returns the send's errno name when it failed, else
   * undefined (sent, refused, or no flow could be opened: each already counted).
   */
  private relayEcho(
    guestMac: MacAddr,
    guestIp: IpAddr,
    guestIdent: number,
    dstIp: IpAddr,
    hostAddress: string,
    now: number,
    ttl: number,
    message: Uint8Array,
    payloadLen: number,
    refused: () => void,
  ): string | undefined {
    let flow = this.index.get(0, sideKey(guestIp, guestIdent), sideKey(dstIp, 0));
    if (flow === undefined) {
      if (this.options.admit !== undefined && !this.options.admit('icmp', guestIp, guestIdent, dstIp, 0)) {
        this.stats.refusedByFilter++;
        refused();
        return undefined;
      }
      flow = this.open(guestMac, guestIp, guestIdent, dstIp, hostAddress, now);
      if (flow === undefined) return undefined;
      this.index.add(flow, sideKey(guestIp, guestIdent), sideKey(dstIp, 0));
    } else {
      // Refresh recency: the Map's insertion order is the LRU order.
      this.flows.delete(flow.key);
      this.flows.set(flow.key, flow);
    }
    flow.lastActive = now;
    flow.guestMac = guestMac;
    flow.lastTtl = ttl;
    flow.lastLen = message.length;
    flow.requests++;
    flow.bytesFromGuest += payloadLen;
    this.stats.requestsFromGuest++;
    this.stats.bytesFromGuest += payloadLen;
    return flow.socket.send(message, Math.max(1, ttl - 1));
  }

  private open(guestMac: MacAddr, guestIp: IpAddr, guestIdent: number, dstIp: IpAddr, hostAddress: string, now: number): IcmpFlow | undefined {
    const hostIp = parseIp(hostAddress);
    if (hostIp === undefined) throw new Error(`IcmpNat: not an IP address: ${hostAddress}`); // policy bug
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
    let flow: IcmpFlow | undefined;
    let socket: PingHandle;
    try {
      socket = this.opener(hostAddress, {
        onMessage: (msg, src, ttl) => {
          if (flow !== undefined) this.onReply(flow, msg, typeof src === 'string' ? (parseIp(src) ?? src) : src, ttl);
        },
        onError: (type, code, info, offender, quoted) => {
          if (flow === undefined) return;
          if (typeof flow.guestIp === 'string') this.onError6(flow, type, code, info, typeof offender === 'string' ? (parseIp(offender) ?? offender) : undefined, quoted);
          else if (typeof offender === 'number') this.onError(flow, type, code, info, offender, quoted);
        },
      });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EACCES' || code === 'EPERM') {
        this.disable(code);
        this.stats.dropped.notPermitted++;
      } else {
        this.stats.openErrors++;
      }
      return undefined;
    }
    const key = ++this.flowSeq;
    flow = {
      proto: 'icmp', net: 0, guestPort: guestIdent, dstPort: 0, openedAt: now, stateName: 'active', bytesFromGuest: 0, bytesToGuest: 0,
      key, guestIp, guestIdent, guestMac, dstIp, hostAddress, hostIp, socket, hostIdent: socket.ident,
      lastTtl: 64, lastLen: 8, lastActive: now, requests: 0, replies: 0, closed: false,
    };
    this.flows.set(key, flow);
    this.stats.flowsOpened++;
    if (this.idle.arm(now)) this.wake();
    return flow;
  }

  /** An echo reply for the flow's socket: back to the guest with its own identifier. */
  private onReply(flow: IcmpFlow, msg: Uint8Array, src: IpAddr, ttl: number): void {
    if (flow.closed) return;
    if (src !== flow.hostIp) {
      // Our identifier, another sender: the guest never asked that address.
      this.stats.dropped.foreignSource++;
      return;
    }
    const v6 = typeof flow.guestIp === 'string';
    if (msg.length < 8 || msg[0] !== (v6 ? Icmpv6Type.EchoReply : IcmpType.EchoReply)) {
      this.stats.dropped.badReply++;
      return;
    }
    flow.lastActive = this.now();
    flow.replies++;
    flow.bytesToGuest += msg.length - 8;
    this.stats.repliesToGuest++;
    this.stats.bytesToGuest += msg.length - 8;
    const seq = (msg[6]! << 8) | msg[7]!;
    // vmnat is one more hop on the way back.
    const ttlOut = ttl < 0 ? 64 : Math.max(1, ttl - 1);
    this.stack.sendIcmpMessage(flow.guestMac, flow.dstIp, flow.guestIp, v6 ? Icmpv6Type.EchoReply : IcmpType.EchoReply, 0, ((flow.guestIdent << 16) | seq) >>> 0, msg.subarray(8), ttlOut);
  }

  /**
   * An ICMPv6 error about one of an IPv6 flow's requests (RFC 4443 §3: unreachable, packet too big,
   * time exceeded, parameter problem), relayed as for IPv4: quoting the guest's request with its
   * own identifier, from the router that sent it (the gateway for the host's own ::1).
   */
  private onError6(flow: IcmpFlow, type: number, code: number, info: number, offender: IpAddr | undefined, quoted: Uint8Array): void {
    if (flow.closed || typeof flow.guestIp !== 'string' || typeof flow.dstIp !== 'string') return;
    const six = this.stack.ipv6;
    if (six === undefined) return;
    if (type !== Icmpv6Type.DestUnreachable && type !== Icmpv6Type.PacketTooBig && type !== Icmpv6Type.TimeExceeded && type !== Icmpv6Type.ParameterProblem) {
      this.stats.dropped.errorType++;
      return;
    }
    if (offender === undefined || typeof offender !== 'string') {
      this.stats.dropped.errorNoOffender++;
      return;
    }
    if (quoted.length < 8) {
      this.stats.dropped.errorTruncated++;
      return;
    }
    const from = offender === flow.hostIp ? flow.dstIp : offender === '::1' ? six.config.gateway : offender;
    const icmpLen = Math.min(quoted.length, 1232 - IPV6_HLEN);
    const q = new Uint8Array(IPV6_HLEN + icmpLen);
    const hopLimit = type === Icmpv6Type.TimeExceeded && code === 0 ? 1 : flow.lastTtl;
    writeIpv6(q, 0, Math.max(flow.lastLen, icmpLen), Ipv6Next.ICMPv6, hopLimit, flow.guestIp, flow.dstIp);
    q.set(quoted.subarray(0, icmpLen), IPV6_HLEN);
    const hostIdent = (quoted[4]! << 8) | quoted[5]!;
    const fixed = adjustChecksum16((quoted[2]! << 8) | quoted[3]!, hostIdent, flow.guestIdent);
    q[IPV6_HLEN + 2] = fixed >>> 8;
    q[IPV6_HLEN + 3] = fixed & 0xff;
    q[IPV6_HLEN + 4] = flow.guestIdent >>> 8;
    q[IPV6_HLEN + 5] = flow.guestIdent & 0xff;
    this.stats.errorsToGuest++;
    six.sendIcmpMessage(flow.guestMac, from, flow.guestIp, type, code, type === Icmpv6Type.PacketTooBig || type === Icmpv6Type.ParameterProblem ? info >>> 0 : 0, q);
  }

  /**
   * An ICMP error about one of the flow's requests, from `offender`. `quoted` is the request as the
   * offender quoted it (the kernel's identifier in it).
   */
  private onError(flow: IcmpFlow, type: number, code: number, info: number, offender: number, quoted: Uint8Array): void {
    if (flow.closed) return;
    if (type !== IcmpType.DestUnreachable && type !== IcmpType.TimeExceeded && type !== IcmpType.ParameterProblem) {
      this.stats.dropped.errorType++;
      return;
    }
    if (offender < 0) {
      this.stats.dropped.errorNoOffender++;
      return;
    }
    if (quoted.length < 8) {
      this.stats.dropped.errorTruncated++;
      return;
    }
    // The host speaking for itself from loopback, or the destination behind the gateway mapping:
    // the guest knows them as the address it pinged, or as the gateway.
    const from = offender === flow.hostIp ? flow.dstIp : offender >>> 24 === 127 ? this.options.gateway : offender;
    if (typeof flow.guestIp !== 'number' || typeof flow.dstIp !== 'number') return;
    const q = this.quote;
    const icmpLen = Math.min(quoted.length, MAX_QUOTED_ICMP);
    const quotedTtl = type === IcmpType.TimeExceeded && code === IcmpTimeExceededCode.TtlExceeded ? 1 : flow.lastTtl;
    writeIpv4(q, 0, IPV4_HLEN + Math.max(flow.lastLen, icmpLen), 0, 0, quotedTtl, IpProto.ICMP, flow.guestIp, flow.dstIp);
    q.set(quoted.subarray(0, icmpLen), IPV4_HLEN);
    // Give the guest back its own identifier; the checksum follows (RFC 1624), so the quote reads
    // exactly as the guest's request did even when the offender quoted only part of it.
    const hostIdent = (quoted[4]! << 8) | quoted[5]!;
    const checksum = (quoted[2]! << 8) | quoted[3]!;
    const fixed = adjustChecksum16(checksum, hostIdent, flow.guestIdent);
    q[IPV4_HLEN + 2] = fixed >>> 8;
    q[IPV4_HLEN + 3] = fixed & 0xff;
    q[IPV4_HLEN + 4] = flow.guestIdent >>> 8;
    q[IPV4_HLEN + 5] = flow.guestIdent & 0xff;
    let rest = 0;
    if (type === IcmpType.DestUnreachable && code === IcmpUnreachCode.FragNeeded) rest = info & 0xffff;
    else if (type === IcmpType.ParameterProblem) rest = ((info & 0xff) << 24) >>> 0;
    this.stats.errorsToGuest++;
    this.stack.sendIcmpErrorQuoting(q.subarray(0, IPV4_HLEN + icmpLen), flow.guestMac, from, flow.guestIp, type, code, rest);
  }

  private close(flow: IcmpFlow): void {
    if (flow.closed) return;
    flow.closed = true;
    this.flows.delete(flow.key);
    this.index.delete(flow, sideKey(flow.guestIp, flow.guestIdent), sideKey(flow.dstIp, 0));
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

  /** Open flows for the API and the logs. */
  list(): { proto: 'icmp'; guest: string; destination: string; host: string; guestIdent: number; hostIdent: number; requests: number; replies: number; idleMs: number }[] {
    const now = this.now();
    return [...this.flows.values()].map((f) => ({
      proto: 'icmp' as const,
      guest: formatIp(f.guestIp),
      destination: formatIp(f.dstIp),
      host: f.hostAddress,
      guestIdent: f.guestIdent,
      hostIdent: f.hostIdent,
      requests: f.requests,
      replies: f.replies,
      idleMs: Math.round(now - f.lastActive),
    }));
  }

  closeAll(): void {
    for (const flow of [...this.flows.values()]) this.close(flow);
    this.idle.stop();
  }
}
