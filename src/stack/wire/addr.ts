/**
 * Addresses as plain numbers.
 *
 * Theory of operation: the hot path compares, hashes and stores addresses far more often than it
 * prints them, so an IPv4 address is an unsigned 32-bit number and a MAC address a 48-bit
 * integer (exact in a JS double). Both work as `Map` keys without allocation. Text forms exist
 * only at the edges (flags, logs, the ready line).
 */

/** IPv4 address, host byte order, unsigned (0 .. 2^32-1). */
export type Ipv4Addr = number;
/** MAC address as a 48-bit unsigned integer. */
export type MacAddr = number;

export const MAC_BROADCAST: MacAddr = 0xffff_ffff_ffff;
export const IPV4_BROADCAST: Ipv4Addr = 0xffff_ffff;
export const IPV4_ANY: Ipv4Addr = 0;

export function readIpv4(buf: Uint8Array, off: number): Ipv4Addr {
  return ((buf[off]! << 24) | (buf[off + 1]! << 16) | (buf[off + 2]! << 8) | buf[off + 3]!) >>> 0;
}

export function writeIpv4(buf: Uint8Array, off: number, addr: Ipv4Addr): void {
  buf[off] = addr >>> 24;
  buf[off + 1] = (addr >>> 16) & 0xff;
  buf[off + 2] = (addr >>> 8) & 0xff;
  buf[off + 3] = addr & 0xff;
}

export function readMac(buf: Uint8Array, off: number): MacAddr {
  const hi = (buf[off]! << 8) | buf[off + 1]!;
  const lo = ((buf[off + 2]! << 24) | (buf[off + 3]! << 16) | (buf[off + 4]! << 8) | buf[off + 5]!) >>> 0;
  return hi * 0x1_0000_0000 + lo;
}

export function writeMac(buf: Uint8Array, off: number, mac: MacAddr): void {
  const hi = Math.floor(mac / 0x1_0000_0000);
  const lo = mac >>> 0;
  buf[off] = hi >>> 8;
  buf[off + 1] = hi & 0xff;
  buf[off + 2] = lo >>> 24;
  buf[off + 3] = (lo >>> 16) & 0xff;
  buf[off + 4] = (lo >>> 8) & 0xff;
  buf[off + 5] = lo & 0xff;
}

/** True for group (broadcast or multicast) MAC addresses: the I/G bit of the first octet. */
export function isGroupMac(mac: MacAddr): boolean {
  return (Math.floor(mac / 0x100_0000_0000) & 1) === 1;
}

export function formatIpv4(addr: Ipv4Addr): string {
  return `${addr >>> 24}.${(addr >>> 16) & 0xff}.${(addr >>> 8) & 0xff}.${addr & 0xff}`;
}

/** Parses dotted-quad IPv4 text strictly (four decimal octets, no leading zeros); undefined if invalid. */
export function parseIpv4(text: string): Ipv4Addr | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (!m) return undefined;
  let addr = 0;
  for (let i = 1; i <= 4; i++) {
    const part = m[i]!;
    if (part.length > 1 && part.startsWith('0')) return undefined;
    const n = Number(part);
    if (n > 255) return undefined;
    addr = addr * 256 + n;
  }
  return addr;
}

export function formatMac(mac: MacAddr): string {
  const hex = mac.toString(16).padStart(12, '0');
  return hex.replace(/(..)(?!$)/g, '$1:');
}

/** Parses `aa:bb:cc:dd:ee:ff` or `aa-bb-…` (case-insensitive); undefined if invalid. */
export function parseMac(text: string): MacAddr | undefined {
  const m = /^([0-9a-f]{2})([:-])([0-9a-f]{2})\2([0-9a-f]{2})\2([0-9a-f]{2})\2([0-9a-f]{2})\2([0-9a-f]{2})$/i.exec(text);
  if (!m) return undefined;
  return parseInt(m[1]! + m[3]! + m[4]! + m[5]! + m[6]! + m[7]!, 16);
}

/** Network mask for a prefix length 0..32. */
export function prefixMask(prefixLen: number): Ipv4Addr {
  return prefixLen === 0 ? 0 : (0xffff_ffff << (32 - prefixLen)) >>> 0;
}

/*
 * IPv6 addresses. An IPv6 address is its canonical text (RFC 5952: lowercase, no leading zeros,
 * the longest run of two or more zero groups as `::`), so it works as a `Map` key and compares
 * with `===` like an IPv4 number, and `typeof` tells the families apart (`IpAddr`). Reading one
 * from a packet formats it (16 bytes → short string); writing one parses it through a small cache,
 * since the same few addresses (the gateway, the guests, their peers) are written again and again.
 */

/** IPv6 address in canonical RFC 5952 text. */
export type Ipv6Addr = string;
/** An address of either family: a number is IPv4, a string IPv6. */
export type IpAddr = Ipv4Addr | Ipv6Addr;

export const IPV6_ANY: Ipv6Addr = '::';

export function isIpv6(a: IpAddr): a is Ipv6Addr {
  return typeof a === 'string';
}

