/**
 * DHCP/BOOTP message view (RFC 2131 §2, RFC 2132, RFC 3396 long options).
 *
 * Theory of operation: a `DhcpMessage` is a view over the UDP payload a guest sent (or a reply
 * being built); nothing is copied. `DhcpMessage.parse` validates the whole structure once — the
 * 236-byte fixed header, the magic cookie, and every option's length in every option area (the
 * `options` field, then `file` and `sname` when option 52 "overload" says they carry options) —
 * so that later accessors can walk options without bounds checks that could fail. An option
 * whose length would run past its area is malformed input; a missing End (255) is tolerated as
 * "end of area" because some clients stop at the end of the buffer.
 *
 * Options are looked up by walking the areas on demand: a DHCP message has a few dozen options
 * at most and a server looks at each once or twice, so a walk is cheaper than building an index.
 * An option that appears more than once is one long option split into pieces (RFC 3396): the
 * pieces are concatenated in area order (options, file, sname), which is the one case that
 * allocates.
 *
 * The view does not judge semantics (op, htype, chaddr): the server decides what it accepts, and
 * tests parse the server's replies with the same view.
 */
import { readIpv4, readMac, writeIpv4, type Ipv4Addr, type MacAddr } from '../stack/wire/addr.ts';

export const DHCP_SERVER_PORT = 67;
export const DHCP_CLIENT_PORT = 68;

export const BootOp = { request: 1, reply: 2 } as const;
export const HTYPE_ETHERNET = 1;
export const HLEN_ETHERNET = 6;

/** Option 53 values (RFC 2132 §9.6). Unknown values are data, not errors. */
export const DhcpMessageType = {
  discover: 1,
  offer: 2,
  request: 3,
  decline: 4,
  ack: 5,
  nak: 6,
  release: 7,
  inform: 8,
} as const;

/** Option codes used by vmnat (RFC 2132 unless noted). */
export const DhcpOpt = {
  pad: 0,
  subnetMask: 1,
  router: 3,
  dnsServers: 6,
  hostname: 12,
  domainName: 15,
  interfaceMtu: 26,
  broadcastAddress: 28,
  requestedIp: 50,
  leaseTime: 51,
  overload: 52,
  messageType: 53,
  serverId: 54,
  parameterRequestList: 55,
  message: 56,
  maxMessageSize: 57,
  renewalTime: 58,
  rebindingTime: 59,
  vendorClassId: 60,
  clientId: 61,
  tftpServerName: 66,
  bootfileName: 67,
  domainSearch: 119, // RFC 3397
  /** iPXE's own settings, encapsulated ("Etherboot" option space; iPXE's include/ipxe/dhcp.h). */
  ipxeEncap: 175,
  end: 255,
} as const;

/** Byte offsets of the fixed BOOTP header (RFC 2131 Figure 1). */
export const BootpOff = {
  op: 0,
  htype: 1,
  hlen: 2,
  hops: 3,
  xid: 4,
  secs: 8,
  flags: 10,
  ciaddr: 12,
  yiaddr: 16,
  siaddr: 20,
  giaddr: 24,
  chaddr: 28,
  sname: 44,
  file: 108,
  cookie: 236,
  options: 240,
} as const;

export const CHADDR_LEN = 16;
export const SNAME_LEN = 64;
export const FILE_LEN = 128;
/** Fixed header plus magic cookie: the smallest DHCP (not BOOTP) message. */
export const DHCP_MIN_LEN = 240;
/** RFC 1542 §3.5 / RFC 951: BOOTP messages are at least 300 bytes; some relays and old clients insist. */
export const BOOTP_MIN_LEN = 300;
export const MAGIC_COOKIE = 0x6382_5363;
/** The only defined bit of `flags` (RFC 2131 §2). */
export const FLAG_BROADCAST = 0x8000;

/** Why `DhcpMessage.parse` refused a buffer. */
export type DhcpParseError = 'short' | 'cookie' | 'option-overrun' | 'overload';

/** Overload bits (option 52 values 1..3): which of file/sname also hold options. */
const OVERLOAD_FILE = 1;
const OVERLOAD_SNAME = 2;

export class DhcpMessage {
  private constructor(
    /** The message bytes; `length` of them belong to the message. */
    readonly buf: Uint8Array,
    /** Option 52's value (0 when absent); only meaningful after `parse`. */
    private readonly overload: number,
  ) {}

