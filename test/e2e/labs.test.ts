/**
 * The labs, end to end, as a reader runs them: `node --import tsx labs/run.ts NAME --out DIR`
 * (what `npm run lab -- NAME` runs), with a real qemu guest, vmnat, tcpdump. Each test asserts
 * what the reader is told to look at in the transcript and in the files the lab leaves, and that
 * the lab left no process and no temp dir behind.
 *
 * Each lab runs in a network namespace of its own (only `lo`, up): its forward's fixed host port
 * (2222) cannot collide with another test or engineer, and no lab traffic can reach anything but
 * that namespace's loopback. The namespaces are ours by name and removed after each test. Labs run
 * one at a time (TCG is CPU-bound; the machine has 2 cores).
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, ensureGuest, makeRunDir } from '../helpers/vm.ts';

const LAB_MS = 180_000;
let nsCount = 0;
const cleanups: (() => void)[] = [];

afterEach(() => {
  while (cleanups.length > 0) cleanups.pop()!();
});

/** A fresh namespace with only loopback up; removed after the test. */
function makeNetns(): string {
  const name = `vmnat-lab-${process.pid}-${nsCount++}`;
  const add = spawnSync('ip', ['netns', 'add', name], { encoding: 'utf8' });
  if (add.status !== 0) throw new Error(`ip netns add ${name}: ${add.stderr}`);
  cleanups.push(() => void spawnSync('ip', ['netns', 'del', name]));
  const up = spawnSync('ip', ['-n', name, 'link', 'set', 'lo', 'up'], { encoding: 'utf8' });
  if (up.status !== 0) throw new Error(`ip -n ${name} link set lo up: ${up.stderr}`);
  return name;
}

interface LabRun {
  code: number | null;
  stdout: string;
  stderr: string;
  out: string;
  ms: number;
}

/** Runs a lab in its own namespace, collecting its transcript. */
function runLab(name: string, ns = makeNetns()): Promise<LabRun> {
  const out = makeRunDir(`lab-${name}`);
  cleanups.push(() => rmSync(out, { recursive: true, force: true }));
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn('ip', ['netns', 'exec', ns, process.execPath, '--import', 'tsx', path.join(REPO_ROOT, 'labs/run.ts'), name, '--out', out], {
      cwd: REPO_ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    // `ip netns exec` execs the command, so this PID is the lab's own: SIGTERM makes it clean up.
    const timer = setTimeout(() => child.kill('SIGTERM'), LAB_MS - 20_000);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, out, ms: Math.round(performance.now() - started) });
    });
  });
}

/** The lab's private temp dir, from the transcript's first line. */
function labTempDir(r: LabRun): string {
  const m = /^\(\$LAB below is (\S+): sockets/m.exec(r.stdout);
  if (!m) throw new Error(`no $LAB path in the transcript:\n${r.stdout}`);
  return m[1]!;
}

/** PIDs whose command line mentions `needle` (a lab's temp dir is in qemu's and vmnat's argv). */
function processesMentioning(needle: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(needle)) pids.push(Number(entry));
    } catch {
      // The process ended while we looked.
    }
  }
  return pids;
}

function expectCleanedUp(r: LabRun): void {
  const dir = labTempDir(r);
  expect(existsSync(dir), `${dir} left behind`).toBe(false);
  expect(processesMentioning(dir), 'processes left behind').toEqual([]);
}

function why(r: LabRun): string {
  return `exit ${r.code} after ${r.ms} ms\n--- stdout ---\n${r.stdout}\n--- stderr ---\n${r.stderr}`;
}

