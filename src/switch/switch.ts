/**
 * The switch: every guest connection is a port; frames go where they are addressed and nowhere else.
 *
 * Theory of operation. A port wraps one `Link` (a TAP, an inherited fd, one stream connection, a
 * datagram socket's guest). For each frame a port receives, `input` decides, in this order:
 *  1. Anti-spoofing (on by default, as Softnet): the first unicast source MAC a port uses is its
 *     MAC; a frame from any other MAC is dropped. Once DHCP has leased the port's MAC an address
 *     (`bindLease`, DHCP snooping), IPv4 and ARP from that port must come from that address (or
 *     0.0.0.0, for DHCP itself). A port with no lease may claim one address of the subnet that no
 *     other port holds — a VM image with a hard-coded 10.0.2.15 keeps working — and is then bound
 *     to it as if leased (`static`). The gateway's and the DNS server's addresses, and an address
 *     another port holds, are never accepted as a source, in IPv4 or in ARP (a forged ARP reply
 *     for the gateway is dropped here, before any guest can believe it). IPv6: never from vmnat's
 *     addresses, and no router advertisement, redirect, or neighbour advertisement for vmnat's
 *     addresses from a guest (RA guard, `ndpSpoof`); an IPv6 source address belongs to the first
 *     port that uses it (up to 16 per port, the oldest forgotten), so no guest takes another's.
 *  2. Learning: the source MAC is (re)learned for the port, with its time; entries age out after
 *     `macAgeMs` without a frame and the table holds at most `maxMacs` (the oldest is forgotten).
 *  3. Forwarding: frames for vmnat's own MACs go to the stack; broadcast and multicast go to the
 *     stack and, unless `isolate`, to every other port; unicast goes to the one port that owns the
 *     destination MAC (with `isolate`, never to another guest: dropped). Unknown unicast is never
 *     flooded: it goes to the stack, which counts it as not for us.
 * Frames from the stack (`output`) go to the port of their destination MAC (the learned table,
 * then the MAC a port is bound to, so a long-idle guest is still reached); a broadcast the stack
 * sends while answering a port's frame (a DHCP OFFER) goes to that port only, others to every port;
 * unknown unicast is dropped and counted. So a guest that has not leased, or one that floods, costs
 * the others nothing.
 *
 * Sends are queued on each port's link and flushed once per batch (`flush`), one syscall per port.
 * Every drop is counted per port and reason (`PortStats.drops`).
 *
 * An uplink port (host-only and bridged modes, modes/mode.ts: the host's TAP, a TAP on a Linux
 * bridge, vmnet) is the network beyond the guests, and trusted: anti-spoofing does not apply to it
 * (a LAN's many MACs come through it), isolation never separates a guest from it (isolated guests
 * still reach the host or the LAN, and its broadcasts reach every guest), filter rules still do
 * (`guestToGuest`). Unknown unicast from a guest goes to the uplink, as a learning switch floods to
 * its uplink (a LAN host whose entry aged out is still reached); unknown unicast from the uplink
 * (a bridge floods what it has not learned) is dropped and counted (`uplinkUnknownDropped`).
 *
 * Disconnected (`connected = false`, the cable pulled): every frame from a port is dropped and
 * counted as `disconnected` on that port, every frame to one in `disconnectedToGuests`.
 */
import { IPV4_ANY, isGroupMac, readIpv6, readMac, type Ipv4Addr, type MacAddr } from '../stack/wire/addr.ts';
import type { Link } from '../link/types.ts';
import { Ipv6View } from '../stack/wire/ipv6.ts';

/** IPv6 addresses one port may hold at once (link-local, SLAAC, temporary ones, DHCPv6). */
const MAX_IPV6_PER_PORT = 16;

function sameBytes(frame: Uint8Array, off: number, b: Uint8Array): boolean {
  for (let i = 0; i < b.length; i++) if (frame[off + i] !== b[i]) return false;
  return true;
}

