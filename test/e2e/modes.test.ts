/**
 * Host-only, bridged and disconnected modes with real peers, every one inside network namespaces
 * this file creates (never the machine's own):
 *  - host-only: vmnat runs inside a namespace that plays the host (`ip netns exec`); two guest
 *    namespaces lease 192.168.56.101 and .102 from it; the "host" (its kernel, through vmnat0)
 *    pings both and fetches a page from one, the guests ping each other, and nothing routes past
 *    the host-only network (an "outside" namespace the host itself reaches stays out of reach);
 *    with --isolate the guests lose each other but not the host;
 *  - bridged: a "LAN" namespace with a Linux bridge, dnsmasq serving DHCP on it and a LAN host
 *    with a web server; vmnat runs in the LAN namespace, its guest leases from dnsmasq, fetches
 *    the page, and is bound to that lease (another source address is dropped);
 *  - disconnected: a guest's pings stop when the API pulls the cable and resume when it is
 *    plugged back (`vmnat ctl mode`), and a vmnat started disconnected leases nothing until then;
 *  - a real VM (qemu, TCG) over --socket in host mode leases .101 and is reached from the host.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createNetns, leaseWithUdhcpc, type Netns } from '../helpers/netns.ts';
import { killAll, run, sleep, startVmnat, ROOT, type VmnatProcess } from '../helpers/proc.ts';
import { blob, sha256 } from '../helpers/hostservers.ts';
import { describeRun, ensureGuest, makeRunDir, runVm, uniqueMac } from '../helpers/vm.ts';
import { ApiClient } from '../../src/api/client.ts';
import { startTestDns, type TestDns } from '../helpers/dnsserver.ts';

let cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.reverse()) await c();
  cleanups = [];
});
afterAll(() => killAll());

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vmnat-modes-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

async function netns(): Promise<Netns> {
  const ns = await createNetns();
  cleanups.push(() => ns.destroy());
  return ns;
}

async function sh(ns: Netns, cmd: string[]): Promise<string> {
  const r = await ns.exec(cmd);
  if (r.code !== 0) throw new Error(`${cmd.join(' ')} in ${ns.name}: ${r.stderr}`);
  return r.stdout;
}

async function ping(ns: Netns, dst: string, count = 2, wait = 2): Promise<boolean> {
  const r = await ns.exec(['busybox', 'ping', '-c', String(count), '-W', String(wait), dst], { timeoutMs: 20_000 });
  return r.code === 0;
}

/** A web server in `ns` on `port`, serving `content` as /page.bin; killed by PID afterwards. */
async function serve(ns: Netns, content: Buffer, port = 8080): Promise<void> {
  const dir = path.join(ns.dir, 'www');
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'page.bin'), content);
  const server = spawn('ip', ['netns', 'exec', ns.name, 'python3', '-m', 'http.server', String(port), '--bind', '0.0.0.0', '--directory', dir], { stdio: 'ignore' });
  cleanups.push(() => {
    server.kill('SIGKILL');
  });
  for (let i = 0; i < 50; i++) {
    const r = await ns.exec(['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', `http://127.0.0.1:${port}/page.bin`]);
    if (r.stdout === '200') return;
    await sleep(100);
  }
  throw new Error('web server did not start');
}

async function fetchSha(from: Netns, url: string): Promise<{ code: number | null; sha: string; stderr: string }> {
  const out = path.join(from.dir, `fetch-${Date.now()}.bin`);
  const r = await from.exec(['curl', '-sS', '--max-time', '10', '-o', out, url], { timeoutMs: 20_000 });
  const sha = r.code === 0 ? sha256(fs.readFileSync(out)) : '';
  fs.rmSync(out, { force: true });
  return { code: r.code, sha, stderr: r.stderr };
}

async function startIn(ns: Netns, args: string[]): Promise<VmnatProcess> {
  const v = await startVmnat(args, { prefix: ['ip', 'netns', 'exec', ns.name] });
  cleanups.push(() => v.stop().catch(() => undefined));
  return v;
}

let apiCount = 0;
function apiPath(): string {
  return path.join(tmp, `api-${++apiCount}.sock`);
}

/** The host namespace, its vmnat in host mode, and `n` guest namespaces attached by --tap. */
async function hostOnly(n: number, extra: string[] = []) {
  const host = await netns();
  const guests: Netns[] = [];
  for (let i = 0; i < n; i++) guests.push(await netns());
  const api = apiPath();
  const vmnat = await startIn(host, ['--mode', 'host', ...guests.flatMap((g) => ['--tap', 'tap0', '--netns', g.path]), '--api-socket', api, ...extra]);
  for (const g of guests) await sh(g, ['ip', 'link', 'set', 'tap0', 'up']);
  return { host, guests, vmnat, api: new ApiClient(api) };
}

