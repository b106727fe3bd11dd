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
import { killAll, run, startVmnat, type VmnatProcess } from '../helpers/proc.ts';
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
  const ns = await createNetns({ resolver: '10.0.2.3' });
  cleanups.push(() => ns.destroy());
  return ns;
}

/** `count` guests that lease (hostnames guesta, guestb, …), and `spare` attached namespaces that do not. */
async function network(count: number, extra: string[], spare = 0): Promise<{ vmnat: VmnatProcess; guests: Guest[]; spares: Netns[]; hostHttp: BlobServer; page: Buffer }> {
  const dns: TestDns = await startTestDns({});
  cleanups.push(() => dns.close());
  const page = blob(300_000, 99);
  const hostHttp = await startBlobServer(page);
  cleanups.push(() => hostHttp.close());
  const namespaces: Netns[] = [];
  for (let i = 0; i < count + spare; i++) namespaces.push(await guestNamespace());
  const args = namespaces.flatMap((ns) => ['--tap', 'tap0', '--netns', ns.path]);
  const vmnat = await startVmnat([...args, '--dns-server', `127.0.0.1:${dns.port}`, ...extra]);
  cleanups.push(() => vmnat.stop().catch(() => undefined));
  const guests: Guest[] = [];
  for (const [i, ns] of namespaces.slice(0, count).entries()) {
    await ns.exec(['ip', 'link', 'set', 'tap0', 'up']);
    const name = `guest${String.fromCharCode(97 + i)}`;
    const lease = await leaseWithUdhcpc(ns, 'tap0', ['-x', `hostname:${name}`]);
    guests.push({ ns, ip: lease['ip']!, name });
  }
  const spares = namespaces.slice(count);
  for (const ns of spares) await ns.exec(['ip', 'link', 'set', 'tap0', 'up']);
  return { vmnat, guests, spares, hostHttp, page };
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

  test('anti-spoofing: a stolen address, an unleased one and forged ARP for the gateway are dropped; the victim\'s download completes', async () => {
    // A third guest never leases: it has a hard-coded address, the victim's.
    const { vmnat, guests, spares } = await network(2, [], 1);
    const [victim, attacker] = guests as [Guest, Guest];
    const squatter = spares[0]!;
    const big = blob(40 << 20, 11);
    const server = await startBlobServer(big);
    cleanups.push(() => server.close());

    const out = path.join(victim.ns.dir, 'big.bin');
    const download = victim.ns.exec(['curl', '-sS', '--limit-rate', '20M', '--max-time', '60', '-o', out, `http://10.0.2.2:${server.port}/`], { timeoutMs: 70_000 });
    await new Promise((r) => setTimeout(r, 300));

    // 1. The attacker (knowing the gateway's MAC from one honest ping) takes the victim's address
    // and an address nobody leased it.
    expect((await attacker.ns.exec(['busybox', 'ping', '-c', '1', '-W', '2', '10.0.2.2'])).code).toBe(0);
    for (const cmd of [
      ['ip', 'addr', 'add', `${victim.ip}/24`, 'dev', 'tap0'],
      ['ip', 'addr', 'add', '10.0.2.99/24', 'dev', 'tap0'],
    ]) expect((await attacker.ns.exec(cmd)).code).toBe(0);
    const stolen = await attacker.ns.exec(['busybox', 'ping', '-c', '2', '-W', '1', '-I', victim.ip, '10.0.2.2']);
    const unleased = await attacker.ns.exec(['busybox', 'ping', '-c', '2', '-W', '1', '-I', '10.0.2.99', '10.0.2.2']);
    expect(stolen.code).not.toBe(0);
    expect(unleased.code).not.toBe(0);
    // 2. Forged ARP replies: "10.0.2.2 is at the attacker's MAC", to the victim and as a gratuitous ARP.
    const forge = `
import socket, struct
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(('tap0', 0))
me = bytes.fromhex(open('/sys/class/net/tap0/address').read().strip().replace(':', ''))
gw = bytes([10, 0, 2, 2])
for dst in (b'\\xff' * 6,):
    arp = struct.pack('!HHBBH6s4s6s4s', 1, 0x0800, 6, 4, 2, me, gw, dst, gw)
    for _ in range(5):
        s.send(dst + me + b'\\x08\\x06' + arp)
print('sent')
`;
    const script = path.join(attacker.ns.dir, 'forge.py');
    fs.writeFileSync(script, forge);
    const forged = await attacker.ns.exec(['python3', script]);
    expect(forged.stdout.trim(), forged.stderr).toBe('sent');
    // 3. The squatter, never leased, uses the victim's address.
    await squatter.exec(['ip', 'addr', 'add', `${victim.ip}/24`, 'dev', 'tap0']);
    const squat = await squatter.exec(['busybox', 'ping', '-c', '2', '-W', '1', '10.0.2.2']);
    expect(squat.code).not.toBe(0);

    const done = await download;
    expect(done.code, done.stderr).toBe(0);
    expect(sha256(fs.readFileSync(out))).toBe(sha256(big));
    fs.rmSync(out, { force: true });
    // The victim still knows the gateway by its own MAC.
    const neigh = await victim.ns.exec(['ip', 'neigh', 'show', '10.0.2.2']);
    expect(neigh.stdout).toContain('52:55:0a:00:02:02');

    const stats = (await vmnat.stats()) as { ports: { ip: string | null; drops: Record<string, number> }[] };
    const attackerPort = stats.ports.find((p) => p.ip === attacker.ip)!;
    expect(attackerPort.drops['ipSpoof']).toBeGreaterThanOrEqual(4);
    expect(attackerPort.drops['arpSpoof']).toBeGreaterThanOrEqual(5);
    const squatterPort = stats.ports.find((p) => p.ip === null)!;
    expect((squatterPort.drops['ipSpoof'] ?? 0) + (squatterPort.drops['arpSpoof'] ?? 0)).toBeGreaterThan(0);
    expect(stats.ports.find((p) => p.ip === victim.ip)!.drops).toEqual({ macSpoof: 0, ipSpoof: 0, arpSpoof: 0, isolated: 0, filtered: 0, runt: 0, disconnected: 0, ndpSpoof: 0 });
  });
});

