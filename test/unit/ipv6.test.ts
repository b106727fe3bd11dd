/**
 * IPv6, sans-I/O: addresses, the header and ICMPv6 views against frames a real guest sent (the ipv6
 * lab's capture), the stack's Neighbor Discovery, router advertisements, echo and fragments, the
 * NAT policy, the flags, and DHCPv6.
 */
import fc from 'fast-check';
import { test as ftest } from '@fast-check/vitest';
import { describe, expect, test } from 'vitest';
import { formatIpPort, ipv6Bytes, parseIp, parseIpv6, readIpv6 } from '../../src/stack/wire/addr.ts';
import { EthernetView } from '../../src/stack/wire/ethernet.ts';
import { IPV6_HLEN, Ipv6View, writeFragmentHeader, writeIpv6 } from '../../src/stack/wire/ipv6.ts';
import { Icmpv6Type, Icmpv6View, ndpOptions, writeIcmpv6 } from '../../src/stack/wire/icmpv6.ts';
import { TcpView } from '../../src/stack/wire/tcp.ts';
import { UdpView, writeUdpSum } from '../../src/stack/wire/udp.ts';
import { ipv6AddrSum, sumBytes } from '../../src/stack/wire/checksum.ts';
import { Stack, virtualMac } from '../../src/stack/stack.ts';
import { Ipv6Reassembler } from '../../src/stack/reassembly.ts';
import { natTarget6 } from '../../src/nat/policy.ts';
import { parseArgs, type Config } from '../../src/config.ts';
import { Dhcp6Msg, Dhcp6Opt, Dhcp6Server } from '../../src/dhcp6/server.ts';
import { DAD_NS, ECHO_REQUEST6, GUEST6, GUEST6_LL, GUEST6_MAC, MLD_REPORT_HBH, NS_GATEWAY, RS, TCP6_SYN, UDP6_DNS_QUERY } from './ipv6-captures.ts';

const PREFIX = 'fd00:10:0:2::';
const GW6 = 'fd00:10:0:2::2';
const DNS6 = 'fd00:10:0:2::3';
const GW = 0x0a000202;
const GW_MAC = virtualMac(GW);

describe('addresses', () => {
  test.each([
    ['2001:DB8:0:0:0:0:0:1', '2001:db8::1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'], // the first of two equal runs
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'], // one zero group is not shortened (RFC 5952 §4.2.2)
    ['::', '::'],
    ['::1', '::1'],
    ['fe80::0001', 'fe80::1'],
    ['::ffff:10.0.2.15', '::ffff:a00:20f'],
    ['fd00:10:0:2:0:0:0:2', GW6],
  ])('%s is %s', (text, canonical) => {
    expect(parseIpv6(text)).toBe(canonical);
    expect(readIpv6(ipv6Bytes(canonical), 0)).toBe(canonical);
  });
  test.each(['', ':', '1::2::3', '12345::', 'g::1', '1:2:3:4:5:6:7:8:9', '::1.2.3', 'fe80::1%eth0'])('%s is refused', (text) => {
    expect(parseIpv6(text)).toBeUndefined();
  });
  test('either family in one type; IPv6 in brackets with a port', () => {
    expect(parseIp('10.0.2.2')).toBe(0x0a000202);
    expect(parseIp('FD00::2')).toBe('fd00::2');
    expect(formatIpPort('fd00::2', 80)).toBe('[fd00::2]:80');
    expect(formatIpPort(0x0a000202, 80)).toBe('10.0.2.2:80');
  });
  ftest.prop([fc.ipV6()])('parse ∘ format is canonical and stable', (text) => {
    const c = parseIpv6(text);
    expect(c).toBeDefined();
    expect(parseIpv6(c!)).toBe(c);
  });
});

