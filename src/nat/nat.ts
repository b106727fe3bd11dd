/**
 * The NAT entry point: every IPv4 packet from a guest that is not for the stack's own services.
 *
 * Theory of operation: the stack offers the packet (`input`); the NAT applies the TTL rule (a
 * packet that would die here gets ICMP time exceeded from the gateway, so traceroute works), asks
 * the policy (policy.ts) where the destination leads, and hands the packet to the protocol's flow
 * machine: UDP (udp.ts), TCP and ICMP echo (their own files). Refusals become what the guest's
 * stack expects: ICMP port unreachable for UDP, RST for TCP. IPv6 packets come through `input6`
 * with the same rules (policy.ts `natTarget6`) and ICMPv6 errors; the flow machines are shared.
 */
import type { Stack } from '../stack/stack.ts';
import type { Ipv4View } from '../stack/wire/ipv4.ts';
import { IpProto } from '../stack/wire/ipv4.ts';
import { IcmpType, IcmpUnreachCode } from '../stack/wire/icmpv4.ts';
import { UdpView } from '../stack/wire/udp.ts';
import type { MacAddr } from '../stack/wire/addr.ts';
import { natTarget, natTarget6, type NatPolicy6Config, type NatPolicyConfig } from './policy.ts';
import { Ipv6Next, type Ipv6View } from '../stack/wire/ipv6.ts';
import { Icmpv6Type, Icmpv6UnreachCode, isIcmpv6Error } from '../stack/wire/icmpv6.ts';
import { UdpNat, type UdpNatOptions } from './udp.ts';
import { TcpNat, type LocalServiceFactory, type TcpNatOptions } from './tcp.ts';
import type { TcpConfig } from '../stack/tcp/index.ts';

export function createNatStats() {
  return { ttlExceeded: 0, dropped: { broadcast: 0, multicast: 0, martian: 0, localSubnet: 0 }, refused: 0, denied: 0, unsupportedProtocol: 0, udpMalformed: 0 };
}

export class Nat {
  readonly stats = createNatStats();
  readonly udp: UdpNat;
  readonly tcp: TcpNat;
  icmp: ((ip: Ipv4View, srcMac: MacAddr, now: number, hostAddress: string) => void) | undefined;
  /** ICMPv6 echo to outside addresses (host ping sockets), when available. */
  icmp6: ((ip: Ipv6View, srcMac: MacAddr, now: number, hostAddress: string) => void) | undefined;
  /** The IPv6 side of the policy, when the network has IPv6. */
  policy6: NatPolicy6Config | undefined;

  constructor(
    private readonly stack: Stack,
    private readonly policy: NatPolicyConfig,
    udpOptions: UdpNatOptions,
    tcpConfig: TcpConfig,
    tcpOptions: TcpNatOptions,
    localDns: LocalServiceFactory | undefined,
    now: () => number,
    wake: () => void,
  ) {
    this.udp = new UdpNat(stack, udpOptions, now, wake);
    this.tcp = new TcpNat(stack, tcpConfig, tcpOptions, now, wake, localDns);
  }

  input(ip: Ipv4View, srcMac: MacAddr, now: number): boolean {
    const proto = ip.protocol;
    let dstPort = 0;
    let udp: UdpView | undefined;
    if (proto === IpProto.UDP) {
      const v = UdpView.checked(ip.buf, ip.payloadOff, ip.payloadLen, ip.src, ip.dst, this.stack.rxL4ChecksumOk);
      if (typeof v === 'string') {
        this.stats.udpMalformed++;
        return true;
      }
      udp = v;
      dstPort = v.dstPort;
    } else if (proto === IpProto.TCP && ip.payloadLen >= 4) {
      dstPort = (ip.buf[ip.payloadOff + 2]! << 8) | ip.buf[ip.payloadOff + 3]!;
    }
    const target = natTarget(this.policy, ip.dst, dstPort);
    if (target.kind === 'drop') {
      this.stats.dropped[target.reason]++;
      return true;
    }
    if (target.kind === 'deny') {
      // --deny (and link-local by default): what a filtering router says. The guest's TCP gives
      // up at once (EHOSTUNREACH) rather than retrying a SYN into silence. Never for a RST or an
      // ICMP error (RFC 1122 §3.2.2: no ICMP error about an ICMP error).
      this.stats.denied++;
      if (proto === IpProto.TCP && ip.payloadLen >= 14 && (ip.buf[ip.payloadOff + 13]! & 0x04) !== 0) return true;
      if (proto === IpProto.ICMP && ip.payloadLen >= 1 && ip.buf[ip.payloadOff]! !== IcmpType.EchoRequest) return true;
      this.stack.sendIcmpError(ip, srcMac, this.policy.gateway, IcmpType.DestUnreachable, IcmpUnreachCode.AdminProhibited);
      return true;
    }
    if (ip.ttl <= 1 && target.kind === 'host' && ip.dst !== this.policy.gateway) {
      this.stats.ttlExceeded++;
      this.stack.sendIcmpError(ip, srcMac, this.policy.gateway, IcmpType.TimeExceeded, 0);
      return true;
    }
    switch (proto) {
      case IpProto.UDP:
        if (target.kind === 'host') {
          this.udp.output(srcMac, ip.src, udp!.srcPort, ip.dst, dstPort, target.address, ip.buf.subarray(udp!.payloadOff, udp!.payloadOff + udp!.payloadLen), now);
        } else {
          // 'dns' is bound in the stack; reaching here means a refused port.
          this.stats.refused++;
          this.stack.sendIcmpError(ip, srcMac, ip.dst, IcmpType.DestUnreachable, IcmpUnreachCode.Port);
        }
        return true;
      case IpProto.TCP:
        if (target.kind === 'guestfwd') this.tcp.input(ip, srcMac, now, target.entry.label, target.entry.connect);
        else this.tcp.input(ip, srcMac, now, target.kind === 'host' ? target.address : target.kind === 'dns' ? 'dns' : undefined);
        return true;
      case IpProto.ICMP:
        if (this.icmp === undefined || target.kind !== 'host') return false;
        this.icmp(ip, srcMac, now, target.address);
        return true;
      default:
        this.stats.unsupportedProtocol++;
        this.stack.sendIcmpError(ip, srcMac, this.policy.gateway, IcmpType.DestUnreachable, IcmpUnreachCode.Protocol);
        return true;
    }
  }

