/**
 * DHCP server (RFC 2131, options per RFC 2132/3396/3397/6842), sans-I/O.
 *
 * Theory of operation: the stack hands `handle()` each UDP payload a guest sent to port 67,
 * with the IP source and the time; `handle()` returns at most one reply and where to send it
 * (IP and MAC; the stack wraps it in UDP 67→68). No timers: `poll(now)` expires offers, leases
 * and declined addresses, and `nextDeadline()` says when that is next needed.
 *
 * Leases are keyed by chaddr (the MAC), not by the client identifier (61), as VirtualBox NAT
 * does: in vmnat one MAC is one VM, and a VM that moves from firmware to initramfs to OS changes
 * its client identifier (udhcpc sends 01+MAC, systemd-networkd a DUID, ISC dhclient none), which
 * under client-id keying would burn one address per boot stage. Client identifiers are echoed
 * (RFC 6842) but not used.
 *
 * The server is authoritative for its subnet (like dnsmasq --dhcp-authoritative): a REQUEST for
 * an address it cannot give this client is NAKed at once, even without a record of the client,
 * so a VM moved from another network reconfigures in one round trip instead of timing out; and
 * a REQUEST for an address that is free and valid is ACKed even with no prior offer, so a guest
 * keeps its address across a vmnat restart.
 *
 * Per-MAC record states: `offered` (held for OFFER_HOLD_MS), `bound` (until the lease expires),
 * `free` (released or expired, but remembered: the MAC gets this address back on its next
 * DISCOVER unless someone else has taken it). A record exists per MAC and per address at most
 * once, so memory is bounded by the pool plus static leases. Address choice for a DISCOVER:
 * static lease > the client's current offer/lease > requested address (50) if assignable >
 * its remembered address > the lowest never-used pool address > the pool address freed longest
 * ago. Declined addresses (DECLINE: someone else answers ARP for them) are withheld for
 * DECLINE_HOLD_MS.
 *
 * Relays: vmnat's guests share one L2 segment with the server, so a message with giaddr ≠ 0 came
 * through something we did not set up; it is counted (`relayDropped`) and dropped.
 * BOOTP (no option 53) is not served (counted as `ignored`).
 *
 * Reply size: at most the client's maximum message size (57, never below 576) and the link MTU,
 * minus 28 bytes of IP and UDP headers; at least 300 bytes (BOOTP minimum). The mandatory options
 * come first; requested options follow in the client's parameter request list order, then the
 * unrequested defaults; what does not fit is left out and counted (`optionsOmitted`).
 */
import { debuglog } from 'node:util';
import {
  IPV4_BROADCAST,
  MAC_BROADCAST,
  formatIpv4,
  writeIpv4 as writeIpv4Addr,
  formatMac,
  isGroupMac,
  type Ipv4Addr,
  type MacAddr,
} from '../stack/wire/addr.ts';
import {
  BOOTP_MIN_LEN,
  BootOp,
  BootpOff,
  DHCP_MIN_LEN,
  DhcpMessage,
  DhcpMessageType,
  DhcpOpt,
  HLEN_ETHERNET,
  HTYPE_ETHERNET,
} from './message.ts';
import { DhcpOptionWriter, asciiBytes, encodeDomainSearch, longOptionSize } from './options.ts';

const debug = debuglog('vmnat:dhcp');

export interface DhcpServerConfig {
  /** Server identifier (54) and reply source, e.g. 10.0.2.2 (the gateway, as VirtualBox). */
  serverIp: Ipv4Addr;
  netmask: Ipv4Addr;
  /** Option 3; absent in host-only mode (no route out: the guest gets no default route). */
  router?: Ipv4Addr;
  dnsServers: Ipv4Addr[];
  /** First pool address (10.0.2.15). */
  poolStart: Ipv4Addr;
  /** Last usable pool address, inclusive. */
  poolEnd: Ipv4Addr;
  /** Never leased dynamically (server, router and DNS addresses are excluded anyway). */
  reserved: Ipv4Addr[];
  /** Option 51 (default 86400); T1 (58) = 0.5 and T2 (59) = 0.875 of it. 0xffffffff = infinite. */
  leaseTimeSec: number;
  /** Option 26. Sent when requested, or unrequested when it differs from Ethernet's 1500. */
  mtu: number;
  /** Option 15. */
  domainName?: string;
  /** Option 119, RFC 3397 encoding with compression. */
  searchDomains: string[];
  /** MAC → address; these win over everything and are never given to another MAC. */
  staticLeases: Map<MacAddr, Ipv4Addr>;
  /**
   * Network boot (PXE): the boot file's name, sent in the BOOTP `file` field and option 67, with
   * the TFTP server in `siaddr` and option 66 (as qemu's bootfile= and VirtualBox's
   * --nattftpfile do). iPXE clients that request option 175 also get its no-ProxyDHCP setting
   * (see the constructor), which saves them a 2 s wait.
   */
  bootFile?: string;
  tftpServer?: Ipv4Addr;
}

