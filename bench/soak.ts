/**
 * Soak: minutes of mixed traffic from two guests, one behind a fault-injecting relay, while vmnat's
 * memory and error counters are watched. Not a test (it takes 10 minutes by default); run it on an
 * otherwise idle machine: `node --import tsx bench/soak.ts [--secs 600]`.
 *
 * Theory of operation: two network namespaces are the guests. Guest A reaches vmnat's `--socket`
 * through test/helpers/faultrelay.ts (1 % loss, 2 % reordering, 0.5 % duplication each way), guest
 * B is a plain `--tap`. Each guest runs, for the whole time, at once:
 *   bulk down   curl fetches a 16 MiB blob from the host through 10.0.2.2, sha256 checked, again
 *   bulk up     curl POSTs a 16 MiB file, the host server answers its sha256, checked, again
 *   short       a Python loop of short TCP connections (connect, 1-byte echo, close), ≤ 500/s
 *   udp         a Python loop of UDP echoes, 200/s
 *   dns         dig at 10.0.2.3 (vmnat forwards to a DNS server on the host's loopback), 10/s
 *   ping        busybox ping of 10.0.2.2, 5/s
 * Every 5 s vmnat's RSS is sampled. At the end: RSS (start, max, end), vmnat's memory budget use,
 * the count of every transfer and whether all hashes matched, and every error-like counter that
 * moved. Nothing leaves the machine: every server is on 127.0.0.1, namespaces are named with the
 * PID and removed by name.
 */
import crypto from 'node:crypto';
import dgram from 'node:dgram';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { addNetns, cleanup, delNetns, installCleanupHandlers, must, run, startBg, type Bg } from './lib/sys.ts';
import { startTestDns } from '../test/helpers/dnsserver.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const VMNAT = path.join(ROOT, 'bin/vmnat.mjs');
const args = process.argv.slice(2);
const SECS = (() => {
  const i = args.indexOf('--secs');
  return i >= 0 ? Number(args[i + 1]) : 600;
})();
const BLOB = 16 << 20;

const sha = (b: Uint8Array) => crypto.createHash('sha256').update(b).digest('hex');

