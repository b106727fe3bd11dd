/**
 * UDP datagrams (RFC 768).
 *
 * Theory of operation: `UdpView.checked` takes the IP payload (`len` from the IP view, so link
 * padding is already gone) and the IP addresses for the pseudo-header. The UDP length field must
 * lie in [8, len]; the datagram ends there (bytes after it are ignored, as Linux does). A checksum
 * of 0 means "none" (legal over IPv4) and is not verified; otherwise it covers pseudo-header,
 * header and payload. `writeUdp` always computes a checksum and sends a computed 0 as 0xffff
 * (RFC 768), so a real checksum is never mistaken for "none".
 */

import type { Ipv4Addr } from './addr.ts';
import { foldChecksum, ipv4AddrSum, sumBytes } from './checksum.ts';
import { IpProto } from './ipv4.ts';

export const UDP_HLEN = 8;

export type UdpDrop = 'truncated' | 'badLength' | 'badChecksum';

export class UdpView {
  readonly length: number;
  readonly payloadOff: number;
  readonly payloadLen: number;

  private constructor(
    readonly buf: Uint8Array,
    readonly off: number,
    length: number,
  ) {
    this.length = length;
    this.payloadOff = off + UDP_HLEN;
    this.payloadLen = length - UDP_HLEN;
  }

  /**
   * Validates the UDP datagram in `buf[off, off+len)` (the IP payload). Throws RangeError only if
   * the range lies outside `buf` (caller bug).
   */
  /** `checksumOk`: the link's kernel vouched for the checksum (skip summing the payload). */
  static checked(buf: Uint8Array, off: number, len: number, srcIp: Ipv4Addr, dstIp: Ipv4Addr, checksumOk = false): UdpView | UdpDrop {
    return UdpView.checkedSum(buf, off, len, ipv4AddrSum(srcIp, dstIp), checksumOk, true);
  }

  /**
   * As `checked`, for either family: `addrSum` is the pseudo-header's address sum. `zeroAllowed`:
   * a stored 0 means "no checksum" (IPv4); over IPv6 it is invalid (RFC 8200 §8.1) and dropped.
   */
  static checkedSum(buf: Uint8Array, off: number, len: number, addrSum: number, checksumOk: boolean, zeroAllowed: boolean): UdpView | UdpDrop {
    if (off < 0 || len < 0 || off + len > buf.length) throw new RangeError('UdpView: range outside buffer');
    if (len < UDP_HLEN) return 'truncated';
    const length = (buf[off + 4]! << 8) | buf[off + 5]!;
    if (length < UDP_HLEN || length > len) return 'badLength';
    const stored = (buf[off + 6]! << 8) | buf[off + 7]!;
    if (stored === 0 && !zeroAllowed) return 'badChecksum';
    if (stored !== 0 && !checksumOk) {
      const sum = sumBytes(buf, off, length, addrSum + IpProto.UDP + length);
      if (foldChecksum(sum) !== 0) return 'badChecksum';
    }
    return new UdpView(buf, off, length);
  }

  get srcPort(): number {
    return (this.buf[this.off]! << 8) | this.buf[this.off + 1]!;
  }

  get dstPort(): number {
    return (this.buf[this.off + 2]! << 8) | this.buf[this.off + 3]!;
  }

  /** The stored checksum; 0 means the sender computed none. */
  get checksum(): number {
    return (this.buf[this.off + 6]! << 8) | this.buf[this.off + 7]!;
  }
}

/**
 * Writes a UDP header with checksum at `off` for the `payloadLen` bytes already at `off + 8`;
 * returns the offset after the payload.
 */
export function writeUdp(
  buf: Uint8Array,
  off: number,
  srcPort: number,
  dstPort: number,
  payloadLen: number,
  srcIp: Ipv4Addr,
  dstIp: Ipv4Addr,
): number {
  return writeUdpSum(buf, off, srcPort, dstPort, payloadLen, ipv4AddrSum(srcIp, dstIp));
}

/** As `writeUdp`, for either family: `addrSum` is the pseudo-header's address sum. */
export function writeUdpSum(buf: Uint8Array, off: number, srcPort: number, dstPort: number, payloadLen: number, addrSum: number): number {
  const length = UDP_HLEN + payloadLen;
  if (length > 0xffff) throw new RangeError(`writeUdp: payload of ${payloadLen} bytes does not fit`);
  buf[off] = srcPort >>> 8;
  buf[off + 1] = srcPort & 0xff;
  buf[off + 2] = dstPort >>> 8;
  buf[off + 3] = dstPort & 0xff;
  buf[off + 4] = length >>> 8;
  buf[off + 5] = length & 0xff;
  buf[off + 6] = 0;
  buf[off + 7] = 0;
  const ck = foldChecksum(sumBytes(buf, off, length, addrSum + IpProto.UDP + length)) || 0xffff;
  buf[off + 6] = ck >>> 8;
  buf[off + 7] = ck & 0xff;
  return off + length;
}
