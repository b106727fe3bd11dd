/**
 * IPv6 end to end with the Linux kernel's own IPv6 stack as the guest (a network namespace behind
 * vmnat's TAP). To keep every packet off the machine's real network, vmnat itself runs inside a
 * "host" namespace whose only IPv6 route leads over a veth to a "remote" namespace (ULA addresses
 * this test gives both); the guest namespace's TAP is opened from there. So "the host's ::1" is the
 * host namespace's loopback, the remote namespace plays an IPv6 host on the outside, and any other
 * destination has no route at all.
 *
 * Checked as a user would: the SLAAC address and default route the kernel built from vmnat's router
 * advertisement, the advertisement's RDNSS/DNSSL/MTU options as a solicitation's answer shows them,
 * pings to ::2 and ::3, the sha256 of bytes fetched with curl -6, dig's AAAA answers, a fragmented UDP
 * echo, the API's /flows listing an IPv6 flow, and how fast a connection without a route fails.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { createNetns, type Netns } from '../helpers/netns.ts';
import { ROOT, killAll, run, sleep, startVmnat, type VmnatProcess } from '../helpers/proc.ts';

const PEER = path.join(ROOT, 'test/helpers/v6peer.py');
const PREFIX = 'fd00:10:0:2::';
const GW6 = 'fd00:10:0:2::2';
const DNS6 = 'fd00:10:0:2::3';
const HOST_VETH = 'fd99:1::1';
const REMOTE = 'fd99:1::2';

let hostNs: Netns;
let remoteNs: Netns;
let guestNs: Netns;
let vmnat: VmnatProcess;
const children: ChildProcess[] = [];
let hostPorts: Record<string, number>;
let remotePorts: Record<string, number>;
let apiSocket: string;
let guestAddr: string;

/** The deterministic bytes v6peer.py serves for GET /N. */
function pattern(n: number): Buffer {
  const out: Buffer[] = [];
  let have = 0;
  let block = crypto.createHash('sha256').update('guest').digest();
  while (have < n) {
    block = crypto.createHash('sha256').update(block).digest();
    const chunk = Buffer.concat(new Array<Buffer>(64).fill(block));
    out.push(chunk);
    have += chunk.length;
  }
  return Buffer.concat(out).subarray(0, n);
}
const sha = (b: Uint8Array) => crypto.createHash('sha256').update(b).digest('hex');

/** Starts v6peer.py serve in `ns`; resolves with its ports once it says ready. */
function startPeer(ns: Netns, args: string[]): Promise<Record<string, number>> {
  return new Promise((resolve, reject) => {
    const child = spawn('ip', ['netns', 'exec', ns.name, 'python3', PEER, 'serve', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    let out = '';
    let err = '';
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /ready (.*)\n/.exec(out);
      if (!m) return;
      const ports: Record<string, number> = {};
      for (const kv of m[1]!.matchAll(/(\w+)=(\d+)/g)) ports[kv[1]!] = Number(kv[2]);
      resolve(ports);
    });
    child.on('exit', (code) => reject(new Error(`v6peer exited ${code}: ${err}`)));
  });
}

