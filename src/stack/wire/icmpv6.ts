/**
 * ICMPv6 messages (RFC 4443) and the Neighbor Discovery formats built on them (RFC 4861, RFC 8106).
 *
 * Theory of operation: as ICMPv4 (icmpv4.ts) an ICMPv6 message is an 8-byte header (type, code,
 * checksum, 32 bits whose meaning depends on the type) and data; unlike ICMPv4 its checksum covers
 * the IPv6 pseudo-header too, so the view and the writer take the pseudo-header's address sum
 * (`addrSum`, checksum.ts). Neighbor Discovery messages (RS, RA, NS, NA) follow the header with
 * fixed fields and then TLV options whose length counts 8-byte units; `ndpOptions` walks them and
 * reports a malformed list (a zero length, an option past the end: RFC 4861 §4.6 says such a
 * message is discarded) as undefined. Writers expect the data already in place after the header,
 * so a message is built once in the output buffer.
 */
import { foldChecksum, sumBytes } from './checksum.ts';
import { writeMac, type MacAddr } from './addr.ts';

export const ICMPV6_HLEN = 8;
export const ICMPV6_PROTO = 58;

export const Icmpv6Type = {
  DestUnreachable: 1,
  PacketTooBig: 2,
  TimeExceeded: 3,
  ParameterProblem: 4,
  EchoRequest: 128,
  EchoReply: 129,
  RouterSolicitation: 133,
  RouterAdvertisement: 134,
  NeighborSolicitation: 135,
  NeighborAdvertisement: 136,
  Redirect: 137,
} as const;

/** Codes of Destination Unreachable (RFC 4443 §3.1). */
export const Icmpv6UnreachCode = {
  NoRoute: 0,
  AdminProhibited: 1,
  BeyondScope: 2,
  Address: 3,
  Port: 4,
  SourcePolicy: 5,
  RejectRoute: 6,
} as const;

/** NDP option types (RFC 4861 §4.6, RFC 8106). */
export const NdpOption = {
  SourceLinkAddr: 1,
  TargetLinkAddr: 2,
  PrefixInfo: 3,
  RedirectedHeader: 4,
  Mtu: 5,
  Rdnss: 25,
  Dnssl: 31,
} as const;

/** Errors are types 0..127 (RFC 4443 §2.1): never answered with another error. */
export function isIcmpv6Error(type: number): boolean {
  return type < 128;
}

export type Icmpv6Drop = 'truncated' | 'badChecksum';

export class Icmpv6View {
  readonly payloadOff: number;
  readonly payloadLen: number;

  private constructor(
    readonly buf: Uint8Array,
    readonly off: number,
    readonly len: number,
  ) {
    this.payloadOff = off + ICMPV6_HLEN;
    this.payloadLen = len - ICMPV6_HLEN;
  }

  /** Validates the message `buf[off, off+len)` with the pseudo-header's `addrSum`. */
  static checked(buf: Uint8Array, off: number, len: number, addrSum: number): Icmpv6View | Icmpv6Drop {
    if (off < 0 || len < 0 || off + len > buf.length) throw new RangeError('Icmpv6View: range outside buffer');
    if (len < ICMPV6_HLEN) return 'truncated';
    if (foldChecksum(sumBytes(buf, off, len, addrSum + ICMPV6_PROTO + len)) !== 0) return 'badChecksum';
    return new Icmpv6View(buf, off, len);
  }

  get type(): number {
    return this.buf[this.off]!;
  }

  get code(): number {
    return this.buf[this.off + 1]!;
  }

  get restOfHeader(): number {
    const b = this.buf;
    const o = this.off + 4;
    return ((b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!) >>> 0;
  }

  get ident(): number {
    return (this.buf[this.off + 4]! << 8) | this.buf[this.off + 5]!;
  }

  get seq(): number {
    return (this.buf[this.off + 6]! << 8) | this.buf[this.off + 7]!;
  }
}

/**
 * Writes an ICMPv6 header at `off` for the `dataLen` bytes already at `off + 8`, with its checksum
 * over the pseudo-header (`addrSum`); returns the offset after the data.
 */
export function writeIcmpv6(buf: Uint8Array, off: number, type: number, code: number, restOfHeader: number, dataLen: number, addrSum: number): number {
  buf[off] = type;
  buf[off + 1] = code;
  buf[off + 2] = 0;
  buf[off + 3] = 0;
  buf[off + 4] = restOfHeader >>> 24;
  buf[off + 5] = (restOfHeader >>> 16) & 0xff;
  buf[off + 6] = (restOfHeader >>> 8) & 0xff;
  buf[off + 7] = restOfHeader & 0xff;
  const len = ICMPV6_HLEN + dataLen;
  const ck = foldChecksum(sumBytes(buf, off, len, addrSum + ICMPV6_PROTO + len));
  buf[off + 2] = ck >>> 8;
  buf[off + 3] = ck & 0xff;
  return off + len;
}

/** One NDP option as `ndpOptions` reports it: type, and its bytes `[off, off+len)` (header included). */
export interface NdpOptionRef {
  type: number;
  off: number;
  len: number;
}

/**
 * Walks the NDP options in `buf[off, end)`; undefined if the list is malformed (RFC 4861 §4.6:
 * a zero length, or an option reaching past the message). At most 64 options are reported.
 */
export function ndpOptions(buf: Uint8Array, off: number, end: number): NdpOptionRef[] | undefined {
  const out: NdpOptionRef[] = [];
  let i = off;
  while (i < end) {
    if (i + 2 > end) return undefined;
    const len = buf[i + 1]! * 8;
    if (len === 0 || i + len > end) return undefined;
    if (out.length < 64) out.push({ type: buf[i]!, off: i, len });
    i += len;
  }
  return out;
}

/** The link-layer address of a Source/Target Link-Layer Address option (Ethernet: 6 bytes), or undefined. */
export function ndpLinkAddr(buf: Uint8Array, opt: NdpOptionRef): MacAddr | undefined {
  if (opt.len !== 8) return undefined;
  const o = opt.off + 2;
  const hi = (buf[o]! << 8) | buf[o + 1]!;
  const lo = ((buf[o + 2]! << 24) | (buf[o + 3]! << 16) | (buf[o + 4]! << 8) | buf[o + 5]!) >>> 0;
  return hi * 0x1_0000_0000 + lo;
}

/** Writes a Source (1) or Target (2) Link-Layer Address option; returns the offset after it. */
export function writeNdpLinkAddr(buf: Uint8Array, off: number, type: number, mac: MacAddr): number {
  buf[off] = type;
  buf[off + 1] = 1;
  writeMac(buf, off + 2, mac);
  return off + 8;
}
