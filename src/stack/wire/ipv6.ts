/**
 * IPv6 headers and extension-header chains (RFC 8200).
 *
 * Theory of operation: `Ipv6View.checked` validates a packet once — version 6, the 40-byte fixed
 * header, the payload length inside the bytes available (Ethernet padding after it is ignored) —
 * and walks the extension-header chain to the upper-layer header, so that `protocol`,
 * `payloadOff` and `payloadLen` name the upper layer (TCP, UDP, ICMPv6, or an unknown number)
 * just as an IPv4 view's do: the NAT and the services read either family through the same fields
 * (`IpPacket`). The walk accepts Hop-by-Hop (first only, RFC 8200 §4.1), Routing, Destination
 * Options and one Fragment header; each must lie inside the payload, and the chain is bounded
 * (`MAX_EXTENSIONS`) so a crafted chain costs a constant. Hop-by-Hop and Destination options are
 * skipped, not interpreted: vmnat acts on none of them. A Fragment header is reported (`isFragment`,
 * `fragmentOffset`, `moreFragments`, `ident`, and where the unfragmentable part ends) for
 * `../reassembly.ts`; what follows a non-first fragment is not walked (it is the middle of a payload).
 *
 * Addresses read as canonical text (addr.ts); `addrSum` is the pseudo-header's address sum for the
 * TCP, UDP and ICMPv6 checksums. `writeIpv6` writes a 40-byte header: vmnat originates no
 * extension headers except the Fragment header of `writeFragmentHeader`.
 */
import { readIpv6, writeIpv6 as writeAddr, type Ipv6Addr } from './addr.ts';
import { ipv6AddrSum } from './checksum.ts';

export const IPV6_HLEN = 40;
export const IPV6_FRAG_HLEN = 8;
/** The minimum link MTU every IPv6 link carries (RFC 8200 §5). */
export const IPV6_MIN_MTU = 1280;
/** Extension headers walked at most; a longer chain is dropped ('badExtensions'). */
export const MAX_EXTENSIONS = 8;

export const Ipv6Next = {
  HopByHop: 0,
  TCP: 6,
  UDP: 17,
  Routing: 43,
  Fragment: 44,
  ESP: 50,
  AH: 51,
  ICMPv6: 58,
  NoNext: 59,
  DestOptions: 60,
} as const;

export type Ipv6Drop = 'truncated' | 'badVersion' | 'badPayloadLength' | 'badExtensions';

export class Ipv6View {
  /** 4 or 6: the family, so code holding an `IpPacket` can tell them apart. */
  readonly family = 6 as const;
  /** Upper-layer protocol (after the extension headers). */
  readonly protocol: number;
  /** Fixed header plus extension headers walked. */
  readonly headerLen: number;
  /** Fixed header plus payload length: the packet's end (padding excluded). */
  readonly totalLen: number;
  readonly payloadOff: number;
  readonly payloadLen: number;
  /** Offset of the Fragment header, or -1. */
  readonly fragHeaderOff: number;
  /** Offset of the Next Header byte that names the Fragment header (to unlink it on reassembly). */
  readonly fragPrevNextOff: number;

  private constructor(
    readonly buf: Uint8Array,
    readonly off: number,
    protocol: number,
    headerLen: number,
    totalLen: number,
    fragHeaderOff: number,
    fragPrevNextOff: number,
  ) {
    this.protocol = protocol;
    this.headerLen = headerLen;
    this.totalLen = totalLen;
    this.payloadOff = off + headerLen;
    this.payloadLen = totalLen - headerLen;
    this.fragHeaderOff = fragHeaderOff;
    this.fragPrevNextOff = fragPrevNextOff;
  }

  /** Validates the IPv6 packet at `buf[off, off+len)`. Throws RangeError only for a caller bug. */
  static checked(buf: Uint8Array, off: number, len: number): Ipv6View | Ipv6Drop {
    if (off < 0 || len < 0 || off + len > buf.length) throw new RangeError('Ipv6View: range outside buffer');
    if (len < IPV6_HLEN) return 'truncated';
    if (buf[off]! >>> 4 !== 6) return 'badVersion';
    const payloadLength = (buf[off + 4]! << 8) | buf[off + 5]!;
    // Payload length 0 with a Hop-by-Hop header is a jumbogram (RFC 2675): not on these links.
    if (payloadLength === 0 && buf[off + 6] === Ipv6Next.HopByHop) return 'badPayloadLength';
    const totalLen = IPV6_HLEN + payloadLength;
    if (totalLen > len) return 'truncated';
    let next = buf[off + 6]!;
    let at = IPV6_HLEN;
    let fragOff = -1;
    let nextField = off + 6;
    let fragPrev = -1;
    for (let n = 0; ; n++) {
      if (next !== Ipv6Next.HopByHop && next !== Ipv6Next.Routing && next !== Ipv6Next.DestOptions && next !== Ipv6Next.Fragment) break;
      if (n >= MAX_EXTENSIONS) return 'badExtensions';
      if (next === Ipv6Next.HopByHop && n !== 0) return 'badExtensions';
      if (at + 8 > totalLen) return 'badExtensions';
      const following = buf[off + at]!;
      if (next === Ipv6Next.Fragment) {
        if (fragOff >= 0) return 'badExtensions';
        fragOff = off + at;
        fragPrev = nextField;
        at += IPV6_FRAG_HLEN;
        next = following;
        // Past a non-first fragment's header lies the middle of a payload, not more headers.
        if (((buf[fragOff + 2]! << 8) | buf[fragOff + 3]!) & 0xfff8) break;
        continue;
      }
      const extLen = (buf[off + at + 1]! + 1) * 8;
      if (at + extLen > totalLen) return 'badExtensions';
      nextField = off + at;
      at += extLen;
      next = following;
    }
    return new Ipv6View(buf, off, next, at, totalLen, fragOff, fragPrev);
  }

