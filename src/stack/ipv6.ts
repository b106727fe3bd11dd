/**
 * The IPv6 side of the stack: vmnat's IPv6 hosts (gateway ::2, DNS ::3, the router's link-local
 * fe80::2), Neighbor Discovery and router advertisements, ICMPv6 echo and errors, fragments, and
 * UDP for local services; everything else is offered to the NAT (`forward`).
 *
 * Theory of operation. The guest's network has one /64 prefix (default fd00:10:0:2::/64, mirroring
 * 10.0.2.0/24). vmnat plays a router on it:
 *  - Neighbor Discovery (RFC 4861): a Neighbor Solicitation whose target is one of vmnat's addresses
 *    gets a Neighbor Advertisement with the MAC of that host (the gateway's 52:55:0a:00:02:02 for
 *    ::2 and fe80::2, the DNS host's for ::3). A solicitation for any other target is never answered:
 *    duplicate-address detection by a guest (source ::) about its own tentative address therefore
 *    completes, and vmnat never claims a guest's address. A DAD probe for one of vmnat's addresses is
 *    defended (NA to all-nodes, RFC 4861 §7.2.4). Guests' MACs are learned from what they send (the
 *    source of any packet from the prefix or link-local, and link-layer address options); a packet to
 *    a guest whose MAC is unknown triggers one solicitation (rate-limited) and is dropped, as a
 *    router's queue would drop it; TCP and the guest's own stack retry.
 *  - Router advertisements (RFC 4861 §6, RFC 4862, RFC 8106): periodic (every `raIntervalMs`, to
 *    all-nodes) and at once in reply to a Router Solicitation; from fe80::2, with the router lifetime,
 *    the source link-layer address, the MTU, the prefix (on-link, autonomous: SLAAC), RDNSS naming
 *    ::3 and DNSSL with the search domains; the O flag says DHCPv6 has "other configuration".
 *  - ICMPv6 echo to any of vmnat's addresses is answered here; errors vmnat raises as a router (hop
 *    limit exceeded, unreachable, packet too big) quote as much of the offending packet as fits in
 *    the minimum MTU (RFC 4443 §2.4(c)); no error ever answers an error or a multicast (§2.4(e)).
 *  - Fragments (RFC 8200 §4.5) are reassembled with the same limits and counters as IPv4
 *    (reassembly.ts); what vmnat sends larger than the MTU leaves fragmented.
 *  - NDP messages must arrive with hop limit 255 (RFC 4861 §7.1): anything else is dropped, so no
 *    off-link sender can forge them. Malformed options drop the message (counted).
 *
 * Sans-I/O as the rest of the stack: `input(frame, …, now)`, `poll(now)`, `nextDeadline()`; frames
 * leave through `emit`, built once in a scratch buffer the callee copies.
 */
import { debuglog } from 'node:util';
import {
  IPV6_ANY,
  ipv6Bytes,
  ipv6InPrefix,
  ipv6MulticastMac,
  readIpv6,
  type Ipv6Addr,
  type MacAddr,
} from './wire/addr.ts';
import { sumBytes } from './wire/checksum.ts';
import { ETH_HLEN, EtherType, writeEthernet } from './wire/ethernet.ts';
import { IPV6_FRAG_HLEN, IPV6_HLEN, IPV6_MIN_MTU, Ipv6Next, Ipv6View, writeFragmentHeader, writeIpv6 } from './wire/ipv6.ts';
import {
  ICMPV6_HLEN,
  Icmpv6Type,
  Icmpv6View,
  NdpOption,
  isIcmpv6Error,
  ndpLinkAddr,
  ndpOptions,
  writeIcmpv6,
  writeNdpLinkAddr,
} from './wire/icmpv6.ts';
import { UDP_HLEN, UdpView, writeUdpSum } from './wire/udp.ts';
import { Ipv6Reassembler, createReassemblyStats } from './reassembly.ts';
import { writeTcpOutSum, type TcpOutSegment } from './tcp/segment.ts';
import { COMPLETE_L4_CHECKSUM } from '../link/types.ts';

const trace = debuglog('vmnat');

export const DEFAULT_IPV6_PREFIX = 'fd00:10:0:2::';
export const IPV6_LINK_LOCAL_ROUTER = 'fe80::2';
export const IPV6_ALL_NODES = 'ff02::1';
export const IPV6_ALL_ROUTERS = 'ff02::2';

export interface Ipv6StackConfig {
  /** The /64 prefix (canonical text of its network address). */
  prefix: Ipv6Addr;
  gateway: Ipv6Addr;
  dns: Ipv6Addr;
  mtu: number;
  searchDomains: readonly string[];
  /** Between unsolicited router advertisements. */
  raIntervalMs: number;
  /** RA flags: M (addresses from DHCPv6) and O (other configuration from DHCPv6). */
  managed: boolean;
  otherConfig: boolean;
}

