/**
 * The switch on its own (src/switch/switch.ts): where each frame goes, what anti-spoofing and
 * isolation drop (and count), MAC ageing and the table's limit. Ports are in-memory links; frames
 * are built by the fuzz test's writers, independent of vmnat's.
 */
import { describe, expect, test } from 'vitest';
import { Switch, type SwitchConfig, type SwitchPort } from '../../src/switch/switch.ts';
import { MemoryLink } from '../helpers/memorylink.ts';
import { eth, ipv4, ipv6, l4sum6, udp } from '../helpers/fuzzframes.ts';
import { ipv6Bytes } from '../../src/stack/wire/addr.ts';


const GW_MAC = [0x52, 0x55, 10, 0, 2, 2];
const GW_MAC_N = 0x5255_0a00_0202;
const DNS_MAC_N = 0x5255_0a00_0203;
const BCAST = [255, 255, 255, 255, 255, 255];
const macOf = (n: number) => [0x52, 0x54, 0, 0, 0, n];
const ipOf = (n: number) => [10, 0, 2, n];
const ipNum = (n: number) => (10 << 24) | (2 << 8) | n;

function setup(over: Partial<SwitchConfig> = {}) {
  const toStack: Uint8Array[] = [];
  const claims: [number, number][] = [];
  const cfg: SwitchConfig = {
    network: ipNum(0),
    netmask: 0xffffff00,
    reserved: [ipNum(2), ipNum(3)],
    ownMacs: [GW_MAC_N, DNS_MAC_N],
    isolate: false,
    antiSpoof: true,
    maxMacs: 4096,
    macAgeMs: 300_000,
    ...over,
  };
  const sw = new Switch(cfg, (f) => toStack.push(f.slice()), (port, ip) => claims.push([port.id, ip]));
  const links = [new MemoryLink(), new MemoryLink(), new MemoryLink()];
  const ports = links.map((l) => sw.attach(l)) as [SwitchPort, SwitchPort, SwitchPort];
  return { sw, toStack, claims, links, ports };
}

/** A UDP frame from guest `n` (MAC and address by number) to `dstMac`/`dstIp`. */
function frameFrom(n: number, dstMac: number[], dstIp: number[], opts: { srcIp?: number[]; srcMac?: number[] } = {}): Uint8Array {
  const src = opts.srcIp ?? ipOf(n);
  return eth(dstMac, opts.srcMac ?? macOf(n), 0x0800, ipv4(17, src, dstIp, udp(src, dstIp, 1000, 2000, new Uint8Array(8))));
}

function arp(op: 1 | 2, senderMac: number[], senderIp: number[], targetIp: number[], ethSrc = senderMac, ethDst = BCAST): Uint8Array {
  const a = new Uint8Array(28);
  a.set([0, 1, 8, 0, 6, 4, 0, op], 0);
  a.set(senderMac, 8);
  a.set(senderIp, 14);
  a.set(targetIp, 24);
  return eth(ethDst, ethSrc, 0x0806, a);
}

describe('forwarding', () => {
  test('unicast goes to the port that owns the MAC and nowhere else; unknown unicast is not flooded', () => {
    const { sw, toStack, links, ports } = setup();
    sw.input(ports[1], frameFrom(16, GW_MAC, ipOf(2)), 0); // port 1 learns guest 16
    expect(toStack.length).toBe(1);
    sw.input(ports[0], frameFrom(15, macOf(16), ipOf(16)), 1);
    expect(links[1]!.sent.length).toBe(1);
    expect(links[2]!.sent.length).toBe(0);
    expect(sw.stats.guestToGuest).toBe(1);
    sw.input(ports[0], frameFrom(15, macOf(99), ipOf(99)), 2); // nobody has MAC 99
    expect(links[1]!.sent.length + links[2]!.sent.length).toBe(1);
    expect(toStack.length).toBe(2); // the stack counts it as not for us
    sw.flush();
    expect(links[1]!.flushes).toBe(1);
    expect(links[2]!.flushes).toBe(0);
  });

  test('broadcast goes to the stack and every other port; the stack\'s answer to it goes back to the asker only', () => {
    const { sw, toStack, links, ports } = setup();
    sw.input(ports[0], frameFrom(15, BCAST, [255, 255, 255, 255]), 0);
    expect(toStack.length).toBe(1);
    expect(links.map((l) => l.sent.length)).toEqual([0, 1, 1]);
    sw.current = ports[2];
    sw.output(eth(BCAST, GW_MAC, 0x0800, new Uint8Array(40)), 1);
    sw.current = undefined;
    expect(links.map((l) => l.sent.length)).toEqual([0, 1, 2]);
    sw.output(eth(BCAST, GW_MAC, 0x0800, new Uint8Array(40)), 1); // not an answer: everyone
    expect(links.map((l) => l.sent.length)).toEqual([1, 2, 3]);
  });

  test('--isolate: no unicast, broadcast or ARP between guests; the stack still gets everything', () => {
    const { sw, toStack, links, ports } = setup({ isolate: true });
    sw.input(ports[1], frameFrom(16, GW_MAC, ipOf(2)), 0);
    sw.input(ports[0], frameFrom(15, macOf(16), ipOf(16)), 1);
    sw.input(ports[0], arp(1, macOf(15), ipOf(15), ipOf(16)), 2);
    expect(links.map((l) => l.sent.length)).toEqual([0, 0, 0]);
    expect(ports[0].stats.drops.isolated).toBe(1);
    expect(toStack.length).toBe(2); // the first frame and the ARP request
  });

  test('frames from the stack reach a guest idle longer than the MAC ageing time (its bound MAC)', () => {
    const { sw, links, ports } = setup({ macAgeMs: 1000 });
    sw.input(ports[1], frameFrom(16, GW_MAC, ipOf(2)), 0);
    sw.poll(5000);
    expect(sw.stats.macAged).toBe(1);
    sw.output(eth(macOf(16), GW_MAC, 0x0800, new Uint8Array(40)), 5000);
    expect(links[1]!.sent.length).toBe(1);
    sw.output(eth(macOf(77), GW_MAC, 0x0800, new Uint8Array(40)), 5000);
    expect(sw.stats.unknownUnicastDropped).toBe(1);
  });

  test('the MAC table is bounded (anti-spoofing off, one port spraying source MACs)', () => {
    const { sw, ports } = setup({ antiSpoof: false, maxMacs: 8 });
    for (let i = 0; i < 100; i++) sw.input(ports[0], frameFrom(100 + i, GW_MAC, ipOf(2)), i);
    expect(sw.stats.macEvicted).toBe(92);
  });
});

