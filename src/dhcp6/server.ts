/**
 * DHCPv6 server (RFC 8415), stateless and stateful, for guests on vmnat's IPv6 network.
 *
 * Theory of operation. Router advertisements (stack/ipv6.ts) give SLAAC addresses and DNS (RDNSS);
 * DHCPv6 is for guests that ignore RDNSS or are configured to ask for an address:
 *  - Stateless (INFORMATION-REQUEST, §18.2.6): the reply carries the DNS server (::3, option 23)
 *    and the search domains (option 24). The RA's O flag says this is available.
 *  - Stateful (SOLICIT → ADVERTISE → REQUEST → REPLY, RENEW/REBIND, RELEASE, CONFIRM, DECLINE; §18.3):
 *    one address per IA_NA from the guests' /64 (prefix::100 upward). An ADVERTISE holds the address
 *    it offers for a minute; a REQUEST binds it (keyed by DUID and IAID) until the client releases
 *    it or the lease runs out without a renewal; a client
 *    with a `--dhcp-static` entry (by its DUID, or by the MAC it sends from) always gets its fixed
 *    address. Rapid Commit (§18.3.1) is honoured: a SOLICIT that asks for it gets the REPLY at once.
 *    IA_TA and IA_PD are not offered (status NoAddrsAvail / the option left out).
 *  - Replies go from the router's link-local address to the client's, port 546; the engine sends them.
 *
 * Sans-I/O: `handle(message, client, now)` returns the reply bytes or undefined; malformed messages
 * (a truncated option, a missing client identifier, another server's identifier) are dropped and
 * counted, never thrown. Bindings are bounded (`maxBindings`, the oldest evicted) and expire
 * `leaseTimeSec` after their last renewal (checked lazily).
 */
import { formatMac, ipv6Bytes, readIpv6, writeMac, type Ipv6Addr, type MacAddr } from '../stack/wire/addr.ts';
import { encodeDomains } from '../stack/ipv6.ts';

export const DHCP6_CLIENT_PORT = 546;
export const DHCP6_SERVER_PORT = 547;
export const ALL_DHCP_SERVERS = 'ff02::1:2';
/** How long an address offered in an ADVERTISE stays held for its client. */
const OFFER_HOLD_MS = 60_000;

export const Dhcp6Msg = {
  Solicit: 1, Advertise: 2, Request: 3, Confirm: 4, Renew: 5, Rebind: 6, Reply: 7, Release: 8, Decline: 9,
  Reconfigure: 10, InformationRequest: 11, RelayForw: 12, RelayRepl: 13,
} as const;

export const Dhcp6Opt = {
  ClientId: 1, ServerId: 2, IaNa: 3, IaTa: 4, IaAddr: 5, Oro: 6, Preference: 7, ElapsedTime: 8,
  StatusCode: 13, RapidCommit: 14, DnsServers: 23, DomainList: 24, IaPd: 25,
} as const;

export const Dhcp6Status = { Success: 0, UnspecFail: 1, NoAddrsAvail: 2, NoBinding: 3, NotOnLink: 4, UseMulticast: 5 } as const;

/** A fixed address: by DUID (hex, no separators) or by the MAC the client sends from. */
export interface Dhcp6Static {
  duid?: string;
  mac?: MacAddr;
  ip: Ipv6Addr;
}

export interface Dhcp6Config {
  prefix: Ipv6Addr;
  dns: Ipv6Addr;
  reserved: readonly Ipv6Addr[];
  searchDomains: readonly string[];
  leaseTimeSec: number;
  statics: readonly Dhcp6Static[];
  serverMac: MacAddr;
  maxBindings?: number;
}

export function createDhcp6Stats() {
  return {
    rxMessages: 0, malformed: 0, notForUs: 0, unsupported: 0,
    solicits: 0, requests: 0, renews: 0, rebinds: 0, releases: 0, declines: 0, confirms: 0, informationRequests: 0,
    advertises: 0, replies: 0, noAddrsAvail: 0, bindings: 0,
  };
}