export interface DhcpReply {
  /** The UDP payload (DHCP message), to be sent from serverIp:67 to dstIp:68. */
  payload: Uint8Array;
  dstIp: Ipv4Addr;
  dstMac: MacAddr;
}

export interface DhcpLease {
  mac: MacAddr;
  ip: Ipv4Addr;
  hostname?: string;
  /** ms, same clock as `now`; Infinity for an infinite lease. */
  expiresAt: number;
  state: 'offered' | 'bound';
  static: boolean;
}

export type DhcpLeaseEvent = 'bound' | 'released' | 'expired' | 'declined';

/** Named counters; every message that produces no reply increments exactly one drop reason. */
export interface DhcpStats {
  /** Payloads passed to handle(). */
  received: number;
  discover: number;
  request: number;
  decline: number;
  release: number;
  inform: number;
  /** Replies sent, by type (INFORM answers count under `ack`). */
  offer: number;
  ack: number;
  nak: number;
  /** Too short, bad cookie, option overrun, op≠1, htype≠1/hlen≠6, group or zero chaddr. */
  malformed: number;
  /** Well-formed but not for us to answer: BOOTP, unknown/server message types, incomplete requests, releases of unknown leases. */
  ignored: number;
  /** giaddr ≠ 0: relayed messages are not supported. */
  relayDropped: number;
  /** SELECTING REQUEST/DECLINE/RELEASE naming another server: the client chose someone else. */
  otherServer: number;
  /** DISCOVER with no address to offer. */
  poolExhausted: number;
  offersReclaimed: number;
  /** Options left out of a reply because the client's maximum message size was reached. */
  optionsOmitted: number;
  /** Bound leases that ran out without renewal. */
  expired: number;
}

/** How long an OFFER reserves its address: clients retransmit REQUEST for up to ~60 s. */
export const OFFER_HOLD_MS = 60_000;
/** How long a declined address is withheld (dnsmasq uses the same 10 minutes). */
export const DECLINE_HOLD_MS = 600_000;
/**
 * Most addresses in the dynamic pool, however big `--net` is: a /8 would otherwise be a pool of
 * 16 million records for a DISCOVER flood to fill. The rest of a big prefix is for static leases.
 */
export const MAX_POOL = 65_536;
/** Offers outstanding at once: beyond this the oldest is taken back (a flood churns these only). */
export const MAX_OFFERS = 1024;
/** Lease times at or above this are infinite (RFC 2131 §3.3). */
const INFINITE_LEASE = 0xffff_ffff;
/** IPv4 (no options) + UDP headers, subtracted from maximum message sizes and the MTU. */
const IP_UDP_HEADERS = 28;
/** RFC 2131 §2: every host accepts 576-byte datagrams, whatever option 57 says. */
const MIN_MAX_MESSAGE = 576;
/** iPXE's encapsulated setting 176 (DHCP_EB_NO_PXEDHCP): skip the wait for ProxyDHCP offers. */
const IPXE_NO_PXEDHCP = 0xb0;

/** A configuration the server cannot run with. */
export class DhcpConfigError extends Error {
  readonly code = 'VMNAT_DHCP_CONFIG';
  constructor(message: string) {
    super(`DHCP configuration: ${message}`);
    this.name = 'DhcpConfigError';
  }
}

interface Binding {
  readonly mac: MacAddr;
  ip: Ipv4Addr;
  state: 'offered' | 'bound' | 'free';
  /** End of the offer hold or lease (meaningful unless `free`). */
  expiresAt: number;
  /** When it became free (LRU reuse of other clients' old addresses). */
  freedAt: number;
  hostname: string | undefined;
  readonly isStatic: boolean;
}

export class DhcpServer {
  readonly stats: DhcpStats = {
    received: 0, discover: 0, request: 0, decline: 0, release: 0, inform: 0,
    offer: 0, ack: 0, nak: 0,
    malformed: 0, ignored: 0, relayDropped: 0, otherServer: 0, poolExhausted: 0, offersReclaimed: 0,
    optionsOmitted: 0, expired: 0,
  };

  /** Called when a lease is bound (every ACK to a REQUEST, renewals included), released, expires or is declined. */
  onLeaseChange?: (event: DhcpLeaseEvent, lease: DhcpLease) => void;

