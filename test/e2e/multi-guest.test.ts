/**
 * A network of guests: three Linux kernels (network namespaces) on one vmnat, each behind its own
 * TAP (`--tap tap0 --netns A --tap tap0 --netns B …`). They lease distinct addresses, reach each
 * other by address and by the hostname they sent in DHCP, and with `--isolate` reach only the
 * gateway, DNS and the host — never each other.
 */
import { afterAll, describe, expect, test } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { createNetns, leaseWithUdhcpc, type Netns } from '../helpers/netns.ts';
import { spawn } from 'node:child_process';
import { killAll, startVmnat, type VmnatProcess } from '../helpers/proc.ts';
import { blob, sha256, startBlobServer, type BlobServer } from '../helpers/hostservers.ts';
import { startTestDns, type TestDns } from '../helpers/dnsserver.ts';

const cleanups: (() => Promise<unknown> | void)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
  killAll();
});

interface Guest {
  ns: Netns;
  ip: string;
  name: string;
}

/** A namespace whose resolver is vmnat's DNS (ip netns exec bind-mounts /etc/netns/NAME/resolv.conf). */
async function guestNamespace(): Promise<Netns> {
  const ns = await createNetns();
  const etc = path.join('/etc/netns', ns.name);
  fs.mkdirSync(etc, { recursive: true });
  fs.writeFileSync(path.join(etc, 'resolv.conf'), 'nameserver 10.0.2.3\n');
  cleanups.push(async () => {
    await ns.destroy();
    fs.rmSync(etc, { recursive: true, force: true });
  });
  return ns;
}

async function network(count: number, extra: string[]): Promise<{ vmnat: VmnatProcess; guests: Guest[]; hostHttp: BlobServer; page: Buffer }> {
  const dns: TestDns = await startTestDns({});
  cleanups.push(() => dns.close());
  const page = blob(300_000, 99);
  const hostHttp = await startBlobServer(page);
  cleanups.push(() => hostHttp.close());
  const namespaces: Netns[] = [];
  for (let i = 0; i < count; i++) namespaces.push(await guestNamespace());
  const args = namespaces.flatMap((ns) => ['--tap', 'tap0', '--netns', ns.path]);
  const vmnat = await startVmnat([...args, '--dns-server', `127.0.0.1:${dns.port}`, ...extra]);
  cleanups.push(() => vmnat.stop().catch(() => undefined));
  const guests: Guest[] = [];
  for (const [i, ns] of namespaces.entries()) {
    await ns.exec(['ip', 'link', 'set', 'tap0', 'up']);
    const name = `guest${String.fromCharCode(97 + i)}`;
    const lease = await leaseWithUdhcpc(ns, 'tap0', ['-x', `hostname:${name}`]);
    guests.push({ ns, ip: lease['ip']!, name });
  }
  return { vmnat, guests, hostHttp, page };
}

/** A web server inside guest `g`'s own namespace (its port is private to that namespace). */
async function serveInGuest(g: Guest, content: Buffer): Promise<void> {
  const dir = path.join(g.ns.dir, 'www');
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'page.bin'), content);
  // `ip netns exec` execs python3, so the PID is the server's own: killed by that PID.
  const server = spawn('ip', ['netns', 'exec', g.ns.name, 'python3', '-m', 'http.server', '8080', '--bind', '0.0.0.0', '--directory', dir], { stdio: 'ignore' });
  cleanups.push(() => {
    server.kill('SIGKILL');
  });
  for (let i = 0; i < 50; i++) {
    const r = await g.ns.exec(['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', 'http://127.0.0.1:8080/page.bin']);
    if (r.stdout === '200') return;
    await new Promise((res) => setTimeout(res, 100));
  }
  throw new Error('guest web server did not start');
}

async function fetchSha(from: Guest, url: string): Promise<{ code: number | null; sha: string; stderr: string }> {
  const out = path.join(from.ns.dir, `fetch-${Date.now()}.bin`);
  const r = await from.ns.exec(['curl', '-sS', '--max-time', '10', '-o', out, url], { timeoutMs: 20_000 });
  const sha = r.code === 0 ? sha256(fs.readFileSync(out)) : '';
  fs.rmSync(out, { force: true });
  return { code: r.code, sha, stderr: r.stderr };
}

describe('three guests on one vmnat', () => {
  test('distinct leases; ping, and a page fetched by address and by hostname; /ports lists each guest', async () => {
    const { vmnat, guests } = await network(3, []);
    const [a, b, c] = guests as [Guest, Guest, Guest];
    expect(new Set(guests.map((g) => g.ip)).size).toBe(3);
    for (const g of guests) expect(g.ip).toMatch(/^10\.0\.2\.\d+$/);

    const ping = await a.ns.exec(['busybox', 'ping', '-c', '2', '-W', '2', b.ip]);
    expect(ping.code, ping.stdout + ping.stderr).toBe(0);

    const content = blob(200_000, 5);
    await serveInGuest(b, content);
    const byAddress = await fetchSha(a, `http://${b.ip}:8080/page.bin`);
    expect(byAddress.code, byAddress.stderr).toBe(0);
    expect(byAddress.sha).toBe(sha256(content));
    const byName = await fetchSha(c, `http://${b.name}.vmnat.internal:8080/page.bin`);
    expect(byName.code, byName.stderr).toBe(0);
    expect(byName.sha).toBe(sha256(content));
    const short = await a.ns.exec(['dig', '+short', '@10.0.2.3', b.name]);
    expect(short.stdout.trim()).toBe(b.ip);

    const stats = (await vmnat.stats()) as { ports: { ip: string; hostname: string; address_source: string; rx_frames: number }[]; switch: { guestToGuest: number } };
    expect(stats.ports.map((p) => p.ip).sort()).toEqual(guests.map((g) => g.ip).sort());
    expect(stats.ports.find((p) => p.ip === b.ip)?.hostname).toBe(b.name);
    expect(stats.ports.every((p) => p.address_source === 'dhcp')).toBe(true);
    expect(stats.switch.guestToGuest).toBeGreaterThan(0);
  });

  test('--isolate: guests cannot reach each other (ping, TCP, ARP), yet each reaches the host and resolves names', async () => {
    const { vmnat, guests, hostHttp, page } = await network(2, ['--isolate']);
    const [a, b] = guests as [Guest, Guest];
    await serveInGuest(b, blob(10_000, 6));
    const ping = await a.ns.exec(['busybox', 'ping', '-c', '2', '-W', '1', b.ip]);
    expect(ping.code).not.toBe(0);
    const tcp = await a.ns.exec(['curl', '-sS', '--max-time', '3', '-o', '/dev/null', `http://${b.ip}:8080/page.bin`]);
    expect(tcp.code).not.toBe(0);
    // ARP: A never learned B's MAC (the request was not flooded, no reply came).
    const neigh = await a.ns.exec(['ip', 'neigh', 'show', b.ip]);
    expect(neigh.stdout).not.toMatch(/lladdr/);

    for (const g of guests) {
      const fromHost = await fetchSha(g, `http://10.0.2.2:${hostHttp.port}/`);
      expect(fromHost.code, fromHost.stderr).toBe(0);
      expect(fromHost.sha).toBe(sha256(page));
      const name = await g.ns.exec(['dig', '+short', '@10.0.2.3', guests.find((x) => x !== g)!.name]);
      expect(name.stdout.trim()).toMatch(/^10\.0\.2\.\d+$/);
    }
    const stats = (await vmnat.stats()) as { switch: { guestToGuest: number; flooded: number } };
    expect(stats.switch.guestToGuest).toBe(0);
    expect(stats.switch.flooded).toBe(0);
  });
});