/** Reads 16 bytes at `off` as canonical IPv6 text. */
export function readIpv6(buf: Uint8Array, off: number): Ipv6Addr {
  const g = [0, 0, 0, 0, 0, 0, 0, 0];
  for (let i = 0; i < 8; i++) g[i] = (buf[off + 2 * i]! << 8) | buf[off + 2 * i + 1]!;
  return formatGroups(g);
}

function formatGroups(g: readonly number[]): Ipv6Addr {
  // The longest run of ≥ 2 zero groups (the first of equals) becomes '::' (RFC 5952 §4.2).
  let bestAt = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      bestAt = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (bestAt < 0) return g.map((x) => x.toString(16)).join(':');
  const head = g.slice(0, bestAt).map((x) => x.toString(16)).join(':');
  const tail = g.slice(bestAt + bestLen).map((x) => x.toString(16)).join(':');
  return `${head}::${tail}`;
}

/** Parses IPv6 text (any valid form, an embedded dotted quad included) to 16 bytes; undefined if invalid. */
export function parseIpv6Bytes(text: string): Uint8Array | undefined {
  if (text.length < 2 || text.length > 45) return undefined;
  let s = text.toLowerCase();
  const groups: number[] = [];
  // An embedded IPv4 tail (::ffff:1.2.3.4) is two groups.
  const lastColon = s.lastIndexOf(':');
  if (lastColon >= 0 && s.indexOf('.', lastColon) > 0) {
    const v4 = parseIpv4(s.slice(lastColon + 1));
    if (v4 === undefined) return undefined;
    s = `${s.slice(0, lastColon + 1)}${(v4 >>> 16).toString(16)}:${(v4 & 0xffff).toString(16)}`;
  }
  const dbl = s.indexOf('::');
  if (dbl !== s.lastIndexOf('::')) return undefined;
  const parsePart = (part: string): number[] | undefined => {
    if (part === '') return [];
    const out: number[] = [];
    for (const h of part.split(':')) {
      if (!/^[0-9a-f]{1,4}$/.test(h)) return undefined;
      out.push(parseInt(h, 16));
    }
    return out;
  };
  if (dbl < 0) {
    const all = parsePart(s);
    if (all === undefined || all.length !== 8) return undefined;
    groups.push(...all);
  } else {
    const head = parsePart(s.slice(0, dbl));
    const tail = parsePart(s.slice(dbl + 2));
    if (head === undefined || tail === undefined || head.length + tail.length > 7) return undefined;
    groups.push(...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail);
  }
  const out = new Uint8Array(16);
  for (let i = 0; i < 8; i++) {
    out[2 * i] = groups[i]! >>> 8;
    out[2 * i + 1] = groups[i]! & 0xff;
  }
  return out;
}

/** Parses IPv6 text to its canonical form; undefined if invalid. */
export function parseIpv6(text: string): Ipv6Addr | undefined {
  const b = parseIpv6Bytes(text);
  return b === undefined ? undefined : readIpv6(b, 0);
}

const v6BytesCache = new Map<string, Uint8Array>();
const V6_CACHE_MAX = 1024;

/** The 16 bytes of a canonical IPv6 address (cached; the caller must not modify them). */
export function ipv6Bytes(addr: Ipv6Addr): Uint8Array {
  let b = v6BytesCache.get(addr);
  if (b === undefined) {
    b = parseIpv6Bytes(addr);
    if (b === undefined) throw new RangeError(`not an IPv6 address: ${addr}`);
    if (v6BytesCache.size >= V6_CACHE_MAX) v6BytesCache.clear();
    v6BytesCache.set(addr, b);
  }
  return b;
}

export function writeIpv6(buf: Uint8Array, off: number, addr: Ipv6Addr): void {
  buf.set(ipv6Bytes(addr), off);
}

/** Text of an address of either family. */
export function formatIp(a: IpAddr): string {
  return typeof a === 'string' ? a : formatIpv4(a);
}

/** `1.2.3.4:80` or `[fd00::1]:80`. */
export function formatIpPort(a: IpAddr, port: number): string {
  return typeof a === 'string' ? `[${a}]:${port}` : `${formatIpv4(a)}:${port}`;
}

/** Parses an address of either family (IPv6 canonicalised); undefined if neither. */
export function parseIp(text: string): IpAddr | undefined {
  return text.includes(':') ? parseIpv6(text) : parseIpv4(text);
}

/** True if the first `prefixLen` bits of `a` and `prefix` (16 bytes each) agree. */
export function ipv6InPrefix(a: Uint8Array, prefix: Uint8Array, prefixLen: number): boolean {
  let i = 0;
  for (; i < prefixLen >>> 3; i++) if (a[i] !== prefix[i]) return false;
  const rem = prefixLen & 7;
  if (rem === 0) return true;
  const mask = (0xff << (8 - rem)) & 0xff;
  return (a[i]! & mask) === (prefix[i]! & mask);
}

/** The Ethernet multicast MAC for an IPv6 multicast address (33:33 + its last 32 bits, RFC 2464 §7). */
export function ipv6MulticastMac(addr: Uint8Array): MacAddr {
  return 0x3333 * 0x1_0000_0000 + (((addr[12]! << 24) | (addr[13]! << 16) | (addr[14]! << 8) | addr[15]!) >>> 0);
}
