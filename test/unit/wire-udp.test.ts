import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import dnsPacket from 'dns-packet';
import { UDP_HLEN, UdpView, writeUdp } from '../../src/stack/wire/udp.ts';
import { IPV4_DF, IpProto, Ipv4View, writeIpv4 } from '../../src/stack/wire/ipv4.ts';
import { EtherType, writeEthernet } from '../../src/stack/wire/ethernet.ts';
import { foldChecksum, pseudoHeaderSum, sumBytes } from '../../src/stack/wire/checksum.ts';
import { IP_A, IP_B, MAC_A, MAC_B, UDP_DNS_QUERY, UDP_IP_OPTIONS, a5, guarded, toHex } from './wire-captures.ts';

function udp(frame: Uint8Array): UdpView {
  const ip = Ipv4View.checked(frame, 14, frame.length - 14);
  if (typeof ip === 'string') throw new Error(ip);
  const v = UdpView.checked(frame, ip.payloadOff, ip.payloadLen, ip.src, ip.dst);
  if (typeof v === 'string') throw new Error(v);
  return v;
}

describe('UdpView', () => {
  it('decodes the captured DNS query (busybox nslookup example.com)', () => {
    const v = udp(UDP_DNS_QUERY);
    expect([v.srcPort, v.dstPort, v.length, v.checksum]).toEqual([0xc431, 53, 37, 0x8916]);
    expect([v.payloadOff, v.payloadLen]).toEqual([42, 29]);
    const msg = dnsPacket.decode(Buffer.from(UDP_DNS_QUERY.subarray(v.payloadOff, v.payloadOff + v.payloadLen)));
    expect(msg.questions?.[0]).toMatchObject({ name: 'example.com', type: 'A' });
  });

  it('decodes the UDP datagram carried behind IP options', () => {
    const v = udp(UDP_IP_OPTIONS);
    expect([v.dstPort, v.length, v.payloadOff, v.payloadLen]).toEqual([9999, 16, 54, 8]);
  });

  it('emits the captured DNS query frame byte for byte', () => {
    const v = udp(UDP_DNS_QUERY);
    const payload = UDP_DNS_QUERY.subarray(v.payloadOff);
    const out = a5(UDP_DNS_QUERY.length + 2);
    out.set(payload, 14 + 20 + UDP_HLEN);
    let o = writeEthernet(out, 0, MAC_B, MAC_A, EtherType.IPv4);
    o = writeIpv4(out, o, 20 + UDP_HLEN + payload.length, 0xf1f6, IPV4_DF, 64, IpProto.UDP, IP_A, IP_B);
    o = writeUdp(out, o, 0xc431, 53, payload.length, IP_A, IP_B);
    expect(o).toBe(UDP_DNS_QUERY.length);
    expect(toHex(out.subarray(0, o))).toBe(toHex(UDP_DNS_QUERY));
    expect(toHex(out.subarray(o))).toBe('a5a5');
  });

  it('parse(emit(x)) is the identity', () => {
    fc.assert(
      fc.property(fc.nat(0xffff), fc.nat(0xffff), fc.uint8Array({ maxLength: 200, size: 'max' }), fc.nat(0xffffffff), fc.nat(0xffffffff), (sp, dp, payload, s, d) => {
        const buf = a5(UDP_HLEN + payload.length);
        buf.set(payload, UDP_HLEN);
        expect(writeUdp(buf, 0, sp, dp, payload.length, s, d)).toBe(buf.length);
        const v = UdpView.checked(buf, 0, buf.length, s, d);
        if (typeof v === 'string') throw new Error(v);
        expect([v.srcPort, v.dstPort, v.length, v.payloadLen]).toEqual([sp, dp, buf.length, payload.length]);
        expect(v.checksum).not.toBe(0);
      }),
    );
  });

  it('sends a computed checksum of 0 as 0xffff, which verifies', () => {
    const buf = a5(UDP_HLEN + 2);
    buf[8] = 0;
    buf[9] = 0;
    writeUdp(buf, 0, 1000, 2000, 2, IP_A, IP_B);
    // Choose the payload word that makes the ones-complement sum 0xffff, i.e. a computed checksum of 0.
    const c0 = (buf[6]! << 8) | buf[7]!;
    buf[8] = c0 >>> 8;
    buf[9] = c0 & 0xff;
    writeUdp(buf, 0, 1000, 2000, 2, IP_A, IP_B);
    expect((buf[6]! << 8) | buf[7]!).toBe(0xffff);
    expect(typeof UdpView.checked(buf, 0, buf.length, IP_A, IP_B)).toBe('object');
  });

  it('does not verify a zero checksum ("none"), and rejects a wrong one', () => {
    const b = UDP_DNS_QUERY.slice(34);
    b[20] = b[20]! ^ 0xff; // corrupt the payload
    expect(UdpView.checked(b, 0, b.length, IP_A, IP_B)).toBe('badChecksum');
    b[6] = 0;
    b[7] = 0;
    expect(typeof UdpView.checked(b, 0, b.length, IP_A, IP_B)).toBe('object');
    // Right bytes, wrong pseudo-header (as after a bad NAT rewrite).
    const c = UDP_DNS_QUERY.slice(34);
    expect(UdpView.checked(c, 0, c.length, IP_A, 0x0a630003)).toBe('badChecksum');
  });

  it('checks the length field and ends the datagram there', () => {
    const b = UDP_DNS_QUERY.slice(34); // 37 bytes
    for (let len = 0; len < UDP_HLEN; len++) expect(UdpView.checked(b, 0, len, IP_A, IP_B)).toBe('truncated');
    for (let len = UDP_HLEN; len < b.length; len++) expect(UdpView.checked(b, 0, len, IP_A, IP_B)).toBe('badLength');
    const small = b.slice();
    small[5] = 7;
    expect(UdpView.checked(small, 0, small.length, IP_A, IP_B)).toBe('badLength');
    // Trailing bytes after the UDP length are ignored (not part of the checksum either).
    const longer = new Uint8Array(b.length + 5).fill(0x77);
    longer.set(b);
    const v = UdpView.checked(longer, 0, longer.length, IP_A, IP_B);
    if (typeof v === 'string') throw new Error(v);
    expect(v.payloadLen).toBe(29);
  });

  it('arbitrary bytes never throw, and getters stay inside the range (checksum repaired)', () => {
    let views = 0;
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 80, size: 'max' }), fc.nat(80), fc.nat(3), fc.nat(6), (bytes, ulenRaw, repair, pad) => {
        const ulen = ulenRaw % (bytes.length + 1);
        if (repair > 0 && bytes.length >= 8) {
          bytes[4] = ulen >>> 8;
          bytes[5] = ulen & 0xff;
          bytes[6] = 0;
          bytes[7] = 0;
          if (ulen >= 8 && ulen <= bytes.length) {
            const ck = foldChecksum(sumBytes(bytes, 0, ulen, pseudoHeaderSum(IP_A, IP_B, 17, ulen)));
            bytes[6] = ck >>> 8;
            bytes[7] = ck & 0xff;
          }
        }
        const buf = a5(bytes.length + 2 * pad);
        buf.set(bytes, pad);
        const v = UdpView.checked(guarded(buf, pad, pad + bytes.length), pad, bytes.length, IP_A, IP_B);
        if (typeof v === 'string') return;
        views++;
        expect([v.srcPort, v.dstPort, v.length, v.checksum, v.payloadOff, v.payloadLen].every(Number.isInteger)).toBe(true);
        expect(v.payloadOff + v.payloadLen).toBeLessThanOrEqual(pad + bytes.length);
      }),
      { numRuns: 1000 },
    );
    expect(views).toBeGreaterThan(200);
  });
});
