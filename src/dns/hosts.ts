/**
 * Local names for the DNS forwarder: the hosts table (--dns-host NAME=IP, --dns-hosts FILE) and
 * the parsers for the DNS flags.
 *
 * Theory of operation: the table maps a lower-cased name to its IPv4 and IPv6 addresses (wire
 * bytes precomputed) and each address's reverse name (in-addr.arpa / ip6.arpa) back to the names,
 * so A, AAAA and PTR queries for configured names are answered without any upstream. A name in the
 * table answers both families: the family it has no address for gets NOERROR with no records
 * (NODATA), not a trip upstream that could contradict the local answer. Other query types for a
 * local name are forwarded, as dnsmasq does with /etc/hosts.
 *
 * Flag errors are typed (DnsFlagError, code VMNAT_BAD_FLAG like ConfigError) with one clear line.
 * The hosts-file parser is lenient like the C library: a bad line is reported and skipped.
 */
import { parseIpv4, readIpv6 } from '../stack/wire/addr.ts';

export class DnsFlagError extends Error {
  readonly code = 'VMNAT_BAD_FLAG';
  constructor(
    readonly flag: string,
    readonly reason: string,
  ) {
    super(`${flag}: ${reason}`);
  }
}

export interface DnsUpstream {
  /** IPv4 or IPv6 text (IPv6 may carry a %zone). */
  ip: string;
  port: number;
}

/** Parses strict IPv6 text (RFC 4291 §2.2, no zone) into 16 bytes; undefined if invalid. */
export function parseIpv6(text: string): Uint8Array | undefined {
  if (text.length < 2 || text.length > 45) return undefined;
  const halves = text.split('::');
  if (halves.length > 2) return undefined;
  const groups: number[] = [];
  const parseGroups = (part: string, allowV4Tail: boolean): number[] | undefined => {
    if (part === '') return [];
    const out: number[] = [];
    const items = part.split(':');
    for (let i = 0; i < items.length; i++) {
      const item = items[i]!;
      if (allowV4Tail && i === items.length - 1 && item.includes('.')) {
        const v4 = parseIpv4(item);
        if (v4 === undefined) return undefined;
        out.push(v4 >>> 16, v4 & 0xffff);
      } else {
        if (!/^[0-9a-fA-F]{1,4}$/.test(item)) return undefined;
        out.push(parseInt(item, 16));
      }
    }
    return out;
  };
  const head = parseGroups(halves[0]!, halves.length === 1);
  const tail = halves.length === 2 ? parseGroups(halves[1]!, true) : [];
  if (!head || !tail) return undefined;
  if (halves.length === 1) {
    if (head.length !== 8) return undefined;
    groups.push(...head);
  } else {
    if (head.length + tail.length > 7) return undefined;
    groups.push(...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail);
  }
  const bytes = new Uint8Array(16);
  groups.forEach((g, i) => {
    bytes[2 * i] = g >>> 8;
    bytes[2 * i + 1] = g & 0xff;
  });
  return bytes;
}

/** RFC 5952 text for 16 IPv6 bytes (longest run of two or more zero groups as ::, lower-case). */
export function formatIpv6(bytes: Uint8Array): string {
  return readIpv6(bytes, 0);
}

function ipv4Bytes(text: string): Uint8Array | undefined {
  const v = parseIpv4(text);
  if (v === undefined) return undefined;
  return Uint8Array.of(v >>> 24, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff);
}

/**
 * Parses --dns-server IP[:PORT]: `1.2.3.4`, `1.2.3.4:5353`, `::1`, `[::1]:5353`,
 * `[fe80::1%eth0]:53`. A bare IPv6 address takes no port (its colons are ambiguous).
 */
