/**
 * DHCP wire view and option writer: captured bytes decode, built messages round-trip, option
 * overload and long options (RFC 3396), the RFC 3397 search-list example, and garbage never throws.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { formatIpv4, formatMac, parseIpv4, readIpv4 } from '../../src/stack/wire/addr.ts';
import { BootpOff, DhcpMessage, DhcpMessageType, DhcpOpt, MAGIC_COOKIE } from '../../src/dhcp/message.ts';
import { DhcpOptionWriter, decodeDomainSearch, encodeDomainSearch, longOptionSize } from '../../src/dhcp/options.ts';

/** ISC dhclient 4.4.3 DHCPDISCOVER, captured in a network namespace (see dhcp-server.test.ts). */
const DHCLIENT_DISCOVER = Buffer.from(
  '01010600c7279c680000000000000000000000000000000000000000525400abcdef' + '00'.repeat(202) + '63825363' +
  '3501010c02766d370d011c02030f06770c2c2f1a792aff' + '00'.repeat(37),
  'hex',
);

function msg(bytes: Uint8Array): DhcpMessage {
  const m = DhcpMessage.parse(bytes);
  if (typeof m === 'string') throw new Error(m);
  return m;
}

/** A request skeleton: fixed header + cookie + the given option bytes. */
function withOptions(options: number[], overload?: { file?: number[]; sname?: number[] }): Uint8Array {
  const b = new Uint8Array(240 + options.length);
  b[0] = 1; b[1] = 1; b[2] = 6;
  b.set([0x63, 0x82, 0x53, 0x63], BootpOff.cookie);
  b.set(options, 240);
  if (overload?.file) b.set(overload.file, BootpOff.file);
  if (overload?.sname) b.set(overload.sname, BootpOff.sname);
  return b;
}