export function createIpv6Stats() {
  return {
    ipv6: {
      rxPackets: 0, truncated: 0, badVersion: 0, badPayloadLength: 0, badExtensions: 0, badSource: 0,
      fragments: 0, reassembled: 0, noRoute: 0, multicastIgnored: 0, txPackets: 0, txFragments: 0, noNeighbour: 0,
    },
    icmpv6: {
      rxEchoRequests: 0, txEchoReplies: 0, truncated: 0, badChecksum: 0, unsupported: 0, txErrors: 0,
      rxNeighborSolicits: 0, txNeighborAdverts: 0, txNeighborSolicits: 0, rxNeighborAdverts: 0, dadProbes: 0, dadDefended: 0,
      rxRouterSolicits: 0, txRouterAdverts: 0, badNdp: 0, addressConflicts: 0,
    },
    udp6: { rxDatagrams: 0, truncated: 0, badLength: 0, badChecksum: 0, noListener: 0, txDatagrams: 0 },
    reassembly6: createReassemblyStats(),
  };
}
export type Ipv6Stats = ReturnType<typeof createIpv6Stats>;

/** A received UDP datagram for a local IPv6 service; valid during the handler call only. */
export interface Udp6Datagram {
  srcMac: MacAddr;
  srcIp: Ipv6Addr;
  srcPort: number;
  dstIp: Ipv6Addr;
  dstPort: number;
  buf: Uint8Array;
  off: number;
  len: number;
}
export type Udp6Handler = (d: Udp6Datagram, now: number) => void;
export type Forward6Hook = (ip: Ipv6View, srcMac: MacAddr, now: number) => boolean;

/** The neighbour entries kept at most (a guest spraying addresses must not grow memory). */
const MAX_NEIGHBOURS = 4096;
/** One solicitation per unknown address per this long. */
const SOLICIT_EVERY_MS = 1000;
/** How long a send waits for an unknown guest to answer its solicitation (RFC 4861 §7.2.2: 3 × 1 s). */
const RESOLVE_WAIT_MS = 3000;
/** Addresses waited for at once, and callers per address (bounded, as Linux's unres_qlen). */
const MAX_WAITING = 256;
const MAX_WAITERS = 16;
/** Router lifetime (s) in advertisements. */
const ROUTER_LIFETIME_S = 1800;
const PREFIX_VALID_S = 86_400;
const PREFIX_PREFERRED_S = 14_400;

export class Ipv6Stack {
  readonly stats: Ipv6Stats = createIpv6Stats();
  forward: Forward6Hook | undefined;
  /** A guest address of the prefix is newly known (or moved to another MAC): for the DNS names of guests. */
  onNewAddress: ((ip: Ipv6Addr, mac: MacAddr) => void) | undefined;
  /** Set by the caller for the frame it passes in (the link vouched for its L4 checksum). */
  rxL4ChecksumOk = false;
  readonly linkLocal: Ipv6Addr = IPV6_LINK_LOCAL_ROUTER;
  private readonly prefixBytes: Uint8Array;
  private readonly neighbours = new Map<Ipv6Addr, MacAddr>();
  private readonly solicited = new Map<Ipv6Addr, number>();
  /** Callers waiting for a guest's MAC (resolveThen), in deadline order. */
  private readonly waiting = new Map<Ipv6Addr, { deadline: number; cbs: ((mac: MacAddr | undefined) => void)[] }>();
  private resolicitAt = 0;
  private readonly udpHandlers = new Map<string, Udp6Handler>();
  private readonly reassembler: Ipv6Reassembler;
  private readonly tx = new Uint8Array(ETH_HLEN + IPV6_HLEN + 65535);
  private frag: Uint8Array | undefined;
  private ident = 1;
  private nextRa = 0;
  private readonly udpIn: Udp6Datagram = { srcMac: 0, srcIp: '', srcPort: 0, dstIp: '', dstPort: 0, buf: this.tx, off: 0, len: 0 };

  constructor(
    readonly config: Ipv6StackConfig,
    readonly gatewayMac: MacAddr,
    readonly dnsMac: MacAddr,
    private readonly emit: (frame: Uint8Array, gsoSize?: number) => void,
    /** Every link takes large TCP frames as GSO (the stack's `gso`, set by the engine). */
    private readonly gso: () => boolean = () => false,
    /** Every link completes TCP checksums (the stack's `linkCompletesChecksums`). */
    private readonly linkCompletesChecksums: () => boolean = () => false,
  ) {
    this.prefixBytes = ipv6Bytes(config.prefix);
    this.reassembler = new Ipv6Reassembler({}, this.stats.reassembly6);
  }