describe('anti-spoofing', () => {
  test('a port keeps the MAC it first used', () => {
    const { sw, toStack, ports } = setup();
    sw.input(ports[0], frameFrom(15, GW_MAC, ipOf(2)), 0);
    sw.input(ports[0], frameFrom(15, GW_MAC, ipOf(2), { srcMac: macOf(44) }), 1);
    expect(toStack.length).toBe(1);
    expect(ports[0].stats.drops.macSpoof).toBe(1);
  });

  test('DHCP snooping: after a lease, only that address (and 0.0.0.0); DHCP outranks a static claim', () => {
    const { sw, toStack, ports } = setup();
    sw.input(ports[0], frameFrom(15, BCAST, [255, 255, 255, 255], { srcIp: [0, 0, 0, 0] }), 0); // DISCOVER
    sw.bindLease(0x5254_0000_000f, ipNum(15), 'a', 1);
    expect(ports[0].ip).toBe(ipNum(15));
    expect(ports[0].ipSource).toBe('dhcp');
    sw.input(ports[0], frameFrom(15, GW_MAC, ipOf(2)), 2);
    sw.input(ports[0], frameFrom(15, GW_MAC, ipOf(2), { srcIp: ipOf(40) }), 3);
    expect(toStack.length).toBe(2);
    expect(ports[0].stats.drops.ipSpoof).toBe(1);
    sw.unbindLease(0x5254_0000_000f, ipNum(15));
    expect(ports[0].ip).toBeUndefined();
  });

  test('a port with no lease claims one free address; not the gateway\'s, not one another port holds, not a second one', () => {
    const { sw, toStack, claims, ports } = setup();
    sw.input(ports[0], frameFrom(15, GW_MAC, ipOf(2)), 0);
    expect(claims).toEqual([[ports[0].id, ipNum(15)]]);
    expect(ports[0].ipSource).toBe('static');
    sw.input(ports[0], frameFrom(15, GW_MAC, ipOf(2), { srcIp: ipOf(20) }), 1); // a second address
    sw.input(ports[1], frameFrom(16, GW_MAC, ipOf(2), { srcIp: ipOf(15) }), 2); // port 0's
    sw.input(ports[2], frameFrom(17, GW_MAC, ipOf(2), { srcIp: ipOf(2) }), 3); // the gateway's
    sw.input(ports[2], frameFrom(17, GW_MAC, ipOf(2), { srcIp: [192, 168, 1, 5] }), 4); // off-subnet
    expect(toStack.length).toBe(1);
    expect(ports.map((p) => p.stats.drops.ipSpoof)).toEqual([1, 1, 2]);
  });

  test('forged ARP: a reply claiming the gateway, another guest\'s address, or with a sender MAC not the frame\'s', () => {
    const { sw, toStack, links, ports } = setup();
    sw.input(ports[0], frameFrom(15, GW_MAC, ipOf(2)), 0); // port 0 is 10.0.2.15
    sw.input(ports[1], arp(2, macOf(16), ipOf(2), ipOf(15), macOf(16), macOf(15)), 1);
    sw.input(ports[1], arp(2, macOf(16), ipOf(15), ipOf(15), macOf(16), BCAST), 2); // gratuitous, for .15
    sw.input(ports[1], arp(1, macOf(15), ipOf(16), ipOf(2), macOf(16)), 3);
    expect(ports[1].stats.drops.arpSpoof).toBe(3);
    expect(links[0]!.sent.length).toBe(0);
    expect(toStack.length).toBe(1);
    sw.input(ports[1], arp(1, macOf(16), ipOf(16), ipOf(2)), 4); // honest: passes, claims .16
    expect(toStack.length).toBe(2);
    expect(ports[1].ip).toBe(ipNum(16));
  });

  test('IPv6: RA guard, no neighbour advertisement for vmnat\'s addresses, never from them', () => {
    const GW6 = [...ipv6Bytes('fd00:10:0:2::2')];
    const { sw, toStack, links, ports } = setup({ reserved6: ['fd00:10:0:2::2', 'fd00:10:0:2::3', 'fe80::2'].map((a) => ipv6Bytes(a)) });
    const ll = (n: number) => [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0x50, 0x54, 0, 0xff, 0xfe, 0, 0, n];
    const allNodes = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const icmp6 = (src: number[], dst: number[], type: number, body: number[], next = 58, ext: number[] = []) => {
      const m = new Uint8Array([type, 0, 0, 0, ...body]);
      l4sum6(58, src, dst, m, 2);
      return eth([0x33, 0x33, 0, 0, 0, 1], macOf(16), 0x86dd, ipv6(next, src, dst, new Uint8Array([...ext, ...m]), 255));
    };
    sw.input(ports[1], icmp6(ll(16), allNodes, 134, new Array<number>(12).fill(0)), 0); // a rogue RA
    sw.input(ports[1], icmp6(ll(16), allNodes, 134, new Array<number>(12).fill(0), 60, [58, 0, 1, 4, 0, 0, 0, 0]), 1); // wrapped in a Destination Options header
    sw.input(ports[1], icmp6(ll(16), allNodes, 137, new Array<number>(36).fill(0)), 2); // a redirect
    sw.input(ports[1], icmp6(ll(16), allNodes, 136, [0, 0, 0, 0, ...GW6]), 3); // "::2 is at my MAC"
    expect(ports[1].stats.drops.ndpSpoof).toBe(4);
    sw.input(ports[1], icmp6(GW6, allNodes, 128, [0, 1, 0, 1]), 4); // from ::2
    expect(ports[1].stats.drops.ipSpoof).toBe(1);
    expect(toStack.length + links[0]!.sent.length + links[2]!.sent.length).toBe(0);
    sw.input(ports[1], icmp6(ll(16), allNodes, 136, [0, 0, 0, 0, ...ll(16)]), 5); // its own NA: passes
    expect(toStack.length).toBe(1);
    expect(links[0]!.sent.length).toBe(1);
  });

  test('IPv6 source binding: first come; another port can neither send from it nor advertise it', () => {
    const { sw, toStack, ports } = setup({ reserved6: [] });
    const g = (n: number) => [0xfd, 0, 0, 0x10, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, n];
    const all = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const icmp6 = (from: number, src: number[], type: number, body: number[]) => {
      const m = new Uint8Array([type, 0, 0, 0, ...body]);
      l4sum6(58, src, all, m, 2);
      return eth([0x33, 0x33, 0, 0, 0, 1], macOf(from), 0x86dd, ipv6(58, src, all, m, 255));
    };
    sw.input(ports[0], icmp6(15, g(15), 128, [0, 1, 0, 1]), 0); // port 0 uses ::15
    sw.input(ports[1], icmp6(16, g(15), 128, [0, 1, 0, 1]), 1); // port 1 from ::15: no
    sw.input(ports[1], icmp6(16, g(16), 136, [0, 0, 0, 0, ...g(15)]), 2); // "::15 is at my MAC": no
    expect(ports[1].stats.drops.ipSpoof).toBe(1);
    expect(ports[1].stats.drops.ndpSpoof).toBe(1);
    sw.input(ports[1], icmp6(16, [...new Array<number>(16).fill(0)], 135, [0, 0, 0, 0, ...g(15)]), 3); // DAD from ::: passes
    expect(toStack.length).toBe(2); // port 0's ping and port 1's DAD probe; nothing of the two refused
    sw.detach(ports[0]);
    sw.input(ports[1], icmp6(16, g(15), 128, [0, 1, 0, 1]), 4); // free again once port 0 is gone
    expect(ports[1].stats.drops.ipSpoof).toBe(1);
  });

  test('a port that goes away frees its MACs and addresses', () => {
    const { sw, ports } = setup();
    sw.input(ports[0], frameFrom(15, GW_MAC, ipOf(2)), 0);
    sw.detach(ports[0]);
    expect(sw.portOfIp(ipNum(15))).toBeUndefined();
    expect(sw.portOfMac(0x5254_0000_000f, 1)).toBeUndefined();
    sw.input(ports[1], frameFrom(16, GW_MAC, ipOf(2), { srcIp: ipOf(15) }), 2);
    expect(ports[1].ip).toBe(ipNum(15));
  });
});