describe.sequential('host-only mode', () => {
  test('two guests lease .101 and .102 with no router; the host pings both and fetches a page; the guests ping each other; nothing routes out', async () => {
    const { host, guests, vmnat, api } = await hostOnly(2);
    const [a, b] = guests as [Netns, Netns];
    expect(vmnat.ready).toMatchObject({ mode: 'host', host_if: 'vmnat0', host_ip: '192.168.56.1/24', dhcp_server: '192.168.56.100', network: '192.168.56.0/24', guest_ip: '192.168.56.101' });
    expect(vmnat.ready['gateway']).toBeUndefined();
    expect(vmnat.ready['dns']).toBeUndefined();
    // The host's side: vmnat0 carries the host's address, and the kernel routes the prefix to it.
    expect(await sh(host, ['ip', '-4', 'addr', 'show', 'dev', 'vmnat0'])).toMatch(/inet 192\.168\.56\.1\/24/);

    const la = await leaseWithUdhcpc(a);
    const lb = await leaseWithUdhcpc(b);
    expect([la['ip'], lb['ip']]).toEqual(['192.168.56.101', '192.168.56.102']);
    for (const l of [la, lb]) expect(l).toMatchObject({ mask: '24', router: '', dns: '', serverid: '192.168.56.100' });
    expect((await sh(a, ['ip', 'route', 'show', 'default'])).trim()).toBe('');

    expect(await ping(host, '192.168.56.101')).toBe(true);
    expect(await ping(host, '192.168.56.102')).toBe(true);
    expect(await ping(a, '192.168.56.102')).toBe(true);
    expect(await ping(b, '192.168.56.1')).toBe(true);
    const page = blob(300_000, 11);
    await serve(b, page);
    const got = await fetchSha(host, 'http://192.168.56.102:8080/page.bin');
    expect(got.code, got.stderr).toBe(0);
    expect(got.sha).toBe(sha256(page));

    // Beyond: an "outside" namespace the host reaches over a veth pair, with a route back to the
    // host-only network. The guest aims at it through vmnat's own address (.100, the only other
    // router it could know): vmnat routes nothing.
    const outside = await netns();
    await sh(host, ['ip', 'link', 'add', 'vout0', 'type', 'veth', 'peer', 'name', 'vin0', 'netns', outside.name]);
    await sh(host, ['ip', 'addr', 'add', '10.199.0.1/24', 'dev', 'vout0']);
    await sh(host, ['ip', 'link', 'set', 'vout0', 'up']);
    await sh(outside, ['ip', 'addr', 'add', '10.199.0.2/24', 'dev', 'vin0']);
    await sh(outside, ['ip', 'link', 'set', 'vin0', 'up']);
    await sh(outside, ['ip', 'route', 'add', '192.168.56.0/24', 'via', '10.199.0.1']);
    expect(await ping(host, '10.199.0.2')).toBe(true); // reachable from the host itself
    await sh(a, ['ip', 'route', 'add', 'default', 'via', '192.168.56.100']);
    const before = ((await api.stats()) as { ipv4: { noRoute: number } }).ipv4.noRoute;
    expect(await ping(a, '10.199.0.2', 2, 1)).toBe(false);
    const after = ((await api.stats()) as { ipv4: { noRoute: number }; nat: unknown; flows: { total?: number } }).ipv4.noRoute;
    expect(after - before).toBeGreaterThanOrEqual(2);
    expect(await api.flows()).toEqual([]);

    // The API shows the mode, the host's port and the guests' leases.
    const config = await api.config();
    expect(config).toMatchObject({ mode: 'host', configured_mode: 'host', host_if: 'vmnat0', host_ip: '192.168.56.1/24', dhcp_server: '192.168.56.100', gateway: null, dns: null, first_lease: '192.168.56.101' });
    const ports = await api.ports();
    expect(ports.find((p) => p['role'] === 'host')).toMatchObject({ transport: 'tap', tap: 'vmnat0', host_ip: '192.168.56.1/24' });
    expect(ports.filter((p) => p['role'] === undefined).map((p) => [p.ip, p.address_source])).toEqual([
      ['192.168.56.101', 'dhcp'],
      ['192.168.56.102', 'dhcp'],
    ]);
    expect(await api.call('GET', '/mode')).toMatchObject({ mode: 'host', configured: 'host', connected: true });
    // No NAT, so no port forward either: refused at run time as --hostfwd is at start.
    await expect(api.call('POST', '/forwards', { proto: 'tcp', host_port: 0, guest_port: 80 })).rejects.toThrow(/port forwards need nat mode/);
  });

  test('--isolate: the guests lose each other, not the host; a guest claiming the host\'s address is dropped', async () => {
    const { host, guests, api } = await hostOnly(3, ['--isolate', '--host-if', 'hostonly1', '--host-ip', '192.168.57.1/24']);
    const [a, b, spoofer] = guests as [Netns, Netns, Netns];
    const la = await leaseWithUdhcpc(a);
    const lb = await leaseWithUdhcpc(b);
    expect([la['ip'], lb['ip']]).toEqual(['192.168.57.101', '192.168.57.102']);
    expect(await ping(host, lb['ip']!)).toBe(true);
    expect(await ping(a, '192.168.57.1')).toBe(true);
    expect(await ping(a, lb['ip']!, 2, 1)).toBe(false);
    // ARP was not flooded to B; with B's MAC given by hand, A's frames reach the switch and stop there.
    const macB = /link\/ether (\S+)/.exec(await sh(b, ['ip', 'link', 'show', 'tap0']))![1]!;
    await sh(a, ['ip', 'neigh', 'replace', lb['ip']!, 'lladdr', macB, 'dev', 'tap0']);
    expect(await ping(a, lb['ip']!, 2, 1)).toBe(false);
    // The third guest never leases: it takes the host's address by hand.
    await sh(spoofer, ['ip', 'addr', 'add', '192.168.57.1/24', 'dev', 'tap0']);
    await spoofer.exec(['busybox', 'ping', '-c', '2', '-W', '1', lb['ip']!]);
    const ports = await api.ports();
    const drops = ports.map((p) => p.drops as Record<string, number>);
    expect(drops.reduce((n, d) => n + (d['isolated'] ?? 0), 0)).toBeGreaterThan(0);
    expect(drops.reduce((n, d) => n + (d['arpSpoof'] ?? 0) + (d['ipSpoof'] ?? 0), 0)).toBeGreaterThan(0);
  });

  test('bad mode flags cost one line and exit 2', async () => {
    const cases: [string[], RegExp][] = [
      [['--mode', 'hostonly'], /^vmnat: --mode: "hostonly" is not one of nat\|host\|bridged\|disconnected$/],
      [['--mode', 'host', '--hostfwd', 'tcp::2222-:22'], /^vmnat: --hostfwd: configures vmnat's NAT, gateway or DNS, which --mode host turns off$/],
      [['--host-ip', '192.168.56.1/24'], /^vmnat: --host-ip: only applies with --mode host/],
      [['--mode', 'host', '--host-ip', '192.168.56.1/28'], /^vmnat: --host-ip: prefix \/28 is not in \/8..\/25/],
      [['--mode', 'bridged'], /^vmnat: --mode: bridged needs --bridge NAME/],
      [['--mode', 'bridged', '--bridge', 'br0', '--dhcp-static', '52:54:00:00:00:01=10.0.0.5'], /^vmnat: --dhcp-static: configures vmnat's DHCP server/],
      [['--operation-mode', 'shared', '--interface-id', '8a4b2c1e-0d3f-4e5a-9b6c-7d8e9f0a1b2c'], /^vmnat: --interface-id: is for macOS vmnet only/],
    ];
    for (const [args, want] of cases) {
      const r = await run([process.execPath, path.join(ROOT, 'bin/vmnat.mjs'), '--socket', path.join(tmp, 'bad.sock'), ...args]);
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr.trim()).toMatch(want);
    }
    // A bridge that does not exist: refused when vmnat tries to join it (inside a namespace of ours).
    const ns = await netns();
    const r = await ns.exec([process.execPath, path.join(ROOT, 'bin/vmnat.mjs'), '--socket', path.join(tmp, 'nobr.sock'), '--mode', 'bridged', '--bridge', 'nosuchbr0']);
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr.trim()).toMatch(/^vmnat: --bridge: cannot put a TAP on nosuchbr0: no such interface \(ENODEV\)$/);
  });
});