export function parseDnsServerFlag(text: string): DnsUpstream {
  const flag = '--dns-server';
  const t = text.trim();
  let host: string;
  let portText: string | undefined;
  const bracket = /^\[([^\]]+)\](?::(.*))?$/.exec(t);
  if (bracket) {
    host = bracket[1]!;
    portText = bracket[2];
    if (!host.includes(':')) throw new DnsFlagError(flag, `${text}: brackets are only for IPv6 addresses`);
  } else if ((t.match(/:/g) ?? []).length === 1) {
    [host, portText] = t.split(':') as [string, string];
  } else {
    host = t;
  }
  let port = 53;
  if (portText !== undefined) {
    if (!/^\d{1,5}$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535) {
      throw new DnsFlagError(flag, `${text}: port must be 1..65535`);
    }
    port = Number(portText);
  }
  if (parseIpv4(host) !== undefined) return { ip: host, port };
  const pct = host.indexOf('%');
  const addr = pct < 0 ? host : host.slice(0, pct);
  const zone = pct < 0 ? '' : host.slice(pct);
  const v6 = parseIpv6(addr);
  if (!v6 || zone === '%') {
    throw new DnsFlagError(flag, `${text}: expected IPv4 or IPv6 address, optionally with :PORT (IPv6 as [ADDR]:PORT)`);
  }
  return { ip: formatIpv6(v6) + zone, port };
}

/** Lower-cases and drops one trailing dot; undefined if not a plausible host name. */
export function normalizeHostName(name: string): string | undefined {
  const n = (name.endsWith('.') ? name.slice(0, -1) : name).toLowerCase();
  if (n.length === 0 || n.length > 253) return undefined;
  for (const label of n.split('.')) {
    if (!/^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$/.test(label)) return undefined;
  }
  return n;
}

/** Parses --dns-host NAME=IP. */
export function parseDnsHostFlag(text: string): { name: string; ip: string } {
  const flag = '--dns-host';
  const eq = text.indexOf('=');
  if (eq < 0) throw new DnsFlagError(flag, `${text}: expected NAME=IP`);
  const name = normalizeHostName(text.slice(0, eq).trim());
  if (!name) throw new DnsFlagError(flag, `${text}: "${text.slice(0, eq)}" is not a valid host name`);
  const ipText = text.slice(eq + 1).trim();
  const ip = canonicalIp(ipText);
  if (!ip) throw new DnsFlagError(flag, `${text}: "${ipText}" is not an IPv4 or IPv6 address`);
  return { name, ip: ip.text };
}

function canonicalIp(text: string): { text: string; bytes: Uint8Array; family: 4 | 6 } | undefined {
  const v4 = ipv4Bytes(text);
  if (v4) return { text, bytes: v4, family: 4 };
  const v6 = parseIpv6(text);
  if (v6) return { text: formatIpv6(v6), bytes: v6, family: 6 };
  return undefined;
}

/** The reverse-lookup name of an address: 4.3.2.1.in-addr.arpa or the ip6.arpa nibble form. */
export function reverseName(bytes: Uint8Array): string {
  const parts: string[] = [];
  if (bytes.length === 4) {
    for (let i = 3; i >= 0; i--) parts.push(String(bytes[i]!));
    return parts.join('.') + '.in-addr.arpa';
  }
  for (let i = 15; i >= 0; i--) parts.push((bytes[i]! & 0xf).toString(16), (bytes[i]! >>> 4).toString(16));
  return parts.join('.') + '.ip6.arpa';
}

interface HostAddrs {
  a: Array<{ text: string; bytes: Uint8Array }>;
  aaaa: Array<{ text: string; bytes: Uint8Array }>;
}

export interface HostsFileResult {
  entries: Array<{ name: string; ip: string }>;
  /** Lines skipped, 1-based, with the reason (the caller decides whether to warn). */
  problems: Array<{ line: number; reason: string }>;
}

export class DnsHostsTable {
  private readonly byName = new Map<string, HostAddrs>();
  private readonly byReverse = new Map<string, string[]>();

  /** Number of distinct names. */
  get size(): number {
    return this.byName.size;
  }

  /** Adds NAME → IP (IPv4 or IPv6 text). Repeats are ignored. Throws DnsFlagError if invalid. */
  add(name: string, ip: string): void {
    const n = normalizeHostName(name);
    if (!n) throw new DnsFlagError('--dns-host', `"${name}" is not a valid host name`);
    const addr = canonicalIp(ip);
    if (!addr) throw new DnsFlagError('--dns-host', `"${ip}" is not an IPv4 or IPv6 address`);
    let entry = this.byName.get(n);
    if (!entry) {
      entry = { a: [], aaaa: [] };
      this.byName.set(n, entry);
    }
    const list = addr.family === 4 ? entry.a : entry.aaaa;
    if (list.some((x) => x.text === addr.text)) return;
    list.push({ text: addr.text, bytes: addr.bytes });
    const rev = reverseName(addr.bytes);
    const names = this.byReverse.get(rev);
    if (!names) this.byReverse.set(rev, [n]);
    else if (!names.includes(n)) names.push(n);
  }