async function must(cmd: string[]): Promise<string> {
  const r = await run(cmd, { timeoutMs: 20_000 });
  if (r.code !== 0) throw new Error(`${cmd.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

beforeAll(async () => {
  hostNs = await createNetns();
  remoteNs = await createNetns();
  guestNs = await createNetns();
  const vh = `v6h${process.pid}`.slice(0, 15);
  const vr = `v6r${process.pid}`.slice(0, 15);
  await must(['ip', '-n', hostNs.name, 'link', 'add', vh, 'type', 'veth', 'peer', 'name', vr, 'netns', remoteNs.name]);
  await must(['ip', '-n', hostNs.name, 'addr', 'add', `${HOST_VETH}/64`, 'dev', vh, 'nodad']);
  await must(['ip', '-n', remoteNs.name, 'addr', 'add', `${REMOTE}/64`, 'dev', vr, 'nodad']);
  await must(['ip', '-n', hostNs.name, 'link', 'set', vh, 'up']);
  await must(['ip', '-n', remoteNs.name, 'link', 'set', vr, 'up']);
  // vmnat's pings to outside addresses use ping sockets, which this namespace must allow.
  await must(['ip', 'netns', 'exec', hostNs.name, 'sysctl', '-qw', 'net.ipv4.ping_group_range=0 2147483647']);
  hostPorts = await startPeer(hostNs, ['::1', 'www.example.test=fd99:1::2', 'www.example.test=192.0.2.7']);
  remotePorts = await startPeer(remoteNs, ['::']);
  apiSocket = path.join(guestNs.dir, 'api.sock');
  vmnat = await startVmnat(
    ['--tap', 'tap0', '--netns', guestNs.path, '--dns-server', `127.0.0.1:${hostPorts.dns}`, '--api-socket', apiSocket, '--dns-host', 'v6only.test=fd99:1::2', '--deny', 'fd98::/16'],
    { prefix: ['ip', 'netns', 'exec', hostNs.name] },
  );
  await must(['ip', '-n', guestNs.name, 'link', 'set', 'tap0', 'up']);
  // SLAAC: the kernel solicits, configures from the advertisement, then runs DAD (~1 s).
  for (let i = 0; i < 100; i++) {
    const out = await must(['ip', '-n', guestNs.name, '-6', 'addr', 'show', 'dev', 'tap0', 'scope', 'global']);
    const m = /inet6 (\S+)\/64 scope global (?!.*tentative)/.exec(out);
    if (m) {
      guestAddr = m[1]!;
      break;
    }
    await sleep(100);
  }
}, 60_000);

afterAll(async () => {
  await vmnat?.stop();
  for (const c of children) c.kill('SIGKILL');
  await guestNs?.destroy();
  await remoteNs?.destroy();
  await hostNs?.destroy();
  killAll();
});

type Stats = Record<string, Record<string, Record<string, number>>>;

describe('the guest configures itself from the router advertisement', () => {
  test('SLAAC address in the prefix, default route via fe80::2', async () => {
    expect(vmnat.ready.ipv6_prefix).toBe('fd00:10:0:2::/64');
    expect(vmnat.ready.gateway6).toBe(GW6);
    expect(guestAddr, 'no SLAAC address').toBeDefined();
    expect(guestAddr.startsWith('fd00:10:0:2:')).toBe(true);
    const route = await must(['ip', '-n', guestNs.name, '-6', 'route', 'show', 'default']);
    expect(route).toMatch(/default via fe80::2 dev tap0 proto ra/);
    // DAD succeeded: vmnat never answered for the guest's own address.
    const addr = await must(['ip', '-n', guestNs.name, '-6', 'addr', 'show', 'dev', 'tap0']);
    expect(addr).not.toMatch(/dadfailed/);
  });

  test('the advertisement names ::3 (RDNSS), the search domain (DNSSL), the MTU and the prefix', async () => {
    const r = await guestNs.exec(['python3', PEER, 'ra', 'tap0'], { timeoutMs: 10_000 });
    expect(r.code, r.stderr).toBe(0);
    const ra = JSON.parse(r.stdout) as { from: string; rdnss: string[]; dnssl: string[]; mtu: number; prefixes: { prefix: string; autonomous: boolean; onlink: boolean }[]; source_mac: string; router_lifetime: number; other: boolean };
    expect(ra.from).toBe('fe80::2');
    expect(ra.rdnss).toEqual([DNS6]);
    expect(ra.dnssl).toEqual(['vmnat.internal']);
    expect(ra.mtu).toBe(1500);
    expect(ra.prefixes).toEqual([{ prefix: `${PREFIX}/64`, onlink: true, autonomous: true, valid: 86400 }]);
    expect(ra.source_mac).toBe('52:55:0a:00:02:02');
    expect(ra.router_lifetime).toBeGreaterThan(0);
    expect(ra.other).toBe(true);
  });
});

describe('vmnat answers on ::2 and ::3', () => {
  test('ping -6 ::2 and ::3', async () => {
    for (const ip of [GW6, DNS6]) {
      const r = await guestNs.exec(['busybox', 'ping', '-6', '-c', '3', '-W', '2', ip], { timeoutMs: 10_000 });
      expect(r.stdout).toContain('3 packets received');
    }
  });

  test('dig AAAA @::3 goes to the upstream; host.vmnat.internal has an IPv6 twin', async () => {
    const r = await guestNs.exec(['dig', '+short', '+time=2', '+tries=1', 'AAAA', 'www.example.test', `@${DNS6}`], { timeoutMs: 10_000 });
    expect(r.stdout.trim()).toBe(REMOTE);
    const a = await guestNs.exec(['dig', '+short', '+time=2', '+tries=1', 'A', 'www.example.test', `@${DNS6}`], { timeoutMs: 10_000 });
    expect(a.stdout.trim()).toBe('192.0.2.7');
    const h = await guestNs.exec(['dig', '+short', '+time=2', '+tries=1', 'AAAA', 'host.vmnat.internal', `@${DNS6}`], { timeoutMs: 10_000 });
    expect(h.stdout.trim()).toBe(GW6);
    const d = await guestNs.exec(['dig', '+short', '+time=2', '+tries=1', 'AAAA', 'v6only.test', `@${DNS6}`], { timeoutMs: 10_000 });
    expect(d.stdout.trim()).toBe(REMOTE); // --dns-host NAME=IPV6
  });
});

describe('through the NAT', () => {
  test('curl -6 via [::2] reaches the host ::1 (sha256)', async () => {
    const n = 3_000_000;
    const before = ((await vmnat.stats()) as Stats).ipv6!.ipv6!.txPackets!;
    const r = await guestNs.exec(['sh', '-c', `curl -sS -6 --max-time 20 http://[${GW6}]:${hostPorts.http}/${n} | sha256sum`], { timeoutMs: 30_000 });
    expect(r.stdout.split(' ')[0]).toBe(sha(pattern(n)));
    // The TAP takes large IPv6 TCP frames as GSO (TCPv6): far fewer frames than 1440-byte segments.
    const frames = ((await vmnat.stats()) as Stats).ipv6!.ipv6!.txPackets! - before;
    expect(frames).toBeLessThan(n / 1440 / 4);
  });

  test('a remote IPv6 host is reached by TCP (sha256) and UDP', async () => {
    const n = 2_000_000;
    const r = await guestNs.exec(['sh', '-c', `curl -sS -6 --max-time 20 http://[${REMOTE}]:${remotePorts.http}/${n} | sha256sum`], { timeoutMs: 30_000 });
    expect(r.stdout.split(' ')[0]).toBe(sha(pattern(n)));
    const u = await udpEcho(REMOTE, remotePorts.udp!, 1000);
    expect(u).toBe(`ok 1000 ${sha(pattern(1000))}`);
  });

  test('ping -6 a remote host through the host\'s ping sockets', async () => {
    const r = await guestNs.exec(['busybox', 'ping', '-6', '-c', '3', '-W', '2', REMOTE], { timeoutMs: 15_000 });
    expect(r.stdout).toContain('3 packets received');
    const s = (await vmnat.stats()) as Stats;
    expect((s.icmpNat as unknown as Record<string, number>).repliesToGuest).toBeGreaterThanOrEqual(3);
  });

  test('UDP echo over IPv6 with a fragmented datagram, both ways', async () => {
    const before = ((await vmnat.stats()) as Stats).ipv6!.reassembly6!.reassembled!;
    const r = await udpEcho(GW6, hostPorts.udp!, 6000);
    expect(r).toBe(`ok 6000 ${sha(pattern(6000))}`);
    const after = ((await vmnat.stats()) as Stats).ipv6!;
    expect(after.reassembly6!.reassembled!).toBeGreaterThan(before);
    expect(after.ipv6!.txFragments!).toBeGreaterThan(0);
  });

  test('an open IPv6 connection is listed by GET /flows beside IPv4 ones', async () => {
    const script = `
import socket, subprocess, json
s = socket.create_connection(('${GW6}', ${hostPorts.http}), timeout=5)
out = subprocess.run(['curl', '-sS', '--unix-socket', '${apiSocket}', 'http://vmnat/flows'], capture_output=True, text=True).stdout
print(json.dumps({'local': '[%s]:%d' % s.getsockname()[:2], 'flows': json.loads(out)}))
`;
    const r = await guestNs.exec(['python3', '-c', script], { timeoutMs: 10_000 });
    const j = JSON.parse(r.stdout) as { local: string; flows: { proto: string; guest: string; remote: string; host: string; state: string }[] };
    const f = j.flows.find((x) => x.guest === j.local);
    expect(f, r.stdout).toBeDefined();
    expect(f!.proto).toBe('tcp');
    expect(f!.remote).toBe(`[${GW6}]:${hostPorts.http}`);
    expect(f!.host).toBe(`[::1]:${hostPorts.http}`);
  });

  test('hop limit 1 to an outside host: ICMPv6 time exceeded from ::2 (as a router)', async () => {
    const r = await guestNs.exec(['python3', '-c', `
import socket, struct
IPV6_RECVERR = 25
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 1)
s.sendto(b'x', ('${REMOTE}', ${remotePorts.udp}))
import select
select.select([s], [], [], 3)
data, anc, flags, addr = s.recvmsg(512, 512, socket.MSG_ERRQUEUE)
for level, typ, d in anc:
    if level == socket.IPPROTO_IPV6 and typ == IPV6_RECVERR:
        errno, origin, etype, ecode = struct.unpack_from('=IBBB', d)
        off = socket.inet_ntop(socket.AF_INET6, d[16 + 8:16 + 24])
        print(origin, etype, ecode, off)
`], { timeoutMs: 10_000 });
    // origin 3 = SO_EE_ORIGIN_ICMP6; type 3 code 0 = hop limit exceeded in transit; from the gateway.
    expect(r.stdout.trim(), r.stderr).toBe(`3 3 0 ${GW6}`);
  });

  test('--deny fd98::/16 and the IPv6 metadata address: refused at once, administratively (EACCES)', async () => {
    for (const dst of ['fd98::1', 'fd00:ec2::254']) {
      const r = await guestNs.exec(['python3', '-c', `
import socket
try:
    socket.create_connection(('${dst}', 80), timeout=5); print('connected')
except OSError as e:
    print(e.strerror)
`], { timeoutMs: 10_000 });
      expect(r.stdout.trim(), dst).toBe('Permission denied');
    }
  });

  test('a dual-stack guest is found by its DHCP hostname over both families', async () => {
    // udhcpc with a script that touches IPv4 only (the SLAAC address stays).
    const script = path.join(guestNs.dir, 'udhcpc4.sh');
    fs.writeFileSync(script, '#!/bin/sh\ncase "$1" in bound|renew) ip -4 addr flush dev "$interface"; ip -4 addr add "$ip/$mask" dev "$interface"; echo "LEASE ip=$ip";; esac\nexit 0\n', { mode: 0o755 });
    const lease = await guestNs.exec(['busybox', 'udhcpc', '-f', '-q', '-n', '-t', '5', '-T', '1', '-i', 'tap0', '-s', script, '-x', 'hostname:sixguest'], { timeoutMs: 20_000 });
    expect(lease.stdout).toContain('LEASE ip=10.0.2.15');
    const aaaa = await guestNs.exec(['dig', '+short', '+time=2', '+tries=1', 'AAAA', 'sixguest.vmnat.internal', `@${DNS6}`], { timeoutMs: 10_000 });
    expect(aaaa.stdout.trim().split('\n')).toContain(guestAddr);
    const a = await guestNs.exec(['dig', '+short', '+time=2', '+tries=1', 'A', 'sixguest', `@${DNS6}`], { timeoutMs: 10_000 });
    expect(a.stdout.trim()).toBe('10.0.2.15');
  });

  test('no route on the host: the guest is refused at once (ICMPv6 unreachable)', async () => {
    const r = await guestNs.exec(['python3', '-c', `
import socket, time
t = time.monotonic()
try:
    socket.create_connection(('fd00:99::1', 80), timeout=10); print('connected')
except OSError as e:
    print('%s %.3f' % (e.strerror, time.monotonic() - t))
`], { timeoutMs: 20_000 });
    const [, what, secs] = /^(.*) ([\d.]+)$/.exec(r.stdout.trim()) ?? [];
    expect(what).toBe('Network is unreachable');
    expect(Number(secs)).toBeLessThan(0.5);
  });
});