describe('DhcpMessage view', () => {
  it('decodes a captured dhclient DISCOVER', () => {
    expect(DHCLIENT_DISCOVER.length).toBe(300);
    const m = msg(DHCLIENT_DISCOVER);
    expect([m.op, m.htype, m.hlen, m.hops]).toEqual([1, 1, 6, 0]);
    expect(m.xid).toBe(0xc7279c68);
    expect(m.secs).toBe(0);
    expect(m.broadcast).toBe(false);
    expect([m.ciaddr, m.yiaddr, m.siaddr, m.giaddr]).toEqual([0, 0, 0, 0]);
    expect(formatMac(m.chaddrMac)).toBe('52:54:00:ab:cd:ef');
    expect(m.messageType).toBe(DhcpMessageType.discover);
    expect(Buffer.from(m.option(DhcpOpt.hostname)!).toString()).toBe('vm');
    expect([...m.option(DhcpOpt.parameterRequestList)!]).toEqual([1, 28, 2, 3, 15, 6, 119, 12, 44, 47, 26, 121, 42]);
    const codes: number[] = [];
    m.forEachOption((c) => codes.push(c));
    expect(codes).toEqual([53, 12, 55]);
    // Views, not copies: the option data is the message's own memory.
    expect(m.option(DhcpOpt.hostname)!.buffer).toBe(DHCLIENT_DISCOVER.buffer);
  });

  it('refuses short input, a bad cookie and option lengths that overrun', () => {
    expect(DhcpMessage.parse(DHCLIENT_DISCOVER.subarray(0, 239))).toBe('short');
    const cookie = Uint8Array.from(DHCLIENT_DISCOVER); cookie[239] = 0x64;
    expect(DhcpMessage.parse(cookie)).toBe('cookie');
    expect(DhcpMessage.parse(withOptions([53, 1]))).toBe('option-overrun');
    expect(DhcpMessage.parse(withOptions([53]))).toBe('option-overrun');
    expect(DhcpMessage.parse(withOptions([12, 5, 0x61, 0x62]))).toBe('option-overrun');
  });

  it('tolerates a missing End and stops at End', () => {
    expect(msg(withOptions([53, 1, 3])).messageType).toBe(3);
    expect(msg(withOptions([255, 53, 1, 3])).messageType).toBeUndefined();
    expect(msg(withOptions([0, 0, 53, 1, 3, 255, 12, 200])).messageType).toBe(3); // garbage after End is not options
  });

  it('mis-sized typed options read as absent', () => {
    const m = msg(withOptions([53, 2, 1, 1, 50, 3, 10, 0, 2, 57, 1, 5, 255]));
    expect(m.messageType).toBeUndefined();
    expect(m.optionIpv4(DhcpOpt.requestedIp)).toBeUndefined();
    expect(m.optionU16(DhcpOpt.maxMessageSize)).toBeUndefined();
    expect(m.option(DhcpOpt.pad)).toBeUndefined();
    expect(m.option(DhcpOpt.end)).toBeUndefined();
  });

  it('reads options from file and sname when overloaded (52), concatenating long options in RFC 3396 order', () => {
    const bytes = withOptions([52, 1, 3, 12, 2, 0x61, 0x62, 255], {
      file: [53, 1, 1, 12, 1, 0x63, 255],
      sname: [0, 12, 2, 0x64, 0x65, 255],
    });
    const m = msg(bytes);
    expect(m.overloaded).toBe(3);
    expect(m.messageType).toBe(1);
    expect(Buffer.from(m.option(DhcpOpt.hostname)!).toString()).toBe('abcde');
    // Not overloaded: the same file bytes are not options.
    const plain = withOptions([255], { file: [53, 1, 1, 255] });
    expect(msg(plain).messageType).toBeUndefined();
  });

  it('refuses a bad overload value and options overrunning the file area', () => {
    expect(DhcpMessage.parse(withOptions([52, 1, 4, 255]))).toBe('overload');
    expect(DhcpMessage.parse(withOptions([52, 2, 1, 1, 255]))).toBe('overload');
    const overrun = withOptions([52, 1, 1, 255]);
    overrun[BootpOff.file + 126] = 12; overrun[BootpOff.file + 127] = 5;
    expect(DhcpMessage.parse(overrun)).toBe('option-overrun');
  });

  it('builds a message that parses back to the same fields (emit into 0xa5-filled memory)', () => {
    const buf = new Uint8Array(400).fill(0xa5);
    const m = DhcpMessage.init(buf);
    m.op = 2; m.htype = 1; m.hlen = 6;
    m.xid = 0xdeadbeef; m.flags = 0x8000;
    m.ciaddr = parseIpv4('10.0.2.21')!; m.yiaddr = parseIpv4('10.0.2.22')!;
    m.siaddr = parseIpv4('10.0.2.2')!; m.giaddr = parseIpv4('10.9.9.9')!;
    const w = new DhcpOptionWriter(buf, BootpOff.options, 300);
    expect(w.u8(DhcpOpt.messageType, DhcpMessageType.ack)).toBe(true);
    expect(w.ipv4(DhcpOpt.serverId, parseIpv4('10.0.2.2')!)).toBe(true);
    expect(w.u16(DhcpOpt.maxMessageSize, 1500)).toBe(true);
    expect(w.u32(DhcpOpt.leaseTime, 86400)).toBe(true);
    expect(w.ipv4List(DhcpOpt.dnsServers, [parseIpv4('10.0.2.3')!, parseIpv4('1.1.1.1')!])).toBe(true);
    expect(w.ipv4List(DhcpOpt.router, [])).toBe(true); // nothing written
    w.end();
    expect(w.pos).toBe(240 + 3 + 6 + 4 + 6 + 10 + 1);
    expect(buf[w.pos]).toBe(0xa5); // nothing written past End
    expect(buf.subarray(44, 236).every((b) => b === 0)).toBe(true); // sname/file zeroed by init
    expect(readIpv4(buf, BootpOff.cookie)).toBe(MAGIC_COOKIE);
    const back = msg(buf.subarray(0, w.pos));
    expect([back.op, back.xid, back.flags, back.broadcast]).toEqual([2, 0xdeadbeef, 0x8000, true]);
    expect([back.ciaddr, back.yiaddr, back.siaddr, back.giaddr].map(formatIpv4)).toEqual(['10.0.2.21', '10.0.2.22', '10.0.2.2', '10.9.9.9']);
    expect(back.messageType).toBe(DhcpMessageType.ack);
    expect(back.optionU16(DhcpOpt.maxMessageSize)).toBe(1500);
    expect(back.optionU32(DhcpOpt.leaseTime)).toBe(86400);
    expect(formatIpv4(back.optionIpv4(DhcpOpt.serverId)!)).toBe('10.0.2.2');
    expect([...back.option(DhcpOpt.dnsServers)!]).toEqual([10, 0, 2, 3, 1, 1, 1, 1]);
    expect(back.option(DhcpOpt.router)).toBeUndefined();
  });
});

describe('DhcpOptionWriter', () => {
  it('splits values over 255 bytes into consecutive instances (RFC 3396)', () => {
    const data = Uint8Array.from({ length: 600 }, (_, i) => i & 0xff);
    const buf = new Uint8Array(1000);
    const w = new DhcpOptionWriter(buf, 240);
    expect(w.bytes(77, data)).toBe(true);
    expect(w.pos - 240).toBe(longOptionSize(600));
    expect(longOptionSize(600)).toBe(606);
    expect([buf[240], buf[241], buf[240 + 257], buf[240 + 257 + 1], buf[240 + 514 + 1]]).toEqual([77, 255, 77, 255, 90]);
    w.end();
    buf.set([0x63, 0x82, 0x53, 0x63], 236);
    expect([...msg(buf.subarray(0, w.pos)).option(77)!]).toEqual([...data]);
  });

  it('writes all of an option or none of it, always keeping room for End', () => {
    const buf = new Uint8Array(250);
    const w = new DhcpOptionWriter(buf, 240);
    expect(w.remaining).toBe(9);
    expect(w.bytes(12, new Uint8Array(8))).toBe(false);
    expect(w.pos).toBe(240);
    expect(w.bytes(12, new Uint8Array(7))).toBe(true);
    expect(w.remaining).toBe(0);
    expect(w.u8(53, 1)).toBe(false);
    w.end();
    expect(w.pos).toBe(250);
    expect(buf[249]).toBe(255);
  });

  it('writes a zero-length option as code + 0', () => {
    const buf = new Uint8Array(300);
    const w = new DhcpOptionWriter(buf, 240);
    expect(w.bytes(80, new Uint8Array(0))).toBe(true);
    expect([buf[240], buf[241], w.pos]).toEqual([80, 0, 242]);
  });
});

