/**
 * The network-side core of the stack: Ethernet, ARP, IPv4 and ICMP for vmnat's virtual hosts.
 *
 * Theory of operation: vmnat plays every host the guest sees on its network other than itself —
 * the gateway (.2), the DNS server (.3), and any virtual host a service adds (`addVirtualHost`: a
 * guest forward's address) — each with its own MAC (52:55 + its IPv4 address, as libslirp), in one
 * table of virtual hosts. `input(frame, now)` takes one Ethernet frame from a guest: ARP requests for a virtual
 * address are answered; IPv4 is validated (header checksum, lengths, options skipped), fragments are
 * reassembled within a bounded budget, ICMP echo to a virtual address is answered here, UDP to a
 * bound port (DHCP on 67) goes to its handler, and everything else is offered to the `forward` hook
 * (the NAT, later) or dropped. Every drop increments one named counter in `stats`; guest input
 * never throws. IPv6 frames go to the IPv6 side (ipv6.ts: NDP, router advertisements, its own
 * services and the NAT's `input6`); the send methods take an address of either family (`IpAddr`)
 * and hand IPv6 ones to it, so the NAT's flow machines serve both families through one interface.
 *
 * Sans-I/O: the stack has no sockets, timers or clock of its own. Frames leave through the `emit`
 * callback, built once in a scratch buffer that the callee copies before returning; time comes in as
 * `now` (ms, monotonic); `poll(now)` runs expiries and `nextDeadline()` says when it is next needed.
 */
import { debuglog } from 'node:util';
import { IPV4_ANY, IPV4_BROADCAST, MAC_BROADCAST, isGroupMac, type IpAddr, type Ipv4Addr, type MacAddr } from './wire/addr.ts';
import { Ipv6Stack, type Ipv6StackConfig } from './ipv6.ts';
import { Icmpv6Type, Icmpv6UnreachCode } from './wire/icmpv6.ts';
import { ETH_HLEN, EtherType, EthernetView, writeEthernet } from './wire/ethernet.ts';
import { ArpOp, ArpView, writeArp } from './wire/arp.ts';
import { IPV4_DF, IPV4_HLEN, IPV4_MF, IpProto, Ipv4View, writeIpv4 } from './wire/ipv4.ts';
import { IcmpType, IcmpUnreachCode, Icmpv4View, writeIcmpEcho, writeIcmpError } from './wire/icmpv4.ts';
import { UDP_HLEN, UdpView, writeUdp } from './wire/udp.ts';
import { Ipv4Reassembler, createReassemblyStats } from './reassembly.ts';
import { NeighbourTable } from './neighbours.ts';
import { writeTcpOut, type TcpOutSegment } from './tcp/segment.ts';
import { COMPLETE_L4_CHECKSUM } from '../link/types.ts';

const trace = debuglog('vmnat');

export interface StackConfig {
  network: Ipv4Addr;
  netmask: Ipv4Addr;
  gateway: Ipv4Addr;
  dns: Ipv4Addr;
  mtu: number;
  /** IPv6 on the guests' network (ipv6.ts); absent: IPv6 frames are counted and ignored. */
  ipv6?: Ipv6StackConfig | undefined;
}

/** The MAC vmnat uses for one of its virtual addresses: 52:55 followed by the IPv4 address. */
const VIRTUAL_MAC_BASE = 0x5255 * 0x1_0000_0000;
export function virtualMac(ip: Ipv4Addr): MacAddr {
  return VIRTUAL_MAC_BASE + ip;
}

export function createStackStats() {
  return {
    eth: { rxFrames: 0, truncated: 0, notForUs: 0, vlanDropped: 0, ipv6Ignored: 0, unknownEtherType: 0, txFrames: 0 },
    arp: { rxRequests: 0, rxReplies: 0, txReplies: 0, truncated: 0, unsupported: 0, notForUs: 0, badSender: 0 },
    ipv4: {
      rxPackets: 0, truncated: 0, badVersion: 0, badHeaderLength: 0, badTotalLength: 0, badChecksum: 0, badOptions: 0,
      badSource: 0, fragments: 0, reassembled: 0, noRoute: 0, unknownProtocol: 0, txPackets: 0, txFragments: 0,
    },
    icmp: { rxEchoRequests: 0, txEchoReplies: 0, truncated: 0, badChecksum: 0, unsupported: 0, txErrors: 0 },
    udp: { rxDatagrams: 0, truncated: 0, badLength: 0, badChecksum: 0, noListener: 0, txDatagrams: 0, broadcastDropped: 0 },
    reassembly: createReassemblyStats(),
  };
}
export type StackStats = ReturnType<typeof createStackStats>;

