/**
 * The Linux kernel as the guest: a network namespace whose TAP vmnat opens. Real DHCP clients
 * (busybox udhcpc, ISC dhclient) lease from vmnat, and the kernel pings the gateway.
 */
import { afterAll, afterEach, describe, expect, test } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { createNetns, leaseWithUdhcpc, UDHCPC_SCRIPT, writeScript, type Netns } from '../helpers/netns.ts';
import { killAll, run, sleep, startVmnat, type VmnatProcess } from '../helpers/proc.ts';

let ns: Netns | undefined;
let vmnat: VmnatProcess | undefined;

afterEach(async () => {
  await vmnat?.stop();
  vmnat = undefined;
  await ns?.destroy();
  ns = undefined;
});
afterAll(() => killAll());

const udhcpc = (n: Netns) => leaseWithUdhcpc(n);

async function ping(n: Netns, dst: string, count = 3): Promise<{ ok: boolean; received: number; out: string }> {
  const r = await n.exec(['busybox', 'ping', '-c', String(count), '-W', '2', dst], { timeoutMs: 15_000 });
  const m = /(\d+) packets received/.exec(r.stdout);
  return { ok: r.code === 0, received: m ? Number(m[1]) : 0, out: r.stdout + r.stderr };
}

describe.sequential('netns guest over --tap', () => {
  test('busybox udhcpc leases 10.0.2.15/24 with router .2 and DNS .3; the gateway and DNS answer ping', async () => {
    ns = await createNetns();
    const t0 = performance.now();
    vmnat = await startVmnat(['--tap', 'tap0', '--netns', ns.path]);
    expect(vmnat.ready).toMatchObject({
      link: 'tap',
      tap: 'tap0',
      network: '10.0.2.0/24',
      gateway: '10.0.2.2',
      dns: '10.0.2.3',
      guest_ip: '10.0.2.15',
      netmask: '255.255.255.0',
      mtu: 1500,
      gateway_mac: '52:55:0a:00:02:02',
      ipv6_prefix: 'fd00:10:0:2::/64',
      gateway6: 'fd00:10:0:2::2',
      dns6: 'fd00:10:0:2::3',
    });
    const lease = await udhcpc(ns);
    const ms = performance.now() - t0;
    console.log(`vmnat start → udhcpc lease: ${ms.toFixed(0)} ms`);
    expect(lease).toMatchObject({ ip: '10.0.2.15', mask: '24', router: '10.0.2.2', dns: '10.0.2.3', lease: '86400', serverid: '10.0.2.2' });
    const addr = await ns.exec(['ip', '-4', '-o', 'addr', 'show', 'dev', 'tap0']);
    expect(addr.stdout).toContain('inet 10.0.2.15/24');
    const gw = await ping(ns, '10.0.2.2');
    expect(gw.received, gw.out).toBe(3);
    const dns = await ping(ns, '10.0.2.3', 2);
    expect(dns.received, dns.out).toBe(2);
    // A large ping (1472 bytes of payload fills a 1500-byte packet) comes back whole.
    const big = await ns.exec(['busybox', 'ping', '-c', '2', '-s', '1472', '-W', '2', '10.0.2.2'], { timeoutMs: 15_000 });
    expect(big.stdout).toMatch(/2 packets received/);
    // Nobody holds 10.0.2.77: no answer is made up for it.
    const none = await ping(ns, '10.0.2.77', 1);
    expect(none.received).toBe(0);
    const stats = (await vmnat.stats()) as { dhcp: Record<string, number>; icmp: Record<string, number> };
    expect(stats.dhcp.ack).toBeGreaterThanOrEqual(1);
    expect(stats.icmp.txEchoReplies).toBeGreaterThanOrEqual(7);
    expect(await vmnat.stop()).toBe(0);
  });

  test('ISC dhclient leases too, with domain, search list and MTU options; udhcpc renews (SIGUSR1)', async () => {
    ns = await createNetns();
    vmnat = await startVmnat(['--tap', 'tap0', '--netns', ns.path, '--mtu', '1400', '--domain', 'vm.test', '--dns-search', 'corp.example', '--dns-search', 'lab.example', '--dhcp-lease-time', '3600']);
    const out = path.join(ns.dir, 'dhclient.env');
    const script = writeScript(ns.dir, 'dhclient.sh', `#!/bin/sh\nenv | grep -E '^(reason|new_)' | sort >> ${out}\necho END >> ${out}\nexit 0\n`);
    // dhclient in the foreground (-d): with -1 alone it forks once bound and writes its pid file
    // from the child, racing a reader. The test stops it itself once the script has run.
    const { spawn } = await import('node:child_process');
    const dhclient = spawn(
      'ip',
      ['netns', 'exec', ns.name, 'dhclient', '-1', '-d', '-v', '-sf', script, '-pf', path.join(ns.dir, 'dhclient.pid'), '-lf', path.join(ns.dir, 'dhclient.leases'), 'tap0'],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let dhclientLog = '';
    dhclient.stderr.on('data', (d: Buffer) => (dhclientLog += d.toString()));
    const readEnv = (): string => (fs.existsSync(out) ? fs.readFileSync(out, 'utf8') : '');
    try {
      for (let i = 0; i < 300 && !/reason=BOUND[\s\S]*END/.test(readEnv()); i++) await sleep(100);
    } finally {
      const exited = new Promise((resolve) => dhclient.once('exit', resolve));
      dhclient.kill('SIGTERM');
      await Promise.race([exited, sleep(3000)]);
    }
    const env = readEnv();
    expect(env, dhclientLog).toContain('reason=BOUND');
    expect(env).toContain('new_ip_address=10.0.2.15');
    expect(env).toContain('new_subnet_mask=255.255.255.0');
    expect(env).toContain('new_routers=10.0.2.2');
    expect(env).toContain('new_domain_name_servers=10.0.2.3');
    expect(env).toContain('new_domain_name=vm.test');
    expect(env).toMatch(/new_domain_search=corp\.example\.? lab\.example\.?/);
    expect(env).toContain('new_interface_mtu=1400');
    expect(env).toContain('new_dhcp_lease_time=3600');

    // busybox udhcpc in the foreground: bound, then a renewal on SIGUSR1 keeps the same address.
    const script2 = writeScript(ns.dir, 'udhcpc.sh', UDHCPC_SCRIPT);
    const child = spawn('ip', ['netns', 'exec', ns.name, 'busybox', 'udhcpc', '-f', '-i', 'tap0', '-s', script2, '-t', '5', '-T', '1'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let text = '';
    child.stdout.on('data', (d: Buffer) => (text += d.toString()));
    try {
      for (let i = 0; i < 100 && !text.includes('event=bound'); i++) await sleep(100);
      expect(text).toContain('event=bound ip=10.0.2.15');
      child.kill('SIGUSR1');
      for (let i = 0; i < 100 && !text.includes('event=renew'); i++) await sleep(100);
      expect(text).toMatch(/event=renew ip=10\.0\.2\.15 mask=24 router=10\.0\.2\.2 dns=10\.0\.2\.3 lease=3600/);
    } finally {
      child.kill('SIGKILL');
    }
    const stats = (await vmnat.stats()) as { dhcp: Record<string, number> };
    expect(stats.dhcp.ack).toBeGreaterThanOrEqual(3);
  });

  test('--dhcp-static gives a MAC its fixed address on a TAP that existed before vmnat; --pcap writes what tcpdump reads', async () => {
    ns = await createNetns();
    expect((await run(['ip', '-n', ns.name, 'tuntap', 'add', 'dev', 'tap0', 'mode', 'tap'])).code).toBe(0);
    expect((await run(['ip', '-n', ns.name, 'link', 'set', 'dev', 'tap0', 'address', '52:54:00:aa:bb:cc'])).code).toBe(0);
    const pcap = path.join(ns.dir, 'guest.pcap');
    vmnat = await startVmnat(['--tap', 'tap0', '--netns', ns.path, '--dhcp-static', '52:54:00:AA:BB:CC=10.0.2.50', '--pcap', pcap]);
    const lease = await udhcpc(ns);
    expect(lease).toMatchObject({ ip: '10.0.2.50', router: '10.0.2.2' });
    expect((await ping(ns, '10.0.2.2', 1)).received).toBe(1);
    expect(await vmnat.stop()).toBe(0);
    const r = await run(['tcpdump', '-n', '-r', pcap]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/BOOTP\/DHCP, Request from 52:54:00:aa:bb:cc/);
    expect(r.stdout).toMatch(/10\.0\.2\.2\.67 > 10\.0\.2\.50\.68: BOOTP\/DHCP, Reply/);
    expect(r.stdout).toMatch(/10\.0\.2\.50 > 10\.0\.2\.2: ICMP echo request/);
    expect(r.stdout).toMatch(/10\.0\.2\.2 > 10\.0\.2\.50: ICMP echo reply/);
  });
});
