/**
 * Forwards beyond TCP/UDP ports (issue 14), with the kernel as the guest (a netns behind --tap):
 *  - a unix socket on the host forwarded to the guest's TCP port (--hostfwd unix:PATH-:PORT, and
 *    `vmnat ctl forward add` at run time): curl --unix-socket fetches from busybox httpd in the
 *    guest, sha256 checked; the socket is 0600; a stale file is replaced, a live one refused;
 *  - guest-to-host forwards (--guestfwd): curl in the guest reaches a virtual address that leads
 *    to an HTTP server on a host unix socket and to one on host loopback TCP, both ways (download
 *    and upload, sha256 checked); the virtual address answers ARP with its own MAC and ping; a
 *    missing socket is "connection refused" at once;
 *  - gvisor-tap-vsock's forwarder API on vmnat's API socket (curl --unix-socket, gvproxy's shapes):
 *    expose a unix socket and a TCP port into the guest, traffic through both, unexpose.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { createNetns, leaseWithUdhcpc, type Netns } from '../helpers/netns.ts';
import { killAll, run, startVmnat, VMNAT_BIN, type VmnatProcess } from '../helpers/proc.ts';
import { blob, sha256 } from '../helpers/hostservers.ts';

const MB = 1 << 20;
let ns: Netns;
let vmnat: VmnatProcess;
let httpd: ChildProcess;
let api: string;
let dockerSock: string;
let hostUnix: string;
let hostTcpPort: number;
let guestIp: string;
const guestFile = blob(20 * MB, 7);
const hostFile = blob(12 * MB, 8);
const servers: http.Server[] = [];
const uploads: string[] = [];

/** GET → `hostFile`; POST → "<bytes> <sha256>" of the body (and noted in `uploads`). */
function hostHttp(): http.Server {
  const server = http.createServer((req, res) => {
    if (req.method === 'GET') {
      res.writeHead(200, { 'content-length': hostFile.length });
      res.end(hostFile);
      return;
    }
    const h = crypto.createHash('sha256');
    let n = 0;
    req.on('data', (c: Buffer) => {
      n += c.length;
      h.update(c);
    });
    req.on('end', () => {
      const line = `${n} ${h.digest('hex')}`;
      uploads.push(line);
      res.end(line + '\n');
    });
  });
  servers.push(server);
  return server;
}

/** curl in the guest namespace; stdout as bytes. */
async function guestCurl(args: string[]): Promise<{ code: number | null; out: Buffer; stderr: string }> {
  const out = path.join(ns.dir, `curl-${crypto.randomUUID()}`);
  const r = await ns.exec(['curl', '--noproxy', '*', '-sS', '--max-time', '60', '-o', out, ...args], { timeoutMs: 90_000 });
  const bytes = fs.existsSync(out) ? fs.readFileSync(out) : Buffer.alloc(0);
  fs.rmSync(out, { force: true });
  return { code: r.code, out: bytes, stderr: r.stderr };
}

/** curl on the host through a unix socket. */
async function hostCurl(sock: string, urlPath: string): Promise<{ code: number | null; out: Buffer; stderr: string }> {
  const out = path.join(ns.dir, `hcurl-${crypto.randomUUID()}`);
  const r = await run(['curl', '--noproxy', '*', '-sS', '--max-time', '60', '--unix-socket', sock, '-o', out, `http://guest${urlPath}`], { timeoutMs: 90_000 });
  const bytes = fs.existsSync(out) ? fs.readFileSync(out) : Buffer.alloc(0);
  fs.rmSync(out, { force: true });
  return { code: r.code, out: bytes, stderr: r.stderr };
}

/** A socket file left behind by a process that died: bound, never unlinked, nobody accepting. */
async function staleSocket(p: string): Promise<void> {
  const r = await run(['python3', '-c', 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])', p]);
  expect(r.code, r.stderr).toBe(0);
  expect(fs.lstatSync(p).isSocket()).toBe(true);
}