describe('wire views on captured frames', () => {
  test('MLD behind Hop-by-Hop: the chain is walked to ICMPv6', () => {
    const ip = Ipv6View.checked(MLD_REPORT_HBH, 14, MLD_REPORT_HBH.length - 14) as Ipv6View;
    expect(ip.firstNext).toBe(0);
    expect(ip.protocol).toBe(58);
    expect(ip.headerLen).toBe(48);
    expect(ip.src).toBe('::');
    expect(ip.dst).toBe('ff02::16');
    expect(Icmpv6View.checked(ip.buf, ip.payloadOff, ip.payloadLen, ip.addrSum)).toBeInstanceOf(Icmpv6View);
  });
  test('TCP SYN and UDP query: checksums verify through the IPv6 pseudo-header', () => {
    const ip = Ipv6View.checked(TCP6_SYN, 14, TCP6_SYN.length - 14) as Ipv6View;
    expect([ip.src, ip.dst, ip.protocol, ip.hopLimit]).toEqual([GUEST6, GW6, 6, 64]);
    const tcp = TcpView.checkedSum(ip.buf, ip.payloadOff, ip.payloadLen, ip.addrSum) as TcpView;
    expect(tcp.dstPort).toBe(34981);
    const bad = Uint8Array.from(TCP6_SYN);
    bad[30] = bad[30]! ^ 1; // the source address: the pseudo-header no longer matches
    const ip2 = Ipv6View.checked(bad, 14, bad.length - 14) as Ipv6View;
    expect(TcpView.checkedSum(ip2.buf, ip2.payloadOff, ip2.payloadLen, ip2.addrSum)).toBe('badChecksum');
    const u = Ipv6View.checked(UDP6_DNS_QUERY, 14, UDP6_DNS_QUERY.length - 14) as Ipv6View;
    const udp = UdpView.checkedSum(u.buf, u.payloadOff, u.payloadLen, u.addrSum, false, false) as UdpView;
    expect(udp.dstPort).toBe(53);
  });
  test('UDP over IPv6 with checksum 0 is dropped (RFC 8200 §8.1)', () => {
    const f = Uint8Array.from(UDP6_DNS_QUERY);
    const off = 14 + 40;
    f[off + 6] = 0;
    f[off + 7] = 0;
    const ip = Ipv6View.checked(f, 14, f.length - 14) as Ipv6View;
    expect(UdpView.checkedSum(ip.buf, ip.payloadOff, ip.payloadLen, ip.addrSum, false, false)).toBe('badChecksum');
  });
  test('writers: header, UDP and ICMPv6 round-trip through the views (buffer pre-filled with 0xa5)', () => {
    const buf = new Uint8Array(40 + 8 + 5).fill(0xa5);
    writeIpv6(buf, 0, 13, 17, 64, GW6, GUEST6);
    buf.set([1, 2, 3, 4, 5], 48);
    writeUdpSum(buf, 40, 53, 4000, 5, ipv6AddrSum(buf, 0));
    const ip = Ipv6View.checked(buf, 0, buf.length) as Ipv6View;
    expect([ip.src, ip.dst, ip.protocol, ip.payloadLen, ip.trafficClass]).toEqual([GW6, GUEST6, 17, 13, 0]);
    expect(UdpView.checkedSum(buf, 40, 13, ip.addrSum, false, false)).toBeInstanceOf(UdpView);
    const e = new Uint8Array(40 + 8 + 3).fill(0xa5);
    writeIpv6(e, 0, 11, 58, 64, GW6, GUEST6);
    e.set([7, 8, 9], 48);
    writeIcmpv6(e, 40, Icmpv6Type.EchoReply, 0, (5 << 16) | 6, 3, sumBytes(e, 8, 32));
    const v = Icmpv6View.checked(e, 40, 11, ipv6AddrSum(e, 0)) as Icmpv6View;
    expect([v.type, v.ident, v.seq]).toEqual([129, 5, 6]);
  });
  test.each([
    ['truncated header', (b: Uint8Array) => b.subarray(0, 30), 'truncated'],
    ['version 4', (b: Uint8Array) => ((b[0] = 0x45), b), 'badVersion'],
    ['payload length past the bytes', (b: Uint8Array) => ((b[5] = b[5]! + 8), b), 'truncated'],
  ])('%s', (_name, mutate, want) => {
    const b = mutate(Uint8Array.from(TCP6_SYN.subarray(14)));
    expect(Ipv6View.checked(b, 0, b.length)).toBe(want);
  });
  test('extension chains: Hop-by-Hop only first, at most 8 headers, each inside the payload', () => {
    const chain = (nexts: number[]): Uint8Array => {
      const b = new Uint8Array(40 + nexts.length * 8 + 8);
      writeIpv6(b, 0, nexts.length * 8 + 8, nexts[0] ?? 59, 64, GW6, GUEST6);
      for (let i = 0; i < nexts.length; i++) b[40 + i * 8] = nexts[i + 1] ?? 59;
      return b;
    };
    expect(Ipv6View.checked(chain([60, 60]), 0, 40 + 24)).toBeInstanceOf(Ipv6View);
    expect(Ipv6View.checked(chain([60, 0]), 0, 40 + 24)).toBe('badExtensions');
    expect(Ipv6View.checked(chain(new Array<number>(9).fill(60)), 0, 40 + 80)).toBe('badExtensions');
    const long = chain([60]);
    long[41] = 5; // 48 bytes of options in a 16-byte payload
    expect(Ipv6View.checked(long, 0, long.length)).toBe('badExtensions');
  });
  test('NDP options: a zero length or one past the end makes the list malformed', () => {
    expect(ndpOptions(Uint8Array.of(1, 1, 0, 0, 0, 0, 0, 0), 0, 8)).toHaveLength(1);
    expect(ndpOptions(Uint8Array.of(1, 0, 0, 0, 0, 0, 0, 0), 0, 8)).toBeUndefined();
    expect(ndpOptions(Uint8Array.of(1, 2, 0, 0, 0, 0, 0, 0), 0, 8)).toBeUndefined();
  });
  ftest.prop([fc.uint8Array({ maxLength: 200 })])('arbitrary bytes never throw', (b) => {
    const r = Ipv6View.checked(b, 0, b.length);
    if (typeof r !== 'string') {
      void r.src;
      void r.fragmentOffset;
    }
  });
});