  /**
   * An IPv6 packet from a guest, not for the stack's own services: the same decisions as `input`,
   * with ICMPv6 errors (RFC 4443) from the IPv6 gateway.
   */
  input6(ip: Ipv6View, srcMac: MacAddr, now: number): boolean {
    const six = this.stack.ipv6;
    const policy = this.policy6;
    if (six === undefined || policy === undefined) return false;
    const proto = ip.protocol;
    let dstPort = 0;
    let udp: UdpView | undefined;
    if (proto === IpProto.UDP) {
      const v = UdpView.checkedSum(ip.buf, ip.payloadOff, ip.payloadLen, ip.addrSum, six.rxL4ChecksumOk, false);
      if (typeof v === 'string') {
        this.stats.udpMalformed++;
        return true;
      }
      udp = v;
      dstPort = v.dstPort;
    } else if (proto === IpProto.TCP && ip.payloadLen >= 4) {
      dstPort = (ip.buf[ip.payloadOff + 2]! << 8) | ip.buf[ip.payloadOff + 3]!;
    }
    const dst = ip.dst;
    const target = natTarget6(policy, dst, dstPort);
    if (target.kind === 'drop') {
      this.stats.dropped[target.reason]++;
      return true;
    }
    if (target.kind === 'deny') {
      this.stats.denied++;
      six.sendErrorAbout(ip, srcMac, Icmpv6Type.DestUnreachable, Icmpv6UnreachCode.AdminProhibited);
      return true;
    }
    if (ip.hopLimit <= 1 && target.kind === 'host' && dst !== policy.gateway) {
      this.stats.ttlExceeded++;
      six.sendErrorAbout(ip, srcMac, Icmpv6Type.TimeExceeded, 0);
      return true;
    }
    switch (proto) {
      case IpProto.UDP:
        if (target.kind === 'host') {
          this.udp.output(srcMac, ip.src, udp!.srcPort, dst, dstPort, target.address, ip.buf.subarray(udp!.payloadOff, udp!.payloadOff + udp!.payloadLen), now);
        } else {
          this.stats.refused++;
          six.sendErrorAbout(ip, srcMac, Icmpv6Type.DestUnreachable, Icmpv6UnreachCode.Port, 0, dst);
        }
        return true;
      case IpProto.TCP:
        this.tcp.input(ip, srcMac, now, target.kind === 'host' ? target.address : target.kind === 'dns' ? 'dns' : undefined);
        return true;
      case Ipv6Next.ICMPv6: {
        const type = ip.payloadLen >= 1 ? ip.buf[ip.payloadOff]! : 0;
        if (isIcmpv6Error(type)) return true; // errors from a guest about its own peers: nowhere to go
        if (type !== Icmpv6Type.EchoRequest) return true;
        if (target.kind !== 'host') {
          this.stats.refused++;
          six.sendErrorAbout(ip, srcMac, Icmpv6Type.DestUnreachable, Icmpv6UnreachCode.AdminProhibited);
          return true;
        }
        if (this.icmp6 === undefined) return false;
        this.icmp6(ip, srcMac, now, target.address);
        return true;
      }
      default:
        this.stats.unsupportedProtocol++;
        // RFC 4443 §3.4: unrecognised Next Header; the pointer names the header that named it.
        six.sendErrorAbout(ip, srcMac, Icmpv6Type.ParameterProblem, 1, ip.headerLen === 40 ? 6 : ip.headerLen);
        return true;
    }
  }

  poll(now: number): void {
    this.udp.poll(now);
    this.tcp.poll(now);
  }

  nextDeadline(): number | undefined {
    const a = this.udp.nextDeadline();
    const b = this.tcp.nextDeadline();
    return a === undefined ? b : b === undefined ? a : Math.min(a, b);
  }

  /** End of a frame batch. */
  afterBatch(): void {
    this.tcp.afterBatch();
  }

  close(): void {
    this.udp.closeAll();
    this.tcp.closeAll();
  }
}