beforeAll(async () => {
  ns = await createNetns();
  fs.chmodSync(ns.dir, 0o700);
  api = path.join(ns.dir, 'api.sock');
  dockerSock = path.join(ns.dir, 'docker-fwd.sock');
  hostUnix = path.join(ns.dir, 'host-svc.sock');
  // The host's services exist before vmnat starts (port 0: the kernel picks, then vmnat is told).
  await new Promise<void>((r) => hostHttp().listen(hostUnix, r));
  const tcp = hostHttp();
  await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', r));
  hostTcpPort = (tcp.address() as net.AddressInfo).port;
  await staleSocket(dockerSock);
  vmnat = await startVmnat([
    '--tap', 'tap0', '--netns', ns.path, '--api-socket', api, '--dns-server', '127.0.0.1:9',
    '--hostfwd', `unix:${dockerSock}-:8080`,
    '--guestfwd', `tcp:10.0.2.100:1234-unix:${hostUnix}`,
    '--guestfwd', `tcp:10.0.2.100:1235-tcp:127.0.0.1:${hostTcpPort}`,
    '--guestfwd', `tcp:10.0.2.100:1236-unix:${path.join(ns.dir, 'nobody.sock')}`,
  ]);
  await ns.exec(['ip', 'link', 'set', 'tap0', 'up']);
  guestIp = (await leaseWithUdhcpc(ns))['ip']!;
  const www = path.join(ns.dir, 'www');
  fs.mkdirSync(www);
  fs.writeFileSync(path.join(www, 'blob'), guestFile);
  httpd = spawn('ip', ['netns', 'exec', ns.name, 'busybox', 'httpd', '-f', '-p', '8080', '-h', www], { stdio: 'ignore' });
  // Ready once the guest's own loopback answers (no sleep).
  for (let i = 0; i < 100; i++) {
    const r = await ns.exec(['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', 'http://127.0.0.1:8080/blob']);
    if (r.stdout === '200') break;
    await new Promise((res) => setTimeout(res, 50));
  }
}, 60_000);

afterAll(async () => {
  httpd?.kill('SIGKILL');
  await vmnat?.stop();
  for (const s of servers) s.close();
  await ns?.destroy();
  killAll();
});

describe.sequential('a unix socket on the host forwarded to the guest', () => {
  test('the stale socket file was replaced; the new one is 0600; curl --unix-socket gets 20 MB from the guest intact', async () => {
    const st = fs.lstatSync(dockerSock);
    expect(st.isSocket()).toBe(true);
    expect(st.mode & 0o777).toBe(0o600);
    expect(vmnat.ready['forwards']).toEqual([expect.objectContaining({ name: `unix-${dockerSock}`, proto: 'unix', host_addr: dockerSock, guest_port: 8080 })]);
    const r = await hostCurl(dockerSock, '/blob');
    expect(r.code, r.stderr).toBe(0);
    expect(r.out.length).toBe(guestFile.length);
    expect(sha256(r.out)).toBe(sha256(guestFile));
  });

  test('ten clients at once each get the whole file', async () => {
    const results = await Promise.all(Array.from({ length: 10 }, () => hostCurl(dockerSock, '/blob')));
    expect(results.map((r) => sha256(r.out))).toEqual(Array.from({ length: 10 }, () => sha256(guestFile)));
  });

  test('vmnat ctl adds one at run time, lists it, and removes it (the file goes with it)', async () => {
    const sock = path.join(ns.dir, 'ctl.sock');
    const ctl = (...a: string[]) => run([process.execPath, VMNAT_BIN, 'ctl', '--api-socket', api, ...a]);
    const add = await ctl('forward', 'add', `unix:${sock}-:8080`);
    expect(add.code, add.stderr).toBe(0);
    expect(add.stdout.trim()).toBe(`added unix-${sock}: unix:${sock} -> guest tcp (lease):8080`);
    const ls = await ctl('forward', 'ls');
    expect(ls.stdout).toMatch(new RegExp(`unix-${sock.replace(/[.]/g, '\\.')}\\s+unix\\s+unix:${sock.replace(/[.]/g, '\\.')}\\s+\\(lease\\):8080`));
    const r = await hostCurl(sock, '/blob');
    expect(sha256(r.out)).toBe(sha256(guestFile));
    const rm = await ctl('forward', 'rm', `unix-${sock}`);
    expect(rm.code, rm.stderr).toBe(0);
    expect(fs.existsSync(sock)).toBe(false);
    const again = await hostCurl(sock, '/blob');
    expect(again.code).toBe(7); // curl: couldn't connect
  });

  test('the API refuses a path another process serves (409, the message names it); that socket stays theirs', async () => {
    const theirs = path.join(ns.dir, 'theirs.sock');
    const other = net.createServer((c) => {
      c.on('error', () => undefined);
      c.end('theirs\n');
    });
    await new Promise<void>((r) => other.listen(theirs, r));
    try {
      const r = await run(['curl', '-sS', '--unix-socket', api, '-X', 'POST', '-d', JSON.stringify({ proto: 'unix', host_addr: theirs, guest_port: 8080 }), '-w', '\n%{http_code}', 'http://vmnat/forwards']);
      const out = r.stdout.trim();
      const body = out.slice(0, out.lastIndexOf('\n'));
      const status = out.slice(out.lastIndexOf('\n') + 1);
      expect(status).toBe('409');
      expect(JSON.parse(body)).toEqual({ error: `${theirs} is in use by a running process (give another path, or stop it) (forward unix-${theirs})`, code: 'EADDRINUSE' });
      const reply = await new Promise<string>((resolve, reject) => {
        let got = '';
        net.connect(theirs).on('data', (d: Buffer) => (got += d.toString())).on('end', () => resolve(got)).on('error', reject);
      });
      expect(reply).toBe('theirs\n');
    } finally {
      other.close();
    }
  });

  test('on the command line, a live socket is a one-line error and exit 2', async () => {
    const theirs = path.join(ns.dir, 'live.sock');
    const other = net.createServer((c) => c.on('error', () => undefined).end());
    await new Promise<void>((r) => other.listen(theirs, r));
    try {
      const n2 = await createNetns();
      try {
        const r = await run([process.execPath, VMNAT_BIN, '--tap', 'tap0', '--netns', n2.path, '--hostfwd', `unix:${theirs}-:22`]);
        expect(r.code).toBe(2);
        expect(r.stderr.trim().split('\n').at(-1)).toBe(`vmnat: forward: ${theirs} is in use by a running process (give another path, or stop it) (forward unix-${theirs})`);
      } finally {
        await n2.destroy();
      }
    } finally {
      other.close();
    }
  });
});