  /**
   * Validates `buf` as a DHCP message (fixed header, cookie, every option length in every area).
   * Returns the view, or the reason it is malformed. Never throws.
   */
  static parse(buf: Uint8Array): DhcpMessage | DhcpParseError {
    if (buf.length < DHCP_MIN_LEN) return 'short';
    if (readIpv4(buf, BootpOff.cookie) !== MAGIC_COOKIE) return 'cookie';
    // Main area first: it alone may carry option 52.
    let overload = 0;
    let p: number = BootpOff.options;
    const end = buf.length;
    while (p < end) {
      const code = buf[p]!;
      if (code === DhcpOpt.pad) { p++; continue; }
      if (code === DhcpOpt.end) break;
      if (p + 2 > end) return 'option-overrun';
      const len = buf[p + 1]!;
      if (p + 2 + len > end) return 'option-overrun';
      if (code === DhcpOpt.overload) {
        if (len !== 1) return 'overload';
        const v = buf[p + 2]!;
        if (v < 1 || v > 3) return 'overload';
        overload = v;
      }
      p += 2 + len;
    }
    if (overload & OVERLOAD_FILE && !validArea(buf, BootpOff.file, BootpOff.file + FILE_LEN)) return 'option-overrun';
    if (overload & OVERLOAD_SNAME && !validArea(buf, BootpOff.sname, BootpOff.sname + SNAME_LEN)) return 'option-overrun';
    return new DhcpMessage(buf, overload);
  }

  /**
   * A writable view over a fresh reply buffer (at least `DHCP_MIN_LEN` bytes): zeroes the fixed
   * header and writes the magic cookie. Options are then written from `BootpOff.options`.
   */
  static init(buf: Uint8Array): DhcpMessage {
    if (buf.length < DHCP_MIN_LEN) throw new RangeError(`DHCP buffer too small: ${buf.length}`);
    buf.fill(0, 0, DHCP_MIN_LEN);
    writeIpv4(buf, BootpOff.cookie, MAGIC_COOKIE);
    return new DhcpMessage(buf, 0);
  }

  get op(): number { return this.buf[BootpOff.op]!; }
  set op(v: number) { this.buf[BootpOff.op] = v; }
  get htype(): number { return this.buf[BootpOff.htype]!; }
  set htype(v: number) { this.buf[BootpOff.htype] = v; }
  get hlen(): number { return this.buf[BootpOff.hlen]!; }
  set hlen(v: number) { this.buf[BootpOff.hlen] = v; }
  get hops(): number { return this.buf[BootpOff.hops]!; }
  get xid(): number { return readIpv4(this.buf, BootpOff.xid); }
  set xid(v: number) { writeIpv4(this.buf, BootpOff.xid, v); }
  get secs(): number { return (this.buf[BootpOff.secs]! << 8) | this.buf[BootpOff.secs + 1]!; }
  get flags(): number { return (this.buf[BootpOff.flags]! << 8) | this.buf[BootpOff.flags + 1]!; }
  set flags(v: number) {
    this.buf[BootpOff.flags] = (v >>> 8) & 0xff;
    this.buf[BootpOff.flags + 1] = v & 0xff;
  }
  /** The client asked for broadcast replies (it cannot receive unicast before it has an address). */
  get broadcast(): boolean { return (this.flags & FLAG_BROADCAST) !== 0; }
  get ciaddr(): Ipv4Addr { return readIpv4(this.buf, BootpOff.ciaddr); }
  set ciaddr(v: Ipv4Addr) { writeIpv4(this.buf, BootpOff.ciaddr, v); }
  get yiaddr(): Ipv4Addr { return readIpv4(this.buf, BootpOff.yiaddr); }
  set yiaddr(v: Ipv4Addr) { writeIpv4(this.buf, BootpOff.yiaddr, v); }
  get siaddr(): Ipv4Addr { return readIpv4(this.buf, BootpOff.siaddr); }
  set siaddr(v: Ipv4Addr) { writeIpv4(this.buf, BootpOff.siaddr, v); }
  get giaddr(): Ipv4Addr { return readIpv4(this.buf, BootpOff.giaddr); }
  set giaddr(v: Ipv4Addr) { writeIpv4(this.buf, BootpOff.giaddr, v); }
  /** The first 6 bytes of chaddr as a MAC (meaningful when htype=1, hlen=6). */
  get chaddrMac(): MacAddr { return readMac(this.buf, BootpOff.chaddr); }
  /** All 16 chaddr bytes, as a view (echoed verbatim in replies). */
  get chaddr(): Uint8Array { return this.buf.subarray(BootpOff.chaddr, BootpOff.chaddr + CHADDR_LEN); }
  /** Option 52's value: 0 none, 1 file, 2 sname, 3 both carry options. */
  get overloaded(): number { return this.overload; }