/**
 * One received UDP datagram, valid during the handler call only (the object and the bytes are
 * reused for the next datagram).
 */
export interface UdpDatagram {
  srcMac: MacAddr;
  srcIp: Ipv4Addr;
  srcPort: number;
  dstIp: Ipv4Addr;
  dstPort: number;
  buf: Uint8Array;
  off: number;
  len: number;
}
export type UdpHandler = (dgram: UdpDatagram, now: number) => void;

/**
 * Offered every IPv4 packet that is not for a service of the stack itself (NAT). `ip` views the
 * packet, valid during the call only; `srcMac` is the sending guest. Returns true if taken.
 */
export type ForwardHook = (ip: Ipv4View, srcMac: MacAddr, now: number) => boolean;

export class Stack {
  readonly stats: StackStats = createStackStats();
  readonly neighbours = new NeighbourTable();
  readonly gatewayMac: MacAddr;
  readonly dnsMac: MacAddr;
  /** The IPv6 side (ipv6.ts), when the network has IPv6. */
  readonly ipv6: Ipv6Stack | undefined;
  forward: ForwardHook | undefined;
  /** Every link takes large TCP frames as GSO (set by the engine); TCP then sends up to 64 KiB at once. */
  gso = false;
  /** Every link completes TCP/UDP checksums (Link.completesChecksums; set by the engine). */
  linkCompletesChecksums = false;
  /**
   * Set by the caller for the frame it is about to `input` (like an skb's ip_summed): the link's
   * kernel vouched for its TCP/UDP checksum, so the views need not sum the payload. Cleared for a
   * packet reassembled from fragments.
   */
  rxL4ChecksumOk = false;

  private readonly udpHandlers = new Map<number, UdpHandler>();
  /** vmnat's own addresses on the network and their MACs: the gateway, DNS, and added ones. */
  private readonly virtualHosts = new Map<Ipv4Addr, MacAddr>();
  /** How many were added beyond the gateway and DNS (0: the hot paths skip the table). */
  private extraHosts = 0;
  /** UDP binds on addresses that are not vmnat's own (0: outbound UDP skips the lookup). */
  private foreignUdpBinds = 0;
  private readonly reassembler: Ipv4Reassembler;
  private readonly tx = new Uint8Array(ETH_HLEN + 65535);
  private readonly udpIn: UdpDatagram = { srcMac: 0, srcIp: 0, srcPort: 0, dstIp: 0, dstPort: 0, buf: this.tx, off: 0, len: 0 };
  private frag: Uint8Array | undefined;
  private ident = 1;
  /** The last `now` seen (input or poll): for IPv6 neighbour solicitations from send paths. */
  private lastNow = 0;
  private readonly broadcast: Ipv4Addr;

  constructor(
    readonly config: StackConfig,
    private readonly emit: (frame: Uint8Array, gsoSize?: number) => void,
  ) {
    this.gatewayMac = virtualMac(config.gateway);
    this.dnsMac = virtualMac(config.dns);
    this.broadcast = (config.network | ~config.netmask) >>> 0;
    this.virtualHosts.set(config.gateway, this.gatewayMac);
    this.virtualHosts.set(config.dns, this.dnsMac);
    this.reassembler = new Ipv4Reassembler({}, this.stats.reassembly);
    this.ipv6 =
      config.ipv6 === undefined
        ? undefined
        : new Ipv6Stack(
            config.ipv6,
            this.gatewayMac,
            this.dnsMac,
            (f, gsoSize) => {
              this.stats.eth.txFrames++;
              if (gsoSize === undefined) this.emit(f);
              else this.emit(f, gsoSize);
            },
            () => this.gso,
            () => this.linkCompletesChecksums,
          );
  }