describe('port forwards', () => {
  let guestPorts: Record<string, number>;
  beforeAll(async () => {
    guestPorts = await startPeer(guestNs, ['::']);
  });

  async function addForward(body: object): Promise<{ host_port: number; host_addr: string; guest_addr: string | null }> {
    const r = await run(['curl', '-sS', '--unix-socket', apiSocket, '-H', 'content-type: application/json', '-d', JSON.stringify(body), 'http://vmnat/forwards'], { timeoutMs: 10_000 });
    return JSON.parse(r.stdout) as { host_port: number; host_addr: string; guest_addr: string | null };
  }
  async function fetchFromHost(url: string): Promise<string> {
    const r = await hostNs.exec(['sh', '-c', `curl -sS -g --max-time 10 ${url} | sha256sum`], { timeoutMs: 20_000 });
    return r.stdout.split(' ')[0]!;
  }

  test('a forward on [::1] reaches the guest\'s IPv6 httpd', async () => {
    const rule = await addForward({ proto: 'tcp', host_addr: '::1', host_port: 0, guest_addr: guestAddr, guest_port: guestPorts.http });
    expect(rule.host_addr).toBe('::1');
    expect(rule.guest_addr).toBe(guestAddr);
    expect(await fetchFromHost(`http://[::1]:${rule.host_port}/1000000`)).toBe(sha(pattern(1_000_000)));
  });

  test('a forward given without an address answers on both 127.0.0.1 and ::1', async () => {
    const rule = await addForward({ proto: 'tcp', host_port: 0, guest_addr: guestAddr, guest_port: guestPorts.http });
    expect(rule.host_addr).toBe('127.0.0.1');
    expect(await fetchFromHost(`http://127.0.0.1:${rule.host_port}/70000`)).toBe(sha(pattern(70_000)));
    expect(await fetchFromHost(`http://[::1]:${rule.host_port}/70000`)).toBe(sha(pattern(70_000)));
    expect(await fetchFromHost(`http://localhost:${rule.host_port}/70000`)).toBe(sha(pattern(70_000)));
  });

  test('a UDP forward without an address answers on 127.0.0.1 and ::1, to the guest\'s IPv6 address', async () => {
    const rule = await addForward({ proto: 'udp', host_port: 0, guest_addr: guestAddr, guest_port: guestPorts.udp });
    for (const [family, addr] of [['AF_INET', '127.0.0.1'], ['AF_INET6', '::1']] as const) {
      const r = await hostNs.exec(['python3', '-c', `
import socket
s = socket.socket(socket.${family}, socket.SOCK_DGRAM); s.settimeout(3)
s.sendto(b'hello ${family}', ('${addr}', ${rule.host_port}))
print(s.recvfrom(100)[0].decode())
`], { timeoutMs: 10_000 });
      expect(r.stdout.trim(), r.stderr).toBe(`hello ${family}`);
    }
  });
});