  /** Every name with its addresses (IPv4 then IPv6 text), sorted by name. */
  list(): { name: string; addresses: string[] }[] {
    return [...this.byName.entries()]
      .map(([name, e]) => ({ name, addresses: [...e.a.map((x) => x.text), ...e.aaaa.map((x) => x.text)] }))
      .sort((x, y) => (x.name < y.name ? -1 : x.name > y.name ? 1 : 0));
  }

  /** Removes NAME with all its addresses; false if it was not there. */
  removeName(name: string): boolean {
    const n = normalizeHostName(name);
    const entry = n ? this.byName.get(n) : undefined;
    if (!n || entry === undefined) return false;
    for (const x of [...entry.a, ...entry.aaaa]) this.remove(n, x.text);
    return true;
  }

  /** Removes NAME → IP if present (a guest's name when its lease ends). */
  remove(name: string, ip: string): void {
    const n = normalizeHostName(name);
    const addr = canonicalIp(ip);
    if (!n || !addr) return;
    const entry = this.byName.get(n);
    if (!entry) return;
    const list = addr.family === 4 ? entry.a : entry.aaaa;
    const i = list.findIndex((x) => x.text === addr.text);
    if (i < 0) return;
    list.splice(i, 1);
    if (entry.a.length === 0 && entry.aaaa.length === 0) this.byName.delete(n);
    const rev = reverseName(addr.bytes);
    const names = this.byReverse.get(rev)?.filter((x) => x !== n);
    if (names === undefined || names.length === 0) this.byReverse.delete(rev);
    else this.byReverse.set(rev, names);
  }

  /**
   * Addresses of `name` (case-insensitive, trailing dot optional): undefined when the name is not
   * in the table, [] when it is but has no address of this family (answered as NODATA).
   */
  lookup(name: string, type: 'A' | 'AAAA'): string[] | undefined {
    const entry = this.byName.get((name.endsWith('.') ? name.slice(0, -1) : name).toLowerCase());
    if (!entry) return undefined;
    return (type === 'A' ? entry.a : entry.aaaa).map((x) => x.text);
  }

  /** Wire form of lookup() for a normalized query name: rdata per address. */
  lookupRdata(qname: string, type: 'A' | 'AAAA'): Uint8Array[] | undefined {
    const entry = this.byName.get(qname);
    if (!entry) return undefined;
    return (type === 'A' ? entry.a : entry.aaaa).map((x) => x.bytes);
  }

  /** Names for a reverse-lookup name (e.g. 5.0.0.10.in-addr.arpa), or undefined. */
  lookupPtr(qname: string): string[] | undefined {
    return this.byReverse.get(qname);
  }

  /**
   * Parses hosts(5) text: `IP NAME [ALIAS...]`, `#` comments. Lines with an unparsable address or
   * name, or a scoped IPv6 address (meaningless to a guest), are skipped and reported.
   */
  static parseHostsFile(text: string): HostsFileResult {
    const result: HostsFileResult = { entries: [], problems: [] };
    const lines = text.split(/\r?\n/);
    lines.forEach((raw, i) => {
      const hash = raw.indexOf('#');
      const tokens = (hash < 0 ? raw : raw.slice(0, hash)).trim().split(/\s+/).filter((t) => t !== '');
      if (tokens.length === 0) return;
      const [ipText, ...names] = tokens as [string, ...string[]];
      if (ipText.includes('%')) {
        result.problems.push({ line: i + 1, reason: `scoped address ${ipText} skipped` });
        return;
      }
      const addr = canonicalIp(ipText);
      if (!addr) {
        result.problems.push({ line: i + 1, reason: `"${ipText}" is not an IPv4 or IPv6 address` });
        return;
      }
      if (names.length === 0) {
        result.problems.push({ line: i + 1, reason: `no name for ${ipText}` });
        return;
      }
      for (const name of names) {
        const n = normalizeHostName(name);
        if (n) result.entries.push({ name: n, ip: addr.text });
        else result.problems.push({ line: i + 1, reason: `"${name}" is not a valid host name` });
      }
    });
    return result;
  }
}