describe.sequential('guest-to-host forwards', () => {
  test('the virtual address answers ARP with its own MAC (52:55:0a:00:02:64) and ping', async () => {
    const ping = await ns.exec(['busybox', 'ping', '-c', '1', '-W', '2', '10.0.2.100']);
    expect(ping.code, ping.stdout + ping.stderr).toBe(0);
    const neigh = await ns.exec(['ip', 'neigh', 'show', '10.0.2.100']);
    expect(neigh.stdout).toMatch(/lladdr 52:55:0a:00:02:64/);
  });

  test('to a host unix socket: 12 MB down and 8 MB up, sha256 both ways', async () => {
    const down = await guestCurl(['http://10.0.2.100:1234/file']);
    expect(down.code, down.stderr).toBe(0);
    expect(sha256(down.out)).toBe(sha256(hostFile));
    const up = blob(8 * MB, 9);
    const upFile = path.join(ns.dir, 'up.bin');
    fs.writeFileSync(upFile, up);
    const r = await guestCurl(['--data-binary', `@${upFile}`, 'http://10.0.2.100:1234/up']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.out.toString().trim()).toBe(`${up.length} ${sha256(up)}`);
  });

  test('to a host TCP address on loopback: the same both ways', async () => {
    const down = await guestCurl(['http://10.0.2.100:1235/file']);
    expect(down.code, down.stderr).toBe(0);
    expect(sha256(down.out)).toBe(sha256(hostFile));
    const up = blob(4 * MB, 10);
    const upFile = path.join(ns.dir, 'up2.bin');
    fs.writeFileSync(upFile, up);
    const r = await guestCurl(['--data-binary', `@${upFile}`, 'http://10.0.2.100:1235/up']);
    expect(r.out.toString().trim()).toBe(`${up.length} ${sha256(up)}`);
  });

  test('a missing host socket and a port with no rule are refused at once (RST), not timed out', async () => {
    const t0 = Date.now();
    const missing = await guestCurl(['http://10.0.2.100:1236/']);
    const noRule = await guestCurl(['http://10.0.2.100:80/']);
    // curl 7.88 words a refusal "Couldn't connect to server"; a timeout would be exit 28.
    expect([missing.code, noRule.code]).toEqual([7, 7]);
    expect(missing.stderr).toMatch(/Failed to connect to 10\.0\.2\.100 port 1236/);
    expect(Date.now() - t0).toBeLessThan(5000);
  });

  test('counters, and /config lists the guest forwards', async () => {
    const stats = (await vmnat.stats()) as { guestfwd: { connections: number; refused: number }; engine: { internalErrors: number } };
    expect(stats.guestfwd.connections).toBeGreaterThanOrEqual(5);
    expect(stats.guestfwd.refused).toBe(1);
    expect(stats.engine.internalErrors).toBe(0);
    const cfg = await run(['curl', '-s', '--unix-socket', api, 'http://vmnat/config']);
    expect((JSON.parse(cfg.stdout) as { guest_forwards: string[] }).guest_forwards).toEqual([
      `tcp:10.0.2.100:1234-unix:${hostUnix}`,
      `tcp:10.0.2.100:1235-tcp:127.0.0.1:${hostTcpPort}`,
      `tcp:10.0.2.100:1236-unix:${path.join(ns.dir, 'nobody.sock')}`,
    ]);
  });
});