  /** The guest MAC of `ip` (either family) from the neighbour tables. */
  lookupNeighbour(ip: IpAddr): MacAddr | undefined {
    return typeof ip === 'string' ? this.ipv6?.lookup(ip) : this.neighbours.lookup(ip);
  }

  /** The MAC of one of vmnat's own addresses, or undefined if `ip` is not one. */
  macOfVirtual(ip: Ipv4Addr): MacAddr | undefined {
    return this.virtualHosts.get(ip);
  }

  /**
   * Adds a virtual host at `ip` (in the subnet): it answers ARP with its own MAC (returned) and
   * ping, and what the guest sends it is offered to the NAT like any other destination.
   */
  addVirtualHost(ip: Ipv4Addr): MacAddr {
    const known = this.virtualHosts.get(ip);
    if (known !== undefined) return known;
    const mac = virtualMac(ip);
    this.virtualHosts.set(ip, mac);
    this.extraHosts++;
    return mac;
  }

  /** The source MAC of a frame vmnat sends from `src` (the gateway's for addresses beyond the subnet). */
  private srcMacFor(src: Ipv4Addr): MacAddr {
    if (src === this.config.gateway) return this.gatewayMac;
    if (src === this.config.dns) return this.dnsMac;
    return this.extraHosts === 0 ? this.gatewayMac : (this.virtualHosts.get(src) ?? this.gatewayMac);
  }

  inSubnet(ip: Ipv4Addr): boolean {
    return (ip & this.config.netmask) >>> 0 === this.config.network;
  }

  /**
   * Delivers UDP datagrams sent to `ip`:`port` to `handler`; `ip` may be IPV4_BROADCAST for
   * datagrams to the limited or the subnet broadcast address (DHCP binds both).
   */
  bindUdp(ip: Ipv4Addr, port: number, handler: UdpHandler): void {
    const key = ip * 65536 + port;
    if (!this.udpHandlers.has(key) && this.isForeign(ip)) this.foreignUdpBinds++;
    this.udpHandlers.set(key, handler);
  }

  unbindUdp(ip: Ipv4Addr, port: number): void {
    if (this.udpHandlers.delete(ip * 65536 + port) && this.isForeign(ip)) this.foreignUdpBinds--;
  }

  /**
   * An address that is not vmnat's own: a bind there takes the guest's datagrams to it before the
   * NAT would (a forwarded UDP flow that speaks as its host client, --hostfwd-source client).
   */
  private isForeign(ip: Ipv4Addr): boolean {
    return ip !== IPV4_BROADCAST && !this.virtualHosts.has(ip);
  }

  isUdpBound(ip: Ipv4Addr, port: number): boolean {
    return this.udpHandlers.has(ip * 65536 + port);
  }

  input(frame: Uint8Array, now: number): void {
    this.lastNow = now;
    const eth = EthernetView.checked(frame, 0, frame.length);
    if (typeof eth === 'string') return this.drop(this.stats.eth, 'truncated', eth);
    this.stats.eth.rxFrames++;
    const dst = eth.dst;
    if (dst !== this.gatewayMac && dst !== this.dnsMac && !isGroupMac(dst) && (this.extraHosts === 0 || !this.virtualHosts.has(dst - VIRTUAL_MAC_BASE))) {
      this.stats.eth.notForUs++;
      return;
    }
    switch (eth.etherType) {
      case EtherType.IPv4:
        return this.inputIpv4(frame, eth.payloadOff, eth.payloadLen, eth.src, now);
      case EtherType.ARP:
        return this.inputArp(frame, eth.payloadOff, eth.payloadLen, eth.src, now);
      case EtherType.IPv6:
        if (this.ipv6 === undefined) {
          this.stats.eth.ipv6Ignored++;
          return;
        }
        this.ipv6.rxL4ChecksumOk = this.rxL4ChecksumOk;
        return this.ipv6.input(frame, eth.payloadOff, eth.payloadLen, eth.src, now);
      case EtherType.VLAN:
        this.stats.eth.vlanDropped++;
        return;
      default:
        this.stats.eth.unknownEtherType++;
        return;
    }
  }