function makeStack(mtu = 1500) {
  const out: Uint8Array[] = [];
  const stack = new Stack(
    {
      network: 0x0a000200, netmask: 0xffffff00, gateway: GW, dns: 0x0a000203, mtu,
      ipv6: { prefix: PREFIX, gateway: GW6, dns: DNS6, mtu, searchDomains: ['vmnat.internal'], raIntervalMs: 120_000, managed: false, otherConfig: true },
    },
    (f) => out.push(Uint8Array.from(f)),
  );
  return { stack, six: stack.ipv6!, out };
}

interface Parsed {
  eth: EthernetView;
  ip: Ipv6View;
  icmp: Icmpv6View | undefined;
}
function parse(frame: Uint8Array): Parsed {
  const eth = EthernetView.checked(frame, 0, frame.length) as EthernetView;
  const ip = Ipv6View.checked(frame, 14, frame.length - 14) as Ipv6View;
  expect(ip).toBeInstanceOf(Ipv6View);
  const icmp = ip.protocol === 58 ? (Icmpv6View.checked(frame, ip.payloadOff, ip.payloadLen, ip.addrSum) as Icmpv6View) : undefined;
  if (icmp !== undefined) expect(icmp).toBeInstanceOf(Icmpv6View);
  return { eth, ip, icmp };
}

