import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { ARP_LEN, ArpOp, ArpView, writeArp } from '../../src/stack/wire/arp.ts';
import { EtherType, writeEthernet } from '../../src/stack/wire/ethernet.ts';
import { MAC_BROADCAST } from '../../src/stack/wire/addr.ts';
import { ARP_REPLY, ARP_REQUEST, IP_A, IP_B, MAC_A, MAC_B, a5, guarded, hex, toHex } from './wire-captures.ts';

function arp(frame: Uint8Array): ArpView {
  const v = ArpView.checked(frame, 14, frame.length - 14);
  if (typeof v === 'string') throw new Error(v);
  return v;
}

describe('ArpView', () => {
  it('decodes the captured request (who has 10.99.0.2? tell 10.99.0.1)', () => {
    const v = arp(ARP_REQUEST);
    expect(v.op).toBe(ArpOp.Request);
    expect(v.senderMac).toBe(MAC_A);
    expect(v.senderIp).toBe(IP_A);
    expect(v.targetMac).toBe(0);
    expect(v.targetIp).toBe(IP_B);
  });

  it('decodes the captured reply (10.99.0.2 is at 02:00:00:00:00:02)', () => {
    const v = arp(ARP_REPLY);
    expect(v.op).toBe(ArpOp.Reply);
    expect(v.senderMac).toBe(MAC_B);
    expect(v.senderIp).toBe(IP_B);
    expect(v.targetMac).toBe(MAC_A);
    expect(v.targetIp).toBe(IP_A);
  });

  it('accepts a frame padded to 60 bytes', () => {
    const padded = new Uint8Array(60);
    padded.set(ARP_REQUEST);
    const v = ArpView.checked(padded, 14, 46);
    expect(typeof v).toBe('object');
  });

  it('emits the captured request and reply byte for byte', () => {
    for (const [frame, op, dst, sm, si, tm, ti] of [
      [ARP_REQUEST, ArpOp.Request, MAC_BROADCAST, MAC_A, IP_A, 0, IP_B],
      [ARP_REPLY, ArpOp.Reply, MAC_A, MAC_B, IP_B, MAC_A, IP_A],
    ] as const) {
      const out = a5(frame.length + 4);
      let o = writeEthernet(out, 0, dst, sm, EtherType.ARP);
      o = writeArp(out, o, op, sm, si, tm, ti);
      expect(o).toBe(frame.length);
      expect(toHex(out.subarray(0, o))).toBe(toHex(frame));
      expect(toHex(out.subarray(o))).toBe('a5a5a5a5');
    }
  });

  it('parse(emit(x)) is the identity', () => {
    const mac = fc.integer({ min: 0, max: 2 ** 48 - 1 });
    const ip = fc.nat(0xffffffff);
    fc.assert(
      fc.property(fc.nat(0xffff), mac, ip, mac, ip, (op, sm, si, tm, ti) => {
        const buf = a5(ARP_LEN);
        expect(writeArp(buf, 0, op, sm, si, tm, ti)).toBe(ARP_LEN);
        const v = ArpView.checked(buf, 0, ARP_LEN);
        if (typeof v === 'string') throw new Error(v);
        expect([v.op, v.senderMac, v.senderIp, v.targetMac, v.targetIp]).toEqual([op, sm, si, tm, ti]);
      }),
    );
  });

  it('returns "truncated" for every shorter length', () => {
    for (let len = 0; len < ARP_LEN; len++) expect(ArpView.checked(ARP_REQUEST, 14, len)).toBe('truncated');
  });

  it('returns "unsupported" for other hardware/protocol types and address sizes', () => {
    const variants = [
      '0006080006040001', // IEEE 802 hardware
      '000186dd06040001', // protocol IPv6
      '0001080008040001', // hlen 8
      '0001080006100001', // plen 16
    ];
    for (const head of variants) {
      const b = ARP_REQUEST.slice(14);
      b.set(hex(head), 0);
      expect(ArpView.checked(b, 0, b.length)).toBe('unsupported');
    }
  });

  it('arbitrary bytes never throw and getters stay inside the range', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 40, size: 'max' }), fc.boolean(), (bytes, fixHeader) => {
        if (fixHeader && bytes.length >= 6) bytes.set([0, 1, 8, 0, 6, 4]);
        const buf = a5(bytes.length + 8);
        buf.set(bytes, 4);
        const v = ArpView.checked(guarded(buf, 4, 4 + bytes.length), 4, bytes.length);
        if (typeof v === 'string') return;
        expect(Number.isInteger(v.op + v.senderMac + v.senderIp + v.targetMac + v.targetIp)).toBe(true);
      }),
    );
  });
});