describe.sequential('bridged mode', () => {
  test('a guest leases from the LAN\'s dnsmasq, fetches a page from a LAN host, and is bound to its lease', async () => {
    const lan = await netns();
    const lanHost = await netns();
    const guest = await netns();
    await sh(lan, ['ip', 'link', 'add', 'br0', 'type', 'bridge']);
    await sh(lan, ['ip', 'addr', 'add', '192.168.77.1/24', 'dev', 'br0']);
    await sh(lan, ['ip', 'link', 'set', 'br0', 'up']);
    await sh(lan, ['ip', 'link', 'add', 'lh0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', lanHost.name]);
    await sh(lan, ['ip', 'link', 'set', 'lh0', 'master', 'br0']);
    await sh(lan, ['ip', 'link', 'set', 'lh0', 'up']);
    await sh(lanHost, ['ip', 'addr', 'add', '192.168.77.10/24', 'dev', 'eth0']);
    await sh(lanHost, ['ip', 'link', 'set', 'eth0', 'up']);
    // dnsmasq as the LAN's DHCP server only (port=0: no DNS), with a config of this test's own.
    const conf = path.join(lan.dir, 'dnsmasq.conf');
    fs.writeFileSync(conf, ['port=0', 'interface=br0', 'bind-interfaces', 'no-resolv', 'no-hosts', 'dhcp-range=192.168.77.50,192.168.77.60,255.255.255.0,1h', 'dhcp-authoritative', `dhcp-leasefile=${path.join(lan.dir, 'leases')}`, 'log-dhcp'].join('\n') + '\n');
    const dnsmasq = spawn('ip', ['netns', 'exec', lan.name, 'dnsmasq', '--keep-in-foreground', '--log-facility=-', `--conf-file=${conf}`, `--pid-file=${path.join(lan.dir, 'dnsmasq.pid')}`], { stdio: ['ignore', 'ignore', 'pipe'] });
    let dnsmasqLog = '';
    dnsmasq.stderr!.on('data', (d: Buffer) => (dnsmasqLog += d.toString()));
    cleanups.push(() => {
      dnsmasq.kill('SIGKILL');
    });
    const page = blob(200_000, 12);
    await serve(lanHost, page);

    const api = apiPath();
    const vmnat = await startIn(lan, ['--mode', 'bridged', '--bridge', 'br0', '--tap', 'tap0', '--netns', guest.path, '--api-socket', api]);
    expect(vmnat.ready).toMatchObject({ mode: 'bridged', bridge: 'br0', uplink: { link: 'tap', role: 'bridge', bridge: 'br0' } });
    expect(vmnat.ready['network']).toBeUndefined();
    // vmnat's TAP is a port of the bridge.
    expect(await sh(lan, ['ip', 'link', 'show', 'master', 'br0'])).toMatch(/vmb\d+/);
    await sh(guest, ['ip', 'link', 'set', 'tap0', 'up']);

    const lease = await leaseWithUdhcpc(guest).catch((err: Error) => {
      throw new Error(`${err.message}\ndnsmasq:\n${dnsmasqLog}\nvmnat:\n${vmnat.stderr()}`);
    });
    expect(lease).toMatchObject({ serverid: '192.168.77.1', router: '192.168.77.1', mask: '24' });
    expect(Number(lease['ip']!.split('.')[3])).toBeGreaterThanOrEqual(50);
    expect(Number(lease['ip']!.split('.')[3])).toBeLessThanOrEqual(60);
    expect(dnsmasqLog).toMatch(new RegExp(`DHCPACK\\(br0\\) ${lease['ip']!.replace(/\./g, '\\.')}`));

    const got = await fetchSha(guest, 'http://192.168.77.10:8080/page.bin');
    expect(got.code, got.stderr).toBe(0);
    expect(got.sha).toBe(sha256(page));
    expect(await ping(lanHost, lease['ip']!)).toBe(true);

    const client = new ApiClient(api);
    const guestPort = (await client.ports()).find((p) => p['role'] === undefined)!;
    expect(guestPort).toMatchObject({ ip: lease['ip'], address_source: 'dhcp' });
    // Anti-spoofing per guest port: another source address is dropped before the LAN sees it.
    await sh(guest, ['ip', 'addr', 'add', '192.168.77.200/24', 'dev', 'tap0']);
    const spoofed = await guest.exec(['busybox', 'ping', '-c', '2', '-W', '1', '-I', '192.168.77.200', '192.168.77.10']);
    expect(spoofed.code).not.toBe(0);
    const after = (await client.ports()).find((p) => p['role'] === undefined)!;
    expect((after.drops as Record<string, number>)['ipSpoof']).toBeGreaterThanOrEqual(2);
    expect(((await client.stats()) as { dhcpSnoop: { acks: number } }).dhcpSnoop.acks).toBeGreaterThanOrEqual(1);
    expect(await client.config()).toMatchObject({ mode: 'bridged', bridge: 'br0', network: null, gateway: null });
  });
});