  private readonly cfg: DhcpServerConfig;
  private readonly network: Ipv4Addr;
  private readonly broadcastAddr: Ipv4Addr;
  /** Addresses never leased dynamically: reserved + server + router + DNS. */
  private readonly excluded = new Set<Ipv4Addr>();
  /** Static address → its MAC. */
  private readonly staticIps = new Map<Ipv4Addr, MacAddr>();
  private readonly byMac = new Map<MacAddr, Binding>();
  private readonly byIp = new Map<Ipv4Addr, Binding>();
  /** The boot file's name as bytes (network boot), if configured. */
  private bootFile: Uint8Array | undefined;
  /** Addresses guests use without a lease (see `claim`). */
  private readonly claimed = new Set<Ipv4Addr>();
  /** Declined address → until when it is withheld (ms). */
  private readonly declined = new Map<Ipv4Addr, number>();
  /** Option data by code, encoded once from the configuration. */
  private readonly optionData = new Map<number, Uint8Array>();
  /** Sent even when not requested, in this order. */
  private readonly defaultOptions: number[];
  private readonly infiniteLease: boolean;
  /** Last address of the dynamic pool (the configured end, capped at MAX_POOL addresses). */
  private readonly poolEnd: Ipv4Addr;
  /** The lowest pool address no record has had yet (addresses below it were handed out once). */
  private cursor: Ipv4Addr;
  /** Pool addresses handed out before and available again, freed longest ago first. */
  private readonly released = new Map<Ipv4Addr, true>();
  /** Records in state `offered`, oldest first (offers are held for a fixed time: expiry order). */
  private readonly offers = new Map<MacAddr, Binding>();
  /** Records in state `bound`, in expiry order (one lease time for all: bind order). */
  private readonly bound = new Map<MacAddr, Binding>();
  /** Per-reply scratch: which option codes were written. */
  private readonly written = new Uint8Array(256);

  constructor(config: DhcpServerConfig) {
    this.cfg = config;
    const mask = config.netmask >>> 0;
    if (((~mask >>> 0) & ((~mask >>> 0) + 1)) !== 0) throw new DhcpConfigError(`netmask ${formatIpv4(mask)} is not contiguous`);
    this.network = (config.serverIp & mask) >>> 0;
    this.broadcastAddr = (this.network | ~mask) >>> 0;
    const inSubnet = (a: Ipv4Addr): boolean => ((a & mask) >>> 0) === this.network && a !== this.network && a !== this.broadcastAddr;
    if (!inSubnet(config.poolStart) || !inSubnet(config.poolEnd) || config.poolStart > config.poolEnd) {
      throw new DhcpConfigError(`pool ${formatIpv4(config.poolStart)}-${formatIpv4(config.poolEnd)} is not a range inside ${formatIpv4(this.network)}/${formatIpv4(mask)}`);
    }
    if (!Number.isInteger(config.leaseTimeSec) || config.leaseTimeSec < 1) throw new DhcpConfigError(`lease time ${config.leaseTimeSec} s`);
    if (!Number.isInteger(config.mtu) || config.mtu < 68 || config.mtu > 65535) throw new DhcpConfigError(`MTU ${config.mtu}`);
    this.infiniteLease = config.leaseTimeSec >= INFINITE_LEASE;
    this.poolEnd = Math.min(config.poolEnd, config.poolStart + MAX_POOL - 1);
    this.cursor = config.poolStart;

    for (const a of [...config.reserved, config.serverIp, ...(config.router !== undefined ? [config.router] : []), ...config.dnsServers]) this.excluded.add(a >>> 0);
    for (const [mac, ip] of config.staticLeases) {
      if (!inSubnet(ip) || this.excluded.has(ip)) throw new DhcpConfigError(`static lease ${formatIpv4(ip)} for ${formatMac(mac)} is outside the subnet or reserved`);
      if (isGroupMac(mac)) throw new DhcpConfigError(`static lease for group MAC ${formatMac(mac)}`);
      if (this.staticIps.has(ip)) throw new DhcpConfigError(`static address ${formatIpv4(ip)} given to two MACs`);
      this.staticIps.set(ip, mac);
    }

    const u32 = (v: number): Uint8Array => Uint8Array.of(v >>> 24, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff);
    this.optionData.set(DhcpOpt.subnetMask, u32(mask));
    if (config.router !== undefined) this.optionData.set(DhcpOpt.router, u32(config.router));
    if (config.dnsServers.length > 0) {
      const d = new Uint8Array(config.dnsServers.length * 4);
      config.dnsServers.forEach((a, i) => d.set(u32(a), i * 4));
      this.optionData.set(DhcpOpt.dnsServers, d);
    }
    if (config.domainName !== undefined && config.domainName !== '') {
      const d = asciiBytes(config.domainName);
      if (d === undefined || d.length > 255) throw new DhcpConfigError(`domain name ${JSON.stringify(config.domainName)}`);
      this.optionData.set(DhcpOpt.domainName, d);
    }
    if (config.searchDomains.length > 0) {
      const d = encodeDomainSearch(config.searchDomains);
      if (d === undefined) throw new DhcpConfigError(`search domains ${JSON.stringify(config.searchDomains)}`);
      this.optionData.set(DhcpOpt.domainSearch, d);
    }
    this.optionData.set(DhcpOpt.interfaceMtu, Uint8Array.of(config.mtu >>> 8, config.mtu & 0xff));
    this.optionData.set(DhcpOpt.broadcastAddress, u32(this.broadcastAddr));
    this.defaultOptions = [DhcpOpt.subnetMask, DhcpOpt.router, DhcpOpt.dnsServers, DhcpOpt.domainName, DhcpOpt.domainSearch];
    if (config.bootFile !== undefined) {
      const file = asciiBytes(config.bootFile);
      if (file === undefined || file.length === 0 || file.length > 127) throw new DhcpConfigError(`boot file ${JSON.stringify(config.bootFile)}`);
      this.bootFile = file;
      const server = config.tftpServer ?? config.serverIp;
      this.optionData.set(DhcpOpt.tftpServerName, asciiBytes(formatIpv4(server))!);
      this.optionData.set(DhcpOpt.bootfileName, file);
      this.defaultOptions.push(DhcpOpt.tftpServerName, DhcpOpt.bootfileName);
      // iPXE (qemu's NIC ROMs) waits 2 s after the first OFFER for a ProxyDHCP server to name a
      // boot file, unless the OFFER carries its "no-pxedhcp" setting (175.176 = 1). Here vmnat
      // names the boot file itself, so there is nothing to wait for. Sent only to clients that ask
      // for option 175 in their parameter request list (iPXE does; nothing else knows it).
      this.optionData.set(DhcpOpt.ipxeEncap, Uint8Array.of(IPXE_NO_PXEDHCP, 1, 1));
    }
    // An unrequested MTU is only worth its bytes when it is not the value the client assumes anyway.
    if (config.mtu !== 1500) this.defaultOptions.push(DhcpOpt.interfaceMtu);
  }