describe('filter rules', () => {
  test('block out proto tcp to 10.0.2.2 port N refuses that service at once, and nothing else', async () => {
    const other = await startBlobServer(blob(50_000, 8));
    cleanups.push(() => other.close());
    const blocked = await startBlobServer(blob(50_000, 9));
    cleanups.push(() => blocked.close());
    const rules = path.join(fs.mkdtempSync(path.join('/tmp', 'vmnat-filter-')), 'rules.conf');
    cleanups.push(() => fs.rmSync(path.dirname(rules), { recursive: true, force: true }));
    fs.writeFileSync(rules, `# the one service the guest may not use\nblock out proto tcp to 10.0.2.2 port ${blocked.port}\n`);
    const { vmnat, guests } = await network(1, ['--filter', rules]);
    const g = guests[0]!;
    const t0 = Date.now();
    const refused = await g.ns.exec(['curl', '-sS', '--max-time', '10', '-o', '/dev/null', `http://10.0.2.2:${blocked.port}/`]);
    expect(refused.code).toBe(7); // curl: couldn't connect (a RST, not a timeout)
    expect(Date.now() - t0).toBeLessThan(3000);
    const fine = await fetchSha(g, `http://10.0.2.2:${other.port}/`);
    expect(fine.code, fine.stderr).toBe(0);
    const ping = await g.ns.exec(['busybox', 'ping', '-c', '1', '-W', '2', '10.0.2.2']);
    expect(ping.code).toBe(0);
    const stats = (await vmnat.stats()) as { tcpNat: { refusedByFilter: number }; filter: { blocked: number } };
    expect(stats.tcpNat.refusedByFilter).toBe(1);
    expect(stats.filter.blocked).toBe(1);
  });

  test('a rule set swapped through the API: atomic (a bad one is refused), blocks new flows at once, spares a transfer it does not block; block local', async () => {
    const dir = fs.mkdtempSync(path.join('/tmp', 'vmnat-filter-'));
    cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
    const api = path.join(dir, 'api.sock');
    const { vmnat, guests, hostHttp } = await network(2, ['--api-socket', api]);
    const [a, b] = guests as [Guest, Guest];
    await serveInGuest(b, blob(20_000, 4));
    const events = spawn('curl', ['-sN', '--unix-socket', api, 'http://vmnat/events'], { stdio: ['ignore', 'pipe', 'ignore'] });
    let eventText = '';
    events.stdout.on('data', (d: Buffer) => (eventText += d.toString()));
    cleanups.push(() => {
      events.kill('SIGKILL');
    });
    const put = (text: string) =>
      run(['curl', '-sS', '-X', 'PUT', '--unix-socket', api, '--data-binary', text, '-H', 'content-type: text/plain', '-w', '\n%{http_code}', 'http://vmnat/filter']);
    const status = (r: { stdout: string }) => r.stdout.trim().split('\n').at(-1);

    // A slow download from the host that the next rule set does not block: it must complete.
    const big = blob(8 << 20, 12);
    const slow = await startBlobServer(big);
    cleanups.push(() => slow.close());
    const out = path.join(a.ns.dir, 'slow.bin');
    const download = a.ns.exec(['curl', '-sS', '--limit-rate', '4M', '--max-time', '30', '-o', out, `http://10.0.2.2:${slow.port}/`], { timeoutMs: 40_000 });
    await new Promise((r) => setTimeout(r, 500));

    const bad = await put('block out proto tcpp\n');
    expect(status(bad)).toBe('400');
    expect(bad.stdout).toContain('tcpp');
    const good = await put(`block out proto tcp to 10.0.2.2 port ${hostHttp.port}\nblock out proto tcp to 10.0.2.0/24 port 8080\nblock out proto icmp to 10.0.2.0/24\n`);
    expect(status(good), good.stdout).toBe('200');
    const g2g = await a.ns.exec(['curl', '-sS', '--max-time', '5', '-o', '/dev/null', `http://${b.ip}:8080/page.bin`]);
    expect(g2g.code).not.toBe(0);
    const ping = await a.ns.exec(['busybox', 'ping', '-c', '1', '-W', '2', b.ip]);
    expect(ping.code).not.toBe(0);
    const toHost = await a.ns.exec(['curl', '-sS', '--max-time', '5', '-o', '/dev/null', `http://10.0.2.2:${hostHttp.port}/`]);
    expect(toHost.code).toBe(7);
    const done = await download;
    expect(done.code, done.stderr).toBe(0);
    expect(sha256(fs.readFileSync(out))).toBe(sha256(big));

    // block local: guest-to-guest and guest-to-host both refused; an empty set lifts it.
    expect(status(await put('block local\n'))).toBe('200');
    const toHost2 = await b.ns.exec(['curl', '-sS', '--max-time', '5', '-o', '/dev/null', `http://10.0.2.2:${hostHttp.port}/`]);
    expect(toHost2.code).toBe(7);
    const g2g2 = await b.ns.exec(['busybox', 'ping', '-c', '1', '-W', '2', a.ip]);
    expect(g2g2.code).not.toBe(0);
    expect(status(await put(''))).toBe('200');
    const again = await fetchSha(b, `http://10.0.2.2:${hostHttp.port}/`);
    expect(again.code, again.stderr).toBe(0);

    const rules = JSON.parse((await run(['curl', '-sS', '--unix-socket', api, 'http://vmnat/filter'])).stdout) as { rules: unknown[]; version: number };
    expect(rules.rules).toEqual([]);
    expect(rules.version).toBe(3);
    expect(eventText).toMatch(/"type":"filter"/);
    const stats = (await vmnat.stats()) as { ports: { drops: Record<string, number> }[] };
    expect(stats.ports.reduce((n, p) => n + (p.drops['filtered'] ?? 0), 0)).toBeGreaterThan(0);
  });
});
