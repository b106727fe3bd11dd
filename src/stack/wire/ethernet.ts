/**
 * Ethernet II frames (no FCS, no preamble: what every link delivers).
 *
 * Theory of operation: a frame is 14 bytes of header (destination MAC, source MAC, EtherType)
 * and a payload. Links strip the FCS and may or may not strip the padding to 60 bytes, so the
 * payload may be longer than what the inner protocol claims: inner views trust their own length
 * fields (IPv4 total length, ARP's fixed size), never the frame length. 802.1Q tags are not
 * unwrapped here: a tagged frame shows EtherType VLAN and is the caller's to drop or count.
 */

import { readMac, writeMac, type MacAddr } from './addr.ts';

export const ETH_HLEN = 14;

export const EtherType = {
  IPv4: 0x0800,
  ARP: 0x0806,
  VLAN: 0x8100,
  IPv6: 0x86dd,
} as const;
/** Any 16-bit value: unknown EtherTypes are data, not errors. */
export type EtherType = number;

export type EthernetDrop = 'truncated';

export class EthernetView {
  /** Offset of the payload in `buf`. */
  readonly payloadOff: number;
  /** Bytes after the header, including any link padding. */
  readonly payloadLen: number;

  private constructor(
    readonly buf: Uint8Array,
    readonly off: number,
    readonly len: number,
  ) {
    this.payloadOff = off + ETH_HLEN;
    this.payloadLen = len - ETH_HLEN;
  }

  /**
   * Validates `buf[off, off+len)` as a frame. Throws RangeError only if the range lies outside
   * `buf` (caller bug); guest bytes yield a view or a drop reason.
   */
  static checked(buf: Uint8Array, off: number, len: number): EthernetView | EthernetDrop {
    if (off < 0 || len < 0 || off + len > buf.length) throw new RangeError('EthernetView: range outside buffer');
    if (len < ETH_HLEN) return 'truncated';
    return new EthernetView(buf, off, len);
  }

  get dst(): MacAddr {
    return readMac(this.buf, this.off);
  }

  get src(): MacAddr {
    return readMac(this.buf, this.off + 6);
  }

  get etherType(): number {
    return (this.buf[this.off + 12]! << 8) | this.buf[this.off + 13]!;
  }
}

/** Writes a 14-byte Ethernet header at `off`; returns the offset of the payload. */
export function writeEthernet(buf: Uint8Array, off: number, dst: MacAddr, src: MacAddr, etherType: number): number {
  writeMac(buf, off, dst);
  writeMac(buf, off + 6, src);
  buf[off + 12] = etherType >>> 8;
  buf[off + 13] = etherType & 0xff;
  return off + ETH_HLEN;
}
