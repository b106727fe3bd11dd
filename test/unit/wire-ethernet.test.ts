import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { ETH_HLEN, EtherType, EthernetView, writeEthernet } from '../../src/stack/wire/ethernet.ts';
import { MAC_BROADCAST } from '../../src/stack/wire/addr.ts';
import { ARP_REQUEST, MAC_A, MAC_B, TCP_SYN, a5, guarded, toHex } from './wire-captures.ts';

describe('EthernetView', () => {
  it('decodes a captured broadcast ARP request frame', () => {
    const v = EthernetView.checked(ARP_REQUEST, 0, ARP_REQUEST.length);
    if (typeof v === 'string') throw new Error(v);
    expect(v.dst).toBe(MAC_BROADCAST);
    expect(v.src).toBe(MAC_A);
    expect(v.etherType).toBe(EtherType.ARP);
    expect(v.payloadOff).toBe(14);
    expect(v.payloadLen).toBe(28);
  });

  it('decodes a captured unicast IPv4 frame inside a larger buffer', () => {
    const big = a5(TCP_SYN.length + 10);
    big.set(TCP_SYN, 5);
    const v = EthernetView.checked(big, 5, TCP_SYN.length);
    if (typeof v === 'string') throw new Error(v);
    expect(v.dst).toBe(MAC_B);
    expect(v.src).toBe(MAC_A);
    expect(v.etherType).toBe(EtherType.IPv4);
    expect(v.payloadOff).toBe(19);
    expect(v.payloadLen).toBe(60);
  });

  it('emits the captured header byte for byte, writing nothing else', () => {
    const out = a5(20);
    expect(writeEthernet(out, 0, MAC_B, MAC_A, EtherType.IPv4)).toBe(ETH_HLEN);
    expect(toHex(out.subarray(0, 14))).toBe(toHex(TCP_SYN.subarray(0, 14)));
    expect([...out.subarray(14)].every((b) => b === 0xa5)).toBe(true);
  });

  it('parse(emit(x)) is the identity', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 48 - 1 }), fc.integer({ min: 0, max: 2 ** 48 - 1 }), fc.nat(0xffff), (d, s, t) => {
        const buf = a5(ETH_HLEN);
        writeEthernet(buf, 0, d, s, t);
        const v = EthernetView.checked(buf, 0, ETH_HLEN);
        if (typeof v === 'string') throw new Error(v);
        expect([v.dst, v.src, v.etherType]).toEqual([d, s, t]);
      }),
    );
  });

  it('returns "truncated" for every length below 14, and never throws', () => {
    for (let len = 0; len < ETH_HLEN; len++) expect(EthernetView.checked(TCP_SYN, 0, len)).toBe('truncated');
    expect(typeof EthernetView.checked(TCP_SYN, 0, ETH_HLEN)).toBe('object');
  });

  it('throws RangeError only for a range outside the buffer (caller bug)', () => {
    expect(() => EthernetView.checked(TCP_SYN, 10, TCP_SYN.length)).toThrow(RangeError);
  });

  it('the guard used by the fuzz tests does catch a read outside the range', () => {
    const g = guarded(a5(8), 2, 4);
    expect(g[3]).toBe(0xa5);
    expect(() => g[4]).toThrow(/out-of-range/);
    expect(() => g[1]).toThrow(/out-of-range/);
    expect(g.length).toBe(8);
  });

  it('arbitrary bytes never throw and getters stay inside the range', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 80, size: 'max' }), fc.nat(8), (bytes, pad) => {
        const buf = a5(bytes.length + 2 * pad);
        buf.set(bytes, pad);
        const v = EthernetView.checked(guarded(buf, pad, pad + bytes.length), pad, bytes.length);
        if (typeof v === 'string') return;
        expect(Number.isInteger(v.dst + v.src + v.etherType)).toBe(true);
        expect(v.payloadOff + v.payloadLen).toBe(pad + bytes.length);
      }),
    );
  });
});
