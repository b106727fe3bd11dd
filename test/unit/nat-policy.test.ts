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
