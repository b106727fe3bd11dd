/**
 * gvisor-tap-vsock's forwarder endpoints on the control API (src/api/gvproxy.ts), checked against
 * the shapes of gvproxy's pkg/services/forwarder/ports.go and pkg/client/client.go: 200 with an
 * empty body; plain-text errors ("post only", "proxy already running for tcp on …", "proxy not
 * found") with 400/500; /all as a JSON array sorted by local then protocol. The forwards are real
 * (a PortForwarder whose "guest" is loopback), so traffic through an exposed port is checked too.
 */
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import http from 'node:http';
import net from 'node:net';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ApiServer } from '../../src/api/server.ts';
import { FakeBackend } from './api-fakes.ts';
import { PortForwarder } from '../../src/portfwd/forwarder.ts';
import { parseHostfwd } from '../../src/portfwd/rules.ts';
import { LoopbackDialer, connect, freePort, roundTrip, tcpEcho } from './portfwd-fakes.ts';

let dir: string;
let sock: string;
let fwd: PortForwarder;
let api: ApiServer;
const cleanups: (() => unknown)[] = [];

beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vmnat-gvproxy-'));
  sock = path.join(dir, 'api.sock');
  fwd = new PortForwarder({ dialer: new LoopbackDialer() });
  api = await ApiServer.listen({ path: sock, backend: new FakeBackend(fwd) });
});
afterEach(async () => {
  await api.close();
  await fwd.close();
  for (const c of cleanups.splice(0)) await c();
  fs.rmSync(dir, { recursive: true, force: true });
});