export interface SwitchConfig {
  network: Ipv4Addr;
  netmask: Ipv4Addr;
  /** vmnat's own addresses on the network (gateway, DNS): no guest may claim them. */
  reserved: readonly Ipv4Addr[];
  /** vmnat's own MACs: frames for them go to the stack. */
  ownMacs: readonly MacAddr[];
  /** vmnat's own IPv6 addresses (gateway, DNS, the router's link-local), 16 bytes each. */
  reserved6?: readonly Uint8Array[];
  isolate: boolean;
  antiSpoof: boolean;
  maxMacs: number;
  macAgeMs: number;
}

export const DEFAULT_SWITCH = { isolate: false, antiSpoof: true, maxMacs: 4096, macAgeMs: 300_000 } as const;

export function createPortDrops() {
  return { macSpoof: 0, ipSpoof: 0, arpSpoof: 0, isolated: 0, filtered: 0, runt: 0, disconnected: 0, ndpSpoof: 0 };
}
export type PortDropReason = keyof ReturnType<typeof createPortDrops>;

export interface PortStats {
  rxFrames: number;
  rxBytes: number;
  txFrames: number;
  txBytes: number;
  drops: ReturnType<typeof createPortDrops>;
}

export function createSwitchStats() {
  return { guestToGuest: 0, flooded: 0, unknownUnicastDropped: 0, macMoves: 0, macEvicted: 0, macAged: 0, addressClaims: 0, toUplink: 0, fromUplink: 0, uplinkUnknownDropped: 0, disconnectedToGuests: 0 };
}

/** One switch port: a guest connection and what the switch knows of it. */
export class SwitchPort {
  readonly stats: PortStats = { rxFrames: 0, rxBytes: 0, txFrames: 0, txBytes: 0, drops: createPortDrops() };
  /** The MAC the port first sent from (anti-spoofing binds it). */
  mac: MacAddr | undefined;
  /** The address the port may send from, and why. */
  ip: Ipv4Addr | undefined;
  ipSource: 'dhcp' | 'static' | undefined;
  hostname: string | undefined;
  /** IPv6 source addresses the port has used (claimed first come; at most MAX_IPV6_PER_PORT, oldest forgotten). */
  readonly ipv6 = new Set<string>();
  closed = false;

  constructor(
    readonly id: number,
    readonly link: Link,
    /** The network beyond the guests (host TAP, bridge, vmnet): trusted, see the header. */
    readonly uplink = false,
  ) {}
}

interface MacEntry {
  port: SwitchPort;
  seen: number;
}

export class Switch {
  readonly stats = createSwitchStats();
  private readonly portList: SwitchPort[] = [];
  private readonly macs = new Map<MacAddr, MacEntry>();
  private readonly ipOwner = new Map<Ipv4Addr, SwitchPort>();
  /** Which port uses which IPv6 source address (SLAAC, temporary, DHCPv6, link-local). */
  private readonly ip6Owner = new Map<string, SwitchPort>();
  private readonly dirty = new Set<SwitchPort>();
  private readonly broadcast: Ipv4Addr;
  private nextId = 1;
  private nextSweep: number | undefined;
  private readonly uplinks: SwitchPort[] = [];
  /** False: the cable is pulled (disconnected mode); every frame is dropped and counted. */
  connected = true;
  /** The port whose frame is being handled (the stack's broadcast answers go back to it only). */
  current: SwitchPort | undefined;
  /**
   * The filter's say on a unicast frame from one guest to another (the engine checks the rules,
   * `out` for the sender and `in` for the receiver); false drops it, counted as `filtered`.
   * Absent = every frame passes.
   */
  guestToGuest: ((frame: Uint8Array, from: SwitchPort, to: SwitchPort) => boolean) | undefined;

  constructor(
    private readonly cfg: SwitchConfig,
    private readonly toStack: (frame: Uint8Array, now: number) => void,
    /** A port claimed an address without DHCP (so DHCP must not offer it to another). */
    private readonly onClaim: (port: SwitchPort, ip: Ipv4Addr) => void = () => undefined,
  ) {
    this.broadcast = (cfg.network | ~cfg.netmask) >>> 0;
  }

  get ports(): readonly SwitchPort[] {
    return this.portList;
  }