  /**
   * One BOOTREQUEST (UDP payload a client sent to port 67). `srcIp` is the IP header's source
   * (used only when an INFORM leaves ciaddr empty). `now` in ms. Never throws on guest input.
   */
  handle(payload: Uint8Array, srcIp: Ipv4Addr, now: number): DhcpReply | undefined {
    this.stats.received++;
    const msg = DhcpMessage.parse(payload);
    if (typeof msg === 'string') return this.malformed(msg);
    if (msg.op !== BootOp.request) return this.malformed(`op ${msg.op}`);
    if (msg.htype !== HTYPE_ETHERNET || msg.hlen !== HLEN_ETHERNET) return this.malformed(`htype ${msg.htype} hlen ${msg.hlen}`);
    const mac = msg.chaddrMac;
    if (mac === 0 || isGroupMac(mac)) return this.malformed(`chaddr ${formatMac(mac)}`);
    const type = msg.messageType;
    if (type === undefined) return this.ignore('BOOTP message (no option 53)');
    if (msg.giaddr !== 0) {
      this.stats.relayDropped++;
      debug('drop: relayed via %s', formatIpv4(msg.giaddr));
      return undefined;
    }
    switch (type) {
      case DhcpMessageType.discover: return this.discover(msg, mac, now);
      case DhcpMessageType.request: return this.request(msg, mac, now);
      case DhcpMessageType.decline: return this.decline(msg, mac, now);
      case DhcpMessageType.release: return this.release(msg, mac, now);
      case DhcpMessageType.inform: return this.inform(msg, mac, srcIp);
      default: return this.ignore(`message type ${type}`);
    }
  }

  /** Current offers and leases (expired ones excluded even before `poll`), by address. */
  leases(now: number): DhcpLease[] {
    const out: DhcpLease[] = [];
    for (const b of this.byMac.values()) if (active(b, now)) out.push(leaseOf(b));
    return out.sort((a, b) => a.ip - b.ip);
  }

  /**
   * Expires offers, leases and declined-address holds due at or before `now`. Each kind is kept in
   * expiry order, so this costs only what expires.
   */
  poll(now: number): void {
    for (const b of this.offers.values()) {
      if (b.expiresAt > now) break;
      this.setFree(b, b.expiresAt);
    }
    for (const b of this.bound.values()) {
      if (b.expiresAt > now) break;
      this.setFree(b, b.expiresAt);
      this.stats.expired++;
      debug('lease expired: %s %s', formatMac(b.mac), formatIpv4(b.ip));
      this.onLeaseChange?.('expired', { ...leaseOf(b), state: 'bound' });
    }
    for (const [ip, until] of this.declined) {
      if (until > now) break;
      this.declined.delete(ip);
      this.release_(ip);
    }
  }

  /** The earliest time `poll` has work to do, or undefined when nothing is pending. */
  nextDeadline(): number | undefined {
    let d = Infinity;
    for (const b of this.offers.values()) {
      d = b.expiresAt;
      break;
    }
    for (const b of this.bound.values()) {
      if (b.expiresAt < d) d = b.expiresAt;
      break;
    }
    for (const until of this.declined.values()) {
      if (until < d) d = until;
      break;
    }
    return d === Infinity ? undefined : d;
  }

  // ── record states: every change goes through these, so the ordered maps stay true ──────

  private setOffered(b: Binding, expiresAt: number): void {
    this.bound.delete(b.mac);
    this.offers.delete(b.mac);
    b.state = 'offered';
    b.expiresAt = expiresAt;
    this.offers.set(b.mac, b);
    this.released.delete(b.ip);
  }

