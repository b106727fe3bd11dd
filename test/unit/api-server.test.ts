import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import http from 'node:http';
import net from 'node:net';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { once } from 'node:events';
import { spawn } from 'node:child_process';
import { ApiServer, ApiServerError, configToApi, leaseToApi, type FlowEvent } from '../../src/api/server.ts';
import { FakeBackend } from './api-fakes.ts';
import { PortForwarder } from '../../src/portfwd/forwarder.ts';
import { parseArgs } from '../../src/config.ts';
import { parseIpv4, parseMac } from '../../src/stack/wire/addr.ts';
import { LoopbackDialer, connect, roundTrip, sleep, tcpEcho, waitFor } from './portfwd-fakes.ts';

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  json: unknown;
}

let dir: string;
let sock: string;
let fwd: PortForwarder;
let backend: FakeBackend;
let api: ApiServer;
let echoClose: (() => Promise<void>) | undefined;

beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vmnat-api-'));
  sock = path.join(dir, 'api.sock');
  fwd = new PortForwarder({ dialer: new LoopbackDialer() });
  backend = new FakeBackend(fwd);
  api = await ApiServer.listen({ path: sock, backend, headersTimeoutMs: 300, requestTimeoutMs: 600, maxConnections: 8 });
});
afterEach(async () => {
  await api.close();
  await fwd.close();
  await echoClose?.();
  echoClose = undefined;
  fs.rmSync(dir, { recursive: true, force: true });
});

function request(method: string, urlPath: string, body?: string | Buffer, headers: http.OutgoingHttpHeaders = {}, socketPath = sock): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, method, path: urlPath, headers: { Host: 'vmnat', ...headers }, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        let json: unknown;
        try {
          json = text === '' ? undefined : JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode!, headers: res.headers, text, json });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

const post = (body: unknown) => request('POST', '/forwards', JSON.stringify(body), { 'Content-Type': 'application/json' });

/** Raw bytes on a fresh connection; resolves with everything until the server closes. */
function raw(bytes: string | Buffer, keepOpenMs = 0): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(sock);
    const chunks: Buffer[] = [];
    s.on('data', (c) => chunks.push(c));
    s.on('error', reject);
    s.on('close', () => resolve(Buffer.concat(chunks).toString()));
    s.write(bytes);
    if (keepOpenMs > 0) setTimeout(() => s.end(), keepOpenMs);
  });
}