describe('two guests and filter rules over IPv6', () => {
  test('guests reach each other over IPv6 (NDP passes the filter); an IPv6 rule blocks one service between them and one outside host, and nothing else', async () => {
    const a = await createNetns();
    const b = await createNetns();
    const rulesDir = fs.mkdtempSync(path.join('/tmp', 'vmnat-filter6-'));
    const rules = path.join(rulesDir, 'rules.conf');
    fs.writeFileSync(rules, `block out proto tcp to ${PREFIX}/64 port 8080\nblock out proto tcp to ${REMOTE} port ${remotePorts.http}\n`);
    const v = await startVmnat(
      ['--tap', 'tap0', '--netns', a.path, '--tap', 'tap0', '--netns', b.path, '--dns-server', `127.0.0.1:${hostPorts.dns}`, '--filter', rules],
      { prefix: ['ip', 'netns', 'exec', hostNs.name] },
    );
    try {
      const addrOf = async (n: Netns): Promise<string> => {
        await must(['ip', '-n', n.name, 'link', 'set', 'tap0', 'up']);
        for (let i = 0; i < 100; i++) {
          const out = await must(['ip', '-n', n.name, '-6', 'addr', 'show', 'dev', 'tap0']);
          const m = /inet6 (fd00:10:0:2:\S+)\/64 scope global/.exec(out);
          if (m && !out.includes('tentative')) return m[1]!;
          await sleep(100);
        }
        throw new Error(`no SLAAC address in ${n.name}`);
      };
      const [aIp, bIp] = [await addrOf(a), await addrOf(b)];
      const peers = await startPeer(b, ['::']); // b's httpd on an ephemeral port: not blocked
      const server8080 = spawn('ip', ['netns', 'exec', b.name, 'python3', '-m', 'http.server', '8080', '--bind', '::'], { stdio: 'ignore' });
      children.push(server8080);
      for (let i = 0; i < 50; i++) {
        if ((await b.exec(['curl', '-s', '-g', '-o', '/dev/null', '-w', '%{http_code}', 'http://[::1]:8080/'])).stdout === '200') break;
        await sleep(100);
      }
      const ping = await a.exec(['busybox', 'ping', '-6', '-c', '2', '-W', '2', bIp], { timeoutMs: 10_000 });
      expect(ping.stdout, `${aIp} -> ${bIp}`).toContain('2 packets received');
      const ok = await a.exec(['sh', '-c', `curl -sS -g --max-time 10 http://[${bIp}]:${peers.http}/50000 | sha256sum`], { timeoutMs: 20_000 });
      expect(ok.stdout.split(' ')[0]).toBe(sha(pattern(50_000)));
      const t0 = performance.now();
      const refused = await a.exec(['curl', '-sS', '-g', '--max-time', '10', '-o', '/dev/null', `http://[${bIp}]:8080/`], { timeoutMs: 20_000 });
      expect(refused.code, refused.stderr).toBe(7); // ICMPv6 administratively prohibited: at once
      expect(performance.now() - t0).toBeLessThan(3000);
      const out = await a.exec(['curl', '-sS', '-g', '--max-time', '10', '-o', '/dev/null', `http://[${REMOTE}]:${remotePorts.http}/1`], { timeoutMs: 20_000 });
      expect(out.code, out.stderr).toBe(7); // refused by vmnat (RST)
      const stats = (await v.stats()) as { tcpNat: { refusedByFilter: number }; filter: { blocked: number } };
      expect(stats.tcpNat.refusedByFilter).toBeGreaterThanOrEqual(1);
      expect(stats.filter.blocked).toBeGreaterThanOrEqual(2);
    } finally {
      await v.stop();
      await a.destroy();
      await b.destroy();
      fs.rmSync(rulesDir, { recursive: true, force: true });
    }
  }, 60_000);
});