  private setBound(b: Binding, expiresAt: number): void {
    this.offers.delete(b.mac);
    this.bound.delete(b.mac);
    b.state = 'bound';
    b.expiresAt = expiresAt;
    this.bound.set(b.mac, b);
    this.released.delete(b.ip);
  }

  /** The record stays (the MAC gets its address back if nobody took it); the address is reusable. */
  private setFree(b: Binding, freedAt: number): void {
    this.offers.delete(b.mac);
    this.bound.delete(b.mac);
    b.state = 'free';
    b.freedAt = freedAt;
    this.release_(b.ip);
  }

  private dropRecord(b: Binding): void {
    this.offers.delete(b.mac);
    this.bound.delete(b.mac);
    if (this.byMac.get(b.mac) === b) this.byMac.delete(b.mac);
    if (this.byIp.get(b.ip) === b) this.byIp.delete(b.ip);
  }

  /** `ip` may be handed out again: queued behind the addresses freed before it. */
  private release_(ip: Ipv4Addr): void {
    if (!this.isPoolAddress(ip) || this.staticIps.has(ip)) return;
    this.released.delete(ip);
    this.released.set(ip, true);
  }

  // ── message handlers ────────────────────────────────────────────────────────────────────

  /** RFC 2131 §4.3.1: choose an address, hold it, OFFER it. */
  private discover(msg: DhcpMessage, mac: MacAddr, now: number): DhcpReply | undefined {
    this.stats.discover++;
    const ip = this.chooseAddress(msg, mac, now);
    if (ip === undefined) {
      this.stats.poolExhausted++;
      debug('no address for %s', formatMac(mac));
      return undefined;
    }
    const b = this.assign(mac, ip);
    // A client that still holds a lease keeps it; the OFFER only holds addresses not yet bound.
    if (!(b.state === 'bound' && b.expiresAt > now)) this.setOffered(b, now + OFFER_HOLD_MS);
    b.hostname = hostnameOf(msg) ?? b.hostname;
    if (this.offers.size > MAX_OFFERS) {
      // A DISCOVER flood from random MACs: take back the oldest offer rather than hold more.
      for (const oldest of this.offers.values()) {
        this.stats.offersReclaimed++;
        this.setFree(oldest, now);
        break;
      }
    }
    this.stats.offer++;
    debug('OFFER %s to %s', formatIpv4(ip), formatMac(mac));
    return this.reply(msg, DhcpMessageType.offer, ip, 0);
  }

  /** RFC 2131 §4.3.2: the four kinds of REQUEST, told apart by server-id, option 50 and ciaddr. */
  private request(msg: DhcpMessage, mac: MacAddr, now: number): DhcpReply | undefined {
    this.stats.request++;
    const serverId = msg.optionIpv4(DhcpOpt.serverId);
    const requested = msg.optionIpv4(DhcpOpt.requestedIp);
    const ciaddr = msg.ciaddr;
    let ip: Ipv4Addr;
    if (serverId !== undefined) {
      // SELECTING: the client answers one OFFER; if not ours, release what we held for it.
      if (serverId !== this.cfg.serverIp) {
        this.stats.otherServer++;
        const b = this.byMac.get(mac);
        if (b?.state === 'offered') this.setFree(b, now);
        debug('%s chose server %s', formatMac(mac), formatIpv4(serverId));
        return undefined;
      }
      if (requested === undefined && ciaddr === 0) return this.ignore('SELECTING REQUEST without an address');
      ip = requested ?? ciaddr;
    } else if (requested !== undefined) {
      // INIT-REBOOT: a client verifying a remembered address; ciaddr MUST be 0.
      ip = requested;
    } else if (ciaddr !== 0) {
      // RENEWING (unicast) or REBINDING (broadcast): extend the lease on ciaddr.
      ip = ciaddr;
    } else {
      return this.ignore('REQUEST with neither server-id, option 50 nor ciaddr');
    }

    if (!this.canAssign(mac, ip, now)) {
      this.stats.nak++;
      debug('NAK %s for %s', formatIpv4(ip), formatMac(mac));
      return this.nak(msg, this.inSubnet(ip) ? 'address not available' : 'wrong network');
    }
    const b = this.assign(mac, ip);
    this.setBound(b, this.infiniteLease ? Infinity : now + this.cfg.leaseTimeSec * 1000);
    b.hostname = hostnameOf(msg) ?? b.hostname;
    this.stats.ack++;
    debug('ACK %s to %s', formatIpv4(ip), formatMac(mac));
    const reply = this.reply(msg, DhcpMessageType.ack, ip, ciaddr);
    this.onLeaseChange?.('bound', leaseOf(b));
    return reply;
  }

