/**
 * --deny and the default link-local deny, with the kernel as the guest. vmnat itself runs in a
 * second namespace the test creates ("the host"), with no route out and only its loopback, which
 * also holds 169.254.169.254 and 192.0.2.1, each serving TCP and UDP: so even vmnat without the deny (the
 * old code, or --allow-link-local) reaches only servers of this test, never a real metadata
 * service. Denied destinations answer ICMP admin-prohibited: the guest's connect fails at once
 * with EHOSTUNREACH, its UDP socket sees the same, and nat.denied counts them.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { createNetns, leaseWithUdhcpc, writeScript, type Netns } from '../helpers/netns.ts';
import { killAll, sleep, startVmnat, type VmnatProcess } from '../helpers/proc.ts';

let host: Netns;
let servers: ChildProcess | undefined;
let guest: Netns | undefined;
let vmnat: VmnatProcess | undefined;

const SERVERS = `
import socket, threading
def tcp():
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('0.0.0.0', 8080)); s.listen(16)
    while True:
        c, a = s.accept(); c.sendall(('hello from %s\\n' % c.getsockname()[0]).encode()); c.close()
def udp():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(('0.0.0.0', 8080))
    while True:
        m, a = u.recvfrom(2048); u.sendto(m, a)
threading.Thread(target=udp, daemon=True).start()
print('ready', flush=True)
tcp()
`;

const PROBE = `
import errno, socket, sys
dst, out = sys.argv[1], []
try:
    s = socket.create_connection((dst, 8080), timeout=5)
    out.append('tcp=' + s.recv(100).decode().split()[-1])
except OSError as e:
    out.append('tcp=' + errno.errorcode.get(e.errno or 0, type(e).__name__))
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(3); u.connect((dst, 8080))
try:
    u.send(b'x'); u.recv(100); out.append('udp=echo')
except OSError as e:
    out.append('udp=' + errno.errorcode.get(e.errno or 0, type(e).__name__))
print(' '.join(out))
`;

beforeAll(async () => {
  host = await createNetns();
  for (const cmd of [
    ['addr', 'add', '169.254.169.254/32', 'dev', 'lo'],
    ['addr', 'add', '192.0.2.1/32', 'dev', 'lo'],
  ]) {
    const r = await host.exec(['ip', ...cmd]);
    if (r.code !== 0) throw new Error(`ip ${cmd.join(' ')}: ${r.stderr}`);
  }
  const script = writeScript(host.dir, 'servers.py', SERVERS);
  servers = spawn('ip', ['netns', 'exec', host.name, 'python3', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    servers!.stdout!.once('data', () => resolve());
    servers!.once('exit', (code) => reject(new Error(`servers exited ${code}`)));
  });
});
afterEach(async () => {
  await vmnat?.stop();
  vmnat = undefined;
  await guest?.destroy();
  guest = undefined;
});
afterAll(async () => {
  servers?.kill('SIGKILL');
  await host?.destroy();
  killAll();
});

async function start(args: string[]): Promise<Netns> {
  const g = await createNetns();
  guest = g;
  vmnat = await startVmnat(['--tap', 'tap0', '--netns', g.path, ...args], { prefix: ['ip', 'netns', 'exec', host.name] });
  await leaseWithUdhcpc(g);
  return g;
}

async function probe(g: Netns, dst: string): Promise<string> {
  const script = writeScript(g.dir, 'probe.py', PROBE);
  const r = await g.exec(['python3', script, dst], { timeoutMs: 30_000 });
  expect(r.code, r.stderr).toBe(0);
  return r.stdout.trim();
}

type Stats = { nat: { denied: number } };

describe.sequential('denied destinations', () => {
  test('by default 169.254.0.0/16 (cloud metadata) is denied: TCP and UDP get admin-prohibited at once; other addresses work', async () => {
    const g = await start([]);
    const t0 = Date.now();
    expect(await probe(g, '169.254.169.254')).toBe('tcp=EHOSTUNREACH udp=EHOSTUNREACH');
    expect(Date.now() - t0).toBeLessThan(3000); // refused, not timed out
    expect(await probe(g, '192.0.2.1')).toBe('tcp=192.0.2.1 udp=echo');
    const ping = await g.exec(['busybox', 'ping', '-c', '1', '-W', '2', '169.254.169.254'], { timeoutMs: 10_000 });
    expect(ping.stdout).not.toMatch(/1 packets received/);
    await sleep(100);
    const stats = (await vmnat!.stats()) as unknown as Stats;
    expect(stats.nat.denied).toBeGreaterThanOrEqual(3);
  });

  test('--allow-link-local lifts the default; --deny CIDR denies another range', async () => {
    const g = await start(['--allow-link-local', '--deny', '192.0.2.0/24']);
    expect(await probe(g, '169.254.169.254')).toBe('tcp=169.254.169.254 udp=echo');
    expect(await probe(g, '192.0.2.1')).toBe('tcp=EHOSTUNREACH udp=EHOSTUNREACH');
    const stats = (await vmnat!.stats()) as unknown as Stats;
    expect(stats.nat.denied).toBeGreaterThanOrEqual(2);
  });
});
