/**
 * DNS at 10.0.2.3 with the kernel as the guest: dig in the namespace asks vmnat, which forwards to
 * a DNS server this test runs on the host's loopback (never to the host's real resolver).
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { createNetns, leaseWithUdhcpc, type Netns } from '../helpers/netns.ts';
import { killAll, startVmnat, type VmnatProcess } from '../helpers/proc.ts';
import { deadUdpPort, startTestDns, type TestDns } from '../helpers/dnsserver.ts';

let dns: TestDns;
let ns: Netns | undefined;
let vmnat: VmnatProcess | undefined;

const manyTxt = Array.from({ length: 40 }, (_, i) => ({ type: 'TXT' as const, name: 'big.vmnat.test', ttl: 60, data: `record ${i} ${'x'.repeat(40)}` }));

beforeAll(async () => {
  dns = await startTestDns({
    'www.vmnat.test': [
      { type: 'A', name: 'www.vmnat.test', ttl: 300, data: '192.0.2.80' },
      { type: 'AAAA', name: 'www.vmnat.test', ttl: 300, data: '2001:db8::80' },
    ],
    'vmnat.test': [
      { type: 'MX', name: 'vmnat.test', ttl: 300, data: { preference: 10, exchange: 'mail.vmnat.test' } },
      { type: 'TXT', name: 'vmnat.test', ttl: 300, data: 'v=spf1 -all' },
    ],
    'big.vmnat.test': manyTxt,
  });
});
afterEach(async () => {
  await vmnat?.stop();
  vmnat = undefined;
  await ns?.destroy();
  ns = undefined;
});
afterAll(async () => {
  await dns?.close();
  killAll();
});

async function guest(args: string[]): Promise<Netns> {
  const n = await createNetns();
  ns = n;
  vmnat = await startVmnat(['--tap', 'tap0', '--netns', n.path, ...args]);
  await leaseWithUdhcpc(n);
  return n;
}

const dig = (n: Netns, args: string[]) => n.exec(['dig', '@10.0.2.3', '+time=3', '+tries=1', ...args], { timeoutMs: 20_000 });

describe.sequential('dig @10.0.2.3', () => {
  test('A, AAAA, TXT and MX come from the upstream; the upstream saw the queries', async () => {
    const n = await guest(['--dns-server', `127.0.0.1:${dns.port}`]);
    expect((await dig(n, ['+short', 'www.vmnat.test', 'A'])).stdout.trim()).toBe('192.0.2.80');
    expect((await dig(n, ['+short', 'www.vmnat.test', 'AAAA'])).stdout.trim()).toBe('2001:db8::80');
    expect((await dig(n, ['+short', 'vmnat.test', 'TXT'])).stdout.trim()).toBe('"v=spf1 -all"');
    expect((await dig(n, ['+short', 'vmnat.test', 'MX'])).stdout.trim()).toBe('10 mail.vmnat.test.');
    const nx = await dig(n, ['nope.vmnat.test', 'A']);
    expect(nx.stdout).toContain('status: NXDOMAIN');
    expect(dns.queries.filter((q) => q.name === 'www.vmnat.test').map((q) => q.type)).toEqual(expect.arrayContaining(['A', 'AAAA']));
  });

  test('an answer over 512 bytes comes back truncated over UDP (dig +notcp +noedns sees TC)', async () => {
    const n = await guest(['--dns-server', `127.0.0.1:${dns.port}`]);
    const r = await dig(n, ['+notcp', '+noedns', '+ignore', 'big.vmnat.test', 'TXT']);
    expect(r.stdout).toMatch(/flags: [a-z ]*tc/);
    // With EDNS (dig's default 1232 bytes) the 2 kB answer still does not fit: truncated too.
    const e = await dig(n, ['+notcp', '+ignore', 'big.vmnat.test', 'TXT']);
    expect(e.stdout).toMatch(/flags: [a-z ]*tc/);
  });

  test('over TCP: dig +tcp, and a TC answer retried over TCP comes back whole', async () => {
    const n = await guest(['--dns-server', `127.0.0.1:${dns.port}`]);
    expect((await dig(n, ['+tcp', '+short', 'www.vmnat.test', 'A'])).stdout.trim()).toBe('192.0.2.80');
    // dig asks over UDP, sees TC, and retries over TCP to 10.0.2.3:53 by itself.
    const r = await dig(n, ['+noedns', 'big.vmnat.test', 'TXT']);
    expect(r.stdout).toContain('status: NOERROR');
    expect(r.stdout).toMatch(/ANSWER: 40,/);
    expect(r.stdout).toMatch(/\(TCP\)/);
    expect(dns.queries.some((q) => q.transport === 'tcp' && q.name === 'big.vmnat.test')).toBe(true);
  });

  test('failover: the first upstream is dead, the second answers', async () => {
    const dead = await deadUdpPort();
    const n = await guest(['--dns-server', `127.0.0.1:${dead}`, '--dns-server', `127.0.0.1:${dns.port}`]);
    const r = await dig(n, ['+short', 'www.vmnat.test', 'A']);
    expect(r.stdout.trim()).toBe('192.0.2.80');
  });

  test('--dns-host answers with no upstream at all, case-insensitively; other names get SERVFAIL', async () => {
    const dead = await deadUdpPort();
    const n = await guest(['--dns-server', `127.0.0.1:${dead}`, '--dns-host', 'Build.Local=10.0.2.2', '--dns-host', 'build.local=fd00::2']);
    expect((await dig(n, ['+short', 'BUILD.local', 'A'])).stdout.trim()).toBe('10.0.2.2');
    expect((await dig(n, ['+short', 'build.LOCAL', 'AAAA'])).stdout.trim()).toBe('fd00::2');
    const other = await dig(n, ['elsewhere.test', 'A']);
    expect(other.stdout).toContain('status: SERVFAIL');
  });
});
