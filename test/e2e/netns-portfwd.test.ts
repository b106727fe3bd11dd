/**
 * Port forwarding into the guest with the kernel as the guest: TCP and UDP services in the guest
 * namespace, reached from the host's loopback through forwards given on the command line and
 * added or removed through the control API (HTTP on a unix socket) and `vmnat ctl`.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import crypto from 'node:crypto';
import dgram from 'node:dgram';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { createNetns, leaseWithUdhcpc, type Netns } from '../helpers/netns.ts';
import { killAll, ROOT, run, startVmnat, VMNAT_BIN, type VmnatProcess } from '../helpers/proc.ts';
import { closedTcpPort, sha256 } from '../helpers/hostservers.ts';

const MB = 1 << 20;
let ns: Netns;
let vmnat: VmnatProcess;
let guestServers: ChildProcess;
let api: string;
let tcpPort: number;
let udpPort: number;

/** The bytes the guest's "down N" sends (same recipe as guestservers.py). */
function pattern(n: number): Buffer {
  const parts: Buffer[] = [];
  let len = 0;
  let block = crypto.createHash('sha256').update('guest').digest();
  while (len < n) {
    block = crypto.createHash('sha256').update(block).digest();
    const chunk = Buffer.concat(Array.from({ length: 64 }, () => block));
    parts.push(chunk);
    len += chunk.length;
  }
  return Buffer.concat(parts).subarray(0, n);
}

function apiCall(method: string, urlPath: string, body?: unknown): Promise<{ status: number; json: unknown; text: string }> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request({ socketPath: api, path: urlPath, method, headers: data ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } : {} }, (res) => {
      let text = '';
      res.on('data', (d: Buffer) => (text += d.toString()));
      res.on('end', () => {
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode ?? 0, json, text });
      });
    });
    req.on('error', reject);
    req.end(data);
  });
}

/** Sends `line` then `payload`, ends, and collects the whole reply. */
function exchange(port: number, line: string, payload?: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('end', () => resolve(Buffer.concat(chunks)));
    s.on('error', reject);
    s.write(line + '\n');
    if (payload) s.write(payload);
    s.end();
  });
}

function connectOutcome(port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.on('connect', () => {
      s.on('data', () => {});
      s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
      s.on('end', () => resolve('end'));
      s.write('echo\n');
      setTimeout(() => {
        s.destroy();
        resolve('open');
      }, 1500);
    });
    s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
  });
}

beforeAll(async () => {
  ns = await createNetns();
  api = path.join(ns.dir, 'api.sock');
  // Host port 0: vmnat binds free ports and names them in its ready line (no port chosen here
  // and bound later, which another test file running meanwhile could take).
  vmnat = await startVmnat(['--tap', 'tap0', '--netns', ns.path, '--api-socket', api, '--hostfwd', 'tcp::0-:8000', '--natpf', 'dns-like,udp,,0,,9000']);
  const forwards = vmnat.ready['forwards'] as unknown as { name: string; host_port: number }[];
  tcpPort = forwards.find((f) => f.name.startsWith('tcp-'))!.host_port;
  udpPort = forwards.find((f) => f.name === 'dns-like')!.host_port;
  await leaseWithUdhcpc(ns);
  guestServers = spawn('ip', ['netns', 'exec', ns.name, 'python3', path.join(ROOT, 'test/helpers/guestservers.py'), '8000', '9000'], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    guestServers.stdout!.once('data', () => resolve());
    guestServers.once('exit', (c) => reject(new Error(`guest servers exited ${c}`)));
  });
}, 60_000);

afterAll(async () => {
  guestServers?.kill('SIGKILL');
  await vmnat?.stop();
  await ns?.destroy();
  killAll();
});