describe('Neighbor Discovery and router advertisements', () => {
  test('DAD for the guest\'s own address gets no answer (vmnat never claims it)', () => {
    const { stack, six, out } = makeStack();
    stack.input(DAD_NS, 0);
    expect(out).toHaveLength(0);
    expect(six.stats.icmpv6.dadProbes).toBe(1);
  });
  test('NS for ::2: NA with R, S, O, the gateway MAC, hop limit 255, to the guest', () => {
    const { stack, six, out } = makeStack();
    stack.input(NS_GATEWAY, 0);
    expect(out).toHaveLength(1);
    const { eth, ip, icmp } = parse(out[0]!);
    expect([eth.dst, eth.src]).toEqual([GUEST6_MAC, GW_MAC]);
    expect([ip.src, ip.dst, ip.hopLimit]).toEqual([GW6, GUEST6, 255]);
    expect(icmp!.type).toBe(Icmpv6Type.NeighborAdvertisement);
    expect(icmp!.restOfHeader >>> 29).toBe(0b111);
    expect(readIpv6(out[0]!, icmp!.payloadOff)).toBe(GW6);
    expect(out[0]!.subarray(icmp!.payloadOff + 16, icmp!.payloadOff + 24)).toEqual(Uint8Array.of(2, 1, 0x52, 0x55, 10, 0, 2, 2));
    expect(six.lookup(GUEST6)).toBe(GUEST6_MAC);
  });
  test('NS with a hop limit below 255, or a zero-length option, is dropped', () => {
    const { stack, six, out } = makeStack();
    const low = Uint8Array.from(NS_GATEWAY);
    low[14 + 7] = 254;
    stack.input(low, 0);
    const zero = Uint8Array.from(NS_GATEWAY);
    zero[14 + 40 + 24 + 1] = 0; // the source link-layer option's length (checksum now wrong too: fix it)
    zero[14 + 40 + 2] = 0;
    zero[14 + 40 + 3] = 0;
    const ip = Ipv6View.checked(zero, 14, zero.length - 14) as Ipv6View;
    writeIcmpv6(zero, ip.payloadOff, 135, 0, 0, ip.payloadLen - 8, ip.addrSum);
    stack.input(zero, 0);
    expect(out).toHaveLength(0);
    expect(six.stats.icmpv6.badNdp).toBe(2);
  });
  test('DAD for vmnat\'s own address is defended: NA to all-nodes', () => {
    const { stack, six, out } = makeStack();
    const f = Uint8Array.from(DAD_NS);
    f.set(ipv6Bytes(GW6), 14 + 48); // target ::2
    const ip = Ipv6View.checked(f, 14, f.length - 14) as Ipv6View;
    writeIcmpv6(f, ip.payloadOff, 135, 0, 0, ip.payloadLen - 8, ip.addrSum);
    stack.input(f, 0);
    expect(out).toHaveLength(1);
    const p = parse(out[0]!);
    expect(p.ip.dst).toBe('ff02::1');
    expect(p.icmp!.restOfHeader >>> 29).toBe(0b101); // R and O, not S
    expect(six.stats.icmpv6.dadDefended).toBe(1);
  });
  test('RS: an RA to the solicitor with the prefix (L, A), MTU, RDNSS ::3 and DNSSL', () => {
    const { stack, six, out } = makeStack();
    stack.input(RS, 0);
    expect(out).toHaveLength(1);
    const { ip, icmp } = parse(out[0]!);
    expect([ip.src, ip.dst, ip.hopLimit]).toEqual(['fe80::2', GUEST6_LL, 255]);
    expect(icmp!.type).toBe(Icmpv6Type.RouterAdvertisement);
    expect(icmp!.restOfHeader).toBe(((64 << 24) | (0x40 << 16) | 1800) >>> 0); // hop limit, O flag, lifetime
    const opts = ndpOptions(out[0]!, icmp!.payloadOff + 8, icmp!.off + icmp!.len)!;
    expect(opts.map((o) => o.type)).toEqual([1, 5, 3, 25, 31]);
    const b = out[0]!;
    const prefix = opts[2]!;
    expect([b[prefix.off + 2], b[prefix.off + 3]]).toEqual([64, 0xc0]);
    expect(readIpv6(b, prefix.off + 16)).toBe(PREFIX);
    expect(readIpv6(b, opts[3]!.off + 8)).toBe(DNS6);
    const mtu = opts[1]!;
    expect((b[mtu.off + 6]! << 8) | b[mtu.off + 7]!).toBe(1500);
    expect(new TextDecoder().decode(b.subarray(opts[4]!.off + 8, opts[4]!.off + 8 + 16))).toBe('\x05vmnat\x08internal\x00');
    expect(six.stats.icmpv6.txRouterAdverts).toBe(1);
  });
  test('periodic RAs to all-nodes, on the stack\'s deadline', () => {
    const { stack, out } = makeStack();
    expect(stack.nextDeadline()).toBe(0);
    stack.poll(0);
    expect(out).toHaveLength(1);
    expect(parse(out[0]!).ip.dst).toBe('ff02::1');
    expect(stack.nextDeadline()).toBe(120_000);
    stack.poll(60_000);
    expect(out).toHaveLength(1);
    stack.poll(120_000);
    expect(out).toHaveLength(2);
  });
  test('a guest sending from ::2 is never believed; MLD is the link\'s business', () => {
    const { stack, six, out } = makeStack();
    const f = Uint8Array.from(ECHO_REQUEST6);
    f.set(ipv6Bytes(GW6), 14 + 8);
    stack.input(f, 0);
    stack.input(MLD_REPORT_HBH, 0);
    expect(out).toHaveLength(0);
    expect(six.stats.ipv6.badSource).toBe(1);
    expect(six.stats.ipv6.multicastIgnored).toBe(1);
  });
});