export interface Dhcp6Binding {
  duid: string;
  iaid: number;
  ip: Ipv6Addr;
  mac: MacAddr;
  expiresAt: number;
  static: boolean;
}

interface Opt {
  code: number;
  off: number;
  len: number;
}

/** Options in `buf[off, end)`; undefined if one reaches past the end. */
function parseOptions(buf: Uint8Array, off: number, end: number): Opt[] | undefined {
  const out: Opt[] = [];
  let i = off;
  while (i < end) {
    if (i + 4 > end) return undefined;
    const code = (buf[i]! << 8) | buf[i + 1]!;
    const len = (buf[i + 2]! << 8) | buf[i + 3]!;
    if (i + 4 + len > end) return undefined;
    if (out.length < 128) out.push({ code, off: i + 4, len });
    i += 4 + len;
  }
  return out;
}

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');

/** Builds a reply option by option. */
class Writer {
  private readonly parts: number[] = [];
  u8(v: number): this {
    this.parts.push(v & 0xff);
    return this;
  }
  u16(v: number): this {
    return this.u8(v >>> 8).u8(v);
  }
  u32(v: number): this {
    return this.u16(v >>> 16).u16(v & 0xffff);
  }
  bytes(b: Uint8Array): this {
    for (const x of b) this.parts.push(x);
    return this;
  }
  option(code: number, body: Uint8Array): this {
    return this.u16(code).u16(body.length).bytes(body);
  }
  done(): Uint8Array {
    return Uint8Array.from(this.parts);
  }
}

export class Dhcp6Server {
  readonly stats = createDhcp6Stats();
  /** DUID-LL (RFC 8415 §11.4) from the gateway's MAC. */
  readonly serverDuid: Uint8Array;
  private readonly bindings = new Map<string, Dhcp6Binding>();
  private readonly byIp = new Map<Ipv6Addr, string>();
  private readonly prefixBytes: Uint8Array;
  private nextHost = 0x100;

  constructor(readonly config: Dhcp6Config) {
    const d = new Uint8Array(10);
    d[1] = 3; // DUID-LL
    d[3] = 1; // Ethernet
    writeMac(d, 4, config.serverMac);
    this.serverDuid = d;
    this.prefixBytes = ipv6Bytes(config.prefix);
    for (const s of config.statics) this.byIp.set(s.ip, 'static');
  }

  list(now: number): Dhcp6Binding[] {
    return [...this.bindings.values()].filter((b) => b.expiresAt > now);
  }

