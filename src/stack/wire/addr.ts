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