describe.sequential('disconnected', () => {
  let dns: TestDns | undefined;
  beforeAll(async () => {
    dns = await startTestDns({});
  });
  afterAll(async () => {
    await dns?.close();
  });

  const ctl = (api: string, ...args: string[]) => run([process.execPath, path.join(ROOT, 'bin/vmnat.mjs'), 'ctl', '--api-socket', api, ...args]);

  test('pulling the cable stops a guest\'s traffic (counted); plugging it back resumes it', async () => {
    const guest = await netns();
    const api = apiPath();
    const vmnat = await startVmnat(['--tap', 'tap0', '--netns', guest.path, '--api-socket', api, '--dns-server', `127.0.0.1:${dns!.port}`]);
    cleanups.push(() => vmnat.stop().catch(() => undefined));
    await sh(guest, ['ip', 'link', 'set', 'tap0', 'up']);
    await leaseWithUdhcpc(guest);
    expect(await ping(guest, '10.0.2.2')).toBe(true);

    const off = await ctl(api, 'mode', 'disconnected');
    expect(off.code, off.stderr).toBe(0);
    expect(off.stdout).toMatch(/^mode: disconnected \(configured: nat\)/);
    expect(await ping(guest, '10.0.2.2', 3, 1)).toBe(false);
    const m = (await new ApiClient(api).call('GET', '/mode')) as { mode: string; dropped_from_ports: number };
    expect(m.mode).toBe('disconnected');
    expect(m.dropped_from_ports).toBeGreaterThanOrEqual(3);

    const on = await ctl(api, 'mode', 'connected');
    expect(on.code, on.stderr).toBe(0);
    expect(on.stdout).toMatch(/^mode: nat/);
    expect(await ping(guest, '10.0.2.2')).toBe(true);
    // Another mode needs a restart.
    const bad = await ctl(api, 'mode', 'host');
    expect(bad.code).toBe(1);
    expect(bad.stderr.trim()).toBe('vmnat: mode: vmnat runs in nat mode: it switches between nat and disconnected only (restart it with --mode host)');
  });

  test('--mode disconnected: no lease until the API connects it', async () => {
    const guest = await netns();
    const api = apiPath();
    const vmnat = await startVmnat(['--mode', 'disconnected', '--tap', 'tap0', '--netns', guest.path, '--api-socket', api, '--dns-server', `127.0.0.1:${dns!.port}`]);
    cleanups.push(() => vmnat.stop().catch(() => undefined));
    expect(vmnat.ready).toMatchObject({ mode: 'disconnected', network: '10.0.2.0/24' });
    await sh(guest, ['ip', 'link', 'set', 'tap0', 'up']);
    await expect(leaseWithUdhcpc(guest, 'tap0', ['-t', '2'])).rejects.toThrow(/no lease/);
    const r = await new ApiClient(api).call('PUT', '/mode', { mode: 'nat' });
    expect(r).toMatchObject({ mode: 'nat', connected: true });
    expect((await leaseWithUdhcpc(guest))['ip']).toBe('10.0.2.15');
  });
});