  /**
   * One client message (the UDP payload, from `clientMac`). Returns the reply, or undefined when
   * none is due (malformed, for another server, relay messages).
   */
  handle(msg: Uint8Array, clientMac: MacAddr, now: number): Uint8Array | undefined {
    this.stats.rxMessages++;
    if (msg.length < 4) return this.malformed();
    const type = msg[0]!;
    const opts = parseOptions(msg, 4, msg.length);
    if (opts === undefined) return this.malformed();
    const find = (code: number) => opts.find((o) => o.code === code);
    const clientId = find(Dhcp6Opt.ClientId);
    const serverId = find(Dhcp6Opt.ServerId);
    const ours = serverId !== undefined && serverId.len === this.serverDuid.length && hex(msg.subarray(serverId.off, serverId.off + serverId.len)) === hex(this.serverDuid);
    if (serverId !== undefined && !ours) {
      this.stats.notForUs++;
      return undefined;
    }
    const duid = clientId === undefined ? undefined : hex(msg.subarray(clientId.off, clientId.off + clientId.len));
    switch (type) {
      case Dhcp6Msg.InformationRequest:
        this.stats.informationRequests++;
        return this.reply(Dhcp6Msg.Reply, msg, clientId, (w) => this.otherConfig(w));
      case Dhcp6Msg.Solicit:
      case Dhcp6Msg.Request:
      case Dhcp6Msg.Renew:
      case Dhcp6Msg.Rebind: {
        if (duid === undefined || clientId!.len === 0) return this.malformed();
        if (type === Dhcp6Msg.Solicit && serverId !== undefined) return this.malformed(); // §16.2
        if ((type === Dhcp6Msg.Request || type === Dhcp6Msg.Renew) && !ours) return this.malformed(); // §16.4, §16.6
        const rapid = type === Dhcp6Msg.Solicit && find(Dhcp6Opt.RapidCommit) !== undefined;
        if (type === Dhcp6Msg.Solicit) this.stats.solicits++;
        else if (type === Dhcp6Msg.Request) this.stats.requests++;
        else if (type === Dhcp6Msg.Renew) this.stats.renews++;
        else this.stats.rebinds++;
        const out = type === Dhcp6Msg.Solicit && !rapid ? Dhcp6Msg.Advertise : Dhcp6Msg.Reply;
        return this.reply(out, msg, clientId, (w) => {
          for (const ia of opts.filter((o) => o.code === Dhcp6Opt.IaNa)) {
            if (ia.len < 12) continue;
            const iaid = readU32(msg, ia.off);
            // An ADVERTISE only offers: the binding is held briefly (as a DHCPv4 offer), so a flood
            // of SOLICITs from made-up DUIDs cannot pin the pool; REQUEST commits it for the lease.
            const ip = this.assign(duid, iaid, clientMac, now, out === Dhcp6Msg.Advertise ? OFFER_HOLD_MS : this.config.leaseTimeSec * 1000);
            const body = new Writer().u32(iaid);
            if (ip === undefined) {
              this.stats.noAddrsAvail++;
              body.u32(0).u32(0).bytes(statusOption(Dhcp6Status.NoAddrsAvail, 'no addresses available'));
            } else {
              const t = this.config.leaseTimeSec;
              const addr = new Writer().bytes(ipv6Bytes(ip)).u32(t).u32(t).done();
              body.u32(Math.floor(t / 2)).u32(Math.floor((t * 4) / 5)).option(Dhcp6Opt.IaAddr, addr);
            }
            w.option(Dhcp6Opt.IaNa, body.done());
          }
          if (rapid) w.option(Dhcp6Opt.RapidCommit, new Uint8Array(0));
          this.otherConfig(w);
        });
      }
      case Dhcp6Msg.Release:
      case Dhcp6Msg.Decline: {
        if (duid === undefined || !ours) return this.malformed();
        if (type === Dhcp6Msg.Release) this.stats.releases++;
        else this.stats.declines++;
        for (const ia of opts.filter((o) => o.code === Dhcp6Opt.IaNa)) {
          if (ia.len < 12) continue;
          const key = `${duid}/${readU32(msg, ia.off)}`;
          const b = this.bindings.get(key);
          if (b === undefined) continue;
          this.bindings.delete(key);
          // A declined address is in use by someone else: keep it out of the pool (§18.4.7).
          if (type === Dhcp6Msg.Release && !b.static) this.byIp.delete(b.ip);
        }
        return this.reply(Dhcp6Msg.Reply, msg, clientId, (w) => w.bytes(statusOption(Dhcp6Status.Success, 'ok')));
      }
      case Dhcp6Msg.Confirm: {
        if (duid === undefined) return this.malformed();
        this.stats.confirms++;
        let onLink = true;
        for (const ia of opts.filter((o) => o.code === Dhcp6Opt.IaNa)) {
          const inner = parseOptions(msg, ia.off + 12, ia.off + ia.len) ?? [];
          for (const a of inner) {
            if (a.code !== Dhcp6Opt.IaAddr || a.len < 24) continue;
            if (!samePrefix(msg.subarray(a.off, a.off + 16), this.prefixBytes)) onLink = false;
          }
        }
        return this.reply(Dhcp6Msg.Reply, msg, clientId, (w) => w.bytes(statusOption(onLink ? Dhcp6Status.Success : Dhcp6Status.NotOnLink, onLink ? 'on link' : 'not on link')));
      }
      default:
        this.stats.unsupported++;
        return undefined;
    }
  }