describe.sequential('labs', () => {
  beforeAll(() => {
    ensureGuest();
  }, 600_000);

  it('nat: lease, routes, resolv.conf, a download through 10.0.2.2 seen in the flow table, ssh into the guest through a forward', async () => {
    const r = await runLab('nat');
    const w = why(r);
    expect(r.code, w).toBe(0);
    console.log(`[labs] nat: ${r.ms} ms, ${JSON.stringify(JSON.parse(readFileSync(path.join(r.out, 'nat-summary.json'), 'utf8')).timings)}`);

    // The guest's own DHCP client reports the lease; ip and resolv.conf show it in force.
    expect(r.stdout).toMatch(/^ {4}udhcpc: lease of 10\.0\.2\.15 obtained from 10\.0\.2\.2, lease time 86400$/m);
    expect(r.stdout).toMatch(/^ {8}inet 10\.0\.2\.15\/24 /m);
    expect(r.stdout).toMatch(/^ {4}default via 10\.0\.2\.2 dev eth0/m);
    expect(r.stdout).toMatch(/^guest# cat \/etc\/resolv\.conf\n(?: {4}search \S+\n)? {4}nameserver 10\.0\.2\.3$/m);
    expect(r.stdout).toMatch(/^ {4}Name:\s+host\.lab\.test\n {4}Address: 10\.0\.2\.2$/m);

    // The guest's sha256sum of what it downloaded equals the host's page, byte for byte.
    const page = readFileSync(path.join(r.out, 'nat-page.html'));
    const hash = createHash('sha256').update(page).digest('hex');
    expect(r.stdout).toContain(`\n    ${hash}  /tmp/index.html\n`);

    // vmnat's flow table: the guest's connection to 10.0.2.2:PORT rides host socket 127.0.0.1:X -> 127.0.0.1:PORT,
    // and the kernel's socket table (ss) shows that very socket owned by a node process (vmnat).
    const flow = /^ {4}tcp\s+10\.0\.2\.15:\d+\s+10\.0\.2\.2:(\d+)\s+-\s+established\s.*\s127\.0\.0\.1:(\d+) -> 127\.0\.0\.1:(\d+)$/m.exec(r.stdout);
    expect(flow, w).not.toBeNull();
    expect(flow![3]).toBe(flow![1]);
    expect(r.stdout).toMatch(new RegExp(`^ {4}ESTAB\\s.*127\\.0\\.0\\.1:${flow![2]}\\s+127\\.0\\.0\\.1:${flow![1]}\\s+users:\\(\\("node",pid=\\d+`, 'm'));

    // The forward added at run time reaches the guest's SSH server: a real login, seen from the guest as coming from 10.0.2.2.
    expect(r.stdout).toContain('    added ssh: tcp 127.0.0.1:2222 -> guest (lease):22\n');
    expect(r.stdout).toMatch(/^host\$ ssh .* -p 2222 root@127\.0\.0\.1 'hostname; .*\n {4}vmnat-lab\n {4}2: eth0\s+inet 10\.0\.2\.15\/24 /m);
    expect(r.stdout).toMatch(/^ {4}SSH_CONNECTION=10\.0\.2\.2 \d+ 10\.0\.2\.15 22$/m);
    // The open session: ss shows the host's ssh client port, and vmnat's flow table maps that very port to the guest's :22.
    const client = /^ {4}ESTAB\s.*127\.0\.0\.1:(\d+)\s+127\.0\.0\.1:2222\s+users:\(\("ssh",pid=\d+/m.exec(r.stdout);
    expect(client, w).not.toBeNull();
    expect(r.stdout).toMatch(new RegExp(`^ {4}tcp\\s+10\\.0\\.2\\.15:22\\s+10\\.0\\.2\\.2:\\d+\\s+ssh\\s+established\\s.*127\\.0\\.0\\.1:2222 <- 127\\.0\\.0\\.1:${client![1]}$`, 'm'));
    expect(r.stdout).toMatch(/^ {4}tcp\s+0\s+0\s+10\.0\.2\.15:22\s+10\.0\.2\.2:\d+\s+ESTABLISHED/m);

    // The picture, in the terminal and as SVG, from the API.
    expect(r.stdout).toMatch(/│ eth0 10\.0\.2\.15\/24\s+│────│/);
    const svg = readFileSync(path.join(r.out, 'nat-topology.svg'), 'utf8');
    expect(svg).toContain('10.0.2.15');
    expect(svg).toContain('127.0.0.1:2222');
    expect(r.stdout).toContain(path.join(r.out, 'nat-topology.svg'));

    const summary = JSON.parse(readFileSync(path.join(r.out, 'nat-summary.json'), 'utf8')) as { ok: boolean; checks: { ok: boolean }[] };
    expect(summary.ok).toBe(true);
    expect(summary.checks.length).toBeGreaterThanOrEqual(20);
    expect(summary.checks.every((c) => c.ok)).toBe(true);
    expectCleanedUp(r);
  }, LAB_MS);

  it('capture: the pcap holds DISCOVER/OFFER/REQUEST/ACK and SYN/SYN-ACK/ACK, each frame explained', async () => {
    const r = await runLab('capture');
    const w = why(r);
    expect(r.code, w).toBe(0);
    console.log(`[labs] capture: ${r.ms} ms, ${JSON.stringify(JSON.parse(readFileSync(path.join(r.out, 'capture-summary.json'), 'utf8')).timings)}`);

    // Read the capture ourselves with tcpdump, independently of the lab's parsing.
    const pcap = path.join(r.out, 'capture.pcap');
    const td = spawnSync('tcpdump', ['-nn', '-v', '-r', pcap], { encoding: 'utf8' });
    expect(td.status, td.stderr).toBe(0);
    const dhcp = [...td.stdout.matchAll(/DHCP-Message \(53\), length 1: (\w+)/g)].map((m) => m[1]);
    expect(dhcp).toEqual(['Discover', 'Offer', 'Request', 'ACK']);
    const tcp = [...td.stdout.matchAll(/^\s+(\d+\.\d+\.\d+\.\d+)\.(\d+) > (\d+\.\d+\.\d+\.\d+)\.(\d+): Flags \[([^\]]+)\]/gm)].map((m) => `${m[1]}:${m[2]}>${m[3]}:${m[4]} ${m[5]}`);
    const syn = tcp.findIndex((s) => s.startsWith('10.0.2.15:') && s.endsWith(' S'));
    expect(syn, td.stdout).toBeGreaterThanOrEqual(0);
    const [g, h] = tcp[syn]!.split(' ')[0]!.split('>');
    expect(tcp[syn + 1]).toBe(`${h}>${g} S.`);
    expect(tcp[syn + 2]).toBe(`${g}>${h} .`);
    expect(h).toMatch(/^10\.0\.2\.2:/);

    // The lab explained each of those frames.
    const frames = td.stdout.split('\n').filter((l) => /^\d{2}:\d{2}:\d{2}\./.test(l)).length;
    expect((r.stdout.match(/^#[ \d]\d /gm) ?? []).length).toBe(frames);
    expect((r.stdout.match(/^ {5}↳ /gm) ?? []).length).toBe(frames);
    for (const word of ['DISCOVER:', 'OFFER:', 'REQUEST:', 'ACK: vmnat confirms', 'SYN:', 'SYN-ACK:', 'the three-way handshake is complete']) {
      expect(r.stdout, word).toContain(word);
    }
    const svg = readFileSync(path.join(r.out, 'capture-topology.svg'), 'utf8');
    expect(svg).toContain('10.0.2.15');
    expectCleanedUp(r);
  }, LAB_MS);

  it('isolation: three guests reach each other, then --isolate cuts them apart (counted), then a filter rule refuses one guest (counted)', async () => {
    const r = await runLab('isolation');
    const w = why(r);
    expect(r.code, w).toBe(0);
    console.log(`[labs] isolation: ${r.ms} ms, ${JSON.stringify(JSON.parse(readFileSync(path.join(r.out, 'isolation-summary.json'), 'utf8')).timings)}`);
    for (const [name, ip] of [['vm1', '10.0.2.15'], ['vm2', '10.0.2.16'], ['vm3', '10.0.2.17']] as const) {
      // Each leased its static address twice: before and after vmnat's restart with --isolate.
      expect((r.stdout.match(new RegExp(`^${name}# udhcpc .*\\n(?: {4}.*\\n)*? {4}udhcpc: lease of ${ip.replace(/\./g, '\\.')} obtained`, 'gm')) ?? []).length, name).toBe(2);
    }
    // Shared: vm1's pings to vm2 and vm3 answered. Isolated: none answered, the gateway still did.
    const pings = [...r.stdout.matchAll(/^vm1# (?:arp -s \S+ \S+ && )?ping -c \d -W \d (\S+)\n(?: {4}.*\n)*? {4}(\d) packets transmitted, (\d) packets received/gm)].map((m) => `${m[1]} ${m[3]}/${m[2]}`);
    expect(pings).toEqual(['10.0.2.16 2/2', '10.0.2.17 2/2', '10.0.2.16 0/2', '10.0.2.2 2/2', '10.0.2.16 0/3']);
    const drops = /^ {4}1\s+socket \S+vm1\.sock\s+52:54:00:00:00:01\s+10\.0\.2\.15\s.*\bisolated=(\d+)/m.exec(r.stdout);
    expect(drops, w).not.toBeNull();
    expect(Number(drops![1])).toBeGreaterThanOrEqual(3);
    // The filter: vm1 fetches, vm3 is refused, and the rule counted it.
    expect(r.stdout).toMatch(/^vm3# timeout 20 wget .*\n {4}wget: can't connect to remote host \(10\.0\.2\.2\): Connection refused$/m);
    expect(r.stdout).toMatch(/^ {7}2\s+1\s+block out proto tcp from 10\.0\.2\.17 to 10\.0\.2\.2 port \d+$/m);
    const svg = readFileSync(path.join(r.out, 'isolation-topology.svg'), 'utf8');
    for (const ip of ['10.0.2.15', '10.0.2.16', '10.0.2.17', 'isolated']) expect(svg).toContain(ip);
    expectCleanedUp(r);
  }, LAB_MS);

  it('hostonly: two guests lease .101/.102 from 192.168.56.100, reach each other and the host (vmnat0), no route out; a NAT card on vm1 adds the default route via 10.0.2.2', async () => {
    const r = await runLab('hostonly');
    const w = why(r);
    expect(r.code, w).toBe(0);
    console.log(`[labs] hostonly: ${r.ms} ms, ${JSON.stringify(JSON.parse(readFileSync(path.join(r.out, 'hostonly-summary.json'), 'utf8')).timings)}`);
    // The host's side of the network, in the lab's namespace.
    expect(r.stdout).toMatch(/^ {8}inet 192\.168\.56\.1\/24 .* vmnat0$/m);
    for (const [name, ip] of [['vm1', '192.168.56.101'], ['vm2', '192.168.56.102']] as const) {
      expect(r.stdout).toMatch(new RegExp(`^${name}# udhcpc -i eth0 .*\\n(?: {4}.*\\n)*? {4}udhcpc: lease of ${ip.replace(/\./g, '\\.')} obtained from 192\\.168\\.56\\.100, lease time 86400$`, 'm'));
      expect(r.stdout).toMatch(new RegExp(`^host\\$ busybox ping -c 2 -W 3 ${ip.replace(/\./g, '\\.')}\\n(?: {4}.*\\n)*? {4}2 packets transmitted, 2 packets received`, 'm'));
    }
    expect(r.stdout).toMatch(/^vm1# ip route\n {4}192\.168\.56\.0\/24 dev eth0 scope link {2}src 192\.168\.56\.101\n(?! {4})/m);
    expect(r.stdout).toMatch(/^vm1# ping -c 2 -W 3 192\.168\.56\.102\n(?: {4}.*\n)*? {4}2 packets transmitted, 2 packets received/m);
    expect(r.stdout).toMatch(/^vm2# ping -c 1 -W 2 10\.0\.2\.2\n(?: {4}.*\n)*? {4}ping: sendto: Network is unreachable/m);
    // The second card: leased from the NAT vmnat; the routes split by card.
    expect(r.stdout).toMatch(/^ {4}udhcpc: lease of 10\.0\.2\.15 obtained from 10\.0\.2\.2, lease time 86400$/m);
    expect(r.stdout).toMatch(/^vm1# ip route\n(?: {4}.*\n)*? {4}default via 10\.0\.2\.2 dev eth1/m);
    expect(r.stdout).toMatch(/^ {4}192\.168\.56\.1 dev eth0 {2}src 192\.168\.56\.101 *\n {4}10\.0\.2\.2 dev eth1 {2}src 10\.0\.2\.15/m);
    const svg = readFileSync(path.join(r.out, 'hostonly-topology.svg'), 'utf8');
    for (const s of ['192.168.56.101', '192.168.56.102', 'vmnat0 192.168.56.1/24', 'eth1 10.0.2.15/24', 'no gateway, no DNS, no NAT']) expect(svg).toContain(s);
    const summary = JSON.parse(readFileSync(path.join(r.out, 'hostonly-summary.json'), 'utf8')) as { ok: boolean; checks: { ok: boolean }[] };
    expect(summary.ok).toBe(true);
    expect(summary.checks.length).toBeGreaterThanOrEqual(20);
    expectCleanedUp(r);
  }, LAB_MS);

  it('ipv6: SLAAC address from the RA, RDNSS/DNSSL on the wire, AAAA over ::3, a fetch from ::1 through ::2 in the flow table, a forward on [::1]', async () => {
    const r = await runLab('ipv6');
    const w = why(r);
    expect(r.code, w).toBe(0);
    console.log(`[labs] ipv6: ${r.ms} ms, ${JSON.stringify(JSON.parse(readFileSync(path.join(r.out, 'ipv6-summary.json'), 'utf8')).timings)}`);
    // The guest's kernel formed its address from the prefix and its MAC, and routes via vmnat's link-local address.
    expect(r.stdout).toMatch(/^ {8}inet6 fd00:10:0:2:5054:ff:fe12:3456\/64 scope global dynamic/m);
    expect(r.stdout).toMatch(/^ {4}default via fe80::2 dev eth0/m);
    // The router advertisement, read independently from the capture the lab kept.
    const td = spawnSync('tcpdump', ['-nn', '-v', '-r', path.join(r.out, 'ipv6.pcap'), 'icmp6 and ip6[40] == 134'], { encoding: 'utf8' });
    expect(td.status, td.stderr).toBe(0);
    expect(td.stdout).toMatch(/rdnss option \(25\).*addr: fd00:10:0:2::3$/m);
    expect(td.stdout).toMatch(/prefix info option \(3\).*: fd00:10:0:2::\/64, Flags \[onlink, auto\]/);
    // AAAA through ::3, and the host's name with its IPv6 twin.
    expect(r.stdout).toMatch(/^ {4}Name:\s+www\.lab\.test\n {4}Address: 2001:db8::80$/m);
    expect(r.stdout).toMatch(/^ {4}Name:\s+host\.vmnat\.internal\n {4}Address: fd00:10:0:2::2$/m);
    // The fetch: the flow table maps the guest's IPv6 connection to a host socket on ::1; the bytes match.
    const flow = /^ {4}tcp\s+\[fd00:10:0:2:5054:ff:fe12:3456\]:\d+\s+\[fd00:10:0:2::2\]:(\d+)\s+-\s+established\s.*\[::1\]:\d+ -> \[::1\]:(\d+)$/m.exec(r.stdout);
    expect(flow, w).not.toBeNull();
    expect(flow![2]).toBe(flow![1]);
    expect(r.stdout).toMatch(/^ {4}wget exit 0\n {4}[0-9a-f]{64} {2}\/tmp\/index\.html$/m);
    // vmnat's lease list: the DHCP lease and, beside it, the IPv6 address the guest uses.
    expect(r.stdout).toMatch(/^ {4}10\.0\.2\.15\s+52:54:00:12:34:56\s.*\sfd00:10:0:2:5054:ff:fe12:3456$/m);
    // The forward on [::1] reached the guest's httpd; 127.0.0.1 on that port is not vmnat's.
    expect(r.stdout).toMatch(/^ {4}added web6: tcp \[::1\]:\d+ -> guest \[fd00:10:0:2:5054:ff:fe12:3456\]:8080$/m);
    expect(r.stdout).toMatch(/^host\$ curl -g http:\/\/\[::1\]:\d+\/\n {4}<!doctype html>/m);
    // The picture shows both of the guest's addresses and the IPv6 side of vmnat.
    expect(r.stdout).toMatch(/│ eth0 fd00:10:0:2:5054:ff:fe12:3456\/64\s+│/);
    const svg = readFileSync(path.join(r.out, 'ipv6-topology.svg'), 'utf8');
    for (const text of ['10.0.2.15', 'fd00:10:0:2:5054:ff:fe12:3456', 'fd00:10:0:2::/64', '[::1]']) expect(svg).toContain(text);
    const summary = JSON.parse(readFileSync(path.join(r.out, 'ipv6-summary.json'), 'utf8')) as { ok: boolean; checks: { ok: boolean }[] };
    expect(summary.ok).toBe(true);
    expect(summary.checks.every((c) => c.ok)).toBe(true);
    expectCleanedUp(r);
  }, LAB_MS);

  it('a claim that fails (the forward\'s port is taken) exits 1, names the claim, and still cleans up', async () => {
    // Someone already listens on 127.0.0.1:2222 in the lab's namespace (our child, killed by PID).
    const ns = makeNetns();
    const squatter = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', "require('net').createServer().listen(2222, '127.0.0.1', () => console.log('listening'))"], { stdio: ['ignore', 'pipe', 'inherit'] });
    cleanups.push(() => void squatter.kill('SIGKILL'));
    await new Promise<void>((resolve, reject) => {
      squatter.stdout.once('data', () => resolve());
      squatter.once('exit', (code) => reject(new Error(`listener exited (${code})`)));
    });
    const r = await runLab('nat', ns);
    expect(r.code, why(r)).toBe(1);
    expect(r.stdout).toMatch(/^ {3}✗ vmnat added the forward at run time \(no restart\)$/m);
    expect(r.stdout).toMatch(/^lab nat: FAILED after \d+ checks \(check failed: vmnat added the forward/m);
    const summary = JSON.parse(readFileSync(path.join(r.out, 'nat-summary.json'), 'utf8')) as { ok: boolean; checks: { ok: boolean }[] };
    expect(summary.ok).toBe(false);
    expect(summary.checks.at(-1)?.ok).toBe(false);
    expectCleanedUp(r);
  }, LAB_MS);
});
