/**
 * ICMPv4 messages (RFC 792).
 *
 * Theory of operation: every ICMP message is an 8-byte header (type, code, checksum, and a
 * 32-bit "rest of header" whose meaning depends on the type) followed by data that the checksum
 * also covers. `Icmpv4View.checked` takes the IPv4 payload (`len` = IP payload length, which the
 * IP view already trimmed of link padding) and verifies the checksum over all of it. Echo messages
 * use the rest of header as identifier and sequence number; errors (Destination Unreachable, Time
 * Exceeded, Parameter Problem) carry a quote of the offending datagram — its IP header and at least
 * its first 8 payload bytes (RFC 792; RFC 1812 §4.3.2.3 allows more) — as their data.
 *
 * Writers expect the data already in place after the header, so a reply is built once in the
 * output buffer (design: "build output frames once") and only the header and checksum are written.
 */

import { foldChecksum, sumBytes } from './checksum.ts';

export const ICMP_HLEN = 8;

export const IcmpType = {
  EchoReply: 0,
  DestUnreachable: 3,
  SourceQuench: 4,
  Redirect: 5,
  EchoRequest: 8,
  RouterAdvertisement: 9,
  RouterSolicitation: 10,
  TimeExceeded: 11,
  ParameterProblem: 12,
  Timestamp: 13,
  TimestampReply: 14,
} as const;

/** Codes of Destination Unreachable (RFC 792, RFC 1122, RFC 1812). */
export const IcmpUnreachCode = {
  Net: 0,
  Host: 1,
  Protocol: 2,
  Port: 3,
  FragNeeded: 4,
  SourceRouteFailed: 5,
  NetUnknown: 6,
  HostUnknown: 7,
  SourceHostIsolated: 8,
  NetProhibited: 9,
  HostProhibited: 10,
  NetTos: 11,
  HostTos: 12,
  AdminProhibited: 13,
  HostPrecedenceViolation: 14,
  PrecedenceCutoff: 15,
} as const;

/** Codes of Time Exceeded. */
export const IcmpTimeExceededCode = {
  TtlExceeded: 0,
  FragmentReassembly: 1,
} as const;

export type Icmpv4Drop = 'truncated' | 'badChecksum';

export class Icmpv4View {
  readonly payloadOff: number;
  readonly payloadLen: number;

  private constructor(
    readonly buf: Uint8Array,
    readonly off: number,
    readonly len: number,
  ) {
    this.payloadOff = off + ICMP_HLEN;
    this.payloadLen = len - ICMP_HLEN;
  }

  /**
   * Validates the ICMP message `buf[off, off+len)` (the whole IP payload) and its checksum. Throws
   * RangeError only if the range lies outside `buf` (caller bug).
   */
  static checked(buf: Uint8Array, off: number, len: number): Icmpv4View | Icmpv4Drop {
    if (off < 0 || len < 0 || off + len > buf.length) throw new RangeError('Icmpv4View: range outside buffer');
    if (len < ICMP_HLEN) return 'truncated';
    if (foldChecksum(sumBytes(buf, off, len)) !== 0) return 'badChecksum';
    return new Icmpv4View(buf, off, len);
  }

  get type(): number {
    return this.buf[this.off]!;
  }

  get code(): number {
    return this.buf[this.off + 1]!;
  }

  get checksum(): number {
    return (this.buf[this.off + 2]! << 8) | this.buf[this.off + 3]!;
  }

  /** The 32-bit field after the checksum, unsigned. */
  get restOfHeader(): number {
    const b = this.buf;
    const o = this.off + 4;
    return ((b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!) >>> 0;
  }

  /** Echo identifier (high half of the rest of header). */
  get ident(): number {
    return (this.buf[this.off + 4]! << 8) | this.buf[this.off + 5]!;
  }

  /** Echo sequence number (low half of the rest of header). */
  get seq(): number {
    return (this.buf[this.off + 6]! << 8) | this.buf[this.off + 7]!;
  }

  /** Next-hop MTU of a Fragmentation Needed message (RFC 1191): the low half of the rest of header. */
  get nextHopMtu(): number {
    return this.seq;
  }
}

function fillChecksum(buf: Uint8Array, off: number, len: number): void {
  buf[off + 2] = 0;
  buf[off + 3] = 0;
  const ck = foldChecksum(sumBytes(buf, off, len));
  buf[off + 2] = ck >>> 8;
  buf[off + 3] = ck & 0xff;
}

/**
 * Writes an echo header (code 0) at `off` for the `payloadLen` bytes already at `off + 8`, with its
 * checksum; returns the offset after the payload.
 */
export function writeIcmpEcho(buf: Uint8Array, off: number, type: number, ident: number, seq: number, payloadLen: number): number {
  buf[off] = type;
  buf[off + 1] = 0;
  buf[off + 4] = ident >>> 8;
  buf[off + 5] = ident & 0xff;
  buf[off + 6] = seq >>> 8;
  buf[off + 7] = seq & 0xff;
  fillChecksum(buf, off, ICMP_HLEN + payloadLen);
  return off + ICMP_HLEN + payloadLen;
}

/**
 * Writes an error header at `off` for the quote of `quoteLen` bytes already at `off + 8` (the
 * original IP header and payload prefix, see `icmpQuoteLen`), with its checksum; returns the offset
 * after the quote. `restOfHeader` is e.g. the next-hop MTU for FragNeeded, or the pointer of a
 * Parameter Problem in its top byte.
 */
export function writeIcmpError(buf: Uint8Array, off: number, type: number, code: number, quoteLen: number, restOfHeader = 0): number {
  buf[off] = type;
  buf[off + 1] = code;
  buf[off + 4] = restOfHeader >>> 24;
  buf[off + 5] = (restOfHeader >>> 16) & 0xff;
  buf[off + 6] = (restOfHeader >>> 8) & 0xff;
  buf[off + 7] = restOfHeader & 0xff;
  fillChecksum(buf, off, ICMP_HLEN + quoteLen);
  return off + ICMP_HLEN + quoteLen;
}

/**
 * How many bytes of an offending datagram to quote in an ICMP error: its header and the first
 * 8 bytes of its payload (RFC 792), or the whole datagram if shorter. Inputs are that datagram's
 * IPv4 header length and total length.
 */
export function icmpQuoteLen(headerLen: number, totalLen: number): number {
  return Math.min(totalLen, headerLen + 8);
}