describe.sequential('forwards into the netns guest', () => {
  test('50 MB from the guest through a --hostfwd TCP forward: the sha256 matches', async () => {
    const got = await exchange(tcpPort, `down ${50 * MB}`);
    expect(got.length).toBe(50 * MB);
    expect(sha256(got)).toBe(sha256(pattern(50 * MB)));
  });

  test('50 MB to the guest through the same forward: the guest hashes what arrived', async () => {
    const data = crypto.randomBytes(50 * MB);
    const reply = await exchange(tcpPort, `up ${data.length}`, data);
    expect(reply.toString().trim()).toBe(`${data.length} ${sha256(data)}`);
  });

  test('100 host clients in parallel all get their own bytes back', async () => {
    const results = await Promise.all(
      Array.from({ length: 100 }, async (_, i) => {
        const msg = Buffer.from(`client ${i} ${'x'.repeat(i * 100)}`);
        return (await exchange(tcpPort, 'echo', msg)).equals(msg);
      }),
    );
    expect(results.filter(Boolean)).toHaveLength(100);
  });

  test('a --natpf UDP forward echoes datagrams from the guest', async () => {
    const s = dgram.createSocket('udp4');
    const replies: string[] = [];
    s.on('message', (m) => replies.push(m.toString()));
    await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
    for (let i = 0; i < 20; i++) s.send(`datagram ${i}`, udpPort, '127.0.0.1');
    for (let i = 0; i < 50 && replies.length < 20; i++) await new Promise((r) => setTimeout(r, 100));
    s.close();
    expect(replies.sort()).toEqual(Array.from({ length: 20 }, (_, i) => `datagram ${i}`).sort());
  });

  test('the API adds a forward (201), lists it, and DELETE closes its listener while an open connection finishes', async () => {
    const add = await apiCall('POST', '/forwards', { name: 'web', proto: 'tcp', host_port: 0, guest_port: 8000 });
    expect(add.status, add.text).toBe(201);
    const port = (add.json as { host_port: number }).host_port;
    expect(port).toBeGreaterThan(0);
    expect(add.json).toMatchObject({ name: 'web', proto: 'tcp', host_port: port, guest_port: 8000 });
    const list = await apiCall('GET', '/forwards');
    expect(JSON.stringify(list.json)).toContain('"web"');
    // Open a connection through the new forward and keep it open across the DELETE.
    const open = net.connect(port, '127.0.0.1');
    await new Promise<void>((r) => open.once('connect', () => r()));
    open.write('echo\n');
    const echoed: Buffer[] = [];
    let gotFirst: () => void = () => {};
    const first = new Promise<void>((r) => (gotFirst = r));
    open.on('data', (d: Buffer) => {
      echoed.push(d);
      gotFirst();
    });
    open.write('before ');
    // Wait for the echo: only then has vmnat accepted the connection (a connection still in the
    // listener's backlog when it closes is reset by the kernel, as for any closed listener).
    await first;
    const del = await apiCall('DELETE', '/forwards/web');
    expect(del.status).toBe(204);
    expect(await connectOutcome(port)).toBe('ECONNREFUSED');
    open.write('after');
    open.end();
    await new Promise<void>((r) => open.once('end', () => r()));
    expect(Buffer.concat(echoed).toString()).toBe('before after');
    expect((await apiCall('DELETE', '/forwards/web')).status).toBe(404);
  });

  test('API errors: a taken port is 409, a bad rule is 400, malformed JSON is 400', async () => {
    const taken = await apiCall('POST', '/forwards', { proto: 'tcp', host_port: tcpPort, guest_port: 80 });
    expect(taken.status).toBe(409);
    const bad = await apiCall('POST', '/forwards', { proto: 'sctp', host_port: 1234, guest_port: 80 });
    expect(bad.status).toBe(400);
    expect(bad.text).toMatch(/proto/);
    const res = await new Promise<number>((resolve) => {
      const req = http.request({ socketPath: api, path: '/forwards', method: 'POST', headers: { 'content-type': 'application/json' } }, (r) => {
        r.resume();
        resolve(r.statusCode ?? 0);
      });
      req.end('{not json');
    });
    expect(res).toBe(400);
    // Traffic is undisturbed.
    expect((await exchange(tcpPort, 'echo', Buffer.from('still here'))).toString()).toBe('still here');
  });

  test('a guest port nobody listens on: the host client is reset', async () => {
    const add = await apiCall('POST', '/forwards', { name: 'nothing', proto: 'tcp', host_port: 0, guest_port: 8999 });
    expect(add.status).toBe(201);
    const port = (add.json as { host_port: number }).host_port;
    expect(await connectOutcome(port)).toMatch(/ECONNRESET|end/);
    await apiCall('DELETE', '/forwards/nothing');
  });

  test('vmnat ctl forward add/ls/rm, and GET /leases, /flows, /stats, /health', async () => {
    const ctl = (args: string[]) => run([process.execPath, VMNAT_BIN, 'ctl', '--api-socket', api, ...args], { timeoutMs: 20_000 });
    const add = await ctl(['--json', 'forward', 'add', 'tcp::0-:8000']);
    expect(add.code, add.stderr).toBe(0);
    const port = (JSON.parse(add.stdout) as { host_port: number }).host_port;
    const ls = await ctl(['forward', 'ls']);
    expect(ls.stdout).toContain(`tcp-127.0.0.1-${port}`);
    const lsJson = JSON.parse((await ctl(['--json', 'forward', 'ls'])).stdout) as unknown[];
    expect(lsJson.length).toBeGreaterThanOrEqual(3);
    expect((await exchange(port, 'echo', Buffer.from('via ctl'))).toString()).toBe('via ctl');
    expect((await ctl(['forward', 'rm', `tcp-127.0.0.1-${port}`])).code).toBe(0);
    const leases = await apiCall('GET', '/leases');
    expect(JSON.stringify(leases.json)).toContain('10.0.2.15');
    expect((await apiCall('GET', '/health')).status).toBe(200);
    const stats = (await apiCall('GET', '/stats')).json as { tcpNat: { forwardsOpened: number; forwardsRewrapped: number; nativeForwards: number } };
    // Every accepted socket was handed to the addon (read and written in C, as dialed flows'),
    // none fell back to a net.Socket.
    expect(stats.tcpNat.forwardsOpened).toBeGreaterThan(100);
    expect(stats.tcpNat.nativeForwards).toBe(stats.tcpNat.forwardsOpened);
    expect(stats.tcpNat.forwardsRewrapped).toBe(0);
    // ...and each reported its close to its rule: no rule counts a live connection once all ended.
    let rules: { name: string; tcp_accepted: number; tcp_active: number }[] = [];
    for (const until = Date.now() + 10_000; Date.now() < until; await new Promise((r) => setTimeout(r, 100))) {
      rules = (await apiCall('GET', '/forwards')).json as typeof rules;
      if (rules.every((r) => r.tcp_active === 0)) break;
    }
    expect(rules.filter((r) => r.tcp_active !== 0)).toEqual([]);
    expect(rules.some((r) => r.tcp_accepted > 0)).toBe(true);
    expect((await apiCall('GET', '/flows')).status).toBe(200);
  });
});