  /** The MAC of one of vmnat's IPv6 addresses, or undefined. */
  macOfVirtual(ip: Ipv6Addr): MacAddr | undefined {
    if (ip === this.config.gateway || ip === this.linkLocal) return this.gatewayMac;
    if (ip === this.config.dns) return this.dnsMac;
    return undefined;
  }

  /** In the guests' /64 prefix. */
  inPrefix(ip: Ipv6Addr): boolean {
    return ipv6InPrefix(ipv6Bytes(ip), this.prefixBytes, 64);
  }

  bindUdp(ip: Ipv6Addr, port: number, handler: Udp6Handler): void {
    this.udpHandlers.set(`${ip}|${port}`, handler);
  }

  isUdpBound(ip: Ipv6Addr, port: number): boolean {
    return this.udpHandlers.has(`${ip}|${port}`);
  }

  unbindUdp(ip: Ipv6Addr, port: number): void {
    this.udpHandlers.delete(`${ip}|${port}`);
  }

  /** The guest MAC of `ip`, if known. */
  lookup(ip: Ipv6Addr): MacAddr | undefined {
    return this.neighbours.get(ip);
  }

  /** Guests' IPv6 addresses known, with their MACs (for the API). */
  neighbourList(): [Ipv6Addr, MacAddr][] {
    return [...this.neighbours];
  }

  learn(ip: Ipv6Addr, mac: MacAddr): void {
    const w = this.waiting.get(ip);
    if (w !== undefined) {
      this.waiting.delete(ip);
      // After the frame at hand is handled: the callers send frames of their own.
      queueMicrotask(() => {
        for (const cb of w.cbs) cb(mac);
      });
    }
    if (this.neighbours.get(ip) === mac) return;
    this.neighbours.delete(ip);
    if (this.neighbours.size >= MAX_NEIGHBOURS) {
      const oldest = this.neighbours.keys().next();
      if (!oldest.done) this.neighbours.delete(oldest.value);
    }
    this.neighbours.set(ip, mac);
    if (this.onNewAddress !== undefined && !ip.startsWith('fe80:') && this.inPrefix(ip)) this.onNewAddress(ip, mac);
  }

  input(frame: Uint8Array, off: number, len: number, srcMac: MacAddr, now: number): void {
    let ip = Ipv6View.checked(frame, off, len);
    if (typeof ip === 'string') return this.drop(this.stats.ipv6, ip);
    this.stats.ipv6.rxPackets++;
    const src = ip.src;
    if (this.macOfVirtual(src) !== undefined) {
      // A guest using vmnat's own address: never believed (as for IPv4).
      this.stats.ipv6.badSource++;
      return;
    }
    if (src !== IPV6_ANY && (src.startsWith('fe80:') || this.inPrefix(src))) this.learn(src, srcMac);
    if (ip.isFragment) {
      this.stats.ipv6.fragments++;
      const whole = this.reassembler.input(ip, now);
      if (whole === undefined) return;
      const again = Ipv6View.checked(whole, 0, whole.length);
      if (typeof again === 'string') return this.drop(this.stats.ipv6, again);
      this.stats.ipv6.reassembled++;
      this.rxL4ChecksumOk = false;
      ip = again;
    }
    const dst = ip.dst;
    const multicast = dst.startsWith('ff');
    const local = !multicast && this.macOfVirtual(dst) !== undefined;
    if (ip.protocol === Ipv6Next.ICMPv6 && (local || multicast)) {
      if (this.inputIcmpLocal(ip, srcMac, src, dst, multicast, now)) return;
    } else if (ip.protocol === Ipv6Next.UDP && (local || multicast)) {
      const udp = UdpView.checkedSum(ip.buf, ip.payloadOff, ip.payloadLen, ip.addrSum, this.rxL4ChecksumOk, false);
      if (typeof udp === 'string') return this.drop(this.stats.udp6, udp);
      const handler = this.udpHandlers.get(`${dst}|${udp.dstPort}`);
      if (handler !== undefined) {
        this.stats.udp6.rxDatagrams++;
        const d = this.udpIn;
        d.srcMac = srcMac;
        d.srcIp = src;
        d.srcPort = udp.srcPort;
        d.dstIp = dst;
        d.dstPort = udp.dstPort;
        d.buf = ip.buf;
        d.off = udp.payloadOff;
        d.len = udp.payloadLen;
        handler(d, now);
        return;
      }
      if (multicast) {
        this.stats.udp6.noListener++;
        return;
      }
    }
    if (multicast) {
      this.stats.ipv6.multicastIgnored++; // MLD reports, mDNS, …: the link's business
      return;
    }
    if (this.forward !== undefined && this.forward(ip, srcMac, now)) return;
    this.stats.ipv6.noRoute++;
  }