function rssKb(pid: number): number {
  const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

const UDHCPC = `#!/bin/sh
case "$1" in bound|renew)
  ip addr replace "$ip/$mask" dev "$interface"
  ip route replace default via "$router" dev "$interface"; echo "LEASE $ip";;
esac
`;

/** The guest-side load generators (Python), one process per kind, printing one JSON line at the end. */
const SHORT = `
import socket, sys, time, json
port, secs = int(sys.argv[1]), float(sys.argv[2])
ok = fail = 0; end = time.time() + secs
while time.time() < end:
    t = time.time()
    for _ in range(50):
        try:
            s = socket.create_connection(('10.0.2.2', port), timeout=5); s.sendall(b'x')
            if s.recv(1) == b'x': ok += 1
            else: fail += 1
            s.close()
        except OSError: fail += 1
    d = 0.1 - (time.time() - t)
    if d > 0: time.sleep(d)
print(json.dumps({'short_ok': ok, 'short_fail': fail}))
`;
const UDP = `
import socket, sys, time, json
port, secs = int(sys.argv[1]), float(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)
ok = lost = bad = 0; end = time.time() + secs; i = 0
while time.time() < end:
    msg = b'%08d' % i + b'u' * 500; i += 1
    s.sendto(msg, ('10.0.2.2', port))
    try:
        r, _ = s.recvfrom(2048)
        if r == msg: ok += 1
        else: bad += 1
    except OSError: lost += 1
    time.sleep(0.005)
print(json.dumps({'udp_ok': ok, 'udp_lost': lost, 'udp_bad': bad}))
`;

interface Guest {
  ns: string;
  ip: string;
}

async function main(): Promise<void> {
  installCleanupHandlers();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `vmnat-soak-${process.pid}-`));
  const blob = crypto.randomBytes(BLOB);
  const blobSha = sha(blob);
  fs.writeFileSync(path.join(dir, 'up.bin'), blob);
  // Host side: an HTTP server (GET the blob, POST → sha256 of the body), a TCP echo, a UDP echo, DNS.
  const httpServer = http.createServer((req, res) => {
    if (req.method === 'GET') {
      res.end(blob);
      return;
    }
    const h = crypto.createHash('sha256');
    req.on('data', (d: Buffer) => h.update(d));
    req.on('end', () => res.end(h.digest('hex')));
  });
  await new Promise<void>((r) => httpServer.listen(0, '127.0.0.1', r));
  const echo = net.createServer((s) => {
    s.on('error', () => undefined);
    s.on('data', (d) => s.write(d));
    s.on('end', () => s.end());
  });
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', 2048, r));
  const udp = dgram.createSocket('udp4');
  udp.on('message', (m, r) => udp.send(m, r.port, r.address));
  await new Promise<void>((r) => udp.bind(0, '127.0.0.1', r));
  const dns = await startTestDns({ 'soak.vmnat.test': [{ type: 'A', name: 'soak.vmnat.test', ttl: 5, data: '192.0.2.7' }] });
  const httpPort = (httpServer.address() as net.AddressInfo).port;
  const echoPort = (echo.address() as net.AddressInfo).port;
  const udpPort = udp.address().port;

  const nsA = `vmnat-soak-${process.pid}-a`;
  const nsB = `vmnat-soak-${process.pid}-b`;
  const bgs: Bg[] = [];
  let vmnat: Bg | undefined;
  try {
    for (const ns of [nsA, nsB]) {
      await addNetns(ns);
      await must(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
    }
    const sock = path.join(dir, 'net.sock');
    vmnat = startBg([process.execPath, VMNAT, '--socket', sock, '--tap', 'tap0', '--netns', `/run/netns/${nsB}`, '--dns-server', `127.0.0.1:${dns.port}`]);
    await vmnat.waitFor(/\{.*\}/, 15_000);
    const relay = startBg([process.execPath, '--import', 'tsx', path.join(ROOT, 'test/helpers/faultrelay.ts'), 'tap0', `/run/netns/${nsA}`, sock, path.join(dir, 'relay.sock'), '20261206', '0.01', '0.02', '0.005']);
    bgs.push(relay);
    await relay.waitFor(/ready/, 15_000);
    const script = path.join(dir, 'udhcpc.sh');
    fs.writeFileSync(script, UDHCPC, { mode: 0o755 });
    const guests: Guest[] = [];
    for (const ns of [nsA, nsB]) {
      await must(['ip', '-n', ns, 'link', 'set', 'tap0', 'up']);
      const out = await must(['ip', 'netns', 'exec', ns, 'busybox', 'udhcpc', '-f', '-q', '-n', '-t', '10', '-T', '1', '-i', 'tap0', '-s', script], 30_000);
      guests.push({ ns, ip: /LEASE (\S+)/.exec(out)![1]! });
    }
    fs.writeFileSync(path.join(dir, 'short.py'), SHORT);
    fs.writeFileSync(path.join(dir, 'udp.py'), UDP);

    const pid = vmnat.pid;
    const rss: number[] = [rssKb(pid)];
    const sampler = setInterval(() => rss.push(rssKb(pid)), 5000);
    const deadline = Date.now() + SECS * 1000;
    const tally: Record<string, number> = {};
    const add = (k: string, n = 1) => (tally[k] = (tally[k] ?? 0) + n);

    const loop = async (name: string, body: () => Promise<void>) => {
      while (Date.now() < deadline) await body().catch((e: unknown) => add(`${name}_error:${String(e).slice(0, 60)}`));
    };
    const inNs = (g: Guest, cmd: string[], timeoutMs = 120_000) => run(['ip', 'netns', 'exec', g.ns, ...cmd], { timeoutMs });
    const work: Promise<unknown>[] = [];
    for (const g of guests) {
      const tag = g.ns === nsA ? 'A' : 'B';
      work.push(
        loop(`${tag}_down`, async () => {
          const r = await inNs(g, ['sh', '-c', `curl -sS --max-time 100 http://10.0.2.2:${httpPort}/ | sha256sum`]);
          add(r.stdout.startsWith(blobSha) ? `${tag}_down_ok` : `${tag}_down_bad`);
        }),
        loop(`${tag}_up`, async () => {
          const r = await inNs(g, ['curl', '-sS', '--max-time', '100', '--data-binary', `@${path.join(dir, 'up.bin')}`, `http://10.0.2.2:${httpPort}/`]);
          add(r.stdout.trim() === blobSha ? `${tag}_up_ok` : `${tag}_up_bad`);
        }),
        loop(`${tag}_dns`, async () => {
          const r = await inNs(g, ['dig', '+short', '+tries=1', '+time=2', '@10.0.2.3', 'soak.vmnat.test'], 10_000);
          add(r.stdout.trim() === '192.0.2.7' ? `${tag}_dns_ok` : `${tag}_dns_fail`);
          await new Promise((res) => setTimeout(res, 100));
        }),
        (async () => {
          const left = Math.max(1, (deadline - Date.now()) / 1000);
          const [s, u, p] = await Promise.all([
            inNs(g, ['python3', path.join(dir, 'short.py'), String(echoPort), String(left)], (left + 60) * 1000),
            inNs(g, ['python3', path.join(dir, 'udp.py'), String(udpPort), String(left)], (left + 60) * 1000),
            inNs(g, ['busybox', 'ping', '-q', '-i', '0.2', '-w', String(Math.floor(left)), '10.0.2.2'], (left + 60) * 1000),
          ]);
          for (const [k, v] of Object.entries({ ...JSON.parse(s.stdout || '{}'), ...JSON.parse(u.stdout || '{}') } as Record<string, number>)) add(`${tag}_${k}`, v);
          const m = /(\d+) packets transmitted, (\d+) packets received/.exec(p.stdout);
          if (m) {
            add(`${tag}_ping_sent`, Number(m[1]));
            add(`${tag}_ping_received`, Number(m[2]));
          }
        })(),
      );
    }
    await Promise.all(work);
    clearInterval(sampler);
    rss.push(rssKb(pid));
    const statsBefore = vmnat.stderr().length;
    process.kill(pid, 'SIGUSR1');
    await new Promise((r) => setTimeout(r, 1000));
    const statsLine = /vmnat: stats: (.*)\n/.exec(vmnat.stderr().slice(statsBefore))?.[1] ?? '{}';
    const stats = JSON.parse(statsLine) as Record<string, unknown>;
    const interesting: Record<string, number> = {};
    const walk = (o: unknown, prefix: string) => {
      if (typeof o === 'number') {
        if (o > 0 && /error|fail|bad|refused|dropped|limit|exhausted|internal|overflow|stray|mismatch|evicted|timeout|reset/i.test(prefix)) interesting[prefix] = o;
      } else if (o !== null && typeof o === 'object' && !Array.isArray(o)) for (const [k, v] of Object.entries(o)) walk(v, prefix ? `${prefix}.${k}` : k);
    };
    walk(stats, '');
    const mem = stats['memory'] as { budget: number; peak: number } | undefined;
    const report = {
      secs: SECS,
      rss_mb: { start: +(rss[0]! / 1024).toFixed(1), max: +(Math.max(...rss) / 1024).toFixed(1), end: +(rss.at(-1)! / 1024).toFixed(1) },
      buffer_budget_mb: mem ? { budget: mem.budget / 2 ** 20, peak: +(mem.peak / 2 ** 20).toFixed(1) } : undefined,
      transfers: tally,
      all_hashes_matched: !Object.keys(tally).some((k) => k.endsWith('_bad')),
      error_like_counters: interesting,
      relay: relay.stdout().trim().split('\n').at(-1),
    };
    process.stdout.write(JSON.stringify(report, null, 2) + '\n');
  } finally {
    for (const b of bgs) await b.stop();
    await vmnat?.stop();
    await delNetns(nsA);
    await delNetns(nsB);
    cleanup();
    httpServer.close();
    echo.close();
    udp.close();
    await dns.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

void main().catch((err: unknown) => {
  cleanup();
  process.stderr.write(`soak failed: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