  /**
   * The data of option `code`, or undefined when absent. A view into the message unless the
   * option was split into several pieces (RFC 3396), in which case the pieces are concatenated.
   */
  option(code: number): Uint8Array | undefined {
    if (code === DhcpOpt.pad || code === DhcpOpt.end) return undefined;
    const buf = this.buf;
    let count = 0;
    let total = 0;
    let first = 0;
    let firstLen = 0;
    for (let area = 0; area < 3; area++) {
      const end = this.areaEnd(area);
      let p = this.areaStart(area);
      while (p < end) {
        const c = buf[p]!;
        if (c === DhcpOpt.pad) { p++; continue; }
        if (c === DhcpOpt.end) break;
        const len = buf[p + 1]!;
        if (c === code) {
          if (count === 0) { first = p + 2; firstLen = len; }
          count++;
          total += len;
        }
        p += 2 + len;
      }
    }
    if (count === 0) return undefined;
    if (count === 1) return buf.subarray(first, first + firstLen);
    const out = new Uint8Array(total);
    let o = 0;
    for (let area = 0; area < 3; area++) {
      const end = this.areaEnd(area);
      let p = this.areaStart(area);
      while (p < end) {
        const c = buf[p]!;
        if (c === DhcpOpt.pad) { p++; continue; }
        if (c === DhcpOpt.end) break;
        const len = buf[p + 1]!;
        if (c === code) { out.set(buf.subarray(p + 2, p + 2 + len), o); o += len; }
        p += 2 + len;
      }
    }
    return out;
  }

  /** Calls `fn` for each option instance in wire order (pieces of long options separately). */
  forEachOption(fn: (code: number, data: Uint8Array) => void): void {
    const buf = this.buf;
    for (let area = 0; area < 3; area++) {
      const end = this.areaEnd(area);
      let p = this.areaStart(area);
      while (p < end) {
        const c = buf[p]!;
        if (c === DhcpOpt.pad) { p++; continue; }
        if (c === DhcpOpt.end) break;
        const len = buf[p + 1]!;
        fn(c, buf.subarray(p + 2, p + 2 + len));
        p += 2 + len;
      }
    }
  }

  /** Option 53, or undefined when absent or not one byte long (a plain BOOTP message). */
  get messageType(): number | undefined {
    const d = this.option(DhcpOpt.messageType);
    return d?.length === 1 ? d[0] : undefined;
  }

  /** An option holding exactly one IPv4 address (50, 54, …); undefined when absent or mis-sized. */
  optionIpv4(code: number): Ipv4Addr | undefined {
    const d = this.option(code);
    return d?.length === 4 ? readIpv4(d, 0) : undefined;
  }

  /** An option holding one 16-bit number (57); undefined when absent or mis-sized. */
  optionU16(code: number): number | undefined {
    const d = this.option(code);
    return d?.length === 2 ? (d[0]! << 8) | d[1]! : undefined;
  }

  /** An option holding one 32-bit number (51, 58, 59); undefined when absent or mis-sized. */
  optionU32(code: number): number | undefined {
    const d = this.option(code);
    return d?.length === 4 ? readIpv4(d, 0) : undefined;
  }

  /** Start of option area 0 (options), 1 (file) or 2 (sname); areas not in use are empty. */
  private areaStart(i: number): number {
    return i === 0 ? BootpOff.options : i === 1 ? BootpOff.file : BootpOff.sname;
  }

  private areaEnd(i: number): number {
    if (i === 0) return this.buf.length;
    if (i === 1) return this.overload & OVERLOAD_FILE ? BootpOff.file + FILE_LEN : 0;
    return this.overload & OVERLOAD_SNAME ? BootpOff.sname + SNAME_LEN : 0;
  }
}

/** True when every option in buf[start, end) fits inside it (pad and end need one byte). */
function validArea(buf: Uint8Array, start: number, end: number): boolean {
  let p = start;
  while (p < end) {
    const code = buf[p]!;
    if (code === DhcpOpt.pad) { p++; continue; }
    if (code === DhcpOpt.end) return true;
    if (p + 2 > end) return false;
    p += 2 + buf[p + 1]!;
    if (p > end) return false;
  }
  return true;
}