  private drop<T extends Record<string, number>>(counters: T, reason: string): void {
    const key = (reason in counters ? reason : 'truncated') as keyof T;
    (counters[key] as number)++;
    trace('drop6 %s', reason);
  }

  /** ICMPv6 for vmnat itself (or multicast). Returns true when handled (or dropped). */
  private inputIcmpLocal(ip: Ipv6View, srcMac: MacAddr, src: Ipv6Addr, dst: Ipv6Addr, multicast: boolean, now: number): boolean {
    const icmp = Icmpv6View.checked(ip.buf, ip.payloadOff, ip.payloadLen, ip.addrSum);
    if (typeof icmp === 'string') {
      this.drop(this.stats.icmpv6, icmp);
      return true;
    }
    const type = icmp.type;
    switch (type) {
      case Icmpv6Type.EchoRequest:
        if (multicast) return true; // a ping to all-nodes: the guests' own business
        this.stats.icmpv6.rxEchoRequests++;
        return this.echoReply(ip, icmp, srcMac, src, dst);
      case Icmpv6Type.NeighborSolicitation:
        this.neighborSolicit(ip, icmp, srcMac, src, now);
        return true;
      case Icmpv6Type.NeighborAdvertisement:
        this.neighborAdvert(ip, icmp, srcMac);
        return true;
      case Icmpv6Type.RouterSolicitation:
        this.routerSolicit(ip, icmp, srcMac, src);
        return true;
      default:
        if (multicast) return false; // MLD and the rest: counted by the caller
        this.stats.icmpv6.unsupported++;
        return true;
    }
  }

  private echoReply(ip: Ipv6View, icmp: Icmpv6View, srcMac: MacAddr, src: Ipv6Addr, dst: Ipv6Addr): boolean {
    const dataLen = icmp.payloadLen;
    const l4 = ETH_HLEN + IPV6_HLEN;
    this.tx.set(ip.buf.subarray(icmp.payloadOff, icmp.payloadOff + dataLen), l4 + ICMPV6_HLEN);
    this.stats.icmpv6.txEchoReplies++;
    this.sendIcmp(srcMac, dst, src, Icmpv6Type.EchoReply, 0, icmp.restOfHeader, dataLen, 64);
    return true;
  }

  private neighborSolicit(ip: Ipv6View, icmp: Icmpv6View, srcMac: MacAddr, src: Ipv6Addr, now: number): void {
    this.stats.icmpv6.rxNeighborSolicits++;
    if (ip.hopLimit !== 255 || icmp.code !== 0 || icmp.payloadLen < 16) {
      this.stats.icmpv6.badNdp++;
      return;
    }
    const target = readIpv6(ip.buf, icmp.payloadOff);
    const opts = ndpOptions(ip.buf, icmp.payloadOff + 16, icmp.off + icmp.len);
    if (opts === undefined || target.startsWith('ff')) {
      this.stats.icmpv6.badNdp++;
      return;
    }
    const dad = src === IPV6_ANY;
    const guestMac = srcMac;
    for (const o of opts) {
      if (o.type !== NdpOption.SourceLinkAddr) continue;
      // RFC 4861 §7.1.1: a DAD probe (unspecified source) carries no source link-layer address.
      if (dad) {
        this.stats.icmpv6.badNdp++;
        return;
      }
      // The frame's own source MAC is what the switch vouched for; an option naming another MAC
      // (sending some other guest vmnat's traffic) is not believed.
      if (ndpLinkAddr(ip.buf, o) !== srcMac) this.stats.icmpv6.badNdp++;
    }
    if (!dad && (src.startsWith('fe80:') || this.inPrefix(src))) this.learn(src, guestMac);
    const mac = this.macOfVirtual(target);
    if (mac === undefined) {
      // Not ours: a guest resolving another guest, or DAD for its own tentative address. Silence
      // is the answer that lets DAD succeed.
      if (dad) this.stats.icmpv6.dadProbes++;
      return;
    }
    if (dad) this.stats.icmpv6.dadDefended++;
    // NA: R for the router's addresses, S when answering a unicast source, O always.
    const router = target !== this.config.dns;
    const flags = (router ? 0x80 : 0) | (dad ? 0 : 0x40) | 0x20;
    const l4 = ETH_HLEN + IPV6_HLEN;
    const tx = this.tx;
    tx.set(ipv6Bytes(target), l4 + ICMPV6_HLEN);
    writeNdpLinkAddr(tx, l4 + ICMPV6_HLEN + 16, NdpOption.TargetLinkAddr, mac);
    this.stats.icmpv6.txNeighborAdverts++;
    if (dad) this.sendIcmpFrom(mac, ipv6MulticastMac(ipv6Bytes(IPV6_ALL_NODES)), target, IPV6_ALL_NODES, Icmpv6Type.NeighborAdvertisement, flags << 24, 24, 255);
    else this.sendIcmpFrom(mac, guestMac, target, src, Icmpv6Type.NeighborAdvertisement, flags << 24, 24, 255);
    void now;
  }