  /** RFC 2131 §4.3.3: the client found the address in use; withhold it and forget the binding. */
  private decline(msg: DhcpMessage, mac: MacAddr, now: number): undefined {
    this.stats.decline++;
    const serverId = msg.optionIpv4(DhcpOpt.serverId);
    if (serverId !== undefined && serverId !== this.cfg.serverIp) { this.stats.otherServer++; return undefined; }
    const ip = msg.optionIpv4(DhcpOpt.requestedIp);
    if (ip === undefined) return this.ignore('DECLINE without option 50');
    const holder = this.byIp.get(ip);
    // A client may not knock out an address someone else holds.
    if (holder !== undefined && holder.mac !== mac && active(holder, now)) return this.ignore('DECLINE of another client\'s address');
    const own = holder?.mac === mac ? holder : undefined;
    const lease: DhcpLease = own
      ? { ...leaseOf(own), state: own.state === 'bound' ? 'bound' : 'offered', expiresAt: now }
      : { mac, ip, expiresAt: now, state: 'offered', static: this.staticIps.get(ip) === mac };
    if (this.staticIps.get(ip) === mac) {
      // The only address this MAC may have: withholding it would leave the VM without one.
      if (own) this.setFree(own, now);
    } else if (this.isPoolAddress(ip) && !this.staticIps.has(ip)) {
      this.declined.delete(ip); // re-inserted: the map stays in expiry order
      this.declined.set(ip, now + DECLINE_HOLD_MS);
      this.released.delete(ip);
      if (own) this.dropRecord(own);
    } else {
      return this.ignore('DECLINE of an address outside the pool');
    }
    debug('DECLINE %s by %s', formatIpv4(ip), formatMac(mac));
    this.onLeaseChange?.('declined', lease);
    return undefined;
  }

  /** RFC 2131 §4.3.4: end the lease on ciaddr, but remember the address for this MAC. */
  private release(msg: DhcpMessage, mac: MacAddr, now: number): undefined {
    this.stats.release++;
    const serverId = msg.optionIpv4(DhcpOpt.serverId);
    if (serverId !== undefined && serverId !== this.cfg.serverIp) { this.stats.otherServer++; return undefined; }
    const b = this.byMac.get(mac);
    if (b === undefined || b.ip !== msg.ciaddr || b.state !== 'bound' || b.expiresAt <= now) return this.ignore('RELEASE of no lease');
    const lease: DhcpLease = { ...leaseOf(b), expiresAt: now };
    this.setFree(b, now);
    debug('RELEASE %s by %s', formatIpv4(b.ip), formatMac(mac));
    this.onLeaseChange?.('released', lease);
    return undefined;
  }

  /** RFC 2131 §4.3.5: configuration only, for a client that has its address; no lease. */
  private inform(msg: DhcpMessage, mac: MacAddr, srcIp: Ipv4Addr): DhcpReply | undefined {
    this.stats.inform++;
    const dst = msg.ciaddr !== 0 ? msg.ciaddr : srcIp;
    if (dst === 0 || dst === IPV4_BROADCAST) return this.ignore('INFORM without a client address');
    this.stats.ack++;
    debug('ACK (INFORM) to %s %s', formatMac(mac), formatIpv4(dst));
    const reply = this.reply(msg, DhcpMessageType.ack, 0, msg.ciaddr);
    return { ...reply, dstIp: dst, dstMac: mac };
  }

  // ── address management ──────────────────────────────────────────────────────────────────

  private chooseAddress(msg: DhcpMessage, mac: MacAddr, now: number): Ipv4Addr | undefined {
    const fixed = this.cfg.staticLeases.get(mac);
    if (fixed !== undefined) return fixed;
    const b = this.byMac.get(mac);
    if (b !== undefined && active(b, now) && this.canAssign(mac, b.ip, now)) return b.ip;
    const requested = msg.optionIpv4(DhcpOpt.requestedIp);
    if (requested !== undefined && this.canAssign(mac, requested, now)) return requested;
    if (b !== undefined && this.canAssign(mac, b.ip, now)) return b.ip;
    return this.allocate(now);
  }

  /**
   * Lowest pool address nobody ever had; else the one freed longest ago; else, when the pool is
   * full, the oldest address that was only offered and never bound. Offers cost nothing to make,
   * so a guest spraying DISCOVERs from random MACs must not lock other guests out for the whole
   * offer hold time: a bound lease is never taken, an offer is. Amortized O(1): a cursor over the
   * never-used addresses and queues in freed and offer order, never a scan of the pool.
   */
  private allocate(now: number): Ipv4Addr | undefined {
    this.poll(now); // expired offers and leases join the queues first
    while (this.cursor <= this.poolEnd) {
      const ip = this.cursor++;
      if (!this.isPoolAddress(ip) || this.staticIps.has(ip)) continue;
      if (this.byIp.has(ip) || this.isDeclined(ip, now)) {
        // Taken by a REQUEST for that address, or withheld: the queue gets it once it is free.
        if (!this.byIp.has(ip) || !active(this.byIp.get(ip)!, now)) this.release_(ip);
        continue;
      }
      return ip;
    }
    for (const ip of this.released.keys()) {
      this.released.delete(ip);
      const holder = this.byIp.get(ip);
      // Not available now: it comes back to the queue when its holder, hold or claim ends.
      if (this.isDeclined(ip, now) || (holder !== undefined && active(holder, now))) continue;
      return ip;
    }
    for (const oldest of this.offers.values()) {
      if (!active(oldest, now)) {
        this.setFree(oldest, oldest.expiresAt);
        continue;
      }
      this.stats.offersReclaimed++;
      this.setFree(oldest, now);
      this.released.delete(oldest.ip);
      return oldest.ip;
    }
    return undefined;
  }

