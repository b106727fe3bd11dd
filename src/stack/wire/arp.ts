/**
 * ARP for IPv4 over Ethernet (RFC 826).
 *
 * Theory of operation: the only ARP we speak is hardware type 1 (Ethernet), protocol 0x0800,
 * 6-byte hardware and 4-byte protocol addresses: a fixed 28-byte packet. Anything else is
 * 'unsupported' (counted, dropped), not an error. Frames are often padded to 60 bytes, so bytes
 * after the 28 are ignored. The operation is open data: callers act on Request and Reply and count
 * the rest.
 */

import { readIpv4, readMac, writeIpv4, writeMac, type Ipv4Addr, type MacAddr } from './addr.ts';

export const ARP_LEN = 28;

export const ArpOp = {
  Request: 1,
  Reply: 2,
} as const;

export type ArpDrop = 'truncated' | 'unsupported';

const HTYPE_ETHERNET = 1;
const PTYPE_IPV4 = 0x0800;

export class ArpView {
  private constructor(
    readonly buf: Uint8Array,
    readonly off: number,
  ) {}

  /**
   * Validates an ARP packet at `buf[off, off+len)`. Throws RangeError only if the range lies
   * outside `buf` (caller bug).
   */
  static checked(buf: Uint8Array, off: number, len: number): ArpView | ArpDrop {
    if (off < 0 || len < 0 || off + len > buf.length) throw new RangeError('ArpView: range outside buffer');
    if (len < 8) return 'truncated';
    const htype = (buf[off]! << 8) | buf[off + 1]!;
    const ptype = (buf[off + 2]! << 8) | buf[off + 3]!;
    if (htype !== HTYPE_ETHERNET || ptype !== PTYPE_IPV4 || buf[off + 4] !== 6 || buf[off + 5] !== 4) {
      return 'unsupported';
    }
    if (len < ARP_LEN) return 'truncated';
    return new ArpView(buf, off);
  }

  get op(): number {
    return (this.buf[this.off + 6]! << 8) | this.buf[this.off + 7]!;
  }

  get senderMac(): MacAddr {
    return readMac(this.buf, this.off + 8);
  }

  get senderIp(): Ipv4Addr {
    return readIpv4(this.buf, this.off + 14);
  }

  get targetMac(): MacAddr {
    return readMac(this.buf, this.off + 18);
  }

  get targetIp(): Ipv4Addr {
    return readIpv4(this.buf, this.off + 24);
  }
}

/** Writes a 28-byte Ethernet/IPv4 ARP packet at `off`; returns `off + ARP_LEN`. */
export function writeArp(
  buf: Uint8Array,
  off: number,
  op: number,
  senderMac: MacAddr,
  senderIp: Ipv4Addr,
  targetMac: MacAddr,
  targetIp: Ipv4Addr,
): number {
  buf[off] = 0;
  buf[off + 1] = HTYPE_ETHERNET;
  buf[off + 2] = PTYPE_IPV4 >>> 8;
  buf[off + 3] = PTYPE_IPV4 & 0xff;
  buf[off + 4] = 6;
  buf[off + 5] = 4;
  buf[off + 6] = op >>> 8;
  buf[off + 7] = op & 0xff;
  writeMac(buf, off + 8, senderMac);
  writeIpv4(buf, off + 14, senderIp);
  writeMac(buf, off + 18, targetMac);
  writeIpv4(buf, off + 24, targetIp);
  return off + ARP_LEN;
}