describe('resolving a guest that has not spoken yet', () => {
  test('a solicitation goes out; the guest\'s answer releases the waiter, silence ends it with undefined', async () => {
    const { stack, six, out } = makeStack();
    stack.poll(0); // the first periodic RA
    out.length = 0;
    const got: (number | undefined)[] = [];
    six.resolveThen(GUEST6, 1000, (m) => got.push(m));
    six.resolveThen('fd00:10:0:2::99', 1000, (m) => got.push(m));
    expect(out).toHaveLength(2);
    const ns = parse(out[0]!);
    expect([ns.icmp!.type, ns.ip.dst, ns.ip.hopLimit]).toEqual([Icmpv6Type.NeighborSolicitation, 'ff02::1:ff12:3456', 255]);
    expect(readIpv6(out[0]!, ns.icmp!.payloadOff)).toBe(GUEST6);
    stack.input(ECHO_REQUEST6, 1100); // anything from the guest's address teaches vmnat its MAC
    await Promise.resolve();
    expect(got).toEqual([GUEST6_MAC]);
    expect(stack.nextDeadline()).toBe(2000); // the next solicitation for the silent one
    stack.poll(2000);
    expect(out.filter((f) => parse(f).icmp?.type === Icmpv6Type.NeighborSolicitation)).toHaveLength(3); // asked again
    stack.poll(4000);
    expect(got).toEqual([GUEST6_MAC, undefined]);
  });
});

describe('echo and fragments', () => {
  test('ping ::2: the reply keeps id, sequence and data', () => {
    const { stack, out } = makeStack();
    stack.input(ECHO_REQUEST6, 0);
    expect(out).toHaveLength(1);
    const { ip, icmp } = parse(out[0]!);
    const req = parse(ECHO_REQUEST6);
    expect([ip.src, ip.dst]).toEqual([GW6, GUEST6]);
    expect([icmp!.type, icmp!.ident, icmp!.seq]).toEqual([129, req.icmp!.ident, req.icmp!.seq]);
    expect(out[0]!.subarray(icmp!.payloadOff)).toEqual(ECHO_REQUEST6.subarray(req.icmp!.payloadOff));
  });
  test('a UDP datagram sent larger than the MTU leaves in fragments that reassemble to it', () => {
    const { stack, out } = makeStack(1280);
    const payload = Uint8Array.from({ length: 3000 }, (_, i) => i & 0xff);
    stack.ipv6!.learn(GUEST6, GUEST6_MAC);
    expect(stack.sendUdp(DNS6, 53, GUEST6, 4000, payload)).toBe(true);
    expect(out).toHaveLength(3);
    for (const f of out) expect(f.length - 14).toBeLessThanOrEqual(1280);
    const r = new Ipv6Reassembler();
    let whole: Uint8Array | undefined;
    for (const f of out) whole = r.input(Ipv6View.checked(f, 14, f.length - 14) as Ipv6View, 0) ?? whole;
    const ip = Ipv6View.checked(whole!, 0, whole!.length) as Ipv6View;
    expect([ip.protocol, ip.isFragment, ip.payloadLen]).toEqual([17, false, 3008]);
    const udp = UdpView.checkedSum(ip.buf, ip.payloadOff, ip.payloadLen, ip.addrSum, false, false) as UdpView;
    expect(ip.buf.subarray(udp.payloadOff, udp.payloadOff + udp.payloadLen)).toEqual(payload);
  });
  test('fragments from the guest reassemble for a bound service; overlaps poison the datagram; a lost one times out', () => {
    const { stack, six, out } = makeStack();
    const got: number[] = [];
    six.bindUdp(DNS6, 53, (d) => got.push(d.len));
    const frags = (ident: number, overlap = false): Uint8Array[] => {
      const data = new Uint8Array(8 + 2000);
      data[4] = 2008 >> 8;
      data[5] = 2008 & 0xff;
      const whole = new Uint8Array(40 + 2008);
      writeIpv6(whole, 0, 2008, 17, 64, GUEST6, DNS6);
      whole.set(data, 40);
      writeUdpSum(whole, 40, 4000, 53, 2000, ipv6AddrSum(whole, 0));
      const pieces: [number, number][] = [[0, 1232], [overlap ? 1224 : 1232, 2008]];
      return pieces.map(([a, b]) => {
        const f = new Uint8Array(14 + 40 + 8 + (b - a));
        f[12] = 0x86;
        f[13] = 0xdd;
        f.set(GW_MAC_BYTES, 0);
        writeIpv6(f, 14, 8 + (b - a), 44, 64, GUEST6, DNS6);
        writeFragmentHeader(f, 14 + 40, 17, a, b < 2008, ident);
        f.set(whole.subarray(40 + a, 40 + b), 14 + 48);
        return f;
      });
    };
    for (const f of frags(7)) stack.input(f, 0);
    expect(got).toEqual([2000]);
    for (const f of frags(8, true)) stack.input(f, 0);
    expect(got).toEqual([2000]);
    expect(six.stats.reassembly6.overlap).toBe(1);
    expect(six.stats.ipv6.reassembled).toBe(1);
    // Only the first fragment of a third datagram: 30 s later, time exceeded (code 1) quoting it.
    stack.input(frags(9)[0]!, 1000);
    const sent = out.length;
    stack.poll(31_001);
    const te = out.slice(sent).map(parse).find((p) => p.icmp?.type === Icmpv6Type.TimeExceeded);
    expect(te, 'no time exceeded').toBeDefined();
    expect([te!.icmp!.code, te!.ip.src, te!.ip.dst]).toEqual([1, GW6, GUEST6]);
    expect(six.stats.reassembly6.timeout).toBe(1);
  });
});
const GW_MAC_BYTES = Uint8Array.of(0x52, 0x55, 10, 0, 2, 2);

