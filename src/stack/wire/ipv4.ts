/**
 * IPv4 headers (RFC 791).
 *
 * Theory of operation: `Ipv4View.checked` validates a header once — version 4, IHL ≥ 5, the
 * header inside the buffer, IHL*4 ≤ total length ≤ bytes available, the header checksum, and the
 * TLV structure of any options — so that no getter can read past the datagram. The datagram ends
 * at its total length: Ethernet padding after it is ignored, as RFC 1122 §3.3.1.4 implies.
 * Options are accepted and skipped (we route nothing by them); only their lengths are checked so
 * that a malformed option list is dropped ('badOptions') instead of being echoed in an ICMP quote.
 *
 * Fragments are reported (`isFragment`, `fragmentOffset` in bytes) and left to
 * `../reassembly.ts`. `writeIpv4` always writes a 20-byte header: vmnat never originates options.
 */

import { readIpv4, writeIpv4 as writeAddr, type Ipv4Addr } from './addr.ts';
import { foldChecksum, sumBytes } from './checksum.ts';

export const IPV4_HLEN = 20;
/** Largest IPv4 datagram, header included. */
export const IPV4_MAX_LEN = 65535;
/** Don't Fragment flag, in the 16-bit flags/fragment-offset field. */
export const IPV4_DF = 0x4000;
/** More Fragments flag, in the 16-bit flags/fragment-offset field. */
export const IPV4_MF = 0x2000;
/** The fragment offset (in 8-byte units) in the flags/fragment-offset field. */
export const IPV4_FRAG_OFFSET_MASK = 0x1fff;

export const IpProto = {
  ICMP: 1,
  TCP: 6,
  UDP: 17,
} as const;

export type Ipv4Drop = 'truncated' | 'badVersion' | 'badHeaderLength' | 'badTotalLength' | 'badChecksum' | 'badOptions';

/** Option kinds that occupy a single byte (RFC 791): End of Option List and No Operation. */
const OPT_EOL = 0;
const OPT_NOP = 1;

export class Ipv4View {
  readonly headerLen: number;
  readonly totalLen: number;
  readonly payloadOff: number;
  readonly payloadLen: number;

  private constructor(
    readonly buf: Uint8Array,
    readonly off: number,
    headerLen: number,
    totalLen: number,
  ) {
    this.headerLen = headerLen;
    this.totalLen = totalLen;
    this.payloadOff = off + headerLen;
    this.payloadLen = totalLen - headerLen;
  }

  /**
   * Validates the IPv4 datagram at `buf[off, off+len)` (`len` may include link padding). Throws
   * RangeError only if the range lies outside `buf` (caller bug).
   */
  static checked(buf: Uint8Array, off: number, len: number): Ipv4View | Ipv4Drop {
    if (off < 0 || len < 0 || off + len > buf.length) throw new RangeError('Ipv4View: range outside buffer');
    if (len < IPV4_HLEN) return 'truncated';
    const vihl = buf[off]!;
    if (vihl >>> 4 !== 4) return 'badVersion';
    const headerLen = (vihl & 0x0f) * 4;
    if (headerLen < IPV4_HLEN) return 'badHeaderLength';
    if (headerLen > len) return 'truncated';
    const totalLen = (buf[off + 2]! << 8) | buf[off + 3]!;
    if (totalLen < headerLen) return 'badTotalLength';
    if (totalLen > len) return 'truncated';
    if (foldChecksum(sumBytes(buf, off, headerLen)) !== 0) return 'badChecksum';
    if (headerLen > IPV4_HLEN && !optionsWellFormed(buf, off + IPV4_HLEN, off + headerLen)) return 'badOptions';
    return new Ipv4View(buf, off, headerLen, totalLen);
  }

  get version(): number {
    return this.buf[this.off]! >>> 4;
  }

  get tos(): number {
    return this.buf[this.off + 1]!;
  }

  get ident(): number {
    return (this.buf[this.off + 4]! << 8) | this.buf[this.off + 5]!;
  }

