/**
 * labs/lib/frames.ts on tcpdump's own text: the -nn -e -v output of a real capture from the capture
 * lab (vmnat --pcap, busybox udhcpc + wget in the test VM), kept verbatim, plus hand-made frames
 * for the kinds that capture did not contain (RST, IPv6, DNS, a NAK).
 */
import { describe, expect, test } from 'vitest';
import { explainCapture, splitTcpdump } from '../../labs/lib/frames.ts';

const CAPTURE = `02:13:24.096858 52:54:00:12:34:56 > ff:ff:ff:ff:ff:ff, ethertype IPv4 (0x0800), length 342: (tos 0x0, ttl 64, id 0, offset 0, flags [none], proto UDP (17), length 328)
    0.0.0.0.68 > 255.255.255.255.67: BOOTP/DHCP, Request from 52:54:00:12:34:56, length 300, xid 0xd37e322f, Flags [none]
	  Client-Ethernet-Address 52:54:00:12:34:56
	  Vendor-rfc1048 Extensions
	    Magic Cookie 0x63825363
	    DHCP-Message (53), length 1: Discover
	    MSZ (57), length 2: 576
	    Parameter-Request (55), length 7: 
	      Subnet-Mask (1), Default-Gateway (3), Domain-Name-Server (6), Hostname (12)
	      Domain-Name (15), BR (28), NTP (42)
	    Vendor-Class (60), length 12: "udhcp 1.35.0"
	    Client-ID (61), length 7: ether 52:54:00:12:34:56
02:13:24.100368 52:55:0a:00:02:02 > 52:54:00:12:34:56, ethertype IPv4 (0x0800), length 343: (tos 0x0, ttl 64, id 2, offset 0, flags [none], proto UDP (17), length 329)
    10.0.2.2.67 > 10.0.2.15.68: BOOTP/DHCP, Reply, length 301, xid 0xd37e322f, Flags [none]
	  Your-IP 10.0.2.15
	  Client-Ethernet-Address 52:54:00:12:34:56
	  Vendor-rfc1048 Extensions
	    Magic Cookie 0x63825363
	    DHCP-Message (53), length 1: Offer
	    Server-ID (54), length 4: 10.0.2.2
	    Client-ID (61), length 7: ether 52:54:00:12:34:56
	    Lease-Time (51), length 4: 86400
	    RN (58), length 4: 43200
	    RB (59), length 4: 75600
	    Subnet-Mask (1), length 4: 255.255.255.0
	    Default-Gateway (3), length 4: 10.0.2.2
	    Domain-Name-Server (6), length 4: 10.0.2.3
	    BR (28), length 4: 10.0.2.255
02:13:24.125557 52:54:00:12:34:56 > ff:ff:ff:ff:ff:ff, ethertype IPv4 (0x0800), length 342: (tos 0x0, ttl 64, id 0, offset 0, flags [none], proto UDP (17), length 328)
    0.0.0.0.68 > 255.255.255.255.67: BOOTP/DHCP, Request from 52:54:00:12:34:56, length 300, xid 0xd37e322f, Flags [none]
	  Client-Ethernet-Address 52:54:00:12:34:56
	  Vendor-rfc1048 Extensions
	    Magic Cookie 0x63825363
	    DHCP-Message (53), length 1: Request
	    Requested-IP (50), length 4: 10.0.2.15
	    Server-ID (54), length 4: 10.0.2.2
	    MSZ (57), length 2: 576
	    Parameter-Request (55), length 7: 
	      Subnet-Mask (1), Default-Gateway (3), Domain-Name-Server (6), Hostname (12)
	      Domain-Name (15), BR (28), NTP (42)
	    Vendor-Class (60), length 12: "udhcp 1.35.0"
	    Client-ID (61), length 7: ether 52:54:00:12:34:56
02:13:24.126531 52:55:0a:00:02:02 > 52:54:00:12:34:56, ethertype IPv4 (0x0800), length 343: (tos 0x0, ttl 64, id 3, offset 0, flags [none], proto UDP (17), length 329)
    10.0.2.2.67 > 10.0.2.15.68: BOOTP/DHCP, Reply, length 301, xid 0xd37e322f, Flags [none]
	  Your-IP 10.0.2.15
	  Client-Ethernet-Address 52:54:00:12:34:56
	  Vendor-rfc1048 Extensions
	    Magic Cookie 0x63825363
	    DHCP-Message (53), length 1: ACK
	    Server-ID (54), length 4: 10.0.2.2
	    Client-ID (61), length 7: ether 52:54:00:12:34:56
	    Lease-Time (51), length 4: 86400
	    RN (58), length 4: 43200
	    RB (59), length 4: 75600
	    Subnet-Mask (1), length 4: 255.255.255.0
	    Default-Gateway (3), length 4: 10.0.2.2
	    Domain-Name-Server (6), length 4: 10.0.2.3
	    BR (28), length 4: 10.0.2.255
02:13:24.199672 52:54:00:12:34:56 > ff:ff:ff:ff:ff:ff, ethertype ARP (0x0806), length 42: Ethernet (len 6), IPv4 (len 4), Request who-has 10.0.2.2 tell 10.0.2.15, length 28
02:13:24.199968 52:55:0a:00:02:02 > 52:54:00:12:34:56, ethertype ARP (0x0806), length 42: Ethernet (len 6), IPv4 (len 4), Reply 10.0.2.2 is-at 52:55:0a:00:02:02, length 28
02:13:24.201898 52:54:00:12:34:56 > 52:55:0a:00:02:02, ethertype IPv4 (0x0800), length 74: (tos 0x0, ttl 64, id 28736, offset 0, flags [DF], proto TCP (6), length 60)
    10.0.2.15.60442 > 10.0.2.2.43945: Flags [S], cksum 0xb31e (correct), seq 1905576414, win 64240, options [mss 1460,sackOK,TS val 3687240419 ecr 0,nop,wscale 5], length 0
02:13:24.206567 52:55:0a:00:02:02 > 52:54:00:12:34:56, ethertype IPv4 (0x0800), length 66: (tos 0x0, ttl 64, id 4, offset 0, flags [none], proto TCP (6), length 52)
    10.0.2.2.43945 > 10.0.2.15.60442: Flags [S.], cksum 0x3d31 (correct), seq 2250883167, ack 1905576415, win 65535, options [mss 1460,nop,nop,sackOK,nop,wscale 5], length 0
02:13:24.213021 52:54:00:12:34:56 > 52:55:0a:00:02:02, ethertype IPv4 (0x0800), length 54: (tos 0x0, ttl 64, id 28737, offset 0, flags [DF], proto TCP (6), length 40)
    10.0.2.15.60442 > 10.0.2.2.43945: Flags [.], cksum 0x7629 (correct), ack 1, win 2008, length 0
02:13:24.217543 52:54:00:12:34:56 > 52:55:0a:00:02:02, ethertype IPv4 (0x0800), length 131: (tos 0x0, ttl 64, id 28738, offset 0, flags [DF], proto TCP (6), length 117)
    10.0.2.15.60442 > 10.0.2.2.43945: Flags [P.], cksum 0x008e (correct), seq 1:78, ack 1, win 2008, length 77
02:13:24.218456 52:55:0a:00:02:02 > 52:54:00:12:34:56, ethertype IPv4 (0x0800), length 54: (tos 0x0, ttl 64, id 5, offset 0, flags [none], proto TCP (6), length 40)
    10.0.2.2.43945 > 10.0.2.15.60442: Flags [.], cksum 0xfdb3 (correct), ack 78, win 32768, length 0
02:13:24.224767 52:55:0a:00:02:02 > 52:54:00:12:34:56, ethertype IPv4 (0x0800), length 211: (tos 0x0, ttl 64, id 6, offset 0, flags [none], proto TCP (6), length 197)
    10.0.2.2.43945 > 10.0.2.15.60442: Flags [P.], cksum 0x405b (correct), seq 1:158, ack 78, win 32768, length 157
02:13:24.226941 52:55:0a:00:02:02 > 52:54:00:12:34:56, ethertype IPv4 (0x0800), length 54: (tos 0x0, ttl 64, id 7, offset 0, flags [none], proto TCP (6), length 40)
    10.0.2.2.43945 > 10.0.2.15.60442: Flags [F.], cksum 0xfd15 (correct), seq 158, ack 78, win 32768, length 0
02:13:24.227499 52:54:00:12:34:56 > 52:55:0a:00:02:02, ethertype IPv4 (0x0800), length 54: (tos 0x0, ttl 64, id 28739, offset 0, flags [DF], proto TCP (6), length 40)
    10.0.2.15.60442 > 10.0.2.2.43945: Flags [.], cksum 0x7543 (correct), ack 158, win 2004, length 0
02:13:24.235410 52:54:00:12:34:56 > 52:55:0a:00:02:02, ethertype IPv4 (0x0800), length 54: (tos 0x0, ttl 64, id 28740, offset 0, flags [DF], proto TCP (6), length 40)
    10.0.2.15.60442 > 10.0.2.2.43945: Flags [F.], cksum 0x7541 (correct), seq 78, ack 159, win 2004, length 0
02:13:24.235885 52:55:0a:00:02:02 > 52:54:00:12:34:56, ethertype IPv4 (0x0800), length 54: (tos 0x0, ttl 64, id 8, offset 0, flags [none], proto TCP (6), length 40)
    10.0.2.2.43945 > 10.0.2.15.60442: Flags [.], cksum 0xfd14 (correct), ack 79, win 32768, length 0
`;