  /** Whether `ip` may be leased to `mac` now (the rule behind every ACK/NAK). */
  private canAssign(mac: MacAddr, ip: Ipv4Addr, now: number): boolean {
    if (!this.inSubnet(ip)) return false;
    const fixed = this.cfg.staticLeases.get(mac);
    if (fixed !== undefined) return ip === fixed;
    if (this.staticIps.has(ip) || !this.isPoolAddress(ip) || this.isDeclined(ip, now)) return false;
    const holder = this.byIp.get(ip);
    return holder === undefined || holder.mac === mac || !active(holder, now);
  }

  /** Points mac's record at ip (creating it), evicting whatever stale record had ip before. */
  private assign(mac: MacAddr, ip: Ipv4Addr): Binding {
    let b = this.byMac.get(mac);
    const prev = this.byIp.get(ip);
    if (prev !== undefined && prev !== b) this.dropRecord(prev);
    if (b === undefined) {
      b = { mac, ip, state: 'free', expiresAt: 0, freedAt: 0, hostname: undefined, isStatic: this.staticIps.get(ip) === mac };
      this.byMac.set(mac, b);
    } else if (b.ip !== ip) {
      if (this.byIp.get(b.ip) === b) {
        this.byIp.delete(b.ip);
        this.release_(b.ip);
      }
      b.ip = ip;
    }
    this.byIp.set(ip, b);
    return b;
  }

  private inSubnet(ip: Ipv4Addr): boolean {
    return ((ip & this.cfg.netmask) >>> 0) === this.network && ip !== this.network && ip !== this.broadcastAddr;
  }

  private isPoolAddress(ip: Ipv4Addr): boolean {
    return ip >= this.cfg.poolStart && ip <= this.poolEnd && !this.excluded.has(ip) && this.inSubnet(ip);
  }

  /**
   * A guest took `ip` without DHCP (a static address the switch bound to its port): never offer
   * it to another guest, until `unclaim`. Only pool addresses matter; others are never offered.
   */
  claim(ip: Ipv4Addr): void {
    this.claimed.add(ip >>> 0);
  }

  unclaim(ip: Ipv4Addr): void {
    if (this.claimed.delete(ip >>> 0) && !this.byIp.has(ip >>> 0) && (ip >>> 0) < this.cursor) this.release_(ip >>> 0);
  }

  private isDeclined(ip: Ipv4Addr, now: number): boolean {
    if (this.claimed.has(ip)) return true;
    const until = this.declined.get(ip);
    return until !== undefined && until > now;
  }

  // ── replies ─────────────────────────────────────────────────────────────────────────────

  /**
   * Builds an OFFER or ACK (yiaddr = 0 for INFORM's ACK, which also carries no lease times) and
   * addresses it per RFC 2131 §4.1: ciaddr set → unicast there; broadcast flag → broadcast;
   * otherwise unicast to yiaddr at chaddr.
   */
  private reply(req: DhcpMessage, type: number, yiaddr: Ipv4Addr, ciaddr: Ipv4Addr): DhcpReply {
    const w = this.startReply(req, type, yiaddr, ciaddr, this.replyCapacity(req, type));
    const isLease = yiaddr !== 0;
    if (isLease) {
      if (this.infiniteLease) {
        w.u32(DhcpOpt.leaseTime, INFINITE_LEASE);
      } else {
        const t = this.cfg.leaseTimeSec;
        w.u32(DhcpOpt.leaseTime, t);
        w.u32(DhcpOpt.renewalTime, Math.floor(t * 0.5));
        w.u32(DhcpOpt.rebindingTime, Math.floor(t * 0.875));
      }
    }
    const prl = req.option(DhcpOpt.parameterRequestList);
    if (prl !== undefined) {
      for (const code of prl) this.writeConfigured(w, code);
    }
    for (const code of this.defaultOptions) this.writeConfigured(w, code);
    const payload = this.finish(w);
    const dst = ciaddr !== 0
      ? { dstIp: ciaddr, dstMac: req.chaddrMac }
      : req.broadcast
        ? { dstIp: IPV4_BROADCAST, dstMac: MAC_BROADCAST }
        : { dstIp: yiaddr, dstMac: req.chaddrMac };
    return { payload, ...dst };
  }

