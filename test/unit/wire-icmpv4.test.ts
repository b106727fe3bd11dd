import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  ICMP_HLEN,
  IcmpType,
  IcmpUnreachCode,
  Icmpv4View,
  icmpQuoteLen,
  writeIcmpEcho,
  writeIcmpError,
} from '../../src/stack/wire/icmpv4.ts';
import { IpProto, Ipv4View, writeIpv4 } from '../../src/stack/wire/ipv4.ts';
import { EtherType, writeEthernet } from '../../src/stack/wire/ethernet.ts';
import { foldChecksum, sumBytes } from '../../src/stack/wire/checksum.ts';
import {
  ICMP_ECHO_REPLY,
  ICMP_ECHO_REQUEST,
  ICMP_PORT_UNREACH,
  ICMP_PORT_UNREACH_IP_OPTIONS,
  IP_A,
  IP_B,
  MAC_A,
  MAC_B,
  UDP_DNS_QUERY,
  a5,
  guarded,
  toHex,
} from './wire-captures.ts';

function icmp(frame: Uint8Array): { ip: Ipv4View; icmp: Icmpv4View } {
  const ip = Ipv4View.checked(frame, 14, frame.length - 14);
  if (typeof ip === 'string') throw new Error(ip);
  const v = Icmpv4View.checked(frame, ip.payloadOff, ip.payloadLen);
  if (typeof v === 'string') throw new Error(v);
  return { ip, icmp: v };
}