  private drop<T extends Record<string, number>>(counters: T, fallback: keyof T & string, reason: string): void {
    const key = (reason in counters ? reason : fallback) as keyof T;
    (counters[key] as number)++;
    trace('drop %s', reason);
  }

  private inputArp(frame: Uint8Array, off: number, len: number, srcMac: MacAddr, now: number): void {
    const arp = ArpView.checked(frame, off, len);
    if (typeof arp === 'string') return this.drop(this.stats.arp, 'truncated', arp);
    const sender = arp.senderIp;
    if (sender !== IPV4_ANY && this.inSubnet(sender) && sender !== this.broadcast) {
      if (this.macOfVirtual(sender) !== undefined) {
        // A guest claiming the gateway's or DNS's address: never learn it.
        this.stats.arp.badSender++;
      } else {
        this.neighbours.learn(sender, arp.senderMac, now);
      }
    }
    if (arp.op === ArpOp.Reply) {
      this.stats.arp.rxReplies++;
      return;
    }
    if (arp.op !== ArpOp.Request) return this.drop(this.stats.arp, 'unsupported', 'unsupported');
    this.stats.arp.rxRequests++;
    const targetMac = this.macOfVirtual(arp.targetIp);
    if (targetMac === undefined) {
      this.stats.arp.notForUs++;
      return;
    }
    const tx = this.tx;
    let o = writeEthernet(tx, 0, srcMac, targetMac, EtherType.ARP);
    o = writeArp(tx, o, ArpOp.Reply, targetMac, arp.targetIp, arp.senderMac, sender);
    this.stats.arp.txReplies++;
    this.send(tx.subarray(0, o));
  }

