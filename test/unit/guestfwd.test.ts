/**
 * Guest-to-host forwards (--guestfwd): the rule syntax (qemu's guestfwd with the unix: and tcp:
 * devices), the NAT policy's lookup, and the stack answering ARP and ping as the virtual host.
 * The data path with real peers is in test/e2e/services-forwards.test.ts.
 */
import { describe, expect, test } from 'vitest';
import { GuestForwardError, GuestForwards, formatGuestfwd, parseGuestfwd, parseGuestfwdFlags } from '../../src/portfwd/guestfwd.ts';
import { natTarget } from '../../src/nat/policy.ts';
import { Stack, virtualMac } from '../../src/stack/stack.ts';
import { ArpOp, ArpView, writeArp } from '../../src/stack/wire/arp.ts';
import { EthernetView, EtherType, writeEthernet } from '../../src/stack/wire/ethernet.ts';
import { MAC_BROADCAST, parseIpv4 } from '../../src/stack/wire/addr.ts';

const ip = (t: string) => parseIpv4(t)!;
const net = { network: ip('10.0.2.0'), netmask: ip('255.255.255.0'), dns: ip('10.0.2.3') };

describe('--guestfwd syntax', () => {
  test('qemu forms: unix and tcp devices, tcp: optional, SERVER defaults to the network .4', () => {
    expect(parseGuestfwd('tcp:10.0.2.100:1234-unix:/run/svc-1.sock', net)).toEqual({ addr: '10.0.2.100', port: 1234, target: { kind: 'unix', path: '/run/svc-1.sock' } });
    expect(parseGuestfwd(':10.0.2.100:1234-tcp:127.0.0.1:5000', net)).toEqual({ addr: '10.0.2.100', port: 1234, target: { kind: 'tcp', host: '127.0.0.1', port: 5000 } });
    expect(parseGuestfwd('tcp::80-tcp:[::1]:8080', net)).toEqual({ addr: '10.0.2.4', port: 80, target: { kind: 'tcp', host: '::1', port: 8080 } });
    expect(parseGuestfwd('tcp::80-tcp:localhost:8080', { ...net, network: ip('192.168.0.0'), netmask: ip('255.255.0.0') }).addr).toBe('192.168.2.4');
    expect(parseGuestfwd('tcp:10.0.2.2:9999-unix:/s.sock', net).addr).toBe('10.0.2.2'); // the gateway: allowed
    expect(formatGuestfwd(parseGuestfwd(':10.0.2.100:1234-tcp:[::1]:5000', net))).toBe('tcp:10.0.2.100:1234-tcp:[::1]:5000');
  });

  const bad: [string, string][] = [
    ['10.0.2.100:1234', 'expected [tcp]:[SERVER]:PORT-unix:/PATH or [tcp]:[SERVER]:PORT-tcp:HOST:PORT'],
    ['udp:10.0.2.100:53-unix:/s.sock', 'protocol "udp": guest forwards are TCP (as in qemu)'],
    ['tcp:10.0.2.100:0-unix:/s.sock', 'port "0" is not a port in 1..65535'],
    ['tcp:10.0.2.100:http-unix:/s.sock', 'port "http" is not a port in 1..65535'],
    ['tcp:10.0.3.100:1234-unix:/s.sock', 'server 10.0.3.100 is outside the guest network 10.0.2.0/24'],
    ['tcp:10.0.2.255:1234-unix:/s.sock', 'server 10.0.2.255 is not a host address of 10.0.2.0/24'],
    ['tcp:10.0.2.3:1234-unix:/s.sock', 'server 10.0.2.3 is the DNS address'],
    ['tcp:host:1234-unix:/s.sock', 'server "host" is not an IPv4 address'],
    ['tcp:10.0.2.100:1234-unix:s.sock', 'socket path "s.sock" must be absolute'],
    ['tcp:10.0.2.100:1234-unix:/s.sock,server,nowait', 'chardev options (",server,nowait") are not supported: vmnat connects to the socket as a client'],
    ['tcp:10.0.2.100:1234-cmd:nc 127.0.0.1 22', 'cmd: (a program per connection) is not supported; give unix:/PATH or tcp:HOST:PORT'],
    ['tcp:10.0.2.100:1234-tcp:127.0.0.1', 'target "127.0.0.1" is not HOST:PORT'],
    ['tcp:10.0.2.100:1234-tcp:::1:80', 'put an IPv6 target in brackets (tcp:[::1]:80)'],
    ['tcp:10.0.2.100:1234-tcp:127.0.0.1:70000', 'target port "70000" is not a port in 1..65535'],
    ['tcp:10.0.2.100:1234-file:/tmp/x', '"file" is not a device vmnat can connect to'],
  ];
  for (const [text, want] of bad) {
    test(`refused: ${text}`, () => {
      let err: unknown;
      try {
        parseGuestfwd(text, net);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(GuestForwardError);
      expect((err as Error).message).toContain(`${JSON.stringify(text)}: ${want}`);
      expect((err as Error).message).not.toContain('\n');
    });
  }

  test('the same address and port twice', () => {
    expect(() => parseGuestfwdFlags(['tcp:10.0.2.100:1-unix:/a', ':10.0.2.100:1-unix:/b'], net)).toThrow('10.0.2.100:1 is given twice');
  });
});

describe('the policy and the stack', () => {
  const gw = ip('10.0.2.2');
  const table = new GuestForwards(parseGuestfwdFlags(['tcp:10.0.2.100:1234-unix:/run/a.sock', 'tcp:10.0.2.2:9999-tcp:127.0.0.1:5000'], net), gw);
  const cfg = { network: net.network, netmask: net.netmask, gateway: gw, dns: net.dns, hostLoopback: true, guestForwards: table };

  test('natTarget: a rule first (also on the gateway); other ports of the virtual host refused', () => {
    expect(natTarget(cfg, ip('10.0.2.100'), 1234)).toMatchObject({ kind: 'guestfwd', entry: { label: 'unix:/run/a.sock', connect: { path: '/run/a.sock' } } });
    expect(natTarget(cfg, gw, 9999)).toMatchObject({ kind: 'guestfwd', entry: { label: 'tcp:127.0.0.1:5000', connect: { host: '127.0.0.1', port: 5000 } } });
    expect(natTarget(cfg, gw, 80)).toEqual({ kind: 'host', address: '127.0.0.1' });
    expect(natTarget(cfg, ip('10.0.2.100'), 80)).toEqual({ kind: 'refuse', reason: 'closedPort' });
    expect(natTarget(cfg, ip('10.0.2.101'), 1234)).toEqual({ kind: 'drop', reason: 'localSubnet' });
    expect([...table.hosts]).toEqual([ip('10.0.2.100')]); // the gateway is not a new host
  });

  test('the stack answers ARP for an added virtual host with its own MAC, and nothing before', () => {
    const out: Uint8Array[] = [];
    const stack = new Stack({ network: net.network, netmask: net.netmask, gateway: gw, dns: net.dns, mtu: 1500 }, (f) => out.push(Uint8Array.from(f)));
    const guestMac = 0x5254_0012_3456;
    const request = new Uint8Array(42);
    const o = writeEthernet(request, 0, MAC_BROADCAST, guestMac, EtherType.ARP);
    writeArp(request, o, ArpOp.Request, guestMac, ip('10.0.2.15'), 0, ip('10.0.2.100'));
    stack.input(request, 0);
    expect(out).toHaveLength(0);
    expect(stack.addVirtualHost(ip('10.0.2.100'))).toBe(virtualMac(ip('10.0.2.100')));
    stack.input(request, 1);
    expect(out).toHaveLength(1);
    const arp = ArpView.checked(out[0]!, 14, out[0]!.length - 14) as ArpView;
    expect([arp.op, arp.senderIp, arp.senderMac]).toEqual([ArpOp.Reply, ip('10.0.2.100'), virtualMac(ip('10.0.2.100'))]);
    expect((EthernetView.checked(out[0]!, 0, out[0]!.length) as EthernetView).src).toBe(virtualMac(ip('10.0.2.100')));
  });
});
