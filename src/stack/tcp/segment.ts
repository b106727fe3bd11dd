/**
 * The segment records a connection consumes and produces.
 *
 * Theory of operation: the connection never sees raw frames. On input the caller (the NAT) fills
 * one reused `TcpSegment` from a checked wire view (`fillSegment`) and hands it to
 * `TcpConnection.input`; the payload is a (buf, off, len) view into the guest's frame, valid only
 * during the call. On output the connection fills its own reused `TcpOutSegment` and passes it to
 * `TcpHost.emit`; options are already encoded (≤ 40 bytes) and the payload is a slice of the send
 * buffer — the callee writes header, options and payload straight into the outgoing frame and must
 * not keep any of it after returning. Nothing here allocates per segment.
 */
import type { Seq } from './seq.ts';
import { seqAdd, seqOf } from './seq.ts';
import { TcpFlag, parseTcpOptions, writeTcp, writeTcpSum, type TcpOptions, type TcpView } from '../wire/tcp.ts';
import type { Ipv4Addr } from '../wire/addr.ts';

export { TcpFlag };

const EMPTY = new Uint8Array(0);

/** A received segment, as the connection consumes it. Reused by the caller between segments. */
export class TcpSegment {
  seq: Seq = seqOf(0);
  ack: Seq = seqOf(0);
  flags = 0;
  /** The raw 16-bit window field (the connection applies the scale). */
  window = 0;
  /** MSS option value; 0 = absent. */
  mss = 0;
  /** Window-scale option shift; -1 = absent. */
  windowScale = -1;
  sackPermitted = false;
  /** SACK blocks as [start0, end0, start1, end1, ...]; `sackCount` pairs are valid. */
  readonly sackBlocks = new Uint32Array(8);
  sackCount = 0;
  payload: Uint8Array = EMPTY;
  payloadOff = 0;
  payloadLen = 0;

  /** Resets every field; for callers that build segments by hand (tests, the NAT's RST path). */
  reset(): this {
    this.seq = seqOf(0);
    this.ack = seqOf(0);
    this.flags = 0;
    this.window = 0;
    this.mss = 0;
    this.windowScale = -1;
    this.sackPermitted = false;
    this.sackCount = 0;
    this.payload = EMPTY;
    this.payloadOff = 0;
    this.payloadLen = 0;
    return this;
  }
}

/** Sequence space a segment occupies: payload + SYN + FIN (RFC 9293 SEG.LEN). */
export function segLen(seg: TcpSegment): number {
  return seg.payloadLen + (seg.flags & TcpFlag.SYN ? 1 : 0) + (seg.flags & TcpFlag.FIN ? 1 : 0);
}

/**
 * Fills `seg` from a checked wire view and its parsed options. Returns false when the options are
 * malformed (the caller drops the segment and counts it).
 */
export function fillSegment(seg: TcpSegment, view: TcpView, opts: TcpOptions): boolean {
  seg.seq = seqOf(view.seq);
  seg.ack = seqOf(view.ack);
  seg.flags = view.flags;
  seg.window = view.window;
  seg.payload = view.buf;
  seg.payloadOff = view.payloadOff;
  seg.payloadLen = view.payloadLen;
  seg.mss = 0;
  seg.windowScale = -1;
  seg.sackPermitted = false;
  seg.sackCount = 0;
  if (view.dataOff <= 20) return true;
  if (!parseTcpOptions(view, opts)) return false;
  seg.mss = opts.mss ?? 0;
  seg.windowScale = opts.windowScale ?? -1;
  seg.sackPermitted = opts.sackPermitted;
  const n = Math.min(4, opts.sackCount);
  for (let i = 0; i < 2 * n; i++) seg.sackBlocks[i] = opts.sackBlocks[i]!;
  seg.sackCount = n;
  return true;
}

/** A segment to send, filled by the connection and handed to `TcpHost.emit`. Reused. */
export class TcpOutSegment {
  flags = 0;
  seq: Seq = seqOf(0);
  /** Valid when `flags` has ACK (it is always set except on a bare SYN or a RST answering a non-ACK). */
  ack: Seq = seqOf(0);
  /** The 16-bit window field, already scaled. */
  window = 0;
  /** Encoded options (a multiple of 4 bytes, ≤ 40), to copy after the fixed header. */
  readonly options = new Uint8Array(40);
  optionsLen = 0;
  /** Payload slice: `payload[payloadOff .. payloadOff + payloadLen)`. */
  payload: Uint8Array = EMPTY;
  payloadOff = 0;
  payloadLen = 0;
  /** > 0: the payload spans several MSS-sized segments of this size (segmentation offload). */
  gsoSize = 0;
}

/** Bytes the TCP part of `o` occupies in a frame (header + options + payload). */
export function tcpOutLength(o: TcpOutSegment): number {
  return 20 + o.optionsLen + o.payloadLen;
}

/**
 * Writes `o` as a TCP segment at `buf[off]`: options and payload copied in (the payload's only
 * copy on the way out), then the header with its checksum. Returns the offset after the segment.
 */
export function writeTcpOut(
  buf: Uint8Array,
  off: number,
  o: TcpOutSegment,
  srcPort: number,
  dstPort: number,
  srcIp: Ipv4Addr,
  dstIp: Ipv4Addr,
  partialChecksum = false,
): number {
  if (o.optionsLen > 0) buf.set(o.options.subarray(0, o.optionsLen), off + 20);
  if (o.payloadLen > 0) buf.set(o.payload.subarray(o.payloadOff, o.payloadOff + o.payloadLen), off + 20 + o.optionsLen);
  return writeTcp(buf, off, srcPort, dstPort, o.seq, o.ack, o.flags, o.window, o.optionsLen, o.payloadLen, srcIp, dstIp, partialChecksum);
}

/** As `writeTcpOut`, for either family: `addrSum` is the pseudo-header's address sum. */
export function writeTcpOutSum(buf: Uint8Array, off: number, o: TcpOutSegment, srcPort: number, dstPort: number, addrSum: number, partialChecksum = false): number {
  if (o.optionsLen > 0) buf.set(o.options.subarray(0, o.optionsLen), off + 20);
  if (o.payloadLen > 0) buf.set(o.payload.subarray(o.payloadOff, o.payloadOff + o.payloadLen), off + 20 + o.optionsLen);
  return writeTcpSum(buf, off, srcPort, dstPort, o.seq, o.ack, o.flags, o.window, o.optionsLen, o.payloadLen, addrSum, partialChecksum);
}

/**
 * The RST that answers a segment for which no connection exists (RFC 9293 §3.10.7.1, "CLOSED"):
 * with ACK set, <SEQ=SEG.ACK><CTL=RST>; else <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>.
 * Returns false for a segment that must not be answered (it is itself a RST). Fills `out`
 * (window 0, no options, no payload).
 */
export function rstForSegment(seg: TcpSegment, out: TcpOutSegment): boolean {
  if (seg.flags & TcpFlag.RST) return false;
  out.optionsLen = 0;
  out.payloadLen = 0;
  out.window = 0;
  if (seg.flags & TcpFlag.ACK) {
    out.flags = TcpFlag.RST;
    out.seq = seg.ack;
    out.ack = seqOf(0);
  } else {
    out.flags = TcpFlag.RST | TcpFlag.ACK;
    out.seq = seqOf(0);
    out.ack = seqAdd(seg.seq, segLen(seg));
  }
  return true;
}
