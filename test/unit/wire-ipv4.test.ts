import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  IPV4_DF,
  IPV4_HLEN,
  IPV4_MF,
  IpProto,
  Ipv4View,
  fillIpv4Checksum,
  writeIpv4,
} from '../../src/stack/wire/ipv4.ts';
import { foldChecksum, sumBytes } from '../../src/stack/wire/checksum.ts';
import {
  ICMP_ECHO_REPLY,
  ICMP_PORT_UNREACH,
  IP_A,
  IP_B,
  TCP_SYN,
  UDP_IP_OPTIONS,
  a5,
  guarded,
  hex,
  toHex,
  udpFragmentFrames,
} from './wire-captures.ts';

function ip(frame: Uint8Array): Ipv4View {
  const v = Ipv4View.checked(frame, 14, frame.length - 14);
  if (typeof v === 'string') throw new Error(v);
  return v;
}

/** A copy of the IP part of `frame` with `edit` applied and the header checksum refreshed. */
function edited(frame: Uint8Array, edit: (b: Uint8Array) => void, refresh = true): Uint8Array {
  const b = frame.slice(14);
  edit(b);
  if (refresh) fillIpv4Checksum(b, 0);
  return b;
}

describe('Ipv4View', () => {
  it('decodes the captured TCP SYN header', () => {
    const v = ip(TCP_SYN);
    expect(v.version).toBe(4);
    expect(v.headerLen).toBe(20);
    expect(v.tos).toBe(0);
    expect(v.totalLen).toBe(60);
    expect(v.ident).toBe(0xe003);
    expect(v.dontFragment).toBe(true);
    expect(v.moreFragments).toBe(false);
    expect(v.fragmentOffset).toBe(0);
    expect(v.isFragment).toBe(false);
    expect(v.ttl).toBe(64);
    expect(v.protocol).toBe(IpProto.TCP);
    expect(v.checksum).toBe(0x45f0);
    expect(v.src).toBe(IP_A);
    expect(v.dst).toBe(IP_B);
    expect(v.optionsLen).toBe(0);
    expect(v.payloadOff).toBe(34);
    expect(v.payloadLen).toBe(40);
  });

  it('decodes a captured header with a record-route option and skips it', () => {
    const v = ip(UDP_IP_OPTIONS);
    expect(v.headerLen).toBe(32);
    expect(v.optionsOff).toBe(34);
    expect(v.optionsLen).toBe(12);
    expect(toHex(UDP_IP_OPTIONS.subarray(v.optionsOff, v.optionsOff + 3))).toBe('070b08'); // RR, len 11, ptr 8
    expect(v.protocol).toBe(IpProto.UDP);
    expect(v.payloadOff).toBe(46);
    expect(v.payloadLen).toBe(16);
    expect(toHex(UDP_IP_OPTIONS.subarray(v.payloadOff + 8, v.payloadOff + 16))).toBe(toHex(new TextEncoder().encode('options!')));
  });

  it('decodes the three captured fragments', () => {
    const [f1, f2, f3] = udpFragmentFrames().map(ip) as [Ipv4View, Ipv4View, Ipv4View];
    expect([f1.isFragment, f1.moreFragments, f1.fragmentOffset, f1.payloadLen]).toEqual([true, true, 0, 1480]);
    expect([f2.isFragment, f2.moreFragments, f2.fragmentOffset, f2.payloadLen]).toEqual([true, true, 1480, 1480]);
    expect([f3.isFragment, f3.moreFragments, f3.fragmentOffset, f3.payloadLen]).toEqual([true, false, 2960, 1048]);
    expect(new Set([f1.ident, f2.ident, f3.ident])).toEqual(new Set([0x0cec]));
    expect(f2.flagsAndFragOffsetRaw).toBe(0x20b9);
  });

  it('ends the datagram at the total length: link padding is not payload', () => {
    const small = edited(ICMP_ECHO_REPLY, (b) => {
      b[2] = 0;
      b[3] = 28; // a 28-byte datagram (header + 8 bytes) in a 60-byte frame
    });
    const frame = new Uint8Array(60).fill(0xee);
    frame.set(small.subarray(0, 28), 14);
    const v = Ipv4View.checked(frame, 14, 46);
    if (typeof v === 'string') throw new Error(v);
    expect(v.totalLen).toBe(28);
    expect(v.payloadLen).toBe(8);
  });

  it('emits captured headers byte for byte', () => {
    type Args = [number, number, number, number, number, number, number, number];
    const cases: { frame: Uint8Array; args: Args }[] = [
      { frame: TCP_SYN, args: [60, 0xe003, IPV4_DF, 64, IpProto.TCP, IP_A, IP_B, 0] },
      { frame: ICMP_ECHO_REPLY, args: [84, 0xb17b, 0, 64, IpProto.ICMP, IP_B, IP_A, 0] },
      { frame: ICMP_PORT_UNREACH, args: [85, 0xb1c3, 0, 64, IpProto.ICMP, IP_B, IP_A, 0xc0] },
      { frame: udpFragmentFrames()[1]!, args: [1500, 0x0cec, IPV4_MF | 185, 64, IpProto.UDP, IP_A, IP_B, 0] },
    ];
    for (const { frame, args } of cases) {
      const out = a5(IPV4_HLEN + 2);
      expect(writeIpv4(out, 0, ...args)).toBe(IPV4_HLEN);
      expect(toHex(out.subarray(0, 20))).toBe(toHex(frame.subarray(14, 34)));
      expect(toHex(out.subarray(20))).toBe('a5a5');
    }
  });

  it('parse(emit(x)) is the identity', () => {
    fc.assert(
      fc.property(
        fc.record({
          totalLen: fc.integer({ min: 20, max: 0xffff }),
          ident: fc.nat(0xffff),
          flags: fc.nat(0xffff),
          ttl: fc.nat(255),
          protocol: fc.nat(255),
          src: fc.nat(0xffffffff),
          dst: fc.nat(0xffffffff),
          tos: fc.nat(255),
        }),
        (x) => {
          const buf = a5(x.totalLen);
          writeIpv4(buf, 0, x.totalLen, x.ident, x.flags, x.ttl, x.protocol, x.src, x.dst, x.tos);
          const v = Ipv4View.checked(buf, 0, buf.length);
          if (typeof v === 'string') throw new Error(v);
          expect([v.totalLen, v.ident, v.flagsAndFragOffsetRaw, v.ttl, v.protocol, v.src, v.dst, v.tos]).toEqual([
            x.totalLen, x.ident, x.flags, x.ttl, x.protocol, x.src, x.dst, x.tos,
          ]);
          expect(v.dontFragment).toBe((x.flags & IPV4_DF) !== 0);
          expect(v.moreFragments).toBe((x.flags & IPV4_MF) !== 0);
          expect(v.fragmentOffset).toBe((x.flags & 0x1fff) * 8);
          expect(v.payloadLen).toBe(x.totalLen - 20);
        },
      ),
    );
  });

  it('returns a string reason at every truncated length, never throwing', () => {
    for (const frame of [TCP_SYN, UDP_IP_OPTIONS, ICMP_PORT_UNREACH]) {
      const total = frame.length - 14;
      for (let len = 0; len < total; len++) {
        const r = Ipv4View.checked(frame, 14, len);
        expect(r).toBe('truncated');
      }
      expect(typeof Ipv4View.checked(frame, 14, total)).toBe('object');
    }
  });

  it('names each malformation', () => {
    const check = (b: Uint8Array) => Ipv4View.checked(b, 0, b.length);
    expect(check(edited(TCP_SYN, (b) => (b[0] = 0x65)))).toBe('badVersion');
    expect(check(edited(TCP_SYN, (b) => (b[0] = 0x44)))).toBe('badHeaderLength');
    expect(check(edited(TCP_SYN, (b) => (b[0] = 0x4f), false).subarray(0, 40))).toBe('truncated'); // 60-byte header, 40 bytes
    expect(check(edited(TCP_SYN, (b) => (b[3] = 19)))).toBe('badTotalLength');
    expect(check(edited(TCP_SYN, (b) => (b[3] = 61)))).toBe('truncated');
    expect(check(edited(TCP_SYN, (b) => (b[8] = 63), false))).toBe('badChecksum');
    expect(check(edited(UDP_IP_OPTIONS, (b) => (b[21] = 1)))).toBe('badOptions'); // length < 2
    expect(check(edited(UDP_IP_OPTIONS, (b) => (b[21] = 13)))).toBe('badOptions'); // past the header
    expect(check(edited(UDP_IP_OPTIONS, (b) => b.set([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], 20)))).not.toBeTypeOf('string');
    expect(check(edited(UDP_IP_OPTIONS, (b) => b.set([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0x44], 20)))).toBe('badOptions'); // kind without length byte
  });

  it('fillIpv4Checksum restores the captured checksum', () => {
    const b = UDP_IP_OPTIONS.slice(14);
    b[10] = 0xaa;
    b[11] = 0xbb;
    fillIpv4Checksum(b, 0);
    expect(toHex(b)).toBe(toHex(UDP_IP_OPTIONS.subarray(14)));
  });

  it('arbitrary bytes never throw, and getters stay inside the range (checksum repaired)', () => {
    let views = 0;
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 120, size: 'max' }), fc.oneof(fc.constant(5), fc.nat(15)), fc.nat(3), fc.nat(8), (bytes, ihl, repair, pad) => {
        if (repair > 0 && bytes.length >= 20) {
          bytes[0] = 0x40 | ihl;
          const total = Math.min(bytes.length, 0xffff);
          bytes[2] = total >>> 8;
          bytes[3] = total & 0xff;
          const hl = ihl * 4;
          if (hl >= 20 && hl <= bytes.length) {
            bytes[10] = 0;
            bytes[11] = 0;
            const ck = foldChecksum(sumBytes(bytes, 0, hl));
            bytes[10] = ck >>> 8;
            bytes[11] = ck & 0xff;
          }
        }
        const buf = a5(bytes.length + 2 * pad);
        buf.set(bytes, pad);
        const v = Ipv4View.checked(guarded(buf, pad, pad + bytes.length), pad, bytes.length);
        if (typeof v === 'string') return;
        views++;
        const all = [
          v.version, v.headerLen, v.tos, v.totalLen, v.ident, v.fragmentOffset, v.ttl, v.protocol, v.checksum,
          v.src, v.dst, v.optionsOff, v.optionsLen, v.payloadOff, v.payloadLen, v.flagsAndFragOffsetRaw,
        ];
        expect(all.every(Number.isInteger)).toBe(true);
        expect([v.dontFragment, v.moreFragments, v.isFragment].every((x) => typeof x === 'boolean')).toBe(true);
        expect(v.payloadOff + v.payloadLen).toBeLessThanOrEqual(pad + bytes.length);
      }),
      { numRuns: 1000 },
    );
    expect(views).toBeGreaterThan(100);
  });

  it('hex helper sanity: a captured header verifies as-is', () => {
    expect(foldChecksum(sumBytes(hex('45000054b17b00004001b4650a6300020a630001'), 0, 20))).toBe(0);
  });
});