  private malformed(): undefined {
    this.stats.malformed++;
    return undefined;
  }

  /** DNS server and search list (§21.2, RFC 3646). */
  private otherConfig(w: Writer): void {
    w.option(Dhcp6Opt.DnsServers, ipv6Bytes(this.config.dns));
    const names = encodeDomains(this.config.searchDomains);
    if (names.length > 0) w.option(Dhcp6Opt.DomainList, names);
  }

  private reply(type: number, msg: Uint8Array, clientId: Opt | undefined, body: (w: Writer) => void): Uint8Array {
    const w = new Writer().u8(type).u8(msg[1]!).u8(msg[2]!).u8(msg[3]!);
    if (clientId !== undefined) w.option(Dhcp6Opt.ClientId, msg.subarray(clientId.off, clientId.off + clientId.len));
    w.option(Dhcp6Opt.ServerId, this.serverDuid);
    body(w);
    if (type === Dhcp6Msg.Advertise) this.stats.advertises++;
    else this.stats.replies++;
    return w.done();
  }

  /** The client's address for one IA_NA: its static one, its binding, or a free one from the pool. */
  private assign(duid: string, iaid: number, mac: MacAddr, now: number, holdMs: number): Ipv6Addr | undefined {
    const key = `${duid}/${iaid}`;
    const expiresAt = now + holdMs;
    const fixed = this.config.statics.find((s) => s.duid === duid) ?? this.config.statics.find((s) => s.mac === mac);
    let b = this.bindings.get(key);
    if (b !== undefined && (fixed === undefined || b.ip === fixed.ip)) {
      b.expiresAt = Math.max(b.expiresAt, expiresAt);
      return b.ip;
    }
    let ip: Ipv6Addr | undefined = fixed?.ip;
    if (ip === undefined) ip = this.freeAddress(now);
    if (ip === undefined) return undefined;
    const max = this.config.maxBindings ?? 4096;
    if (this.bindings.size >= max) {
      const oldest = this.bindings.entries().next();
      if (!oldest.done) {
        this.bindings.delete(oldest.value[0]);
        if (!oldest.value[1].static) this.byIp.delete(oldest.value[1].ip);
      }
    }
    b = { duid, iaid, ip, mac, expiresAt, static: fixed !== undefined };
    this.bindings.set(key, b);
    this.byIp.set(ip, key);
    this.stats.bindings = this.bindings.size;
    return ip;
  }

  /** The next pool address (prefix::100 upward) held by no live binding, static or reserved address. */
  private freeAddress(now: number): Ipv6Addr | undefined {
    for (let tries = 0; tries < 0xfe00; tries++) {
      const n = this.nextHost;
      this.nextHost = this.nextHost >= 0xffff ? 0x100 : this.nextHost + 1;
      const b = new Uint8Array(this.prefixBytes);
      b[14] = n >>> 8;
      b[15] = n & 0xff;
      const ip = readIpv6(b, 0);
      if (this.config.reserved.includes(ip)) continue;
      const holder = this.byIp.get(ip);
      if (holder !== undefined) {
        const held = this.bindings.get(holder);
        if (holder === 'static' || (held !== undefined && held.expiresAt > now)) continue;
        if (held !== undefined) this.bindings.delete(holder);
        this.byIp.delete(ip);
      }
      return ip;
    }
    return undefined;
  }

  /** For logs: `mac → ip`. */
  describe(b: Dhcp6Binding): string {
    return `${formatMac(b.mac)} → ${b.ip}`;
  }
}

function readU32(b: Uint8Array, o: number): number {
  return ((b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!) >>> 0;
}

function samePrefix(a: Uint8Array, prefix: Uint8Array): boolean {
  for (let i = 0; i < 8; i++) if (a[i] !== prefix[i]) return false;
  return true;
}

function statusOption(code: number, text: string): Uint8Array {
  const t = new TextEncoder().encode(text);
  return new Writer().u16(Dhcp6Opt.StatusCode).u16(2 + t.length).u16(code).bytes(t).done();
}