  private neighborAdvert(ip: Ipv6View, icmp: Icmpv6View, srcMac: MacAddr): void {
    this.stats.icmpv6.rxNeighborAdverts++;
    if (ip.hopLimit !== 255 || icmp.payloadLen < 16) {
      this.stats.icmpv6.badNdp++;
      return;
    }
    const target = readIpv6(ip.buf, icmp.payloadOff);
    if (this.macOfVirtual(target) !== undefined) {
      this.stats.icmpv6.addressConflicts++; // a guest claiming vmnat's address: never believed
      return;
    }
    const opts = ndpOptions(ip.buf, icmp.payloadOff + 16, icmp.off + icmp.len);
    if (opts === undefined) {
      this.stats.icmpv6.badNdp++;
      return;
    }
    for (const o of opts) {
      if (o.type !== NdpOption.TargetLinkAddr) continue;
      const mac = ndpLinkAddr(ip.buf, o);
      // Only a guest's answer for itself: the MAC it names must be the one it sends from.
      if (mac !== srcMac) {
        this.stats.icmpv6.badNdp++;
        continue;
      }
      if (target.startsWith('fe80:') || this.inPrefix(target)) this.learn(target, mac);
    }
  }

  private routerSolicit(ip: Ipv6View, icmp: Icmpv6View, srcMac: MacAddr, src: Ipv6Addr): void {
    this.stats.icmpv6.rxRouterSolicits++;
    if (ip.hopLimit !== 255 || ndpOptions(ip.buf, icmp.payloadOff, icmp.off + icmp.len) === undefined) {
      this.stats.icmpv6.badNdp++;
      return;
    }
    // Unicast to the solicitor when it has an address (RFC 4861 §6.2.6 allows it), else all-nodes.
    if (src === IPV6_ANY) this.sendRouterAdvert(ipv6MulticastMac(ipv6Bytes(IPV6_ALL_NODES)), IPV6_ALL_NODES);
    else this.sendRouterAdvert(srcMac, src);
  }

  /** Sends a router advertisement to `dst` (all-nodes for the periodic ones). */
  sendRouterAdvert(dstMac: MacAddr, dst: Ipv6Addr): void {
    const cfg = this.config;
    const tx = this.tx;
    const base = ETH_HLEN + IPV6_HLEN + ICMPV6_HLEN;
    let o = base;
    // Reachable time, retrans timer: unspecified.
    tx.fill(0, o, o + 8);
    o += 8;
    o = writeNdpLinkAddr(tx, o, NdpOption.SourceLinkAddr, this.gatewayMac);
    // MTU (RFC 4861 §4.6.4).
    tx[o] = NdpOption.Mtu;
    tx[o + 1] = 1;
    tx[o + 2] = 0;
    tx[o + 3] = 0;
    write32(tx, o + 4, cfg.mtu);
    o += 8;
    // Prefix information (§4.6.2): on-link, autonomous.
    tx[o] = NdpOption.PrefixInfo;
    tx[o + 1] = 4;
    tx[o + 2] = 64;
    tx[o + 3] = 0xc0;
    write32(tx, o + 4, PREFIX_VALID_S);
    write32(tx, o + 8, PREFIX_PREFERRED_S);
    write32(tx, o + 12, 0);
    tx.set(this.prefixBytes, o + 16);
    o += 32;
    // RDNSS (RFC 8106 §5.1): ::3, for at least three advertisement intervals.
    const dnsLifetime = Math.max(ROUTER_LIFETIME_S, Math.ceil((3 * cfg.raIntervalMs) / 1000));
    tx[o] = NdpOption.Rdnss;
    tx[o + 1] = 3;
    tx[o + 2] = 0;
    tx[o + 3] = 0;
    write32(tx, o + 4, dnsLifetime);
    tx.set(ipv6Bytes(cfg.dns), o + 8);
    o += 24;
    // DNSSL (§5.2): the search domains as DNS names, zero-padded to 8 bytes.
    const names = encodeDomains(cfg.searchDomains);
    if (names.length > 0) {
      const optLen = (8 + names.length + 7) & ~7;
      tx.fill(0, o, o + optLen);
      tx[o] = NdpOption.Dnssl;
      tx[o + 1] = optLen / 8;
      write32(tx, o + 4, dnsLifetime);
      tx.set(names, o + 8);
      o += optLen;
    }
    const flags = (cfg.managed ? 0x80 : 0) | (cfg.otherConfig ? 0x40 : 0);
    const rest = ((64 << 24) | (flags << 16) | ROUTER_LIFETIME_S) >>> 0;
    this.stats.icmpv6.txRouterAdverts++;
    this.sendIcmpFrom(this.gatewayMac, dstMac, this.linkLocal, dst, Icmpv6Type.RouterAdvertisement, rest, o - base, 255);
  }