const DHCLIENT_SCRIPT = `#!/bin/sh
# dhclient -6 calls this; it configures the address itself and never touches /etc/resolv.conf
# (the namespace shares the host's file system).
echo "DH6 reason=$reason ip6=$new_ip6_address dns=$new_dhcp6_name_servers search=$new_dhcp6_domain_search" >> "$(dirname "$0")/dh6.out"
case "$reason" in BOUND6|RENEW6|REBIND6) [ -n "$new_ip6_address" ] && ip -6 addr replace "$new_ip6_address/128" dev "$interface" ;; esac
exit 0
`;

/** Runs ISC dhclient -6 once in `n` (stateful, or stateless with -S); returns its script's lines. */
async function dhclient6(n: Netns, tag: string, extra: string[]): Promise<Record<string, string>[]> {
  const dir = path.join(n.dir, tag);
  fs.mkdirSync(dir, { recursive: true });
  const script = path.join(dir, 'script.sh');
  fs.writeFileSync(script, DHCLIENT_SCRIPT, { mode: 0o755 });
  const pidFile = path.join(dir, 'pid');
  try {
    await n.exec(['timeout', '15', 'dhclient', '-6', '-1', ...extra, '-sf', script, '-lf', path.join(dir, 'lease'), '-pf', pidFile, 'tap0'], { timeoutMs: 20_000 });
  } finally {
    // dhclient stays behind as a daemon once configured: end it by the PID it wrote.
    if (fs.existsSync(pidFile)) {
      const pid = Number(fs.readFileSync(pidFile, 'utf8').trim());
      if (pid > 0) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    }
  }
  const out = fs.existsSync(path.join(dir, 'dh6.out')) ? fs.readFileSync(path.join(dir, 'dh6.out'), 'utf8') : '';
  return out.split('\n').filter((l) => l.startsWith('DH6')).map((l) => {
    const o: Record<string, string> = {};
    for (const m of l.matchAll(/(\w+)=(\S*)/g)) o[m[1]!] = m[2]!;
    return o;
  });
}

