/**
 * TCP segment headers and options (RFC 9293, RFC 7323, RFC 2018).
 *
 * Theory of operation: `TcpView.checked` takes the IP payload (`len` from the IP view) and the
 * addresses for the pseudo-header; it checks that the data offset lies in [20, len] and verifies
 * the checksum over the whole segment (TCP has no "no checksum"). Getters then read fields in
 * place. Sequence and acknowledgment numbers are returned as plain unsigned 32-bit numbers; the
 * TCP machine wraps them in its own sequence type.
 *
 * Options are parsed on demand by `parseTcpOptions` into a caller-owned `TcpOptions` record that
 * is reset and refilled on every call: no allocation per segment. Per RFC 9293 MUST-6 unknown
 * options with a length byte are skipped; per MUST-7 an illegal length (< 2, past the header, or
 * wrong for a known kind) makes the whole list malformed (returns false: the caller drops).
 *
 * Option writers produce the layouts Linux sends, aligned to 4 bytes with NOPs:
 *   SYN:   MSS(4) [SACK-permitted(2) TS(10) | NOP NOP TS(10) | NOP NOP SACK-permitted(2)] [NOP WS(3)]
 *   data:  NOP NOP TS(10), then NOP NOP SACK(2+8n)
 */

import type { Ipv4Addr } from './addr.ts';
import { foldChecksum, foldSum, ipv4AddrSum, sumBytes } from './checksum.ts';
import { IpProto } from './ipv4.ts';

export const TCP_HLEN = 20;
/** Largest header: data offset 15 words. */
export const TCP_MAX_HLEN = 60;
export const TCP_MAX_OPTIONS_LEN = TCP_MAX_HLEN - TCP_HLEN;

export const TcpFlag = {
  FIN: 1,
  SYN: 2,
  RST: 4,
  PSH: 8,
  ACK: 16,
  URG: 32,
  ECE: 64,
  CWR: 128,
} as const;

export const TcpOptionKind = {
  EOL: 0,
  NOP: 1,
  MSS: 2,
  WindowScale: 3,
  SackPermitted: 4,
  Sack: 5,
  Timestamp: 8,
} as const;

/** RFC 7323 §2.3: a shift count above 14 is used as 14. */
export const TCP_MAX_WINDOW_SCALE = 14;
/** At most 4 SACK blocks fit in 40 bytes of options. */
export const TCP_MAX_SACK_BLOCKS = 4;

export type TcpDrop = 'truncated' | 'badDataOffset' | 'badChecksum';

export class TcpView {
  readonly dataOff: number;
  readonly payloadOff: number;
  readonly payloadLen: number;

  private constructor(
    readonly buf: Uint8Array,
    readonly off: number,
    readonly len: number,
    dataOff: number,
  ) {
    this.dataOff = dataOff;
    this.payloadOff = off + dataOff;
    this.payloadLen = len - dataOff;
  }

  /**
   * Validates the TCP segment `buf[off, off+len)` (the whole IP payload) and its checksum. Throws
   * RangeError only if the range lies outside `buf` (caller bug).
   */
  /** `checksumOk`: the link's kernel vouched for the checksum (skip summing the payload). */
  static checked(buf: Uint8Array, off: number, len: number, srcIp: Ipv4Addr, dstIp: Ipv4Addr, checksumOk = false): TcpView | TcpDrop {
    return TcpView.checkedSum(buf, off, len, ipv4AddrSum(srcIp, dstIp), checksumOk);
  }

  /**
   * As `checked`, for either family: `addrSum` is the pseudo-header's address sum
   * (`ipv4AddrSum`, `ipv6AddrSum`); the protocol and length are added here.
   */
  static checkedSum(buf: Uint8Array, off: number, len: number, addrSum: number, checksumOk = false): TcpView | TcpDrop {
    if (off < 0 || len < 0 || off + len > buf.length) throw new RangeError('TcpView: range outside buffer');
    if (len < TCP_HLEN) return 'truncated';
    const dataOff = (buf[off + 12]! >>> 4) * 4;
    if (dataOff < TCP_HLEN || dataOff > len) return 'badDataOffset';
    if (!checksumOk && foldChecksum(sumBytes(buf, off, len, addrSum + IpProto.TCP + len)) !== 0) return 'badChecksum';
    return new TcpView(buf, off, len, dataOff);
  }

  get srcPort(): number {
    return (this.buf[this.off]! << 8) | this.buf[this.off + 1]!;
  }

  get dstPort(): number {
    return (this.buf[this.off + 2]! << 8) | this.buf[this.off + 3]!;
  }

  get seq(): number {
    return read32(this.buf, this.off + 4);
  }

  /** Acknowledgment number (meaningful only with the ACK flag). */
  get ack(): number {
    return read32(this.buf, this.off + 8);
  }

  /** The 8 flag bits (CWR..FIN); the experimental NS bit is ignored. */
  get flags(): number {
    return this.buf[this.off + 13]!;
  }

  /** True if every bit of `flag` (a `TcpFlag` or an OR of them) is set. */
  hasFlags(flag: number): boolean {
    return (this.buf[this.off + 13]! & flag) === flag;
  }

