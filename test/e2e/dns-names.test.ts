/**
 * Names for the host and the guests (issue 14): a netns guest, whose resolver is vmnat's DNS,
 * finds the host as host.vmnat.internal and by a --host-alias, fetches from the host by that name,
 * and the local zone (GET/POST/DELETE /dns, `vmnat ctl dns`) shows and changes names at run time.
 */
import { afterAll, expect, test } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { createNetns, leaseWithUdhcpc } from '../helpers/netns.ts';
import { killAll, run, startVmnat } from '../helpers/proc.ts';
import { blob, sha256, startBlobServer } from '../helpers/hostservers.ts';
import { startTestDns } from '../helpers/dnsserver.ts';

const cleanups: (() => Promise<unknown> | void)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
  killAll();
});

test('host.vmnat.internal and --host-alias reach the host; guests by name; POST/DELETE /dns at run time', async () => {
  const dns = await startTestDns({});
  cleanups.push(() => dns.close());
  const page = blob(100_000, 21);
  const web = await startBlobServer(page);
  cleanups.push(() => web.close());
  const ns = await createNetns({ resolver: '10.0.2.3' });
  cleanups.push(() => ns.destroy());
  const api = path.join(ns.dir, 'api.sock');
  const vmnat = await startVmnat(['--tap', 'tap0', '--netns', ns.path, '--dns-server', `127.0.0.1:${dns.port}`, '--host-alias', 'host.docker.internal', '--api-socket', api]);
  cleanups.push(() => vmnat.stop().catch(() => undefined));
  await ns.exec(['ip', 'link', 'set', 'tap0', 'up']);
  await leaseWithUdhcpc(ns, 'tap0', ['-x', 'hostname:webby']);

  const dig = async (name: string) => (await ns.exec(['dig', '+short', '@10.0.2.3', name])).stdout.trim();
  expect(await dig('host.vmnat.internal')).toBe('10.0.2.2');
  expect(await dig('host.docker.internal')).toBe('10.0.2.2');
  // The way programs in the guest use it: the system resolver, then a connection.
  const out = path.join(ns.dir, 'page.bin');
  const curl = await ns.exec(['curl', '-sS', '--max-time', '10', '-o', out, `http://host.docker.internal:${web.port}/`]);
  expect(curl.code, curl.stderr).toBe(0);
  expect(sha256(fs.readFileSync(out))).toBe(sha256(page));

  const call = (method: string, url: string, body?: string) =>
    run(['curl', '-sS', '--unix-socket', api, '-X', method, ...(body !== undefined ? ['-H', 'content-type: application/json', '--data', body] : []), '-w', '\n%{http_code}', `http://vmnat${url}`]);
  const split = (r: { stdout: string }) => {
    const lines = r.stdout.trim().split('\n');
    return { status: lines.at(-1), body: lines.slice(0, -1).join('\n') };
  };
  const zone = JSON.parse(split(await call('GET', '/dns')).body) as { name: string; addresses: string[]; source: string }[];
  expect(zone).toEqual(
    expect.arrayContaining([
      // The host's names have the IPv6 gateway as their IPv6 twin.
      { name: 'host.vmnat.internal', addresses: ['10.0.2.2', 'fd00:10:0:2::2'], source: 'host' },
      { name: 'host.docker.internal', addresses: ['10.0.2.2', 'fd00:10:0:2::2'], source: 'host' },
      { name: 'webby', addresses: ['10.0.2.15'], source: 'guest' },
      { name: 'webby.vmnat.internal', addresses: ['10.0.2.15'], source: 'guest' },
    ]),
  );

  const added = split(await call('POST', '/dns', '{"name":"db.test","ip":"10.0.2.2"}'));
  expect(added.status, added.body).toBe('201');
  expect(await dig('db.test')).toBe('10.0.2.2');
  expect(split(await call('POST', '/dns', '{"name":"host.docker.internal","ip":"10.0.2.9"}')).status).toBe('409');
  expect(split(await call('POST', '/dns', '{"name":"x.test","ip":"not-an-ip"}')).status).toBe('400');
  const ctl = await run([process.execPath, path.resolve('bin/vmnat.mjs'), 'ctl', '--api-socket', api, 'dns']);
  expect(ctl.stdout).toMatch(/db\.test\s+10\.0\.2\.2\s+api/);
  expect(split(await call('DELETE', '/dns/db.test')).status).toBe('204');
  expect(split(await call('DELETE', '/dns/db.test')).status).toBe('404');
  expect(await dig('db.test')).toBe(''); // now asked upstream (the test's server): no such name
  expect(dns.queries.some((q) => q.name === 'db.test')).toBe(true);
});