  attach(link: Link, options: { uplink?: boolean } = {}): SwitchPort {
    const port = new SwitchPort(this.nextId++, link, options.uplink === true);
    this.portList.push(port);
    if (port.uplink) this.uplinks.push(port);
    return port;
  }

  /** The port's link closed: forget it, its MACs and its addresses. */
  detach(port: SwitchPort): void {
    if (port.closed) return;
    port.closed = true;
    const i = this.portList.indexOf(port);
    if (i >= 0) this.portList.splice(i, 1);
    const u = this.uplinks.indexOf(port);
    if (u >= 0) this.uplinks.splice(u, 1);
    for (const [mac, e] of this.macs) if (e.port === port) this.macs.delete(mac);
    for (const [ip, p] of this.ipOwner) if (p === port) this.ipOwner.delete(ip);
    for (const ip of port.ipv6) this.ip6Owner.delete(ip);
    port.ipv6.clear();
    this.dirty.delete(port);
  }

  /** The port that owns `mac` (learned or bound), if any. */
  portOfMac(mac: MacAddr, now: number): SwitchPort | undefined {
    const e = this.macs.get(mac);
    if (e !== undefined) {
      if (now - e.seen <= this.cfg.macAgeMs) return e.port;
      this.macs.delete(mac);
      this.stats.macAged++;
    }
    for (const p of this.portList) if (p.mac === mac) return p;
    return undefined;
  }

  portOfIp(ip: Ipv4Addr): SwitchPort | undefined {
    return this.ipOwner.get(ip);
  }

  /** DHCP bound `ip` to `mac`: the port that sends as `mac` may now send from `ip` only. */
  bindLease(mac: MacAddr, ip: Ipv4Addr, hostname: string | undefined, now: number): void {
    const port = this.portOfMac(mac, now);
    if (port === undefined) return;
    this.setAddress(port, ip, 'dhcp');
    port.hostname = hostname;
  }

  /** The lease of `ip` ended: its port may claim an address again. */
  unbindLease(mac: MacAddr, ip: Ipv4Addr): void {
    const port = this.ipOwner.get(ip);
    if (port === undefined || port.ipSource !== 'dhcp' || (port.mac !== undefined && port.mac !== mac)) return;
    this.ipOwner.delete(ip);
    port.ip = undefined;
    port.ipSource = undefined;
    port.hostname = undefined;
  }

  private setAddress(port: SwitchPort, ip: Ipv4Addr, source: 'dhcp' | 'static'): void {
    if (port.ip !== undefined && port.ip !== ip && this.ipOwner.get(port.ip) === port) this.ipOwner.delete(port.ip);
    const other = this.ipOwner.get(ip);
    if (other !== undefined && other !== port) {
      // DHCP is the authority: a static claim of this address by another port gives way.
      other.ip = undefined;
      other.ipSource = undefined;
    }
    this.ipOwner.set(ip, port);
    port.ip = ip;
    port.ipSource = source;
  }

  /** One frame from `port` (at least 14 bytes). */
  input(port: SwitchPort, frame: Uint8Array, now: number): void {
    const st = port.stats;
    st.rxFrames++;
    st.rxBytes += frame.length;
    if (!this.connected) {
      st.drops.disconnected++;
      return;
    }
    const src = readMac(frame, 6);
    if (port.uplink) this.stats.fromUplink++;
    else if (this.cfg.antiSpoof && !this.sourceAllowed(port, frame, src)) return;
    if (!isGroupMac(src)) this.learn(src, port, now);
    const dst = readMac(frame, 0);
    const own = this.cfg.ownMacs;
    if (own.includes(dst)) {
      this.toStack(frame, now);
      return;
    }
    if (isGroupMac(dst)) {
      this.toStack(frame, now);
      if (this.portList.length > 1) {
        if (!this.cfg.isolate) {
          this.stats.flooded++;
          for (const p of this.portList) if (p !== port) this.send(p, frame);
        } else if (port.uplink) {
          // Isolated guests are cut from each other only: the uplink's broadcasts reach them all.
          for (const p of this.portList) if (p !== port && !p.uplink) this.send(p, frame);
        } else {
          for (const p of this.uplinks) this.send(p, frame);
        }
      }
      return;
    }
    const to = this.portOfMac(dst, now);
    if (to !== undefined && to !== port) {
      if (this.cfg.isolate && !port.uplink && !to.uplink) {
        st.drops.isolated++;
        return;
      }
      if (this.guestToGuest !== undefined && !this.guestToGuest(frame, port, to)) {
        st.drops.filtered++;
        return;
      }
      if (to.uplink) this.stats.toUplink++;
      else if (!port.uplink) this.stats.guestToGuest++;
      this.send(to, frame);
      return;
    }
    if (this.uplinks.length > 0) {
      if (port.uplink) {
        this.stats.uplinkUnknownDropped++;
        return;
      }
      const up = this.uplinks[0]!;
      if (this.guestToGuest !== undefined && !this.guestToGuest(frame, port, up)) {
        st.drops.filtered++;
        return;
      }
      this.stats.toUplink++;
      this.send(up, frame);
      return;
    }
    this.toStack(frame, now); // counted there as not for us
  }

