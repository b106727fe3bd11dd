/**
 * The stack core, sans-I/O: real captured guest frames in (the guest is 10.99.0.1, vmnat plays the
 * gateway 10.99.0.2), frames out, counters checked.
 */
import { describe, expect, test } from 'vitest';
import { Stack, virtualMac } from '../../src/stack/stack.ts';
import { ArpView } from '../../src/stack/wire/arp.ts';
import { EthernetView } from '../../src/stack/wire/ethernet.ts';
import { Ipv4View } from '../../src/stack/wire/ipv4.ts';
import { Icmpv4View } from '../../src/stack/wire/icmpv4.ts';
import { UdpView } from '../../src/stack/wire/udp.ts';
import { writeMac } from '../../src/stack/wire/addr.ts';
import { ARP_REQUEST, ICMP_ECHO_REQUEST, IP_A, IP_B, MAC_A, UDP_DNS_QUERY, udpFragmentFrames } from './wire-captures.ts';

const GW = IP_B;
function makeStack(mtu = 1500) {
  const out: Uint8Array[] = [];
  const stack = new Stack({ network: 0x0a_63_00_00, netmask: 0xffff_ff00, gateway: GW, dns: 0x0a_63_00_03, mtu }, (f) => out.push(Uint8Array.from(f)));
  return { stack, out };
}
/** The captured frame re-addressed to vmnat's gateway MAC. */
function toGateway(frame: Uint8Array): Uint8Array {
  const f = Uint8Array.from(frame);
  writeMac(f, 0, virtualMac(GW));
  return f;
}

describe('ARP', () => {
  test('a request for the gateway gets a reply from 52:55:<ip>, and the guest is learned', () => {
    const { stack, out } = makeStack();
    stack.input(ARP_REQUEST, 0);
    expect(out).toHaveLength(1);
    const eth = EthernetView.checked(out[0]!, 0, out[0]!.length) as EthernetView;
    expect(eth.dst).toBe(MAC_A);
    expect(eth.src).toBe(virtualMac(GW));
    const arp = ArpView.checked(out[0]!, 14, out[0]!.length - 14) as ArpView;
    expect({ op: arp.op, senderMac: arp.senderMac, senderIp: arp.senderIp, targetMac: arp.targetMac, targetIp: arp.targetIp }).toEqual({
      op: 2, senderMac: virtualMac(GW), senderIp: GW, targetMac: MAC_A, targetIp: IP_A,
    });
    expect(out[0]!.length).toBe(42);
    expect(stack.neighbours.lookup(IP_A)).toBe(MAC_A);
  });
  test('a request for an address nobody virtual holds gets no reply', () => {
    const { stack, out } = makeStack();
    const f = Uint8Array.from(ARP_REQUEST);
    f[41] = 77; // target 10.99.0.77
    stack.input(f, 0);
    expect(out).toHaveLength(0);
    expect(stack.stats.arp.notForUs).toBe(1);
  });
});

describe('ICMP echo', () => {
  test('the gateway answers a captured ping with the same id, sequence and payload', () => {
    const { stack, out } = makeStack();
    const req = toGateway(ICMP_ECHO_REQUEST);
    stack.input(req, 0);
    expect(out).toHaveLength(1);
    const ip = Ipv4View.checked(out[0]!, 14, out[0]!.length - 14) as Ipv4View;
    expect([ip.src, ip.dst]).toEqual([GW, IP_A]);
    const icmp = Icmpv4View.checked(ip.buf, ip.payloadOff, ip.payloadLen) as Icmpv4View;
    const reqIcmp = Icmpv4View.checked(req, 34, req.length - 34) as Icmpv4View;
    expect([icmp.type, icmp.ident, icmp.seq]).toEqual([0, reqIcmp.ident, reqIcmp.seq]);
    expect(out[0]!.subarray(42)).toEqual(req.subarray(42));
  });
  test('a corrupted ping is dropped and counted', () => {
    const { stack, out } = makeStack();
    const req = toGateway(ICMP_ECHO_REQUEST);
    req[50] = req[50]! ^ 0xff;
    stack.input(req, 0);
    expect(out).toHaveLength(0);
    expect(stack.stats.icmp.badChecksum).toBe(1);
  });
});

describe('UDP dispatch and fragments', () => {
  test('a bound port receives the datagram; an unbound one goes to the forward hook', () => {
    const { stack } = makeStack();
    const seen: string[] = [];
    stack.bindUdp(GW, 53, (d) => seen.push(`bound ${d.srcPort}->${d.dstPort} ${d.len}`));
    stack.forward = (ip) => (seen.push(`forward ${ip.protocol}`), true);
    const q = toGateway(UDP_DNS_QUERY);
    stack.input(q, 0);
    const udp = UdpView.checked(q, 34, q.length - 34, IP_A, GW) as UdpView;
    expect(seen).toEqual([`bound ${udp.srcPort}->53 ${udp.payloadLen}`]);
  });
  test('captured fragments are reassembled before delivery', () => {
    const { stack } = makeStack();
    let got = 0;
    stack.forward = (ip) => {
      got = ip.payloadLen;
      return true;
    };
    for (const f of udpFragmentFrames()) stack.input(toGateway(f), 0);
    expect(got).toBe(4008);
    expect(stack.stats.ipv4.reassembled).toBe(1);
  });
  test('a datagram larger than the MTU leaves as fragments that reassemble to the original', () => {
    const { stack, out } = makeStack(576);
    stack.neighbours.learn(IP_A, MAC_A, 0);
    const payload = Uint8Array.from({ length: 3000 }, (_, i) => (i * 7) & 0xff);
    stack.sendUdp(GW, 9, IP_A, 5000, payload);
    expect(out.length).toBe(6);
    const parts = out.map((f) => Ipv4View.checked(f, 14, f.length - 14) as Ipv4View);
    for (const p of parts) expect(p.totalLen).toBeLessThanOrEqual(576);
    const whole = new Uint8Array(3008);
    for (const p of parts) whole.set(p.buf.subarray(p.payloadOff, p.payloadOff + p.payloadLen), p.fragmentOffset);
    expect(whole.subarray(8)).toEqual(payload);
    expect(parts.at(-1)!.moreFragments).toBe(false);
    expect(parts.slice(0, -1).every((p) => p.moreFragments)).toBe(true);
  });
});