describe('the IPv6 NAT policy', () => {
  const cfg = { gateway: GW6, dns: DNS6, prefix: PREFIX, hostLoopback: true };
  test.each([
    [GW6, 80, { kind: 'host', address: '::1' }],
    [DNS6, 53, { kind: 'dns' }],
    [DNS6, 80, { kind: 'refuse', reason: 'closedPort' }],
    ['ff02::1', 0, { kind: 'drop', reason: 'multicast' }],
    ['::1', 80, { kind: 'drop', reason: 'martian' }],
    ['::ffff:a00:202', 80, { kind: 'drop', reason: 'martian' }],
    ['fe80::1', 80, { kind: 'drop', reason: 'localSubnet' }],
    ['fd00:10:0:2::99', 80, { kind: 'drop', reason: 'localSubnet' }],
    ['fd99:1::2', 80, { kind: 'host', address: 'fd99:1::2' }],
    ['2001:db8::1', 443, { kind: 'host', address: '2001:db8::1' }],
  ])('%s:%d', (dst, port, want) => {
    expect(natTarget6(cfg, dst, port)).toEqual(want);
  });
  test('--deny ranges', () => {
    const deny = [{ prefix: 'fd98::', prefixLen: 16 }, { prefix: 'fd00:ec2::254', prefixLen: 128 }];
    expect(natTarget6({ ...cfg, deny }, 'fd98:1::5', 80)).toEqual({ kind: 'deny' });
    expect(natTarget6({ ...cfg, deny }, 'fd00:ec2::254', 80)).toEqual({ kind: 'deny' });
    expect(natTarget6({ ...cfg, deny }, 'fd00:ec2::253', 80)).toEqual({ kind: 'host', address: 'fd00:ec2::253' });
  });
  test('--no-host-loopback refuses ::2 as it refuses 10.0.2.2', () => {
    expect(natTarget6({ ...cfg, hostLoopback: false }, GW6, 80)).toEqual({ kind: 'refuse', reason: 'noHostLoopback' });
  });
});