  /** A frame from the stack to the guests. */
  output(frame: Uint8Array, now: number, gsoSize?: number): void {
    if (!this.connected) {
      this.stats.disconnectedToGuests++;
      return;
    }
    const dst = readMac(frame, 0);
    if (isGroupMac(dst)) {
      if (this.current !== undefined) this.send(this.current, frame, gsoSize);
      else for (const p of this.portList) this.send(p, frame, gsoSize);
      return;
    }
    const port = this.portOfMac(dst, now);
    if (port !== undefined) this.send(port, frame, gsoSize);
    else this.stats.unknownUnicastDropped++;
  }

  /** Sends every queued frame: one flush per port that has any. */
  flush(): void {
    for (const p of this.dirty) p.link.flush();
    this.dirty.clear();
  }

  /** Expired MACs are forgotten lazily on lookup; this sweep bounds the memory they hold. */
  poll(now: number): void {
    if (this.nextSweep === undefined || now < this.nextSweep) return;
    for (const [mac, e] of this.macs) {
      if (now - e.seen > this.cfg.macAgeMs) {
        this.macs.delete(mac);
        this.stats.macAged++;
      }
    }
    this.nextSweep = this.macs.size > 0 ? now + this.cfg.macAgeMs : undefined;
  }

  nextDeadline(): number | undefined {
    return this.nextSweep;
  }

  private send(port: SwitchPort, frame: Uint8Array, gsoSize?: number): void {
    port.link.send(frame, gsoSize);
    port.stats.txFrames++;
    port.stats.txBytes += frame.length;
    this.dirty.add(port);
  }

  private learn(mac: MacAddr, port: SwitchPort, now: number): void {
    const e = this.macs.get(mac);
    if (e !== undefined) {
      if (e.port !== port) {
        this.stats.macMoves++;
        e.port = port;
      }
      e.seen = now;
      return;
    }
    if (this.macs.size >= this.cfg.maxMacs) {
      // Bounded: a guest spraying source MACs (anti-spoofing off) must not grow memory.
      const oldest = this.macs.keys().next();
      if (!oldest.done) this.macs.delete(oldest.value);
      this.stats.macEvicted++;
    }
    this.macs.set(mac, { port, seen: now });
    if (this.nextSweep === undefined) this.nextSweep = now + this.cfg.macAgeMs;
  }