  /** RFC 2131 §4.3.2 / Table 3: a NAK carries only 53, 54, 56 (and 61); always broadcast (§4.1). */
  private nak(req: DhcpMessage, text: string): DhcpReply {
    const w = this.startReply(req, DhcpMessageType.nak, 0, 0, this.replyCapacity(req, DhcpMessageType.nak));
    const t = asciiBytes(text);
    if (t !== undefined) w.bytes(DhcpOpt.message, t);
    const payload = this.finish(w);
    return { payload, dstIp: IPV4_BROADCAST, dstMac: MAC_BROADCAST };
  }

  /** Header and the options every reply starts with: 53, 54, and 61 echoed (RFC 6842). */
  private startReply(req: DhcpMessage, type: number, yiaddr: Ipv4Addr, ciaddr: Ipv4Addr, capacity: number): DhcpOptionWriter {
    this.written.fill(0);
    const buf = new Uint8Array(capacity);
    const m = DhcpMessage.init(buf);
    m.op = BootOp.reply;
    m.htype = HTYPE_ETHERNET;
    m.hlen = HLEN_ETHERNET;
    m.xid = req.xid;
    m.flags = req.flags;
    m.ciaddr = ciaddr;
    m.yiaddr = yiaddr;
    m.giaddr = req.giaddr;
    buf.set(req.chaddr, BootpOff.chaddr);
    if (this.bootFile !== undefined) {
      // Firmware that reads only the BOOTP header (iPXE, PXE ROMs) finds the boot file here.
      buf.set(this.bootFile, BootpOff.file);
      writeIpv4Addr(buf, BootpOff.siaddr, this.cfg.tftpServer ?? this.cfg.serverIp);
    }
    const w = new DhcpOptionWriter(buf, BootpOff.options, capacity);
    w.u8(DhcpOpt.messageType, type);
    w.ipv4(DhcpOpt.serverId, this.cfg.serverIp);
    const clientId = req.option(DhcpOpt.clientId);
    if (clientId !== undefined && !w.bytes(DhcpOpt.clientId, clientId)) this.stats.optionsOmitted++;
    return w;
  }

  private writeConfigured(w: DhcpOptionWriter, code: number): void {
    if (this.written[code] === 1) return;
    const data = this.optionData.get(code);
    if (data === undefined) return;
    this.written[code] = 1;
    if (!w.bytes(code, data)) this.stats.optionsOmitted++;
  }

  private finish(w: DhcpOptionWriter): Uint8Array {
    w.end();
    // Pad to the BOOTP minimum; the buffer is zero-filled, and zero is the Pad option.
    return w.buf.subarray(0, Math.max(w.pos, Math.min(BOOTP_MIN_LEN, w.buf.length)));
  }

  /**
   * Buffer size: what the reply could need at most, capped by what the client accepts (57, never
   * below 576) and the MTU, minus IP and UDP headers.
   */
  private replyCapacity(req: DhcpMessage, type: number): number {
    const clientMax = Math.max(MIN_MAX_MESSAGE, req.optionU16(DhcpOpt.maxMessageSize) ?? MIN_MAX_MESSAGE);
    const cap = Math.max(BOOTP_MIN_LEN, Math.min(clientMax, this.cfg.mtu) - IP_UDP_HEADERS);
    let need = DHCP_MIN_LEN + 3 + 6 + 1; // 53, 54, end
    const clientId = req.option(DhcpOpt.clientId);
    if (clientId !== undefined) need += longOptionSize(clientId.length);
    if (type === DhcpMessageType.nak) need += 2 + 64;
    else {
      need += 18; // 51, 58, 59
      for (const data of this.optionData.values()) need += longOptionSize(data.length);
    }
    return Math.min(cap, Math.max(BOOTP_MIN_LEN, need));
  }

  private malformed(why: string): undefined {
    this.stats.malformed++;
    debug('drop malformed: %s', why);
    return undefined;
  }

  private ignore(why: string): undefined {
    this.stats.ignored++;
    debug('ignore: %s', why);
    return undefined;
  }
}

function active(b: Binding, now: number): boolean {
  return b.state !== 'free' && b.expiresAt > now;
}

function leaseOf(b: Binding): DhcpLease {
  const lease: DhcpLease = {
    mac: b.mac,
    ip: b.ip,
    expiresAt: b.expiresAt,
    state: b.state === 'bound' ? 'bound' : 'offered',
    static: b.isStatic,
  };
  if (b.hostname !== undefined) lease.hostname = b.hostname;
  return lease;
}

/** Option 12 as text when it is printable ASCII (trailing NULs from some clients dropped). */
function hostnameOf(msg: DhcpMessage): string | undefined {
  const d = msg.option(DhcpOpt.hostname);
  if (d === undefined) return undefined;
  let n = d.length;
  while (n > 0 && d[n - 1] === 0) n--;
  if (n === 0) return undefined;
  let s = '';
  for (let i = 0; i < n; i++) {
    const c = d[i]!;
    if (c <= 0x20 || c >= 0x7f) return undefined;
    s += String.fromCharCode(c);
  }
  return s;
}