  get version(): number {
    return this.buf[this.off]! >>> 4;
  }

  get trafficClass(): number {
    return ((this.buf[this.off]! & 0x0f) << 4) | (this.buf[this.off + 1]! >>> 4);
  }

  get payloadLength(): number {
    return (this.buf[this.off + 4]! << 8) | this.buf[this.off + 5]!;
  }

  /** The Next Header field of the fixed header. */
  get firstNext(): number {
    return this.buf[this.off + 6]!;
  }

  get hopLimit(): number {
    return this.buf[this.off + 7]!;
  }

  /** The hop limit under its IPv4 name, for code that serves both families. */
  get ttl(): number {
    return this.buf[this.off + 7]!;
  }

  get src(): Ipv6Addr {
    return readIpv6(this.buf, this.off + 8);
  }

  get dst(): Ipv6Addr {
    return readIpv6(this.buf, this.off + 24);
  }

  /** The pseudo-header's address sum (RFC 8200 §8.1). */
  get addrSum(): number {
    return ipv6AddrSum(this.buf, this.off);
  }

  get isFragment(): boolean {
    if (this.fragHeaderOff < 0) return false;
    // An "atomic fragment" (offset 0, M = 0; RFC 6946) is a whole packet: processed as such.
    return this.fragmentOffset !== 0 || this.moreFragments;
  }

  /** Fragment offset in bytes. */
  get fragmentOffset(): number {
    const o = this.fragHeaderOff;
    return o < 0 ? 0 : ((this.buf[o + 2]! << 8) | this.buf[o + 3]!) & 0xfff8;
  }

  get moreFragments(): boolean {
    const o = this.fragHeaderOff;
    return o >= 0 && (this.buf[o + 3]! & 1) === 1;
  }

  get ident(): number {
    const o = this.fragHeaderOff;
    if (o < 0) return 0;
    const b = this.buf;
    return ((b[o + 4]! << 24) | (b[o + 5]! << 16) | (b[o + 6]! << 8) | b[o + 7]!) >>> 0;
  }

  /** The protocol the Fragment header says follows it (the fragmentable part's first header). */
  get fragNext(): number {
    return this.fragHeaderOff < 0 ? this.protocol : this.buf[this.fragHeaderOff]!;
  }
}

/**
 * Writes a 40-byte IPv6 header at `off`; returns the offset of the payload. `payloadLen` is the
 * bytes after this header (extension headers included).
 */
export function writeIpv6(
  buf: Uint8Array,
  off: number,
  payloadLen: number,
  next: number,
  hopLimit: number,
  src: Ipv6Addr,
  dst: Ipv6Addr,
  trafficClass = 0,
): number {
  buf[off] = 0x60 | (trafficClass >>> 4);
  buf[off + 1] = (trafficClass & 0x0f) << 4;
  buf[off + 2] = 0;
  buf[off + 3] = 0;
  buf[off + 4] = payloadLen >>> 8;
  buf[off + 5] = payloadLen & 0xff;
  buf[off + 6] = next;
  buf[off + 7] = hopLimit;
  writeAddr(buf, off + 8, src);
  writeAddr(buf, off + 24, dst);
  return off + IPV6_HLEN;
}

/** Writes a Fragment header at `off` (offset in bytes, a multiple of 8); returns the offset after it. */
export function writeFragmentHeader(buf: Uint8Array, off: number, next: number, fragOffset: number, more: boolean, ident: number): number {
  buf[off] = next;
  buf[off + 1] = 0;
  const v = (fragOffset & 0xfff8) | (more ? 1 : 0);
  buf[off + 2] = v >>> 8;
  buf[off + 3] = v & 0xff;
  buf[off + 4] = ident >>> 24;
  buf[off + 5] = (ident >>> 16) & 0xff;
  buf[off + 6] = (ident >>> 8) & 0xff;
  buf[off + 7] = ident & 0xff;
  return off + IPV6_FRAG_HLEN;
}