  /**
   * Sends a Neighbor Solicitation for a guest address whose MAC vmnat does not know (at most one
   * per address per second).
   */
  private solicit(target: Ipv6Addr, now: number): void {
    const last = this.solicited.get(target);
    if (last !== undefined && now - last < SOLICIT_EVERY_MS) return;
    if (this.solicited.size >= MAX_NEIGHBOURS) this.solicited.clear();
    this.solicited.set(target, now);
    const t = ipv6Bytes(target);
    const group = new Uint8Array([0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, t[13]!, t[14]!, t[15]!]);
    const groupText = readIpv6(group, 0);
    const tx = this.tx;
    const base = ETH_HLEN + IPV6_HLEN + ICMPV6_HLEN;
    tx.set(t, base);
    writeNdpLinkAddr(tx, base + 16, NdpOption.SourceLinkAddr, this.gatewayMac);
    this.stats.icmpv6.txNeighborSolicits++;
    const from = target.startsWith('fe80:') ? this.linkLocal : this.config.gateway;
    this.sendIcmpFrom(this.gatewayMac, ipv6MulticastMac(group), from, groupText, Icmpv6Type.NeighborSolicitation, 0, 24, 255);
  }

  /**
   * The MAC to send to `ip`: multicast maps to its group MAC; a guest from the neighbour table;
   * unknown → a solicitation goes out and undefined is returned (counted as noNeighbour).
   */
  resolve(ip: Ipv6Addr, now: number): MacAddr | undefined {
    if (ip.startsWith('ff')) return ipv6MulticastMac(ipv6Bytes(ip));
    const mac = this.neighbours.get(ip);
    if (mac !== undefined) return mac;
    this.stats.ipv6.noNeighbour++;
    this.solicit(ip, now);
    return undefined;
  }

  /**
   * Calls `cb` with the MAC of guest `ip`: at once if known; otherwise a solicitation goes out and
   * `cb` runs when the guest answers (or anything else teaches vmnat the address), or with
   * undefined after RESOLVE_WAIT_MS. For sends that start from the host side (port forwards) to a
   * guest that has not spoken from that address yet, as a router holds a packet while it resolves.
   */
  resolveThen(ip: Ipv6Addr, now: number, cb: (mac: MacAddr | undefined) => void): void {
    const mac = this.neighbours.get(ip);
    if (mac !== undefined) return cb(mac);
    let w = this.waiting.get(ip);
    if (w === undefined) {
      if (this.waiting.size >= MAX_WAITING) return cb(undefined);
      w = { deadline: now + RESOLVE_WAIT_MS, cbs: [] };
      if (this.waiting.size === 0) this.resolicitAt = now + SOLICIT_EVERY_MS;
      this.waiting.set(ip, w);
    }
    if (w.cbs.length >= MAX_WAITERS) return cb(undefined);
    w.cbs.push(cb);
    this.stats.ipv6.noNeighbour++;
    this.solicit(ip, now);
  }

  // ---- sending (the L4 part is built at ETH_HLEN + IPV6_HLEN in tx) ----

  private srcMacOf(src: Ipv6Addr): MacAddr {
    return src === this.config.dns ? this.dnsMac : this.gatewayMac;
  }

  private sendIcmp(dstMac: MacAddr, src: Ipv6Addr, dst: Ipv6Addr, type: number, code: number, rest: number, dataLen: number, hopLimit: number): boolean {
    const l4 = ETH_HLEN + IPV6_HLEN;
    writeIpv6(this.tx, ETH_HLEN, ICMPV6_HLEN + dataLen, Ipv6Next.ICMPv6, hopLimit, src, dst);
    writeIcmpv6(this.tx, l4, type, code, rest, dataLen, sumBytes(this.tx, ETH_HLEN + 8, 32));
    return this.sendIp(this.srcMacOf(src), dstMac, ICMPV6_HLEN + dataLen);
  }

  private sendIcmpFrom(srcMac: MacAddr, dstMac: MacAddr, src: Ipv6Addr, dst: Ipv6Addr, type: number, rest: number, dataLen: number, hopLimit: number): boolean {
    const l4 = ETH_HLEN + IPV6_HLEN;
    writeIpv6(this.tx, ETH_HLEN, ICMPV6_HLEN + dataLen, Ipv6Next.ICMPv6, hopLimit, src, dst);
    writeIcmpv6(this.tx, l4, type, 0, rest, dataLen, sumBytes(this.tx, ETH_HLEN + 8, 32));
    return this.sendIp(srcMac, dstMac, ICMPV6_HLEN + dataLen);
  }

