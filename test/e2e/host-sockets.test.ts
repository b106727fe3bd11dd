/**
 * The host side of a guest's TCP flow, owned by the addon (native/src/host_tcp.cc), against a
 * real guest (a netns kernel behind a TAP) and real host servers on loopback:
 *  - a host peer that stops reading: the guest's upload waits (the kernel refused bytes, vmnat
 *    held them for POLLOUT) and then arrives whole (sha256);
 *  - a host peer that resets: the guest's read fails with "Connection reset by peer";
 *  - a guest that aborts (SO_LINGER 0): the host peer's socket sees ECONNRESET;
 *  - the flow listing names the host socket's own ends, as `ss` shows them for vmnat's process;
 *  - a dial whose connect completed inside connect() (loopback) answers the guest at once, and
 *    one that did not (the host's accept queue was full) still completes later, by the event.
 */
import { afterAll, beforeAll, expect, test } from 'vitest';
import crypto from 'node:crypto';
import net from 'node:net';
import path from 'node:path';
import { execFileSync, spawn } from 'node:child_process';
import { createNetns, leaseWithUdhcpc, writeScript, type Netns } from '../helpers/netns.ts';
import { killAll, sleep, startVmnat, type VmnatProcess } from '../helpers/proc.ts';

let ns: Netns;
let vmnat: VmnatProcess;
let api: string;
const servers: net.Server[] = [];

beforeAll(async () => {
  ns = await createNetns();
  api = path.join(ns.dir, 'api.sock');
  vmnat = await startVmnat(['--tap', 'tap0', '--netns', ns.path, '--dns-server', '127.0.0.1:9', '--api-socket', api]);
  await ns.exec(['ip', 'link', 'set', 'tap0', 'up']);
  await leaseWithUdhcpc(ns);
});
afterAll(async () => {
  await vmnat?.stop();
  await ns?.destroy();
  for (const s of servers) s.close();
  killAll();
});

async function listen(onConn: (s: net.Socket) => void): Promise<number> {
  const server = net.createServer(onConn);
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return (server.address() as net.AddressInfo).port;
}

type TcpNatStats = { tcpNat: Record<string, number> };

test('a host peer that stops reading holds the guest\'s upload back; every byte arrives once it reads again (sha256)', async () => {
  let resolveHash!: (h: string) => void;
  const hashed = new Promise<string>((r) => (resolveHash = r));
  const port = await listen((s) => {
    const h = crypto.createHash('sha256');
    s.pause(); // nothing read for 1.5 s: the host socket's buffers fill and the kernel says EAGAIN
    setTimeout(() => s.resume(), 1500);
    s.on('data', (d) => h.update(d));
    s.on('end', () => {
      resolveHash(h.digest('hex'));
      s.end();
    });
  });
  const before = ((await vmnat.stats()) as unknown as TcpNatStats).tcpNat.hostWritesBlocked!;
  const script = writeScript(ns.dir, 'upload.py', `
import hashlib, socket, sys
data = bytes((i * 7 + 3) & 0xff for i in range(1 << 16)) * 256   # 16 MiB
s = socket.create_connection(('10.0.2.2', int(sys.argv[1])), timeout=30)
s.sendall(data)
s.shutdown(socket.SHUT_WR)
s.recv(1)
print(hashlib.sha256(data).hexdigest())
`);
  const r = await ns.exec(['python3', script, String(port)], { timeoutMs: 60_000 });
  expect(r.stdout.trim(), r.stderr).toBe(await hashed);
  const after = ((await vmnat.stats()) as unknown as TcpNatStats).tcpNat.hostWritesBlocked!;
  expect(after).toBeGreaterThan(before);
});

test('a host peer that resets: the guest\'s read fails with "Connection reset by peer"', async () => {
  const port = await listen((s) => {
    s.write('partial ');
    setTimeout(() => s.resetAndDestroy(), 200);
  });
  const before = ((await vmnat.stats()) as unknown as TcpNatStats).tcpNat.hostResets!;
  const r = await ns.exec(['python3', '-c', `
import socket
s = socket.create_connection(('10.0.2.2', ${port}), timeout=10)
got = b''
try:
    while True:
        b = s.recv(100)
        if not b: print('eof', got.decode()); break
        got += b
except OSError as e:
    print(got.decode().strip(), '|', e.strerror)
`], { timeoutMs: 20_000 });
  expect(r.stdout.trim(), r.stderr).toBe('partial | Connection reset by peer');
  expect(((await vmnat.stats()) as unknown as TcpNatStats).tcpNat.hostResets!).toBe(before + 1);
});