describe('splitTcpdump', () => {
  test('one frame per timestamped line, continuation lines attached', () => {
    const frames = splitTcpdump(`reading from file x.pcap, link-type EN10MB (Ethernet)\n${CAPTURE}`);
    expect(frames).toHaveLength(16);
    expect(frames[0]!.text).toContain('DHCP-Message (53), length 1: Discover');
    expect(frames[0]!.text).not.toContain('Offer');
    expect(frames[1]!.text).toContain('Offer');
    expect(frames.map((f) => f.index)).toEqual([...Array(16).keys()].map((i) => i + 1));
    expect(frames[0]!.time).toBeCloseTo(2 * 3600 + 13 * 60 + 24.096858, 6);
  });

  test('reads -tt timestamps (seconds since the epoch) too', () => {
    const text = CAPTURE.split('\n').slice(0, 30).map((l) => l.replace(/^02:13:(\d{2}\.\d+) /, (_, s: string) => `${(1796523180 + Number(s)).toFixed(6)} `)).join('\n');
    const frames = splitTcpdump(text);
    expect(frames.length).toBeGreaterThanOrEqual(2);
    expect(frames[0]!.time).toBeCloseTo(1796523180 + 24.096858, 6);
    expect(frames[1]!.time).toBeGreaterThan(frames[0]!.time);
  });
});

