/**
 * The NAT decision: where a guest packet's destination leads on the host. A pure function of the
 * destination and the configuration, table-tested (test/unit/nat-policy.test.ts).
 *
 * - Guest forwards (`--guestfwd`, portfwd/guestfwd.ts) come first: an (address, port) in their table
 *   leads to the rule's host socket, even on the gateway's address. Other ports of a guestfwd's
 *   own virtual address are refused.
 * - The gateway (.2) is the host's loopback, 127.0.0.1, as in VirtualBox and slirp4netns, unless
 *   `--no-host-loopback`, which refuses it.
 * - The DNS address (.3) offers DNS on port 53 (the forwarder); anything else there is refused.
 * - Other addresses in the guest's own subnet are guests (switched at L2) or nobody: never NATed.
 * - Broadcast, multicast, "this network" (0/8), loopback (127/8) and the class E range are not
 *   forwarded: the first two belong to the link, the others cannot be meant for the outside.
 * - Destinations in a denied range (`--deny CIDR`; by default link-local 169.254.0.0/16, where
 *   clouds serve instance metadata and credentials, unless `--allow-link-local`) are refused with
 *   ICMP "communication administratively prohibited". Deny applies to addresses the guest reaches
 *   through the NAT, not to vmnat's own services: the gateway's view of the host's loopback has
 *   its own switch (`--no-host-loopback`).
 * - Every other address is reached at its real address from an ordinary host socket.
 */
import { formatIpv4, ipv6Bytes, ipv6InPrefix, type Ipv4Addr, type Ipv6Addr } from '../stack/wire/addr.ts';
import type { GuestForwardEntry } from '../portfwd/guestfwd.ts';

export interface NatPolicyConfig {
  network: Ipv4Addr;
  netmask: Ipv4Addr;
  gateway: Ipv4Addr;
  dns: Ipv4Addr;
  hostLoopback: boolean;
  /** Ranges the guest may never reach through the NAT. */
  deny?: readonly Ipv4Range[];
  /** Guest forwards by address * 65536 + port, and the virtual hosts they add (GuestForwards). */
  guestForwards?: { readonly byKey: ReadonlyMap<number, GuestForwardEntry>; readonly hosts: ReadonlySet<Ipv4Addr> };
}

/** An IPv4 range: `network` with the host bits of `mask` clear. */
export interface Ipv4Range {
  network: Ipv4Addr;
  mask: Ipv4Addr;
}

export type NatTarget =
  | { kind: 'host'; address: string }
  | { kind: 'dns' }
  | { kind: 'guestfwd'; entry: GuestForwardEntry }
  | { kind: 'refuse'; reason: 'noHostLoopback' | 'closedPort' }
  | { kind: 'deny' }
  | { kind: 'drop'; reason: 'broadcast' | 'multicast' | 'martian' | 'localSubnet' };

const DNS: NatTarget = { kind: 'dns' };
const LOOPBACK: NatTarget = { kind: 'host', address: '127.0.0.1' };
const REFUSE_LOOPBACK: NatTarget = { kind: 'refuse', reason: 'noHostLoopback' };
const REFUSE_PORT: NatTarget = { kind: 'refuse', reason: 'closedPort' };
const DROP_BCAST: NatTarget = { kind: 'drop', reason: 'broadcast' };
const DROP_MCAST: NatTarget = { kind: 'drop', reason: 'multicast' };
const DROP_MARTIAN: NatTarget = { kind: 'drop', reason: 'martian' };
const DROP_LOCAL: NatTarget = { kind: 'drop', reason: 'localSubnet' };
const DENY: NatTarget = { kind: 'deny' };

export function natTarget(cfg: NatPolicyConfig, dst: Ipv4Addr, dstPort: number): NatTarget {
  const gf = cfg.guestForwards;
  if (gf !== undefined && gf.byKey.size > 0) {
    const entry = gf.byKey.get(dst * 65536 + dstPort);
    if (entry !== undefined) return { kind: 'guestfwd', entry };
    if (gf.hosts.has(dst)) return REFUSE_PORT;
  }
  if (dst === cfg.gateway) return cfg.hostLoopback ? LOOPBACK : REFUSE_LOOPBACK;
  if (dst === cfg.dns) return dstPort === 53 ? DNS : REFUSE_PORT;
  if (dst === 0xffff_ffff || dst === ((cfg.network | ~cfg.netmask) >>> 0)) return DROP_BCAST;
  const top = dst >>> 24;
  if (top >= 224 && top < 240) return DROP_MCAST;
  if (top === 0 || top === 127 || top >= 240) return DROP_MARTIAN;
  if ((dst & cfg.netmask) >>> 0 === cfg.network) return DROP_LOCAL;
  if (cfg.deny !== undefined) for (const r of cfg.deny) if ((dst & r.mask) >>> 0 === r.network) return DENY;
  return { kind: 'host', address: formatIpv4(dst) };
}

/** The IPv6 side of the policy: the same rules over the guests' /64 (ipv6.ts). */
export interface NatPolicy6Config {
  gateway: Ipv6Addr;
  dns: Ipv6Addr;
  /** The guests' /64 prefix (network address). */
  prefix: Ipv6Addr;
  hostLoopback: boolean;
  /** IPv6 ranges the guest may never reach through the NAT (`--deny`). */
  deny?: readonly { prefix: Ipv6Addr; prefixLen: number }[];
}

const LOOPBACK6: NatTarget = { kind: 'host', address: '::1' };

/**
 * Where an IPv6 destination leads: the gateway (::2) is the host's ::1 (unless
 * `--no-host-loopback`); ::3 offers DNS on 53; multicast is the link's; the unspecified, loopback
 * and IPv4-mapped addresses cannot be meant for the outside; link-local (fe80::/10) and the guests'
 * own prefix never leave the link; every other address is reached at its real address.
 */
export function natTarget6(cfg: NatPolicy6Config, dst: Ipv6Addr, dstPort: number): NatTarget {
  if (dst === cfg.gateway) return cfg.hostLoopback ? LOOPBACK6 : REFUSE_LOOPBACK;
  if (dst === cfg.dns) return dstPort === 53 ? DNS : REFUSE_PORT;
  const b = ipv6Bytes(dst);
  if (b[0] === 0xff) return DROP_MCAST;
  if (dst === '::' || dst === '::1' || dst.startsWith('::ffff:')) return DROP_MARTIAN;
  if (b[0] === 0xfe && (b[1]! & 0xc0) === 0x80) return DROP_LOCAL;
  if (ipv6InPrefix(b, ipv6Bytes(cfg.prefix), 64)) return DROP_LOCAL;
  if (cfg.deny !== undefined) for (const r of cfg.deny) if (ipv6InPrefix(b, ipv6Bytes(r.prefix), r.prefixLen)) return DENY;
  return { kind: 'host', address: dst };
}