describe.sequential("gvproxy's forwarder API on the control socket", () => {
  const gv = async (method: string, what: string, body?: unknown) => {
    const args = ['curl', '-sS', '--unix-socket', api, '-X', method, '-w', '\n%{http_code}', `http://gvproxy/services/forwarder/${what}`];
    if (body !== undefined) args.push('-d', JSON.stringify(body));
    const r = await run(args);
    const i = r.stdout.lastIndexOf('\n');
    return { status: Number(r.stdout.slice(i + 1)), body: r.stdout.slice(0, i).replace(/\n$/, '') }; // errors end in a newline, as Go's
  };

  test('expose a unix socket and a TCP port into the guest (200, empty), traffic through both, /all lists them, unexpose', async () => {
    const sock = path.join(ns.dir, 'gv-docker.sock');
    expect(await gv('POST', 'expose', { local: sock, remote: `tcp://${guestIp}:8080`, protocol: 'unix' })).toEqual({ status: 200, body: '' });
    const viaUnix = await hostCurl(sock, '/blob');
    expect(sha256(viaUnix.out)).toBe(sha256(guestFile));

    // Port 0: vmnat binds a free one; its own API names it.
    expect(await gv('POST', 'expose', { local: '127.0.0.1:0', remote: ':8080' })).toEqual({ status: 200, body: '' });
    const list = JSON.parse((await run(['curl', '-s', '--unix-socket', api, 'http://vmnat/forwards'])).stdout) as { name: string; proto: string; host_addr: string; host_port: number }[];
    const tcpFwd = list.find((f) => f.proto === 'tcp' && f.host_addr === '127.0.0.1')!;
    const r = await run(['curl', '--noproxy', '*', '-sS', '-o', path.join(ns.dir, 'gv.out'), `http://127.0.0.1:${tcpFwd.host_port}/blob`], { timeoutMs: 60_000 });
    expect(r.code, r.stderr).toBe(0);
    expect(sha256(fs.readFileSync(path.join(ns.dir, 'gv.out')))).toBe(sha256(guestFile));

    const all = await gv('GET', 'all');
    expect(all.status).toBe(200);
    expect(JSON.parse(all.body)).toEqual([
      { local: sock, remote: `tcp://${guestIp}:8080`, protocol: 'unix' },
      { local: '127.0.0.1:0', remote: `${guestIp}:8080`, protocol: 'tcp' },
      { local: dockerSock, remote: `tcp://${guestIp}:8080`, protocol: 'unix' },
    ].sort((a, b) => (a.local < b.local ? -1 : 1)));

    expect(await gv('POST', 'expose', { local: sock, remote: `tcp://${guestIp}:8080`, protocol: 'unix' })).toEqual({ status: 500, body: `proxy already running for unix on ${sock}` });
    expect(await gv('POST', 'unexpose', { local: sock, protocol: 'unix' })).toEqual({ status: 200, body: '' });
    expect(await gv('POST', 'unexpose', { local: '127.0.0.1:0' })).toEqual({ status: 200, body: '' });
    expect(await gv('POST', 'unexpose', { local: '127.0.0.1:0' })).toEqual({ status: 500, body: 'proxy not found' });
    expect(fs.existsSync(sock)).toBe(false);
    expect(await gv('GET', 'expose')).toEqual({ status: 400, body: 'post only' });
  });
});