describe('explainCapture', () => {
  const explained = explainCapture(splitTcpdump(CAPTURE));

  test('classifies every frame of the real capture, in order', () => {
    expect(explained.map((e) => e.kind)).toEqual([
      'dhcp-discover', 'dhcp-offer', 'dhcp-request', 'dhcp-ack',
      'arp-request', 'arp-reply',
      'tcp-syn', 'tcp-syn-ack', 'tcp-handshake-ack',
      'tcp-data', 'tcp-ack', 'tcp-data', 'tcp-fin', 'tcp-ack', 'tcp-fin', 'tcp-ack',
    ]);
  });

  test('reads the DHCP options it explains from the frame', () => {
    expect(explained[1]!.meaning).toBe(
      "OFFER: vmnat's DHCP server (Server-ID 10.0.2.2) offers 10.0.2.15, mask 255.255.255.0, router 10.0.2.2, DNS 10.0.2.3, lease 86400 s.",
    );
    expect(explained[3]!.meaning).toContain('lease of 10.0.2.15 for 86400 s');
    expect(explained[0]!.summary).toBe('BOOTP/DHCP Discover (0.0.0.0.68 > 255.255.255.255.67, xid 0xd37e322f)');
  });

  test('names vmnat as the owner of the gateway MAC, and drops checksum noise from TCP lines', () => {
    expect(explained[5]!.summary).toBe('ARP, Reply 10.0.2.2 is-at 52:55:0a:00:02:02');
    expect(explained[5]!.meaning).toContain('vmnat answers for 10.0.2.2 with its own MAC 52:55:0a:00:02:02:');
    expect(explained[6]!.summary).toBe(
      'IP 10.0.2.15.60442 > 10.0.2.2.43945: Flags [S], seq 1905576414, win 64240, options [mss 1460,sackOK,TS val 3687240419 ecr 0,nop,wscale 5], length 0',
    );
    expect(explained[6]!.meaning).toContain('vmnat now dials 127.0.0.1:43945');
    expect(explained[9]!.meaning).toMatch(/^77 bytes from the guest/);
    expect(explained[11]!.meaning).toMatch(/^157 bytes the host's server wrote/);
  });

  test('a pure ACK before the SYN-ACK, or from the other side, is not the handshake ACK', () => {
    const lines = [
      '00:00:01.000000 52:55:0a:00:02:02 > 52:54:00:12:34:56, ethertype IPv4 (0x0800), length 54: (tos 0x0, proto TCP (6), length 40)',
      '    10.0.2.2.80 > 10.0.2.15.1000: Flags [.], ack 1, win 100, length 0',
      '00:00:02.000000 52:54:00:12:34:56 > 52:55:0a:00:02:02, ethertype IPv4 (0x0800), length 74: (tos 0x0, proto TCP (6), length 60)',
      '    10.0.2.15.1000 > 10.0.2.2.80: Flags [S], cksum 0x1234 (incorrect -> 0x4321), seq 1, win 100, length 0',
      '00:00:03.000000 52:55:0a:00:02:02 > 52:54:00:12:34:56, ethertype IPv4 (0x0800), length 54: (tos 0x0, proto TCP (6), length 40)',
      '    10.0.2.2.80 > 10.0.2.15.1000: Flags [.], ack 2, win 100, length 0',
      '00:00:04.000000 52:55:0a:00:02:02 > 52:54:00:12:34:56, ethertype IPv4 (0x0800), length 54: (tos 0x0, proto TCP (6), length 40)',
      '    10.0.2.2.80 > 10.0.2.15.1000: Flags [R.], seq 0, ack 2, win 0, length 0',
    ];
    const e = explainCapture(splitTcpdump(lines.join('\n')));
    expect(e.map((x) => x.kind)).toEqual(['tcp-ack', 'tcp-syn', 'tcp-ack', 'tcp-rst']);
    expect(e[1]!.summary).not.toContain('cksum');
  });

  test('IPv6: router and neighbour discovery explained', () => {
    const lines = [
      '00:00:01.000000 52:54:00:12:34:56 > 33:33:ff:12:34:56, ethertype IPv6 (0x86dd), length 86: (hlim 255, next-header ICMPv6 (58) payload length: 32) :: > ff02::1:ff12:3456: [icmp6 sum ok] ICMP6, neighbor solicitation, length 32, who has fd00:10:0:2:5054:ff:fe12:3456',
      '00:00:02.000000 52:54:00:12:34:56 > 33:33:00:00:00:02, ethertype IPv6 (0x86dd), length 70: (hlim 255, next-header ICMPv6 (58) payload length: 16) fe80::5054:ff:fe12:3456 > ff02::2: [icmp6 sum ok] ICMP6, router solicitation, length 16',
      '00:00:03.000000 52:55:0a:00:02:02 > 52:54:00:12:34:56, ethertype IPv6 (0x86dd), length 166: (hlim 255, next-header ICMPv6 (58) payload length: 112) fe80::2 > fe80::5054:ff:fe12:3456: [icmp6 sum ok] ICMP6, router advertisement, length 112',
    ];
    const e = explainCapture(splitTcpdump(lines.join('\n')));
    expect(e.map((x) => x.kind)).toEqual(['ipv6', 'ipv6', 'ipv6']);
    expect(e[0]!.summary).toBe('IPv6 :: > ff02::1:ff12:3456: neighbor solicitation who has fd00:10:0:2:5054:ff:fe12:3456');
    expect(e[0]!.meaning).toContain('duplicate address detection');
    expect(e[1]!.meaning).toContain('asks for a router');
    expect(e[2]!.meaning).toContain('RDNSS');
  });

  test('IPv6, DNS, NAK and frames it does not know', () => {
    const lines = [
      '00:00:01.000000 52:54:00:12:34:56 > 33:33:00:00:00:16, ethertype IPv6 (0x86dd), length 90: (hlim 1, next-header Options (0) payload length: 36) :: > ff02::16: HBH (rtalert: 0x0000) (padn) [icmp6 sum ok] ICMP6, multicast listener report v2, 1 group record(s) [gaddr ff02::1:ff12:3456 to_ex { }]',
      '00:00:02.000000 52:54:00:12:34:56 > 52:55:0a:00:02:02, ethertype IPv4 (0x0800), length 75: (tos 0x0, proto UDP (17), length 61)',
      '    10.0.2.15.40000 > 10.0.2.3.53: 4660+ A? host.lab.test. (31)',
      '00:00:03.000000 52:55:0a:00:02:02 > 52:54:00:12:34:56, ethertype IPv4 (0x0800), length 91: (tos 0x0, proto UDP (17), length 77)',
      '    10.0.2.3.53 > 10.0.2.15.40000: 4660* 1/0/0 host.lab.test. A 10.0.2.2 (47)',
      '00:00:04.000000 52:55:0a:00:02:02 > 52:54:00:12:34:56, ethertype IPv4 (0x0800), length 343: (tos 0x0, proto UDP (17), length 329)',
      '    10.0.2.2.67 > 10.0.2.15.68: BOOTP/DHCP, Reply, length 301, xid 0x1, Flags [none]',
      '\t    DHCP-Message (53), length 1: NAK',
      '00:00:05.000000 52:54:00:12:34:56 > 52:55:0a:00:02:02, ethertype Unknown (0x88b5), length 60:',
    ];
    const e = explainCapture(splitTcpdump(lines.join('\n')));
    expect(e.map((x) => x.kind)).toEqual(['ipv6', 'dns-query', 'dns-answer', 'dhcp-nak', 'unknown']);
    expect(e[0]!.summary).toBe('IPv6 :: > ff02::16: multicast listener report');
    expect(e[0]!.meaning).toContain('MLD');
  });
});