  private inputIpv4(frame: Uint8Array, off: number, len: number, srcMac: MacAddr, now: number): void {
    let ip = Ipv4View.checked(frame, off, len);
    if (typeof ip === 'string') return this.drop(this.stats.ipv4, 'truncated', ip);
    this.stats.ipv4.rxPackets++;
    const src = ip.src;
    if (src !== IPV4_ANY && this.inSubnet(src) && src !== this.broadcast) {
      if (this.macOfVirtual(src) !== undefined) {
        this.stats.ipv4.badSource++;
        return;
      }
      this.neighbours.learn(src, srcMac, now);
    }
    if (ip.isFragment) {
      this.stats.ipv4.fragments++;
      const whole = this.reassembler.input(ip, now);
      if (whole === undefined) return;
      const again = Ipv4View.checked(whole, 0, whole.length);
      if (typeof again === 'string') return this.drop(this.stats.ipv4, 'truncated', again);
      this.stats.ipv4.reassembled++;
      this.rxL4ChecksumOk = false;
      ip = again;
    }
    const dst = ip.dst;
    const local = dst === this.config.gateway || dst === this.config.dns || (this.extraHosts > 0 && this.virtualHosts.has(dst));
    if (ip.protocol === IpProto.UDP) {
      const bcast = dst === IPV4_BROADCAST || dst === this.broadcast;
      if (local || bcast || (this.foreignUdpBinds > 0 && this.boundForeign(ip))) {
        const udp = UdpView.checked(ip.buf, ip.payloadOff, ip.payloadLen, src, dst, this.rxL4ChecksumOk);
        if (typeof udp === 'string') return this.drop(this.stats.udp, 'truncated', udp);
        const handler = this.udpHandlers.get((bcast ? IPV4_BROADCAST : dst) * 65536 + udp.dstPort);
        if (handler !== undefined) {
          this.stats.udp.rxDatagrams++;
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
        if (bcast) {
          this.stats.udp.broadcastDropped++;
          return;
        }
      }
    } else if (ip.protocol === IpProto.ICMP && local) {
      return this.inputIcmpLocal(ip, srcMac);
    }
    if (this.forward !== undefined && this.forward(ip, srcMac, now)) return;
    this.stats.ipv4.noRoute++;
  }

  /** A datagram to an address not ours whose port is bound here (read before the full UDP check). */
  private boundForeign(ip: Ipv4View): boolean {
    if (ip.payloadLen < 4) return false;
    const port = (ip.buf[ip.payloadOff + 2]! << 8) | ip.buf[ip.payloadOff + 3]!;
    return this.udpHandlers.has(ip.dst * 65536 + port);
  }

  private inputIcmpLocal(ip: Ipv4View, srcMac: MacAddr): void {
    const icmp = Icmpv4View.checked(ip.buf, ip.payloadOff, ip.payloadLen);
    if (typeof icmp === 'string') return this.drop(this.stats.icmp, 'truncated', icmp);
    if (icmp.type !== IcmpType.EchoRequest) {
      this.stats.icmp.unsupported++;
      return;
    }
    this.stats.icmp.rxEchoRequests++;
    const payloadLen = icmp.payloadLen;
    const tx = this.tx;
    if (ETH_HLEN + IPV4_HLEN + 8 + payloadLen > tx.length) return;
    tx.set(ip.buf.subarray(icmp.payloadOff, icmp.payloadOff + payloadLen), ETH_HLEN + IPV4_HLEN + 8);
    const icmpLen = 8 + payloadLen;
    writeIcmpEcho(tx, ETH_HLEN + IPV4_HLEN, IcmpType.EchoReply, icmp.ident, icmp.seq, payloadLen);
    this.stats.icmp.txEchoReplies++;
    this.sendIpv4To(srcMac, ip.dst, ip.src, IpProto.ICMP, icmpLen, 64);
  }

  /**
   * Sends one UDP datagram to a guest. `payload` is copied. With `dstMac` undefined the neighbour
   * table is consulted (dropped and counted under ipv4.noRoute if the guest is unknown).
   */
  sendUdp(srcIp: IpAddr, srcPort: number, dstIp: IpAddr, dstPort: number, payload: Uint8Array, dstMac?: MacAddr): boolean {
    if (typeof srcIp === 'string' || typeof dstIp === 'string') {
      if (typeof srcIp !== 'string' || typeof dstIp !== 'string' || this.ipv6 === undefined) return false;
      return this.ipv6.sendUdp(srcIp, srcPort, dstIp, dstPort, payload, dstMac, this.lastNow);
    }
    const mac = dstMac ?? this.resolve(dstIp);
    if (mac === undefined) return false;
    const udpOff = ETH_HLEN + IPV4_HLEN;
    if (udpOff + UDP_HLEN + payload.length > this.tx.length) return false;
    this.tx.set(payload, udpOff + UDP_HLEN);
    writeUdp(this.tx, udpOff, srcPort, dstPort, payload.length, srcIp, dstIp);
    this.stats.udp.txDatagrams++;
    return this.sendIpv4To(mac, srcIp, dstIp, IpProto.UDP, UDP_HLEN + payload.length, 64);
  }

  /**
   * Sends an ICMP error about `orig` (a packet the guest sent) back to its sender, from `from`:
   * the original IP header and the first 8 bytes of its payload are quoted (RFC 792).
   */
  sendIcmpError(orig: Ipv4View, srcMac: MacAddr, from: Ipv4Addr, type: number, code: number, restOfHeader = 0): boolean {
    const quoteLen = Math.min(orig.headerLen + 8, orig.totalLen);
    return this.sendIcmpErrorQuoting(orig.buf.subarray(orig.off, orig.off + quoteLen), srcMac, from, orig.src, type, code, restOfHeader);
  }

  /** Sends an ICMP error to guest `to` quoting `quote` (an IP header + 8 bytes the guest sent). */
  sendIcmpErrorQuoting(quote: Uint8Array, toMac: MacAddr, from: IpAddr, to: IpAddr, type: number, code: number, restOfHeader = 0): boolean {
    if (typeof to === 'string') {
      // An IPv6 flow: the same error in ICMPv6 terms (RFC 4443), from `from` if it is an IPv6
      // address (the peer's own "port unreachable"), else from the IPv6 gateway.
      if (this.ipv6 === undefined) return false;
      const [t6, c6, r6] = icmpv4ToV6(type, code, restOfHeader);
      return this.ipv6.sendIcmpMessage(toMac, typeof from === 'string' ? from : this.ipv6.config.gateway, to, t6, c6, r6, quote);
    }
    if (typeof from === 'string') return false;
    const icmpOff = ETH_HLEN + IPV4_HLEN;
    this.tx.set(quote, icmpOff + 8);
    writeIcmpError(this.tx, icmpOff, type, code, quote.length, restOfHeader);
    this.stats.icmp.txErrors++;
    return this.sendIpv4To(toMac, from, to, IpProto.ICMP, 8 + quote.length, 64);
  }

  /**
   * Sends an ICMP message (e.g. an echo reply relayed from the host) to guest `to`: header fields
   * `type`, `code`, `restOfHeader`, then `data` (copied), with IP TTL `ttl`. Not counted here.
   */
  sendIcmpMessage(toMac: MacAddr, from: IpAddr, to: IpAddr, type: number, code: number, restOfHeader: number, data: Uint8Array, ttl: number): boolean {
    if (typeof from === 'string' || typeof to === 'string') {
      if (typeof from !== 'string' || typeof to !== 'string' || this.ipv6 === undefined) return false;
      return this.ipv6.sendIcmpMessage(toMac, from, to, type, code, restOfHeader, data, ttl);
    }
    const icmpOff = ETH_HLEN + IPV4_HLEN;
    if (icmpOff + 8 + data.length > this.tx.length) return false;
    this.tx.set(data, icmpOff + 8);
    writeIcmpError(this.tx, icmpOff, type, code, data.length, restOfHeader);
    return this.sendIpv4To(toMac, from, to, IpProto.ICMP, 8 + data.length, ttl);
  }

  /**
   * Sends one TCP segment to a guest: the header, options and payload are written by `writeTcpOut`
   * straight into the outgoing frame (the payload's only copy on the way out).
   */
  sendTcp(dstMac: MacAddr, srcIp: IpAddr, srcPort: number, dstIp: IpAddr, dstPort: number, seg: TcpOutSegment): boolean {
    if (typeof srcIp === 'string' || typeof dstIp === 'string') {
      if (typeof srcIp !== 'string' || typeof dstIp !== 'string' || this.ipv6 === undefined) return false;
      return this.ipv6.sendTcp(dstMac, srcIp, srcPort, dstIp, dstPort, seg);
    }
    const l4off = ETH_HLEN + IPV4_HLEN;
    // On an offload link the kernel owns the TCP checksum: summing 64 KB in JS per segment was
    // ~7 % of vmnat's CPU host→guest at MTU 65520, and a netns guest never sums it at all.
    // Else, where the links complete checksums (the native ones, in C), the same partial sum goes
    // out and the addon finishes it while it copies the frame.
    const offload = this.gso;
    const partial = offload || this.linkCompletesChecksums;
    const end = writeTcpOut(this.tx, l4off, seg, srcPort, dstPort, srcIp, dstIp, partial);
    if (!partial) return this.sendIpv4To(dstMac, srcIp, dstIp, IpProto.TCP, end - l4off, 64);
    // seg.gsoSize > 0: one frame larger than the MTU that the link's kernel cuts into gsoSize
    // segments (or, on the local receive path of a netns guest, takes whole as after GRO). Else a
    // frame within the MTU (TCP never sends more than the MSS without GSO). No IP fragmentation.
    const tx = this.tx;
    writeEthernet(tx, 0, dstMac, this.srcMacFor(srcIp), EtherType.IPv4);
    this.ident = (this.ident + 1) & 0xffff;
    writeIpv4(tx, ETH_HLEN, end - ETH_HLEN, this.ident, IPV4_DF, 64, IpProto.TCP, srcIp, dstIp);
    this.stats.ipv4.txPackets++;
    this.stats.eth.txFrames++;
    this.emit(tx.subarray(0, end), !offload ? COMPLETE_L4_CHECKSUM : seg.gsoSize > 0 ? seg.gsoSize : 0);
    return true;
  }

  /** Guest MAC for `ip`, from the neighbour table. */
  resolve(ip: Ipv4Addr): MacAddr | undefined {
    if (ip === IPV4_BROADCAST || ip === this.broadcast) return MAC_BROADCAST;
    const mac = this.neighbours.lookup(ip);
    if (mac === undefined) this.stats.ipv4.noRoute++;
    return mac;
  }

  /**
   * Writes Ethernet + IPv4 headers in front of an L4 payload already at ETH_HLEN+IPV4_HLEN in tx,
   * and sends it; a packet larger than the MTU leaves as fragments (RFC 791), each built in `frag`.
   */
  private sendIpv4To(dstMac: MacAddr, src: Ipv4Addr, dst: Ipv4Addr, proto: number, l4len: number, ttl: number): boolean {
    const tx = this.tx;
    const srcMac = this.srcMacFor(src);
    this.ident = (this.ident + 1) & 0xffff;
    this.stats.ipv4.txPackets++;
    if (IPV4_HLEN + l4len <= this.config.mtu) {
      writeEthernet(tx, 0, dstMac, srcMac, EtherType.IPv4);
      writeIpv4(tx, ETH_HLEN, IPV4_HLEN + l4len, this.ident, 0, ttl, proto, src, dst);
      return this.send(tx.subarray(0, ETH_HLEN + IPV4_HLEN + l4len));
    }
    const chunkMax = (this.config.mtu - IPV4_HLEN) & ~7;
    const frag = (this.frag ??= new Uint8Array(ETH_HLEN + this.config.mtu));
    for (let at = 0; at < l4len; at += chunkMax) {
      const chunk = Math.min(chunkMax, l4len - at);
      const more = at + chunk < l4len;
      writeEthernet(frag, 0, dstMac, srcMac, EtherType.IPv4);
      writeIpv4(frag, ETH_HLEN, IPV4_HLEN + chunk, this.ident, (more ? IPV4_MF : 0) | (at >>> 3), ttl, proto, src, dst);
      frag.set(tx.subarray(ETH_HLEN + IPV4_HLEN + at, ETH_HLEN + IPV4_HLEN + at + chunk), ETH_HLEN + IPV4_HLEN);
      this.stats.ipv4.txFragments++;
      this.send(frag.subarray(0, ETH_HLEN + IPV4_HLEN + chunk));
    }
    return true;
  }

  private send(frame: Uint8Array): boolean {
    this.stats.eth.txFrames++;
    this.emit(frame);
    return true;
  }

  poll(now: number): void {
    this.lastNow = now;
    this.reassembler.poll(now);
    this.ipv6?.poll(now);
  }

  nextDeadline(): number | undefined {
    const a = this.reassembler.nextDeadline();
    const b = this.ipv6?.nextDeadline();
    return a === undefined ? b : b === undefined ? a : Math.min(a, b);
  }
}


/** An ICMPv4 error's IPv6 counterpart (RFC 4443 codes), for flows of either family in one NAT. */
export function icmpv4ToV6(type: number, code: number, rest: number): [number, number, number] {
  if (type === IcmpType.TimeExceeded) return [Icmpv6Type.TimeExceeded, code, 0];
  if (type === IcmpType.ParameterProblem) return [Icmpv6Type.ParameterProblem, 0, 0];
  if (type === IcmpType.DestUnreachable) {
    switch (code) {
      case IcmpUnreachCode.Port:
        return [Icmpv6Type.DestUnreachable, Icmpv6UnreachCode.Port, 0];
      case IcmpUnreachCode.Protocol:
        // RFC 4443 §3.4: unrecognised Next Header, pointing at the fixed header's field.
        return [Icmpv6Type.ParameterProblem, 1, 6];
      case IcmpUnreachCode.FragNeeded:
        return [Icmpv6Type.PacketTooBig, 0, rest & 0xffff];
      case IcmpUnreachCode.AdminProhibited:
      case IcmpUnreachCode.NetProhibited:
      case IcmpUnreachCode.HostProhibited:
        return [Icmpv6Type.DestUnreachable, Icmpv6UnreachCode.AdminProhibited, 0];
      case IcmpUnreachCode.Host:
        return [Icmpv6Type.DestUnreachable, Icmpv6UnreachCode.Address, 0];
      default:
        return [Icmpv6Type.DestUnreachable, Icmpv6UnreachCode.NoRoute, 0];
    }
  }
  return [Icmpv6Type.DestUnreachable, Icmpv6UnreachCode.NoRoute, 0];
}
