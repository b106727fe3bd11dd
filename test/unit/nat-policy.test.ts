import { describe, expect, test } from 'vitest';
import { natTarget, type NatPolicyConfig } from '../../src/nat/policy.ts';
import { parseIpv4 } from '../../src/stack/wire/addr.ts';

const ip = (s: string) => parseIpv4(s)!;
const cfg: NatPolicyConfig = { network: ip('10.0.2.0'), netmask: ip('255.255.255.0'), gateway: ip('10.0.2.2'), dns: ip('10.0.2.3'), hostLoopback: true };

describe('natTarget', () => {
  const table: [string, number, boolean, unknown][] = [
    ['10.0.2.2', 80, true, { kind: 'host', address: '127.0.0.1' }],
    ['10.0.2.2', 80, false, { kind: 'refuse', reason: 'noHostLoopback' }],
    ['10.0.2.3', 53, true, { kind: 'dns' }],
    ['10.0.2.3', 80, true, { kind: 'refuse', reason: 'closedPort' }],
    ['10.0.2.255', 9, true, { kind: 'drop', reason: 'broadcast' }],
    ['255.255.255.255', 9, true, { kind: 'drop', reason: 'broadcast' }],
    ['224.0.0.251', 5353, true, { kind: 'drop', reason: 'multicast' }],
    ['239.255.255.250', 1900, true, { kind: 'drop', reason: 'multicast' }],
    ['127.0.0.1', 80, true, { kind: 'drop', reason: 'martian' }],
    ['0.1.2.3', 80, true, { kind: 'drop', reason: 'martian' }],
    ['240.0.0.1', 80, true, { kind: 'drop', reason: 'martian' }],
    ['10.0.2.16', 80, true, { kind: 'drop', reason: 'localSubnet' }],
    ['192.0.2.10', 443, true, { kind: 'host', address: '192.0.2.10' }],
    ['10.0.3.1', 22, true, { kind: 'host', address: '10.0.3.1' }],
  ];
  for (const [dst, port, loop, want] of table) {
    test(`${dst}:${port}${loop ? '' : ' (no host loopback)'}`, () => {
      expect(natTarget({ ...cfg, hostLoopback: loop }, ip(dst), port)).toEqual(want);
    });
  }
});

describe('natTarget with denied ranges', () => {
  const deny = { ...cfg, deny: [{ network: ip('169.254.0.0'), mask: ip('255.255.0.0') }, { network: ip('192.168.1.7'), mask: ip('255.255.255.255') }] };
  const table: [string, number, unknown][] = [
    ['169.254.169.254', 80, { kind: 'deny' }],
    ['169.254.0.1', 53, { kind: 'deny' }],
    ['169.255.0.1', 80, { kind: 'host', address: '169.255.0.1' }],
    ['192.168.1.7', 22, { kind: 'deny' }],
    ['192.168.1.8', 22, { kind: 'host', address: '192.168.1.8' }],
    // vmnat's own services are not NAT destinations: --no-host-loopback governs the gateway.
    ['10.0.2.2', 80, { kind: 'host', address: '127.0.0.1' }],
    ['10.0.2.3', 53, { kind: 'dns' }],
  ];
  for (const [dst, port, want] of table) {
    test(`${dst}:${port}`, () => expect(natTarget(deny, ip(dst), port)).toEqual(want));
  }
  test('0.0.0.0/0 denies every outside address', () => {
    expect(natTarget({ ...cfg, deny: [{ network: 0, mask: 0 }] }, ip('8.8.8.8'), 53)).toEqual({ kind: 'deny' });
  });
});