  /** The raw 16-bit flags and fragment offset field. */
  get flagsAndFragOffsetRaw(): number {
    return (this.buf[this.off + 6]! << 8) | this.buf[this.off + 7]!;
  }

  get dontFragment(): boolean {
    return (this.buf[this.off + 6]! & 0x40) !== 0;
  }

  get moreFragments(): boolean {
    return (this.buf[this.off + 6]! & 0x20) !== 0;
  }

  /** Fragment offset in bytes (the field counts 8-byte units). */
  get fragmentOffset(): number {
    return (this.flagsAndFragOffsetRaw & IPV4_FRAG_OFFSET_MASK) * 8;
  }

  /** True for any fragment: more to come, or not the first. */
  get isFragment(): boolean {
    return (this.flagsAndFragOffsetRaw & (IPV4_MF | IPV4_FRAG_OFFSET_MASK)) !== 0;
  }

  get ttl(): number {
    return this.buf[this.off + 8]!;
  }

  get protocol(): number {
    return this.buf[this.off + 9]!;
  }

  get checksum(): number {
    return (this.buf[this.off + 10]! << 8) | this.buf[this.off + 11]!;
  }

  get src(): Ipv4Addr {
    return readIpv4(this.buf, this.off + 12);
  }

  get dst(): Ipv4Addr {
    return readIpv4(this.buf, this.off + 16);
  }

  get optionsOff(): number {
    return this.off + IPV4_HLEN;
  }

  get optionsLen(): number {
    return this.headerLen - IPV4_HLEN;
  }
}

/** True if the option list in `buf[off, end)` is a valid sequence of RFC 791 options. */
function optionsWellFormed(buf: Uint8Array, off: number, end: number): boolean {
  let i = off;
  while (i < end) {
    const kind = buf[i]!;
    if (kind === OPT_EOL) return true; // the rest is padding
    if (kind === OPT_NOP) {
      i++;
      continue;
    }
    if (i + 1 >= end) return false;
    const optLen = buf[i + 1]!;
    if (optLen < 2 || i + optLen > end) return false;
    i += optLen;
  }
  return true;
}

/**
 * Writes a 20-byte IPv4 header (no options) with its checksum at `off`; returns the offset of the
 * payload. `flagsAndFragOffsetRaw` is the raw 16-bit field (e.g. `IPV4_DF`).
 */
export function writeIpv4(
  buf: Uint8Array,
  off: number,
  totalLen: number,
  ident: number,
  flagsAndFragOffsetRaw: number,
  ttl: number,
  protocol: number,
  src: Ipv4Addr,
  dst: Ipv4Addr,
  tos = 0,
): number {
  buf[off] = 0x45;
  buf[off + 1] = tos;
  buf[off + 2] = totalLen >>> 8;
  buf[off + 3] = totalLen & 0xff;
  buf[off + 4] = ident >>> 8;
  buf[off + 5] = ident & 0xff;
  buf[off + 6] = flagsAndFragOffsetRaw >>> 8;
  buf[off + 7] = flagsAndFragOffsetRaw & 0xff;
  buf[off + 8] = ttl;
  buf[off + 9] = protocol;
  buf[off + 10] = 0;
  buf[off + 11] = 0;
  writeAddr(buf, off + 12, src);
  writeAddr(buf, off + 16, dst);
  const ck = foldChecksum(sumBytes(buf, off, IPV4_HLEN));
  buf[off + 10] = ck >>> 8;
  buf[off + 11] = ck & 0xff;
  return off + IPV4_HLEN;
}

/** Recomputes the header checksum of the header at `off` (after an in-place rewrite). */
export function fillIpv4Checksum(buf: Uint8Array, off: number): void {
  const headerLen = (buf[off]! & 0x0f) * 4;
  buf[off + 10] = 0;
  buf[off + 11] = 0;
  const ck = foldChecksum(sumBytes(buf, off, headerLen));
  buf[off + 10] = ck >>> 8;
  buf[off + 11] = ck & 0xff;
}