describe('the socket', () => {
  test('is created with mode 0600 and removed by close()', async () => {
    expect(fs.statSync(sock).mode & 0o777).toBe(0o600);
    await api.close();
    expect(fs.existsSync(sock)).toBe(false);
  });

  test('curl-style request works', async () => {
    const r = await request('GET', '/health');
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toMatch(/^application\/json/);
    expect(r.json).toMatchObject({ status: 'ok', forwards: 0 });
  });

  test('a live socket is refused and keeps working', async () => {
    await expect(ApiServer.listen({ path: sock, backend })).rejects.toMatchObject({ code: 'EADDRINUSE_LIVE' });
    expect((await request('GET', '/health')).status).toBe(200);
  });

  test('a stale socket file (its process died) is replaced', async () => {
    const stale = path.join(dir, 'stale.sock');
    // A process that binds and dies by SIGKILL leaves its socket file behind.
    const child = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(stale)}, () => process.kill(process.pid, 'SIGKILL'))`]);
    await once(child, 'exit');
    expect(fs.lstatSync(stale).isSocket()).toBe(true);
    const other = await ApiServer.listen({ path: stale, backend });
    try {
      expect((await request('GET', '/health', undefined, {}, stale)).status).toBe(200);
      expect(fs.statSync(stale).mode & 0o777).toBe(0o600);
    } finally {
      await other.close();
    }
  });

  test('a path that is not a socket is never replaced', async () => {
    const file = path.join(dir, 'notes.txt');
    fs.writeFileSync(file, 'keep me');
    const err = await ApiServer.listen({ path: file, backend }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiServerError);
    expect((err as ApiServerError).code).toBe('EPATH_NOT_SOCKET');
    expect(fs.readFileSync(file, 'utf8')).toBe('keep me');
  });

  test('a missing parent directory is created (mode 0700)', async () => {
    const nested = path.join(dir, 'a', 'b', 'api.sock');
    const other = await ApiServer.listen({ path: nested, backend });
    expect(fs.statSync(path.dirname(nested)).mode & 0o777).toBe(0o700);
    await other.close();
  });
});

describe('forwards', () => {
  test('POST → 201 with the rule; GET lists it; DELETE → 204, then 404', async () => {
    const r = await post({ name: 'web', proto: 'tcp', host_port: 0, guest_port: 80 });
    expect(r.status).toBe(201);
    const port = (r.json as { host_port: number }).host_port; // 0: the port the kernel picked
    expect(port).toBeGreaterThan(0);
    expect(r.headers.location).toBe('/forwards/web');
    const rule = { name: 'web', proto: 'tcp', host_addr: '127.0.0.1', host_port: port, guest_addr: null, guest_port: 80, port_count: 1 };
    expect(r.json).toEqual({ ...rule, tcp_accepted: 0, tcp_active: 0, udp_flows: 0 });
    expect((await request('GET', '/forwards')).json).toEqual([{ ...rule, tcp_accepted: 0, tcp_active: 0, udp_flows: 0 }]);
    expect((await request('GET', '/forwards/web')).json).toMatchObject(rule);
    const d = await request('DELETE', '/forwards/web');
    expect(d.status).toBe(204);
    expect(d.text).toBe('');
    expect((await request('DELETE', '/forwards/web')).status).toBe(404);
    expect((await request('GET', '/forwards/web')).status).toBe(404);
    expect((await request('GET', '/forwards')).json).toEqual([]);
  });

  test('a forward added through the API carries traffic, and its listener closes on DELETE', async () => {
    const guest = await tcpEcho();
    echoClose = guest.close;
    const added = await post({ proto: 'tcp', host_port: 0, guest_port: guest.port });
    expect(added.status).toBe(201);
    const port = (added.json as { host_port: number }).host_port;
    const s = await connect(port);
    expect((await roundTrip(s, Buffer.from('through the API'))).toString()).toBe('through the API');
    expect((await request('DELETE', `/forwards/${encodeURIComponent(`tcp-127.0.0.1-${port}`)}`)).status).toBe(204);
    await expect(connect(port)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    // the connection that was open still works
    expect((await roundTrip(s, Buffer.from('still here'))).toString()).toBe('still here');
    s.destroy();
  });

  test('a name with characters that need encoding', async () => {
    expect((await post({ name: 'a:b@c', proto: 'tcp', host_port: 0, guest_port: 80 })).status).toBe(201);
    expect((await request('DELETE', '/forwards/a%3Ab%40c')).status).toBe(204);
  });

  test('a bad rule → 400 with the reason', async () => {
    const r = await post({ proto: 'sctp', host_port: 80, guest_port: 80 });
    expect(r.status).toBe(400);
    expect(r.json).toEqual({ error: 'unknown protocol "sctp" (tcp, udp or unix)', code: 'bad_rule' });
    const r2 = await post({ proto: 'tcp', host_port: 8080, guest_port: 80, guest_addr: 'x' });
    expect(r2.status).toBe(400);
    expect((r2.json as { error: string }).error).toMatch(/guest address "x" is not an IP address/);
  });

  test('malformed JSON → 400 naming the problem; empty body → 400', async () => {
    const r = await request('POST', '/forwards', '{"proto": "tcp",', { 'Content-Type': 'application/json' });
    expect(r.status).toBe(400);
    expect(r.json).toMatchObject({ code: 'bad_json' });
    expect((r.json as { error: string }).error).toMatch(/^malformed JSON: /);
    const e = await request('POST', '/forwards', '');
    expect(e.status).toBe(400);
    expect((e.json as { error: string }).error).toMatch(/empty body/);
  });

  test('a taken port → 409; a taken name → 409', async () => {
    const taken = net.createServer();
    taken.listen(0, '127.0.0.1');
    await once(taken, 'listening');
    const port = (taken.address() as net.AddressInfo).port;
    try {
      const r = await post({ name: 'busy', proto: 'tcp', host_port: port, guest_port: 80 });
      expect(r.status).toBe(409);
      expect(r.json).toEqual({ error: `tcp 127.0.0.1:${port} is already in use (forward busy)`, code: 'EADDRINUSE' });
    } finally {
      taken.close();
    }
    expect((await post({ name: 'dup', proto: 'udp', host_port: 0, guest_port: 53 })).status).toBe(201);
    const r = await post({ name: 'dup', proto: 'udp', host_port: 0, guest_port: 53 });
    expect(r.status).toBe(409);
    expect(r.json).toMatchObject({ code: 'EEXIST' });
  });

  test('a body over 64 KiB → 413, declared or streamed', async () => {
    const big = JSON.stringify({ proto: 'tcp', host_port: 8080, guest_port: 80, pad: 'x'.repeat(70 * 1024) });
    const r = await request('POST', '/forwards', big, { 'Content-Type': 'application/json' });
    expect(r.status).toBe(413);
    expect(r.json).toMatchObject({ code: 'too_large' });
    // chunked, no Content-Length: the limit is enforced while reading
    const chunked = await new Promise<number>((resolve, reject) => {
      const req = http.request({ socketPath: sock, method: 'POST', path: '/forwards', headers: { 'Transfer-Encoding': 'chunked' }, agent: false }, (res) => {
        res.resume();
        resolve(res.statusCode!);
      });
      req.on('error', reject);
      for (let i = 0; i < 20; i++) req.write('x'.repeat(8192));
      req.end();
    });
    expect(chunked).toBe(413);
    expect(api.stats.tooLarge).toBe(2);
    expect((await request('GET', '/health')).status).toBe(200);
  });
});

describe('read endpoints', () => {
  test('leases, flows, stats, config come from the backend', async () => {
    expect((await request('GET', '/leases')).json).toEqual(backend.leaseList);
    expect((await request('GET', '/flows')).json).toEqual(backend.flowList);
    const stats = (await request('GET', '/stats')).json as Record<string, Record<string, unknown>>;
    expect(stats['nat']).toEqual({ refused: 3 });
    expect(stats['api']!['requests']).toBe(3);
    expect(stats['portfwd']).toHaveProperty('tcpAccepted', 0);
    expect((await request('GET', '/config')).json).toEqual({ network: '10.0.2.0/24' });
  });

  test('a backend that throws → 500, and the server carries on', async () => {
    backend.failing = 'flows';
    const r = await request('GET', '/flows');
    expect(r.status).toBe(500);
    expect(r.json).toEqual({ error: 'internal error', code: 'internal' });
    expect(api.stats.internalError).toBe(1);
    expect((await request('GET', '/leases')).status).toBe(200);
  });

  test('a trailing slash and a query string are fine', async () => {
    expect((await request('GET', '/leases/?x=1')).status).toBe(200);
  });
});

describe('bad requests', () => {
  test('unknown path → 404', async () => {
    const r = await request('GET', '/nope');
    expect(r.status).toBe(404);
    expect((r.json as { error: string }).error).toMatch(/no such endpoint: \/nope/);
    expect((await request('GET', '/')).status).toBe(404);
  });

  test('wrong method → 405 with Allow', async () => {
    for (const [method, p, allow] of [
      ['PUT', '/forwards', 'GET, POST'],
      ['POST', '/leases', 'GET'],
      ['DELETE', '/stats', 'GET'],
      ['PATCH', '/forwards/x', 'GET, DELETE'],
      ['HEAD', '/health', 'GET'],
    ] as const) {
      const r = await request(method, p);
      expect(r.status, `${method} ${p}`).toBe(405);
      expect(r.headers.allow).toBe(allow);
    }
  });

  test('garbage instead of HTTP → 400, connection closed, server fine', async () => {
    const text = await raw('HELLO THERE\r\n\r\n');
    expect(text).toMatch(/^HTTP\/1\.1 400/);
    expect((await request('GET', '/health')).status).toBe(200);
  });

  test('oversized headers → 431', async () => {
    const text = await raw(`GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(16 * 1024)}\r\n\r\n`);
    expect(text).toMatch(/^HTTP\/1\.1 431/);
  });

  test('a client that never finishes its headers is cut off (headers timeout)', async () => {
    const t0 = Date.now();
    const s = net.connect(sock);
    s.write('GET /health HTTP/1.1\r\nHost: x\r\n'); // …and nothing more
    const chunks: Buffer[] = [];
    s.on('data', (c) => chunks.push(c));
    await once(s, 'close');
    const took = Date.now() - t0;
    expect(took).toBeGreaterThanOrEqual(250);
    expect(took).toBeLessThan(3000);
    expect(Buffer.concat(chunks).toString()).toMatch(/^HTTP\/1\.1 408/);
  });

  test('a body that never finishes is cut off (request timeout)', async () => {
    const s = net.connect(sock);
    s.write('POST /forwards HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"proto"');
    const t0 = Date.now();
    s.on('data', () => undefined);
    s.on('error', () => undefined);
    await once(s, 'close');
    expect(Date.now() - t0).toBeLessThan(3000);
  });

  test('beyond maxConnections, new connections are closed at once', async () => {
    const held: net.Socket[] = [];
    for (let i = 0; i < 8; i++) {
      const s = net.connect(sock);
      await once(s, 'connect');
      held.push(s);
    }
    await waitFor(() => api.stats.connections >= 8);
    const extra = net.connect(sock);
    extra.on('error', () => undefined);
    const closed = await Promise.race([once(extra, 'close').then(() => true), sleep(2000).then(() => false)]);
    extra.destroy();
    expect(closed).toBe(true);
    for (const s of held) s.destroy();
    await sleep(50);
    expect((await request('GET', '/health')).status).toBe(200);
  });
});

describe('GET /events', () => {
  function follow(): { lines: Record<string, unknown>[]; req: http.ClientRequest; ended: Promise<void>; response: Promise<http.IncomingMessage> } {
    const lines: Record<string, unknown>[] = [];
    let buffered = '';
    let resolveRes!: (r: http.IncomingMessage) => void;
    const response = new Promise<http.IncomingMessage>((r) => (resolveRes = r));
    let done!: () => void;
    const ended = new Promise<void>((r) => (done = r));
    const req = http.request({ socketPath: sock, path: '/events', agent: false }, (res) => {
      resolveRes(res);
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        buffered += c;
        let nl;
        while ((nl = buffered.indexOf('\n')) >= 0) {
          lines.push(JSON.parse(buffered.slice(0, nl)) as Record<string, unknown>);
          buffered = buffered.slice(nl + 1);
        }
      });
      res.on('close', done);
    });
    req.on('error', () => done());
    req.end();
    return { lines, req, ended, response };
  }

  test('replays bound leases, then streams lease, forward and flow events as NDJSON', async () => {
    const ev = follow();
    const res = await ev.response;
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toBe('application/x-ndjson');
    await waitFor(() => ev.lines.length === 1);
    expect(ev.lines[0]).toMatchObject({ type: 'lease', event: 'bound', ip: '10.0.2.15', mac: '52:54:00:12:34:56', hostname: 'vm1', replay: true });

    backend.emit({ type: 'lease', event: 'bound', ip: '10.0.2.17', mac: '52:54:00:00:00:17' });
    const port = ((await post({ name: 'ev', proto: 'tcp', host_port: 0, guest_port: 22 })).json as { host_port: number }).host_port;
    backend.emit({ type: 'flow', event: 'open', flow: { proto: 'tcp', guest: '10.0.2.15:22', remote: '10.0.2.2:50000', forward: 'ev', bytes_from_guest: 0, bytes_to_guest: 0 } });
    await request('DELETE', '/forwards/ev');
    backend.emit({ type: 'flow', event: 'close', reason: 'fin', flow: { proto: 'tcp', guest: '10.0.2.15:22', remote: '10.0.2.2:50000', forward: 'ev', bytes_from_guest: 10, bytes_to_guest: 20 } });
    await waitFor(() => ev.lines.length === 6);
    expect(ev.lines.map((l) => `${String(l['type'])} ${String(l['event'])}`)).toEqual(['lease bound', 'lease bound', 'forward added', 'flow open', 'forward removed', 'flow close']);
    for (const l of ev.lines) expect(Date.parse(String(l['time']))).not.toBeNaN();
    expect(ev.lines[2]).toMatchObject({ rule: { name: 'ev', host_port: port, guest_port: 22 } });
    expect(ev.lines[5]).toMatchObject({ reason: 'fin', flow: { bytes_to_guest: 20 } });

    // the reader leaves: its subscriptions go
    ev.req.destroy();
    await waitFor(() => backend.listeners.size === 0);
  });

  test('close() ends open event streams', async () => {
    const ev = follow();
    await ev.response;
    await api.close();
    await ev.ended;
  });

  test('a reader that stops reading is dropped once too far behind', async () => {
    await api.close();
    api = await ApiServer.listen({ path: sock, backend, maxEventBacklogBytes: 64 * 1024 });
    const s = net.connect(sock);
    s.write('GET /events HTTP/1.1\r\nHost: x\r\n\r\n');
    await waitFor(() => backend.listeners.size === 1);
    s.pause(); // never read again
    const fat: FlowEvent = { type: 'flow', event: 'open', flow: { proto: 'udp', guest: 'x'.repeat(32 * 1024), remote: 'y', bytes_from_guest: 0, bytes_to_guest: 0 } };
    for (let i = 0; i < 400 && api.stats.eventReadersDropped === 0; i++) {
      backend.emit(fat);
      if (i % 20 === 0) await sleep(1);
    }
    expect(api.stats.eventReadersDropped).toBe(1);
    await waitFor(() => backend.listeners.size === 0);
    s.destroy();
    expect((await request('GET', '/health')).status).toBe(200);
  });
});

describe('helpers for the engine', () => {
  test('configToApi gives the layout as text', () => {
    const outcome = parseArgs(['--socket', '/tmp/vmnat-test/net.sock', '--dhcp-static', '52:54:00:00:00:01=10.0.2.20', '--dns-server', '1.1.1.1']);
    if (outcome.action !== 'run') throw new Error('expected run');
    const c = configToApi(outcome.config);
    expect(c).toMatchObject({
      link: { kind: 'socket', path: '/tmp/vmnat-test/net.sock' },
      network: '10.0.2.0/24',
      gateway: '10.0.2.2',
      dns: '10.0.2.3',
      first_lease: '10.0.2.15',
      mtu: 1500,
      dhcp_static: { '52:54:00:00:00:01': '10.0.2.20' },
      dns_servers: ['1.1.1.1:53'],
      host_loopback: true,
    });
    expect(JSON.parse(JSON.stringify(c))).toEqual(c);
  });

  test('leaseToApi', () => {
    const lease = { mac: parseMac('52:54:00:12:34:56')!, ip: parseIpv4('10.0.2.15')!, hostname: 'vm', expiresAt: 61_000, state: 'bound' as const, static: false };
    expect(leaseToApi(lease, 1000)).toEqual({ ip: '10.0.2.15', mac: '52:54:00:12:34:56', hostname: 'vm', state: 'bound', static: false, expires_in_s: 60 });
    expect(leaseToApi({ ...lease, expiresAt: Infinity }, 0).expires_in_s).toBeNull();
  });
});
