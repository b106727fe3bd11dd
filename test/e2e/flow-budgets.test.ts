/**
 * Flow budgets (issue 15, findings 7 and 9) with a real guest (a netns kernel behind a TAP):
 *  - the guests' own flows share one budget below the process's descriptor limit: under
 *    `prlimit --nofile=400` the guest's 150th connection is refused at once (RST) instead of vmnat
 *    running out of descriptors, nothing is thrown, and connections work again once others close;
 *  - port forwards have a budget of their own: a host client opening 60 connections through a
 *    forward gets at most --max-forward-flows of them, while the guest still opens its own.
 */
import { afterAll, expect, test } from 'vitest';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { createNetns, leaseWithUdhcpc, writeScript, type Netns } from '../helpers/netns.ts';
import { killAll, startVmnat, type VmnatProcess } from '../helpers/proc.ts';

const cleanups: (() => Promise<unknown> | void)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
  killAll();
});

/** A host server on loopback that accepts and holds every connection. */
async function holdServer(): Promise<{ port: number; sockets: Set<net.Socket> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('error', () => undefined);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(
    () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  );
  return { port: (server.address() as net.AddressInfo).port, sockets };
}

/** Opens `n` connections to HOST:PORT from inside the guest and holds them; prints "ok fail", then one more after closing. */
const CONNECTOR = `
import socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
socks, ok, fail, slow = [], 0, 0, 0
for i in range(n):
    s = socket.socket()
    s.settimeout(5)
    t = time.time()
    try:
        s.connect((host, port)); socks.append(s); ok += 1
    except OSError:
        fail += 1
        if time.time() - t > 1: slow += 1
print(ok, fail, slow, flush=True)
time.sleep(float(sys.argv[4]) if len(sys.argv) > 4 else 0.5)
for s in socks: s.close()
time.sleep(1)
s = socket.socket(); s.settimeout(5)
try:
    s.connect((host, port)); print('after', 'ok')
except OSError as e:
    print('after', e)
`;

async function guest(extraArgs: string[], prefix?: string[]): Promise<{ ns: Netns; vmnat: VmnatProcess; script: string }> {
  const ns = await createNetns();
  cleanups.push(() => ns.destroy());
  const vmnat = await startVmnat(['--tap', 'tap0', '--netns', ns.path, '--dns-server', '127.0.0.1:9', ...extraArgs], prefix ? { prefix } : {});
  cleanups.push(() => vmnat.stop().catch(() => undefined));
  await ns.exec(['ip', 'link', 'set', 'tap0', 'up']);
  await leaseWithUdhcpc(ns);
  return { ns, vmnat, script: writeScript(ns.dir, 'connect.py', CONNECTOR) };
}

function openFds(pid: number): number {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}

test('400 descriptors: the guests\' flows stop below the limit, the rest are refused at once, and work again after', async () => {
  const server = await holdServer();
  // 400 − 256 reserved = 144 for flows; 3/4 of them (108) for the guests' own.
  const { ns, vmnat, script } = await guest([], ['prlimit', '--nofile=400:400', '--']);
  const pid = vmnat.child.pid!;
  const r = await ns.exec(['python3', script, '10.0.2.2', String(server.port), '150', '1.5'], { timeoutMs: 60_000 });
  const [ok, fail, slow] = r.stdout.split('\n')[0]!.split(' ').map(Number) as [number, number, number];
  expect(ok, r.stdout + r.stderr).toBe(108);
  expect(fail).toBe(42);
  expect(slow).toBe(0); // refused with a RST, not left to time out
  expect(r.stdout).toContain('after ok');
  expect(vmnat.child.exitCode).toBeNull();
  expect(openFds(pid)).toBeLessThan(400);
  const stats = (await vmnat.stats()) as { tcpNat: { flowLimit: number; fdExhausted: number }; engine: { internalErrors: number } };
  expect(stats.tcpNat.flowLimit).toBe(42);
  expect(stats.tcpNat.fdExhausted).toBe(0);
  expect(stats.engine.internalErrors).toBe(0);
});

test('a flood through a port forward gets --max-forward-flows connections; the guest\'s own connections are untouched', async () => {
  const server = await holdServer();
  const { ns, vmnat, script } = await guest(['--max-forward-flows', '20', '--hostfwd', 'tcp::0-:8000']);
  // The guest's service behind the forward: accepts and holds.
  const hold = writeScript(ns.dir, 'hold.py', `
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', 8000)); s.listen(512)
conns = []
s.settimeout(30)
try:
    while True: conns.append(s.accept()[0])
except OSError: pass
`);
  const holder = ns.exec(['python3', hold], { timeoutMs: 60_000 });
  void holder;
  // Until the guest's listener is up (a fixed wait was too short under a full parallel run).
  for (let i = 0; ; i++) {
    const ss = await ns.exec(['ss', '-Hltn', 'sport = :8000']);
    if (ss.stdout.includes(':8000')) break;
    if (i > 100) throw new Error('the guest\'s listener on :8000 never came up');
    await new Promise((r) => setTimeout(r, 100));
  }
  const port = (vmnat.ready['forwards'] as unknown as { host_port: number }[])[0]!.host_port;
  const clients: net.Socket[] = [];
  const outcomes = await Promise.all(
    Array.from({ length: 60 }, () => new Promise<'held' | 'reset'>((resolve) => {
      const c = net.connect(port, '127.0.0.1');
      clients.push(c);
      c.on('error', () => resolve('reset'));
      c.on('close', () => resolve('reset'));
      setTimeout(() => resolve(c.destroyed ? 'reset' : 'held'), 3000);
    })),
  );
  cleanups.push(() => {
    for (const c of clients) c.destroy();
  });
  const held = outcomes.filter((o) => o === 'held').length;
  expect(held).toBe(20);
  // Meanwhile the guest opens 30 connections of its own to the host.
  const r = await ns.exec(['python3', script, '10.0.2.2', String(server.port), '30'], { timeoutMs: 60_000 });
  expect(r.stdout.split('\n')[0]).toBe('30 0 0');
  const stats = (await vmnat.stats()) as { tcpNat: { forwardLimit: number }; flows: { forwarded: number } };
  expect(stats.tcpNat.forwardLimit).toBe(40);
  expect(stats.flows.forwarded).toBe(20);
});

test('connections that close faster than TIME-WAIT lets them go do not fill a small table: the oldest in TIME-WAIT makes room', async () => {
  // The host closes first (accept, then close), so vmnat's side of each flow is the one that
  // ends in TIME-WAIT (1 s). 300 connections in well under a second through a 40-flow table: each
  // must still connect and see the host's FIN, none refused.
  const server = net.createServer((s) => {
    s.on('error', () => undefined);
    s.end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
  const port = (server.address() as net.AddressInfo).port;
  const { ns, vmnat } = await guest(['--max-flows', '40']);
  const script = writeScript(ns.dir, 'churn.py', `
import socket, sys
ok = refused = 0
for i in range(300):
    s = socket.socket(); s.settimeout(5)
    try:
        s.connect(('10.0.2.2', ${port}))
        if s.recv(1) == b'': ok += 1
    except OSError as e:
        refused += 1
    s.close()
print(ok, refused)
`);
  const r = await ns.exec(['python3', script], { timeoutMs: 60_000 });
  expect(r.stdout.trim(), r.stderr).toBe('300 0');
  const stats = (await vmnat.stats()) as { tcpNat: { flowLimit: number; timeWaitEvicted: number } };
  expect(stats.tcpNat.flowLimit).toBe(0);
  expect(stats.tcpNat.timeWaitEvicted).toBeGreaterThan(100);
});