function call(method: string, urlPath: string, body?: string): Promise<{ status: number; headers: http.IncomingHttpHeaders; text: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath: sock, method, path: urlPath, agent: false }, (res) => {
      let text = '';
      res.on('data', (d: Buffer) => (text += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}
const expose = (o: unknown) => call('POST', '/services/forwarder/expose', JSON.stringify(o));
const unexpose = (o: unknown) => call('POST', '/services/forwarder/unexpose', JSON.stringify(o));
const all = async () => {
  const r = await call('GET', '/services/forwarder/all');
  expect(r.status).toBe(200);
  expect(r.text.endsWith('\n')).toBe(true);
  return JSON.parse(r.text) as { local: string; remote: string; protocol: string }[];
};

describe('gvproxy forwarder endpoints', () => {
  test('expose → 200 with an empty body; the port carries traffic; /all lists it; unexpose → 200 empty and the port closes', async () => {
    const guest = await tcpEcho();
    cleanups.push(() => guest.close());
    const port = await freePort();
    const r = await expose({ local: `127.0.0.1:${port}`, remote: `10.0.2.15:${guest.port}`, protocol: 'tcp' });
    expect([r.status, r.text, r.headers['content-length']]).toEqual([200, '', '0']);
    const s = await connect(port);
    expect((await roundTrip(s, Buffer.from('through gvproxy api'))).toString()).toBe('through gvproxy api');
    s.destroy();
    expect(await all()).toEqual([{ local: `127.0.0.1:${port}`, remote: `10.0.2.15:${guest.port}`, protocol: 'tcp' }]);
    // The same rule is a vmnat forward like any other.
    expect(fwd.list().map((e) => e.rule.name)).toEqual([`tcp-127.0.0.1-${port}`]);
    const u = await unexpose({ local: `127.0.0.1:${port}`, protocol: 'tcp' });
    expect([u.status, u.text]).toEqual([200, '']);
    await expect(connect(port)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    expect(await all()).toEqual([]);
  });

  test('protocol defaults to tcp; unknown fields are ignored; field names match case-insensitively (Go)', async () => {
    const port = await freePort();
    expect((await expose({ Local: `127.0.0.1:${port}`, remote: '10.0.2.15:22', extra: 1 })).status).toBe(200);
    expect(await all()).toEqual([{ local: `127.0.0.1:${port}`, remote: '10.0.2.15:22', protocol: 'tcp' }]);
    expect((await unexpose({ local: `127.0.0.1:${port}`, remote: 'ignored' })).status).toBe(200);
  });

  test('errors are plain text with a newline, as Go http.Error, with 400 or 500', async () => {
    const port = await freePort();
    const check = async (r: Promise<{ status: number; headers: http.IncomingHttpHeaders; text: string }>, status: number, text: string) => {
      const got = await r;
      expect([got.status, got.text]).toEqual([status, `${text}\n`]);
      expect(got.headers['content-type']).toBe('text/plain; charset=utf-8');
      expect(got.headers['x-content-type-options']).toBe('nosniff');
    };
    await check(call('GET', '/services/forwarder/expose'), 400, 'post only');
    await check(call('PUT', '/services/forwarder/unexpose', '{}'), 400, 'post only');
    await check(call('POST', '/services/forwarder/expose', ''), 400, 'EOF');
    await check(expose({ local: `127.0.0.1:${port}`, remote: '10.0.2.15' }), 400, 'address 10.0.2.15: missing port in address');
    await check(expose({ local: `127.0.0.1:${port}`, remote: '10.0.2.15:22', protocol: 'sctp' }), 500, 'unknown protocol sctp');
    await check(unexpose({ local: `127.0.0.1:${port}` }), 500, 'proxy not found');
    expect((await expose({ local: `127.0.0.1:${port}`, remote: '10.0.2.15:22' })).status).toBe(200);
    await check(expose({ local: `127.0.0.1:${port}`, remote: '10.0.2.15:23' }), 500, `proxy already running for tcp on 127.0.0.1:${port}`);
    await check(expose({ protocol: 'unix', local: path.join(dir, 'x.sock'), remote: 'ssh-tunnel://root@10.0.2.15:22/run/podman.sock?key=/k' }), 500, 'remote protocol for unix forwarder is not implemented: ssh-tunnel');
    await check(call('GET', '/services/forwarder/nope'), 404, '404 page not found');
    // A port another process holds: the listen error, as a 500.
    const holder = net.createServer();
    await new Promise<void>((r) => holder.listen(0, '127.0.0.1', r));
    cleanups.push(() => new Promise((r) => holder.close(r)));
    const taken = (holder.address() as net.AddressInfo).port;
    await check(expose({ local: `127.0.0.1:${taken}`, remote: '10.0.2.15:22' }), 500, `tcp 127.0.0.1:${taken} is already in use (forward tcp-127.0.0.1-${taken})`);
    expect(api.stats.internalError).toBe(0);
  });

  test('udp and unix: listed in gvproxy shape and sorted by local, then protocol; forwards from elsewhere are listed and can be unexposed', async () => {
    const port = await freePort();
    const unixPath = path.join(dir, 'docker.sock');
    expect((await expose({ local: `127.0.0.1:${port}`, remote: '10.0.2.15:53', protocol: 'udp' })).status).toBe(200);
    expect((await expose({ local: `127.0.0.1:${port}`, remote: '10.0.2.15:53', protocol: 'tcp' })).status).toBe(200);
    const u = await expose({ local: unixPath, remote: 'tcp://10.0.2.15:2375', protocol: 'unix' });
    expect([u.status, u.text]).toEqual([200, '']);
    expect(fs.lstatSync(unixPath).isSocket()).toBe(true);
    const cli = await fwd.add(parseHostfwd('tcp:127.0.0.2:0-:8080'));
    expect(await all()).toEqual(
      [
        { local: `127.0.0.1:${port}`, remote: '10.0.2.15:53', protocol: 'tcp' },
        { local: `127.0.0.1:${port}`, remote: '10.0.2.15:53', protocol: 'udp' },
        { local: unixPath, remote: 'tcp://10.0.2.15:2375', protocol: 'unix' },
        // vmnat's own forward, following the lease (the fake backend's bound lease is 10.0.2.15)
        { local: `127.0.0.2:${cli.hostPort}`, remote: '10.0.2.15:8080', protocol: 'tcp' },
      ].sort((a, b) => (a.local === b.local ? (a.protocol < b.protocol ? -1 : 1) : a.local < b.local ? -1 : 1)),
    );
    expect((await unexpose({ local: `127.0.0.2:${cli.hostPort}` })).status).toBe(200);
    expect((await unexpose({ local: unixPath, protocol: 'unix' })).status).toBe(200);
    expect(fs.existsSync(unixPath)).toBe(false);
    expect((await unexpose({ local: `127.0.0.1:${port}`, protocol: 'udp' })).status).toBe(200);
    expect(await all()).toEqual([{ local: `127.0.0.1:${port}`, remote: '10.0.2.15:53', protocol: 'tcp' }]);
  });

  test('an empty remote address follows the lease; ":PORT" local listens on every IPv4 address', async () => {
    const port = await freePort();
    expect((await expose({ local: `:${port}`, remote: ':22' })).status).toBe(200);
    expect(fwd.list()[0]!.rule).toMatchObject({ hostAddr: '0.0.0.0', hostPort: port, guestAddr: undefined, guestPort: 22 });
    expect(await all()).toEqual([{ local: `:${port}`, remote: '10.0.2.15:22', protocol: 'tcp' }]);
    expect((await unexpose({ local: `:${port}` })).status).toBe(200);
  });
});