describe('domain search option (119, RFC 3397)', () => {
  // RFC 3397 §2 example: "eng.apple.com." and "marketing.apple.com.", split into three 9-byte options.
  const RFC3397_EXAMPLE = [
    119, 9, 3, 0x65, 0x6e, 0x67, 5, 0x61, 0x70, 0x70, 0x6c,
    119, 9, 0x65, 3, 0x63, 0x6f, 0x6d, 0, 9, 0x6d, 0x61,
    119, 9, 0x72, 0x6b, 0x65, 0x74, 0x69, 0x6e, 0x67, 0xc0, 0x04,
  ];

  it('encodes the RFC example with the same compression pointer', () => {
    const data = encodeDomainSearch(['eng.apple.com.', 'marketing.apple.com.'])!;
    expect(data.length).toBe(27);
    const buf = new Uint8Array(300);
    const w = new DhcpOptionWriter(buf, 240);
    expect(w.bytes(DhcpOpt.domainSearch, data, 9)).toBe(true);
    expect([...buf.subarray(240, w.pos)]).toEqual(RFC3397_EXAMPLE);
  });

  it('decodes the RFC example back to the names', () => {
    const data = RFC3397_EXAMPLE.filter((_, i) => i % 11 >= 2);
    expect(decodeDomainSearch(Uint8Array.from(data))).toEqual(['eng.apple.com', 'marketing.apple.com']);
  });

  it('compresses case-insensitively and whole repeated names to one pointer', () => {
    const data = encodeDomainSearch(['a.example.com', 'B.EXAMPLE.COM', 'a.example.com'])!;
    // a.example.com = 1+1+1+7+1+3+1 = 15 bytes; then 1+1 ("B") + pointer 2; then pointer 2.
    expect(data.length).toBe(15 + 2 + 2 + 2);
    expect([...data.subarray(15)]).toEqual([1, 0x42, 0xc0, 2, 0xc0, 0]);
    expect(decodeDomainSearch(data)).toEqual(['a.example.com', 'B.example.com', 'a.example.com']);
  });

  it('refuses invalid names', () => {
    expect(encodeDomainSearch(['a..b'])).toBeUndefined();
    expect(encodeDomainSearch([''])).toBeUndefined();
    expect(encodeDomainSearch(['x'.repeat(64) + '.com'])).toBeUndefined();
    expect(encodeDomainSearch(['é.com'])).toBeUndefined();
    expect(encodeDomainSearch([])!.length).toBe(0);
  });

  it('the decoder rejects forward and looping pointers', () => {
    expect(decodeDomainSearch(Uint8Array.of(0xc0, 0))).toBeUndefined();
    expect(decodeDomainSearch(Uint8Array.of(1, 0x61, 0xc0, 0))).toBeUndefined();
    expect(decodeDomainSearch(Uint8Array.of(1, 0x61))).toBeUndefined();
  });

  it('encode ∘ decode is the identity for valid lists', () => {
    const label = fc.stringMatching(/^[a-z0-9-]{1,12}$/);
    const name = fc.array(label, { minLength: 1, maxLength: 4 }).map((ls) => ls.join('.'));
    fc.assert(fc.property(fc.array(name, { maxLength: 8 }), (names) => {
      expect(decodeDomainSearch(encodeDomainSearch(names)!)).toEqual(names);
    }));
  });
});

describe('robustness', () => {
  it('parse and every accessor never throw on arbitrary bytes', () => {
    const cookieFirst = fc.uint8Array({ maxLength: 400 }).map((tail) => {
      const b = new Uint8Array(240 + tail.length);
      b.set([0x63, 0x82, 0x53, 0x63], 236);
      b.set(tail, 240);
      return b;
    });
    fc.assert(fc.property(fc.oneof(fc.uint8Array({ maxLength: 600 }), cookieFirst), fc.uint8Array({ minLength: 192, maxLength: 192 }), (bytes, fileSname) => {
      if (bytes.length >= 236) bytes.set(fileSname, 44);
      const m = DhcpMessage.parse(bytes);
      if (typeof m === 'string') return;
      let total = 0;
      m.forEachOption((_c, d) => { total += d.length; expect(d.byteOffset + d.length).toBeLessThanOrEqual(bytes.byteOffset + bytes.length); });
      for (let code = 1; code < 255; code++) m.option(code);
      void [m.messageType, m.xid, m.flags, m.chaddrMac, m.optionU16(57), m.optionIpv4(50), total];
    }), { numRuns: 3000 });
  });
});