describe('start-up errors and syntaxes', () => {
  test('a taken host port at start: one line naming the rule, exit 2', async () => {
    const r = await run([process.execPath, VMNAT_BIN, '--socket', path.join(ns.dir, 'x.sock'), '--hostfwd', `tcp::${tcpPort}-:80`], { timeoutMs: 20_000 });
    expect(r.code).toBe(2);
    const lines = r.stderr.trim().split('\n').filter((l) => !l.includes('warn:'));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(new RegExp(`^vmnat: forward: .*127\\.0\\.0\\.1:${tcpPort}.*in use`));
  });

  test('the qemu and VBoxManage syntaxes of one rule give the same rule', async () => {
    const lists: string[] = [];
    const ports: number[] = [];
    // Port 0 in both (a port picked here and bound twice later could be taken meanwhile); the
    // generated names and bound ports are then compared with the port written out.
    for (const flag of [['--hostfwd', 'tcp::0-:22'], ['--natpf', ',tcp,,0,,22']]) {
      const sock = path.join(ns.dir, `syn-${lists.length}.api`);
      const v = await startVmnat(['--socket', path.join(ns.dir, `syn-${lists.length}.sock`), '--api-socket', sock, ...flag]);
      const r = await run([process.execPath, VMNAT_BIN, 'ctl', '--api-socket', sock, '--json', 'forward', 'ls'], { timeoutMs: 20_000 });
      const port = (JSON.parse(r.stdout) as { host_port: number }[])[0]!.host_port;
      ports.push(port);
      lists.push(r.stdout.split(String(port)).join('PORT'));
      expect(JSON.parse(r.stdout)).toEqual([expect.objectContaining({ name: `tcp-127.0.0.1-${port}`, proto: 'tcp', host_port: port, guest_port: 22 })]);
      await v.stop();
    }
    expect(lists[0]).toBe(lists[1]);
  });
});