  /** Anti-spoofing: may `port` send this frame with source MAC `src`? Counts the drop if not. */
  private sourceAllowed(port: SwitchPort, frame: Uint8Array, src: MacAddr): boolean {
    const drops = port.stats.drops;
    if (isGroupMac(src)) {
      drops.macSpoof++;
      return false;
    }
    if (port.mac === undefined) port.mac = src;
    else if (port.mac !== src) {
      drops.macSpoof++;
      return false;
    }
    const etherType = (frame[12]! << 8) | frame[13]!;
    let ip: Ipv4Addr;
    if (etherType === 0x0800) {
      if (frame.length < 34) {
        drops.runt++;
        return false;
      }
      ip = ((frame[26]! << 24) | (frame[27]! << 16) | (frame[28]! << 8) | frame[29]!) >>> 0;
      if (ip === IPV4_ANY) return true; // DHCP before a lease
      if (!this.mayUse(port, ip)) {
        drops.ipSpoof++;
        return false;
      }
      return true;
    }
    if (etherType === 0x0806) {
      if (frame.length < 42) {
        drops.runt++;
        return false;
      }
      // The ARP sender hardware address must be the port's MAC too.
      if (readMac(frame, 22) !== src) {
        drops.arpSpoof++;
        return false;
      }
      ip = ((frame[28]! << 24) | (frame[29]! << 16) | (frame[30]! << 8) | frame[31]!) >>> 0;
      if (ip === IPV4_ANY) return true; // an ARP probe (RFC 5227)
      if (!this.mayUse(port, ip)) {
        drops.arpSpoof++;
        return false;
      }
      return true;
    }
    if (etherType === 0x86dd) return this.ipv6Allowed(port, frame);
    return true; // the rest: the MAC check only
  }

  /**
   * IPv6 from a guest (RFC 6105's RA guard, and NDP's counterpart of the ARP check): never from one
   * of vmnat's own addresses, no router advertisement or redirect (only vmnat is the router, so a
   * guest cannot hand the others a prefix, a DNS server or a default route), and no neighbour
   * advertisement for vmnat's addresses. The ICMPv6 type is found past any extension headers, so
   * wrapping an RA in them (RFC 7113) does not slip by.
   */
  private ipv6Allowed(port: SwitchPort, frame: Uint8Array): boolean {
    const drops = port.stats.drops;
    if (frame.length < 54) {
      drops.runt++;
      return false;
    }
    const own = this.cfg.reserved6 ?? [];
    if (own.some((a) => sameBytes(frame, 22, a))) {
      drops.ipSpoof++;
      return false;
    }
    const ip = Ipv6View.checked(frame, 14, frame.length - 14);
    if (typeof ip === 'string') return true; // the stack counts it; nothing here to judge
    // Source binding, first come: an address another port uses is not this port's to send from
    // (the IPv6 counterpart of the IPv4 claim; '::' is DAD's and anyone's).
    const src = ip.src;
    if (src !== '::') {
      const owner = this.ip6Owner.get(src);
      if (owner !== undefined && owner !== port) {
        drops.ipSpoof++;
        return false;
      }
      if (owner === undefined) {
        if (port.ipv6.size >= MAX_IPV6_PER_PORT) {
          const oldest = port.ipv6.values().next().value!;
          port.ipv6.delete(oldest);
          this.ip6Owner.delete(oldest);
        }
        port.ipv6.add(src);
        this.ip6Owner.set(src, port);
      }
    }
    if (ip.protocol !== 58 || ip.payloadLen < 1 || (ip.isFragment && ip.fragmentOffset !== 0)) return true;
    const type = frame[ip.payloadOff]!;
    if (type === 134 || type === 137) {
      drops.ndpSpoof++;
      return false;
    }
    if (type === 136 && ip.payloadLen >= 24) {
      // A neighbour advertisement speaks for its target: never for vmnat's, nor for an address
      // another port uses.
      const owner = this.ip6Owner.get(readIpv6(frame, ip.payloadOff + 8));
      if (own.some((a) => sameBytes(frame, ip.payloadOff + 8, a)) || (owner !== undefined && owner !== port)) {
        drops.ndpSpoof++;
        return false;
      }
    }
    return true;
  }

  /** May `port` send from `ip`? A port with no address claims a free one of the subnet here. */
  private mayUse(port: SwitchPort, ip: Ipv4Addr): boolean {
    if (port.ip !== undefined) return ip === port.ip;
    if ((ip & this.cfg.netmask) >>> 0 !== this.cfg.network || ip === this.cfg.network || ip === this.broadcast) return false;
    if (this.cfg.reserved.includes(ip) || this.ipOwner.has(ip)) return false;
    this.setAddress(port, ip, 'static');
    this.stats.addressClaims++;
    this.onClaim(port, ip);
    return true;
  }
}