  /**
   * Sends the packet whose IPv6 header and L4 part are at ETH_HLEN in tx; larger than the MTU it
   * leaves as fragments (RFC 8200 §4.5), each built in `frag`.
   */
  private sendIp(srcMac: MacAddr, dstMac: MacAddr, l4len: number): boolean {
    const tx = this.tx;
    this.stats.ipv6.txPackets++;
    if (IPV6_HLEN + l4len <= this.config.mtu) {
      writeEthernet(tx, 0, dstMac, srcMac, EtherType.IPv6);
      this.emit(tx.subarray(0, ETH_HLEN + IPV6_HLEN + l4len));
      return true;
    }
    const chunkMax = (this.config.mtu - IPV6_HLEN - IPV6_FRAG_HLEN) & ~7;
    const frag = (this.frag ??= new Uint8Array(ETH_HLEN + this.config.mtu));
    this.ident = (this.ident + 1) >>> 0;
    const next = tx[ETH_HLEN + 6]!;
    for (let at = 0; at < l4len; at += chunkMax) {
      const chunk = Math.min(chunkMax, l4len - at);
      const more = at + chunk < l4len;
      writeEthernet(frag, 0, dstMac, srcMac, EtherType.IPv6);
      frag.set(tx.subarray(ETH_HLEN, ETH_HLEN + IPV6_HLEN), ETH_HLEN);
      const plen = IPV6_FRAG_HLEN + chunk;
      frag[ETH_HLEN + 4] = plen >>> 8;
      frag[ETH_HLEN + 5] = plen & 0xff;
      frag[ETH_HLEN + 6] = Ipv6Next.Fragment;
      writeFragmentHeader(frag, ETH_HLEN + IPV6_HLEN, next, at, more, this.ident);
      const body = ETH_HLEN + IPV6_HLEN + IPV6_FRAG_HLEN;
      frag.set(tx.subarray(ETH_HLEN + IPV6_HLEN + at, ETH_HLEN + IPV6_HLEN + at + chunk), body);
      this.stats.ipv6.txFragments++;
      this.emit(frag.subarray(0, body + chunk));
    }
    return true;
  }

  /** Sends a UDP datagram to a guest (payload copied). Unknown guest MAC → solicited, dropped. */
  sendUdp(src: Ipv6Addr, srcPort: number, dst: Ipv6Addr, dstPort: number, payload: Uint8Array, dstMac: MacAddr | undefined, now: number): boolean {
    const mac = dstMac ?? this.resolve(dst, now);
    if (mac === undefined) return false;
    const l4 = ETH_HLEN + IPV6_HLEN;
    if (l4 + UDP_HLEN + payload.length > this.tx.length || UDP_HLEN + payload.length > 0xffff) return false;
    this.tx.set(payload, l4 + UDP_HLEN);
    writeIpv6(this.tx, ETH_HLEN, UDP_HLEN + payload.length, Ipv6Next.UDP, 64, src, dst);
    writeUdpSum(this.tx, l4, srcPort, dstPort, payload.length, sumBytes(this.tx, ETH_HLEN + 8, 32));
    this.stats.udp6.txDatagrams++;
    return this.sendIp(this.srcMacOf(src), mac, UDP_HLEN + payload.length);
  }

  /**
   * Sends one TCP segment to a guest. On an offload link (as for IPv4, stack.ts) the link's kernel
   * completes the checksum and cuts a segment larger than the MTU (`seg.gsoSize`) as TCPv6 GSO;
   * where the links complete checksums (the native ones, in C) the partial sum goes out as for
   * IPv4; elsewhere vmnat sums it. Without GSO segments never exceed the MSS.
   */
  sendTcp(dstMac: MacAddr, src: Ipv6Addr, srcPort: number, dst: Ipv6Addr, dstPort: number, seg: TcpOutSegment): boolean {
    const l4 = ETH_HLEN + IPV6_HLEN;
    const len = 20 + seg.optionsLen + seg.payloadLen;
    const tx = this.tx;
    writeIpv6(tx, ETH_HLEN, len, Ipv6Next.TCP, 64, src, dst);
    const offload = this.gso();
    const partial = offload || this.linkCompletesChecksums();
    writeTcpOutSum(tx, l4, seg, srcPort, dstPort, sumBytes(tx, ETH_HLEN + 8, 32), partial);
    if (!partial) return this.sendIp(this.srcMacOf(src), dstMac, len);
    writeEthernet(tx, 0, dstMac, this.srcMacOf(src), EtherType.IPv6);
    this.stats.ipv6.txPackets++;
    this.emit(tx.subarray(0, l4 + len), !offload ? COMPLETE_L4_CHECKSUM : seg.gsoSize > 0 ? seg.gsoSize : 0);
    return true;
  }