test('a guest that aborts its connection: the host peer sees ECONNRESET', async () => {
  let resolveCode!: (c: string) => void;
  const code = new Promise<string>((r) => (resolveCode = r));
  const port = await listen((s) => {
    s.on('error', (e: NodeJS.ErrnoException) => resolveCode(e.code ?? 'error'));
    s.on('end', () => resolveCode('end'));
    s.resume();
  });
  await ns.exec(['python3', '-c', `
import socket, struct, time
s = socket.create_connection(('10.0.2.2', ${port}), timeout=10)
s.sendall(b'hello')
time.sleep(0.3)
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
s.close()
`], { timeoutMs: 20_000 });
  expect(await code).toBe('ECONNRESET');
});

test('the flow listing names the host socket\'s own ends, the ones `ss` shows for vmnat', async () => {
  const port = await listen((s) => s.resume());
  const guest = ns.exec(['python3', '-c', `
import socket, time
s = socket.create_connection(('10.0.2.2', ${port}), timeout=10)
time.sleep(3)
`], { timeoutMs: 20_000 });
  let flow: { host?: string; host_local?: string } | undefined;
  for (let i = 0; i < 40 && flow?.host_local === undefined; i++) {
    await sleep(100);
    const flows = JSON.parse(execFileSync('curl', ['-sS', '--unix-socket', api, 'http://vmnat/flows']).toString()) as { remote: string; host?: string; host_local?: string }[];
    flow = flows.find((f) => f.remote === `10.0.2.2:${port}`);
  }
  expect(flow?.host, JSON.stringify(flow)).toBe(`127.0.0.1:${port}`);
  expect(flow?.host_local).toMatch(/^127\.0\.0\.1:\d+$/);
  const ss = execFileSync('ss', ['-Htnp', 'state', 'established', `( dport = :${port} )`]).toString();
  expect(ss).toContain(flow!.host_local!);
  expect(ss).toContain(`pid=${vmnat.child.pid}`);
  await guest;
});

test('a loopback dial is connected inside connect() (SYN-ACK at once); one the host queues for later completes by its event', async () => {
  // A host listener with no room in its accept queue (backlog 0: one connection waits there)
  // that accepts nothing for 1.5 s: the first dial completes inside connect(), the second's SYN
  // is dropped by the host's kernel until the queue has room, so its connect completes later.
  const server = spawn('python3', ['-c', `
import socket, time
s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(0)
print(s.getsockname()[1], flush=True)
time.sleep(1.5)
for _ in range(2):
    c, _ = s.accept(); c.sendall(c.recv(100)); c.close()
`], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const port = await new Promise<number>((resolve, reject) => {
      server.stdout.once('data', (d: Buffer) => resolve(Number(d.toString().trim())));
      server.once('exit', () => reject(new Error('the listener exited')));
    });
    const before = ((await vmnat.stats()) as unknown as TcpNatStats).tcpNat;
    const r = await ns.exec(['python3', '-c', `
import socket
a = socket.create_connection(('10.0.2.2', ${port}), timeout=15); a.sendall(b'one')
b = socket.create_connection(('10.0.2.2', ${port}), timeout=15); b.sendall(b'two')
print(a.recv(10).decode(), b.recv(10).decode())
`], { timeoutMs: 30_000 });
    expect(r.stdout.trim(), r.stderr).toBe('one two');
    const after = ((await vmnat.stats()) as unknown as TcpNatStats).tcpNat;
    expect(after.nativeDials! - before.nativeDials!).toBe(2);
    expect(after.dialsConnectedAtOnce! - before.dialsConnectedAtOnce!).toBe(1);
  } finally {
    server.kill('SIGKILL');
  }
});