describe('flags', () => {
  const run = (extra: string[]): Config => {
    const o = parseArgs(['--socket', '/tmp/vmnat-x.sock', '--dns-server', '127.0.0.1:9', ...extra]);
    if (o.action !== 'run') throw new Error('not run');
    return o.config;
  };
  test('IPv6 is on by default, on fd00:10:0:2::/64', () => {
    expect(run([]).ipv6).toEqual({ prefix: PREFIX, gateway: GW6, dns: DNS6 });
  });
  test('--ipv6-prefix and --no-ipv6', () => {
    expect(run(['--ipv6-prefix', 'FD12:3456:789a:1::/64']).ipv6).toEqual({ prefix: 'fd12:3456:789a:1::', gateway: 'fd12:3456:789a:1::2', dns: 'fd12:3456:789a:1::3' });
    expect(run(['--no-ipv6']).ipv6).toBeUndefined();
    expect(run(['--mtu', '1000']).ipv6).toBeUndefined();
  });
  test.each([
    [['--ipv6-prefix', 'fd00::/48'], /must be a \/64/],
    [['--ipv6-prefix', 'fd00::1/64'], /host bits set/],
    [['--ipv6-prefix', 'fe80::/64'], /not a unicast prefix/],
    [['--ipv6-prefix', 'nope'], /is not an IPv6 prefix/],
    [['--no-ipv6', '--ipv6-prefix', 'fd00::/64'], /cannot be used with --no-ipv6/],
    [['--dhcp-static', '52:54:00:00:00:01=fd99::5'], /is not in fd00:10:0:2::\/64/],
    [['--dhcp-static', 'zz=fd00:10:0:2::5'], /neither a MAC nor a DUID/],
    [['--dhcp-static', '52:54:00:00:00:01=fd00:10:0:2::2'], /reserved/],
  ])('%j is refused', (extra, want) => {
    expect(() => run(extra)).toThrow(want);
  });
  test('--deny takes IPv6 CIDRs; the IPv6 metadata address is denied unless --allow-link-local', () => {
    expect(run(['--deny', 'fd12::/16', '--deny', '10.1.0.0/16']).deny6).toEqual([{ prefix: 'fd00:ec2::254', prefixLen: 128 }, { prefix: 'fd12::', prefixLen: 16 }]);
    expect(run(['--allow-link-local']).deny6).toEqual([]);
    expect(() => run(['--deny', 'fd12::1/16'])).toThrow(/host bits set \(did you mean fd12::\/16\?\)/);
  });
  test('--dhcp-static by MAC and by DUID', () => {
    expect(run(['--dhcp-static', '52:54:00:00:00:01=fd00:10:0:2::20', '--dhcp-static', '00:03:00:01:52:54:00:00:00:02=fd00:10:0:2::21']).dhcp6Static).toEqual([
      { mac: 0x5254_0000_0001, ip: 'fd00:10:0:2::20' },
      { duid: '0003000152540000' + '0002', ip: 'fd00:10:0:2::21' },
    ]);
  });
});