  /**
   * Sends an ICMPv6 message to guest `to`: `data` (copied; for an error, the quote, trimmed so the
   * whole fits the minimum MTU) after the header.
   */
  sendIcmpMessage(toMac: MacAddr, from: Ipv6Addr, to: Ipv6Addr, type: number, code: number, rest: number, data: Uint8Array, hopLimit = 64): boolean {
    const room = isIcmpv6Error(type) ? IPV6_MIN_MTU - IPV6_HLEN - ICMPV6_HLEN : this.tx.length - ETH_HLEN - IPV6_HLEN - ICMPV6_HLEN;
    const n = Math.min(room, data.length);
    this.tx.set(data.subarray(0, n), ETH_HLEN + IPV6_HLEN + ICMPV6_HLEN);
    if (isIcmpv6Error(type)) this.stats.icmpv6.txErrors++;
    return this.sendIcmp(toMac, from, to, type, code, rest, n, hopLimit);
  }

  /**
   * An ICMPv6 error about `orig` (a packet a guest sent) back to its sender, from `from` (the
   * gateway unless said). Never about an ICMPv6 error, nor a packet to or from a multicast or
   * unspecified address (RFC 4443 §2.4(e)).
   */
  sendErrorAbout(orig: Ipv6View, srcMac: MacAddr, type: number, code: number, rest = 0, from: Ipv6Addr = this.config.gateway): boolean {
    if (orig.protocol === Ipv6Next.ICMPv6 && orig.payloadLen >= 1 && isIcmpv6Error(orig.buf[orig.payloadOff]!)) return false;
    const src = orig.src;
    if (src === IPV6_ANY || src.startsWith('ff') || orig.dst.startsWith('ff')) return false;
    return this.sendIcmpMessage(srcMac, from, src, type, code, rest, orig.buf.subarray(orig.off, orig.off + orig.totalLen));
  }

  poll(now: number): void {
    this.reassembler.poll(now, (header, first) => {
      // RFC 8200 §4.5: time exceeded (fragment reassembly) to the source, if fragment 0 arrived.
      const src = readIpv6(header, 8);
      const mac = this.neighbours.get(src);
      if (mac === undefined || src.startsWith('ff')) return;
      const quote = new Uint8Array(header.length + first.length);
      quote.set(header, 0);
      quote.set(first, header.length);
      this.sendIcmpMessage(mac, this.config.gateway, src, Icmpv6Type.TimeExceeded, 1, 0, quote);
    });
    for (const [ip, w] of this.waiting) {
      if (w.deadline > now) break; // deadline order
      this.waiting.delete(ip);
      for (const cb of w.cbs) cb(undefined);
    }
    if (this.waiting.size > 0 && now >= this.resolicitAt) {
      // Ask again each second while someone waits (RFC 4861 §7.2.2 retransmits).
      for (const ip of this.waiting.keys()) this.solicit(ip, now);
      this.resolicitAt = now + SOLICIT_EVERY_MS;
    }
    if (now >= this.nextRa) {
      this.nextRa = now + this.config.raIntervalMs;
      this.sendRouterAdvert(ipv6MulticastMac(ipv6Bytes(IPV6_ALL_NODES)), IPV6_ALL_NODES);
    }
  }

  nextDeadline(): number | undefined {
    const r = this.reassembler.nextDeadline();
    let at = r === undefined ? this.nextRa : Math.min(r, this.nextRa);
    for (const w of this.waiting.values()) {
      // The first waiter's deadline (deadline order), and the next solicitation while any waits.
      at = Math.min(at, w.deadline, this.resolicitAt);
      break;
    }
    return at;
  }
}

function write32(b: Uint8Array, o: number, v: number): void {
  b[o] = v >>> 24;
  b[o + 1] = (v >>> 16) & 0xff;
  b[o + 2] = (v >>> 8) & 0xff;
  b[o + 3] = v & 0xff;
}

/** Domain names in DNS wire form (labels, no compression), concatenated; invalid names skipped. */
export function encodeDomains(names: readonly string[]): Uint8Array {
  const parts: number[] = [];
  for (const name of names) {
    const labels = name.replace(/\.$/, '').split('.');
    if (labels.some((l) => l.length === 0 || l.length > 63)) continue;
    for (const l of labels) {
      parts.push(l.length);
      for (let i = 0; i < l.length; i++) parts.push(l.charCodeAt(i) & 0x7f);
    }
    parts.push(0);
  }
  return new Uint8Array(parts.length > 255 * 8 ? parts.slice(0, 255 * 8 - 8) : parts);
}