describe.sequential('a real VM in host mode', () => {
  beforeAll(() => {
    ensureGuest();
  }, 600_000);

  test('qemu over --socket leases 192.168.56.101 and the host reaches it', async () => {
    const host = await netns();
    const dir = makeRunDir('hostonly-vm');
    cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
    const sock = path.join(dir, 'net.sock');
    const vmnat = await startIn(host, ['--mode', 'host', '--socket', sock]);
    expect(vmnat.ready).toMatchObject({ mode: 'host', link: 'socket', guest_ip: '192.168.56.101' });
    const script = `
      vmnat_lease || exit 1
      msg=$(timeout 60 nc -l -p 7777 | tr -d '\\n')
      vmnat_result "got=$msg"
    `;
    const vm = runVm({ netdev: `dgram,id=n0,local.type=unix,local.path=${dir}/qemu.sock,remote.type=unix,remote.path=${sock}`, mac: uniqueMac(), script, timeoutMs: 90_000 });
    // The host side: wait for the VM to answer ping, then send it a line.
    let reached = false;
    let sent = false;
    for (let i = 0; i < 80 && !sent; i++) {
      if (!reached) reached = await ping(host, '192.168.56.101', 1, 1);
      if (reached) {
        const r = await host.exec(['sh', '-c', 'echo hello-from-host | busybox nc -w 2 192.168.56.101 7777'], { timeoutMs: 10_000 });
        sent = r.code === 0;
      }
      if (!sent) await sleep(1000);
    }
    const r = await vm;
    const why = `${describeRun(r)}\nvmnat:\n${vmnat.stderr()}`;
    expect(r.results, why).toMatchObject({ lease: 'ok', ip: '192.168.56.101', router: '', got: 'hello-from-host' });
    expect(reached).toBe(true);
  }, 120_000);
});