describe('Icmpv4View', () => {
  it('decodes the captured echo request and reply (busybox ping)', () => {
    const req = icmp(ICMP_ECHO_REQUEST).icmp;
    expect([req.type, req.code, req.checksum, req.ident, req.seq]).toEqual([IcmpType.EchoRequest, 0, 0x5bdd, 0x1588, 0]);
    expect(req.restOfHeader).toBe(0x15880000);
    expect(req.payloadLen).toBe(56);
    const rep = icmp(ICMP_ECHO_REPLY).icmp;
    expect([rep.type, rep.code, rep.ident, rep.seq]).toEqual([IcmpType.EchoReply, 0, 0x1588, 0]);
    expect(toHex(ICMP_ECHO_REPLY.subarray(rep.payloadOff, rep.payloadOff + rep.payloadLen))).toBe(
      toHex(ICMP_ECHO_REQUEST.subarray(req.payloadOff, req.payloadOff + req.payloadLen)),
    );
  });

  it('decodes the captured port unreachable and its quote of the DNS query', () => {
    const { icmp: v } = icmp(ICMP_PORT_UNREACH);
    expect([v.type, v.code, v.restOfHeader]).toEqual([IcmpType.DestUnreachable, IcmpUnreachCode.Port, 0]);
    const quoted = Ipv4View.checked(ICMP_PORT_UNREACH, v.payloadOff, v.payloadLen);
    if (typeof quoted === 'string') throw new Error(quoted);
    expect([quoted.src, quoted.dst, quoted.protocol, quoted.ident]).toEqual([IP_A, IP_B, IpProto.UDP, 0xf1f6]);
    // Linux quotes the whole (short) datagram: it is the DNS query frame's IP part.
    expect(toHex(ICMP_PORT_UNREACH.subarray(v.payloadOff))).toBe(toHex(UDP_DNS_QUERY.subarray(14)));
  });

  it('decodes an error whose outer header has options; the quoted header may not verify', () => {
    const { ip, icmp: v } = icmp(ICMP_PORT_UNREACH_IP_OPTIONS);
    expect(ip.optionsLen).toBe(12);
    expect([v.type, v.code]).toEqual([3, 3]);
    // Linux quotes the header after filling in its own record-route slot without fixing the
    // checksum: a real quote can fail verification, so error handling must not require it.
    expect(Ipv4View.checked(ICMP_PORT_UNREACH_IP_OPTIONS, v.payloadOff, v.payloadLen)).toBe('badChecksum');
  });

  it('emits the captured echo reply frame byte for byte', () => {
    const req = icmp(ICMP_ECHO_REQUEST).icmp;
    const out = a5(ICMP_ECHO_REPLY.length + 3);
    // Build once: payload in place first, then headers.
    out.set(ICMP_ECHO_REQUEST.subarray(req.payloadOff, req.payloadOff + req.payloadLen), 14 + 20 + 8);
    let o = writeEthernet(out, 0, MAC_A, MAC_B, EtherType.IPv4);
    o = writeIpv4(out, o, 84, 0xb17b, 0, 64, IpProto.ICMP, IP_B, IP_A);
    o = writeIcmpEcho(out, o, IcmpType.EchoReply, req.ident, req.seq, req.payloadLen);
    expect(o).toBe(ICMP_ECHO_REPLY.length);
    expect(toHex(out.subarray(0, o))).toBe(toHex(ICMP_ECHO_REPLY));
    expect(toHex(out.subarray(o))).toBe('a5a5a5');
  });

  it('emits the captured port unreachable frame byte for byte', () => {
    const quote = UDP_DNS_QUERY.subarray(14);
    const out = a5(ICMP_PORT_UNREACH.length + 2);
    out.set(quote, 14 + 20 + 8);
    let o = writeEthernet(out, 0, MAC_A, MAC_B, EtherType.IPv4);
    o = writeIpv4(out, o, 20 + 8 + quote.length, 0xb1c3, 0, 64, IpProto.ICMP, IP_B, IP_A, 0xc0);
    o = writeIcmpError(out, o, IcmpType.DestUnreachable, IcmpUnreachCode.Port, quote.length);
    expect(toHex(out.subarray(0, o))).toBe(toHex(ICMP_PORT_UNREACH));
    expect(toHex(out.subarray(o))).toBe('a5a5');
  });

  it('writes restOfHeader (e.g. the next-hop MTU of FragNeeded)', () => {
    const buf = a5(8 + 28);
    buf.set(UDP_DNS_QUERY.subarray(14, 14 + 28), 8);
    writeIcmpError(buf, 0, IcmpType.DestUnreachable, IcmpUnreachCode.FragNeeded, 28, 1400);
    const v = Icmpv4View.checked(buf, 0, buf.length);
    if (typeof v === 'string') throw new Error(v);
    expect([v.code, v.restOfHeader, v.nextHopMtu]).toEqual([4, 1400, 1400]);
    writeIcmpError(buf, 0, IcmpType.ParameterProblem, 0, 28, 0xfe_000000);
    const p = Icmpv4View.checked(buf, 0, buf.length);
    if (typeof p === 'string') throw new Error(p);
    expect(p.restOfHeader).toBe(0xfe000000);
  });

  it('icmpQuoteLen: header + 8 bytes, or the whole datagram if shorter', () => {
    expect(icmpQuoteLen(20, 57)).toBe(28);
    expect(icmpQuoteLen(32, 48)).toBe(40);
    expect(icmpQuoteLen(20, 24)).toBe(24);
  });

  it('parse(emit(x)) is the identity for echo messages', () => {
    fc.assert(
      fc.property(fc.constantFrom(0, 8), fc.nat(0xffff), fc.nat(0xffff), fc.uint8Array({ maxLength: 100, size: 'max' }), (type, ident, seq, payload) => {
        const buf = a5(ICMP_HLEN + payload.length);
        buf.set(payload, ICMP_HLEN);
        expect(writeIcmpEcho(buf, 0, type, ident, seq, payload.length)).toBe(buf.length);
        const v = Icmpv4View.checked(buf, 0, buf.length);
        if (typeof v === 'string') throw new Error(v);
        expect([v.type, v.code, v.ident, v.seq, v.payloadLen]).toEqual([type, 0, ident, seq, payload.length]);
      }),
    );
  });

  it('truncation: below 8 bytes "truncated"; otherwise a reason or a consistent view, never a throw', () => {
    const { ip } = icmp(ICMP_PORT_UNREACH);
    for (let len = 0; len < ip.payloadLen; len++) {
      const r = Icmpv4View.checked(ICMP_PORT_UNREACH, ip.payloadOff, len);
      if (len < 8) expect(r).toBe('truncated');
      else if (typeof r !== 'string') expect(r.payloadLen).toBe(len - 8);
    }
    // The quote ends in non-zero bytes, so cutting the last byte must break the checksum.
    expect(Icmpv4View.checked(ICMP_PORT_UNREACH, ip.payloadOff, ip.payloadLen - 1)).toBe('badChecksum');
  });

  it('rejects a corrupted checksum', () => {
    const b = ICMP_ECHO_REQUEST.slice(34);
    b[3] = b[3]! ^ 1;
    expect(Icmpv4View.checked(b, 0, b.length)).toBe('badChecksum');
  });

  it('arbitrary bytes never throw, and getters stay inside the range (checksum repaired)', () => {
    let views = 0;
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 80, size: 'max' }), fc.nat(3), fc.nat(6), (bytes, repair, pad) => {
        if (repair > 0 && bytes.length >= 8) {
          bytes[2] = 0;
          bytes[3] = 0;
          const ck = foldChecksum(sumBytes(bytes, 0, bytes.length));
          bytes[2] = ck >>> 8;
          bytes[3] = ck & 0xff;
        }
        const buf = a5(bytes.length + 2 * pad);
        buf.set(bytes, pad);
        const v = Icmpv4View.checked(guarded(buf, pad, pad + bytes.length), pad, bytes.length);
        if (typeof v === 'string') return;
        views++;
        const all = [v.type, v.code, v.checksum, v.restOfHeader, v.ident, v.seq, v.nextHopMtu, v.payloadOff, v.payloadLen];
        expect(all.every(Number.isInteger)).toBe(true);
        expect(v.payloadOff + v.payloadLen).toBe(pad + bytes.length);
      }),
      { numRuns: 1000 },
    );
    expect(views).toBeGreaterThan(200);
  });
});