  /** The raw (unscaled) window field. */
  get window(): number {
    return (this.buf[this.off + 14]! << 8) | this.buf[this.off + 15]!;
  }

  get checksum(): number {
    return (this.buf[this.off + 16]! << 8) | this.buf[this.off + 17]!;
  }

  get urgent(): number {
    return (this.buf[this.off + 18]! << 8) | this.buf[this.off + 19]!;
  }

  get optionsOff(): number {
    return this.off + TCP_HLEN;
  }

  get optionsLen(): number {
    return this.dataOff - TCP_HLEN;
  }
}

function read32(b: Uint8Array, o: number): number {
  return ((b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!) >>> 0;
}

function write32(b: Uint8Array, o: number, v: number): void {
  b[o] = v >>> 24;
  b[o + 1] = (v >>> 16) & 0xff;
  b[o + 2] = (v >>> 8) & 0xff;
  b[o + 3] = v & 0xff;
}

export interface TcpTimestamp {
  tsVal: number;
  tsEcr: number;
}

/** Parsed options; create with `createTcpOptions()` and reuse. */
export interface TcpOptions {
  mss: number | undefined;
  /** Shift count, already clamped to 14 (RFC 7323 §2.3). */
  windowScale: number | undefined;
  sackPermitted: boolean;
  /** When present, this is `tsStorage`: overwritten by the next parse into the same record. */
  timestamp: TcpTimestamp | undefined;
  readonly tsStorage: TcpTimestamp;
  /** Pairs [left, right) of SACK blocks: block i is sackBlocks[2i], sackBlocks[2i+1]. */
  readonly sackBlocks: Uint32Array;
  sackCount: number;
}

export function createTcpOptions(): TcpOptions {
  return {
    mss: undefined,
    windowScale: undefined,
    sackPermitted: false,
    timestamp: undefined,
    tsStorage: { tsVal: 0, tsEcr: 0 },
    sackBlocks: new Uint32Array(2 * TCP_MAX_SACK_BLOCKS),
    sackCount: 0,
  };
}

/**
 * Parses the options of `view` into `out` (reset first). Returns false if the option list is
 * malformed; `out` then holds what was parsed before the fault and must not be used.
 */
export function parseTcpOptions(view: TcpView, out: TcpOptions): boolean {
  out.mss = undefined;
  out.windowScale = undefined;
  out.sackPermitted = false;
  out.timestamp = undefined;
  out.sackCount = 0;
  const b = view.buf;
  let i = view.optionsOff;
  const end = i + view.optionsLen;
  while (i < end) {
    const kind = b[i]!;
    if (kind === TcpOptionKind.EOL) return true;
    if (kind === TcpOptionKind.NOP) {
      i++;
      continue;
    }
    if (i + 1 >= end) return false;
    const len = b[i + 1]!;
    if (len < 2 || i + len > end) return false;
    switch (kind) {
      case TcpOptionKind.MSS:
        if (len !== 4) return false;
        out.mss = (b[i + 2]! << 8) | b[i + 3]!;
        break;
      case TcpOptionKind.WindowScale:
        if (len !== 3) return false;
        out.windowScale = Math.min(b[i + 2]!, TCP_MAX_WINDOW_SCALE);
        break;
      case TcpOptionKind.SackPermitted:
        if (len !== 2) return false;
        out.sackPermitted = true;
        break;
      case TcpOptionKind.Timestamp:
        if (len !== 10) return false;
        out.tsStorage.tsVal = read32(b, i + 2);
        out.tsStorage.tsEcr = read32(b, i + 6);
        out.timestamp = out.tsStorage;
        break;
      case TcpOptionKind.Sack: {
        const n = (len - 2) >>> 3;
        if ((len - 2) % 8 !== 0 || n < 1 || n > TCP_MAX_SACK_BLOCKS) return false;
        for (let k = 0; k < n; k++) {
          out.sackBlocks[2 * k] = read32(b, i + 2 + 8 * k);
          out.sackBlocks[2 * k + 1] = read32(b, i + 6 + 8 * k);
        }
        out.sackCount = n;
        break;
      }
      default:
        break; // unknown option with a valid length: skipped (MUST-6)
    }
    i += len;
  }
  return true;
}

export interface TcpSynOptions {
  mss: number;
  windowScale?: number | undefined;
  sackPermitted: boolean;
  timestamp?: TcpTimestamp | undefined;
}

/** Bytes `writeTcpOptionsSyn` will write for `opts` (a multiple of 4). */
export function tcpSynOptionsLen(opts: TcpSynOptions): number {
  return 4 + (opts.timestamp !== undefined ? 12 : opts.sackPermitted ? 4 : 0) + (opts.windowScale !== undefined ? 4 : 0);
}

/** Writes SYN options in Linux's layout (see module comment); returns the offset after them. */
export function writeTcpOptionsSyn(buf: Uint8Array, off: number, opts: TcpSynOptions): number {
  let i = off;
  buf[i++] = TcpOptionKind.MSS;
  buf[i++] = 4;
  buf[i++] = opts.mss >>> 8;
  buf[i++] = opts.mss & 0xff;
  if (opts.timestamp !== undefined) {
    if (opts.sackPermitted) {
      buf[i++] = TcpOptionKind.SackPermitted;
      buf[i++] = 2;
    } else {
      buf[i++] = TcpOptionKind.NOP;
      buf[i++] = TcpOptionKind.NOP;
    }
    buf[i++] = TcpOptionKind.Timestamp;
    buf[i++] = 10;
    write32(buf, i, opts.timestamp.tsVal);
    write32(buf, i + 4, opts.timestamp.tsEcr);
    i += 8;
  } else if (opts.sackPermitted) {
    buf[i++] = TcpOptionKind.NOP;
    buf[i++] = TcpOptionKind.NOP;
    buf[i++] = TcpOptionKind.SackPermitted;
    buf[i++] = 2;
  }
  if (opts.windowScale !== undefined) {
    buf[i++] = TcpOptionKind.NOP;
    buf[i++] = TcpOptionKind.WindowScale;
    buf[i++] = 3;
    buf[i++] = opts.windowScale;
  }
  return i;
}

/** Writes NOP NOP TS (12 bytes); returns the offset after it. */
export function writeTcpOptionsTimestamp(buf: Uint8Array, off: number, tsVal: number, tsEcr: number): number {
  buf[off] = TcpOptionKind.NOP;
  buf[off + 1] = TcpOptionKind.NOP;
  buf[off + 2] = TcpOptionKind.Timestamp;
  buf[off + 3] = 10;
  write32(buf, off + 4, tsVal);
  write32(buf, off + 8, tsEcr);
  return off + 12;
}

/**
 * Writes NOP NOP SACK with the first `count` blocks of `blocks` (pairs left, right): 4 + 8*count
 * bytes; returns the offset after it. With a timestamp option at most 3 blocks fit.
 */
export function writeTcpOptionsSack(buf: Uint8Array, off: number, blocks: Uint32Array, count: number): number {
  if (count < 1 || count > TCP_MAX_SACK_BLOCKS || blocks.length < 2 * count) {
    throw new RangeError(`writeTcpOptionsSack: bad block count ${count}`);
  }
  buf[off] = TcpOptionKind.NOP;
  buf[off + 1] = TcpOptionKind.NOP;
  buf[off + 2] = TcpOptionKind.Sack;
  buf[off + 3] = 2 + 8 * count;
  let i = off + 4;
  for (let k = 0; k < 2 * count; k++, i += 4) write32(buf, i, blocks[k]!);
  return i;
}

/**
 * Writes a TCP header (urgent pointer 0) with checksum at `off`. The `optionsLen` bytes of options
 * (a multiple of 4, ≤ 40) must already be at `off + 20` and the `payloadLen` bytes of payload right
 * after them. Returns the offset after the payload.
 */
export function writeTcp(
  buf: Uint8Array,
  off: number,
  srcPort: number,
  dstPort: number,
  seq: number,
  ack: number,
  flags: number,
  window: number,
  optionsLen: number,
  payloadLen: number,
  srcIp: Ipv4Addr,
  dstIp: Ipv4Addr,
  partialChecksum = false,
): number {
  return writeTcpSum(buf, off, srcPort, dstPort, seq, ack, flags, window, optionsLen, payloadLen, ipv4AddrSum(srcIp, dstIp), partialChecksum);
}

/** As `writeTcp`, for either family: `addrSum` is the pseudo-header's address sum. */
export function writeTcpSum(
  buf: Uint8Array,
  off: number,
  srcPort: number,
  dstPort: number,
  seq: number,
  ack: number,
  flags: number,
  window: number,
  optionsLen: number,
  payloadLen: number,
  addrSum: number,
  partialChecksum = false,
): number {
  if ((optionsLen & 3) !== 0 || optionsLen < 0 || optionsLen > TCP_MAX_OPTIONS_LEN) {
    throw new RangeError(`writeTcp: options length ${optionsLen} is not a multiple of 4 in [0, 40]`);
  }
  const dataOff = TCP_HLEN + optionsLen;
  const len = dataOff + payloadLen;
  buf[off] = srcPort >>> 8;
  buf[off + 1] = srcPort & 0xff;
  buf[off + 2] = dstPort >>> 8;
  buf[off + 3] = dstPort & 0xff;
  write32(buf, off + 4, seq);
  write32(buf, off + 8, ack);
  buf[off + 12] = (dataOff >>> 2) << 4;
  buf[off + 13] = flags;
  buf[off + 14] = window >>> 8;
  buf[off + 15] = window & 0xff;
  buf[off + 16] = 0;
  buf[off + 17] = 0;
  buf[off + 18] = 0;
  buf[off + 19] = 0;
  // partialChecksum (segmentation/checksum offload): only the pseudo-header sum, not inverted, for
  // the kernel to complete per segment (Linux's CHECKSUM_PARTIAL convention).
  const ck = partialChecksum
    ? foldSum(addrSum + IpProto.TCP + len)
    : foldChecksum(sumBytes(buf, off, len, addrSum + IpProto.TCP + len));
  buf[off + 16] = ck >>> 8;
  buf[off + 17] = ck & 0xff;
  return off + len;
}