describe('DHCPv6', () => {
  const CLIENT_MAC = 0x5254_0000_0009;
  const DUID = Uint8Array.of(0, 3, 0, 1, 0x52, 0x54, 0, 0, 0, 9);
  const server = (statics = [] as { mac?: number; duid?: string; ip: string }[]) =>
    new Dhcp6Server({ prefix: PREFIX, dns: DNS6, reserved: [GW6, DNS6], searchDomains: ['vmnat.internal'], leaseTimeSec: 3600, statics, serverMac: GW_MAC });
  const opt = (code: number, body: Uint8Array) => Uint8Array.of(code >> 8, code & 0xff, body.length >> 8, body.length & 0xff, ...body);
  const iaNa = (iaid: number) => opt(Dhcp6Opt.IaNa, Uint8Array.of(0, 0, 0, iaid, 0, 0, 0, 0, 0, 0, 0, 0));
  const msg = (type: number, ...opts: Uint8Array[]) => Uint8Array.of(type, 0xab, 0xcd, 0xef, ...opts.flatMap((o) => [...o]));
  const options = (reply: Uint8Array) => {
    const out = new Map<number, Uint8Array>();
    for (let i = 4; i + 4 <= reply.length; ) {
      const code = (reply[i]! << 8) | reply[i + 1]!;
      const len = (reply[i + 2]! << 8) | reply[i + 3]!;
      out.set(code, reply.subarray(i + 4, i + 4 + len));
      i += 4 + len;
    }
    return out;
  };
  const addrOf = (ia: Uint8Array) => readIpv6(ia, 12 + 4);

  test('INFORMATION-REQUEST (stateless): DNS ::3 and the domain list', () => {
    const s = server();
    const r = s.handle(msg(Dhcp6Msg.InformationRequest, opt(Dhcp6Opt.ClientId, DUID)), CLIENT_MAC, 0)!;
    expect(r.subarray(0, 4)).toEqual(Uint8Array.of(Dhcp6Msg.Reply, 0xab, 0xcd, 0xef));
    const o = options(r);
    expect(readIpv6(o.get(Dhcp6Opt.DnsServers)!, 0)).toBe(DNS6);
    expect(o.get(Dhcp6Opt.DomainList)).toEqual(Uint8Array.of(5, ...new TextEncoder().encode('vmnat'), 8, ...new TextEncoder().encode('internal'), 0));
    expect(o.get(Dhcp6Opt.ClientId)).toEqual(DUID);
    expect(o.get(Dhcp6Opt.ServerId)).toEqual(s.serverDuid);
  });
  test('SOLICIT → ADVERTISE → REQUEST → REPLY: one address, the same each time; RELEASE frees it', () => {
    const s = server();
    const adv = s.handle(msg(Dhcp6Msg.Solicit, opt(Dhcp6Opt.ClientId, DUID), iaNa(1)), CLIENT_MAC, 0)!;
    expect(adv[0]).toBe(Dhcp6Msg.Advertise);
    const a = addrOf(options(adv).get(Dhcp6Opt.IaNa)!);
    expect(a).toBe('fd00:10:0:2::100');
    const sid = opt(Dhcp6Opt.ServerId, s.serverDuid);
    const rep = s.handle(msg(Dhcp6Msg.Request, opt(Dhcp6Opt.ClientId, DUID), sid, iaNa(1)), CLIENT_MAC, 1)!;
    expect(rep[0]).toBe(Dhcp6Msg.Reply);
    expect(addrOf(options(rep).get(Dhcp6Opt.IaNa)!)).toBe(a);
    // Another client gets another address.
    const other = s.handle(msg(Dhcp6Msg.Solicit, opt(Dhcp6Opt.ClientId, Uint8Array.of(0, 3, 0, 1, 1, 2, 3, 4, 5, 6)), iaNa(1)), 0x0102_0304_0506, 2)!;
    expect(addrOf(options(other).get(Dhcp6Opt.IaNa)!)).toBe('fd00:10:0:2::101');
    // A REQUEST naming another server is not ours to answer.
    expect(s.handle(msg(Dhcp6Msg.Request, opt(Dhcp6Opt.ClientId, DUID), opt(Dhcp6Opt.ServerId, Uint8Array.of(0, 3, 0, 1, 9, 9, 9, 9, 9, 9)), iaNa(1)), CLIENT_MAC, 3)).toBeUndefined();
    expect(s.stats.notForUs).toBe(1);
    const rel = s.handle(msg(Dhcp6Msg.Release, opt(Dhcp6Opt.ClientId, DUID), sid, iaNa(1)), CLIENT_MAC, 4)!;
    expect(rel[0]).toBe(Dhcp6Msg.Reply);
    expect(s.list(5).map((b) => b.ip)).toEqual(['fd00:10:0:2::101']);
  });
  test('Rapid Commit: the SOLICIT gets the REPLY at once', () => {
    const r = server().handle(msg(Dhcp6Msg.Solicit, opt(Dhcp6Opt.ClientId, DUID), opt(Dhcp6Opt.RapidCommit, new Uint8Array(0)), iaNa(2)), CLIENT_MAC, 0)!;
    expect(r[0]).toBe(Dhcp6Msg.Reply);
    expect(options(r).has(Dhcp6Opt.RapidCommit)).toBe(true);
  });
  test('a static address by MAC or by DUID', () => {
    const s = server([{ mac: CLIENT_MAC, ip: 'fd00:10:0:2::77' }, { duid: '00030001010203040506', ip: 'fd00:10:0:2::78' }]);
    const a = s.handle(msg(Dhcp6Msg.Solicit, opt(Dhcp6Opt.ClientId, DUID), iaNa(1)), CLIENT_MAC, 0)!;
    expect(addrOf(options(a).get(Dhcp6Opt.IaNa)!)).toBe('fd00:10:0:2::77');
    const b = s.handle(msg(Dhcp6Msg.Solicit, opt(Dhcp6Opt.ClientId, Uint8Array.of(0, 3, 0, 1, 1, 2, 3, 4, 5, 6)), iaNa(1)), 0x0a0b_0c0d_0e0f, 0)!;
    expect(addrOf(options(b).get(Dhcp6Opt.IaNa)!)).toBe('fd00:10:0:2::78');
  });
  ftest.prop([fc.uint8Array({ maxLength: 300 })])('arbitrary messages never throw', (b) => {
    server().handle(b, CLIENT_MAC, 0);
  });
});