describe('DHCPv6', () => {
  test('a stateful client (dhclient -6) gets an address from the prefix and ::3', async () => {
    const lines = await dhclient6(guestNs, 'stateful', []);
    const bound = lines.find((l) => l.reason === 'BOUND6');
    expect(bound, JSON.stringify(lines)).toBeDefined();
    expect(bound!.ip6!.startsWith('fd00:10:0:2::')).toBe(true);
    expect(bound!.dns).toBe(DNS6);
    const addr = await must(['ip', '-n', guestNs.name, '-6', 'addr', 'show', 'dev', 'tap0']);
    expect(addr).toContain(`inet6 ${bound!.ip6}/128`);
  });

  test('a stateless client (dhclient -6 -S) gets the DNS server and the search list', async () => {
    const lines = await dhclient6(guestNs, 'stateless', ['-S']);
    const info = lines.find((l) => l.dns !== undefined && l.dns !== '');
    expect(info, JSON.stringify(lines)).toBeDefined();
    expect(info!.dns).toBe(DNS6);
    expect(info!.search).toBe('vmnat.internal.');
    expect(info!.ip6).toBe('');
  });

  test('--dhcp-static MAC=IPV6 fixes the address of a guest by its MAC', async () => {
    const g2 = await createNetns();
    // A persistent TAP with a known MAC before vmnat attaches to it (vmnat opens it by name).
    await must(['ip', '-n', g2.name, 'tuntap', 'add', 'dev', 'tap0', 'mode', 'tap']);
    await must(['ip', '-n', g2.name, 'link', 'set', 'tap0', 'address', '52:54:00:aa:bb:cc']);
    const v2 = await startVmnat(
      ['--tap', 'tap0', '--netns', g2.path, '--dns-server', `127.0.0.1:${hostPorts.dns}`, '--dhcp-static', '52:54:00:aa:bb:cc=fd00:10:0:2::77'],
      { prefix: ['ip', 'netns', 'exec', hostNs.name] },
    );
    try {
      await must(['ip', '-n', g2.name, 'link', 'set', 'tap0', 'up']);
      for (let i = 0; i < 50; i++) {
        const out = await must(['ip', '-n', g2.name, '-6', 'addr', 'show', 'dev', 'tap0', 'scope', 'link']);
        if (out.includes('inet6') && !out.includes('tentative')) break;
        await sleep(100);
      }
      const lines = await dhclient6(g2, 'static', []);
      expect(lines.find((l) => l.reason === 'BOUND6')?.ip6, JSON.stringify(lines)).toBe('fd00:10:0:2::77');
    } finally {
      await v2.stop();
      await g2.destroy();
    }
  });
});

/** Sends one UDP datagram of `n` pattern bytes from the guest and checks the echo. */
async function udpEcho(ip: string, port: number, n: number): Promise<string> {
  const r = await guestNs.exec(['python3', '-c', `
import hashlib, socket, sys
sys.path.insert(0, '${path.dirname(PEER)}')
from v6peer import pattern
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.settimeout(3)
b = pattern(${n})
for i in range(3):
    s.sendto(b, ('${ip}', ${port}))
    try:
        d, _ = s.recvfrom(65535); break
    except socket.timeout:
        d = b''
print('ok' if d == b else 'bad', len(d), hashlib.sha256(d).hexdigest())
`], { timeoutMs: 20_000 });
  return r.stdout.trim() || r.stderr;
}
