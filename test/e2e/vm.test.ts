/**
 * End to end with a real VM: a Linux guest in qemu (TCG) leases an address over DHCP and pings
 * the gateway, first through qemu's own libslirp (the reference, and the proof that the image and
 * harness work), then through vmnat over each transport qemu speaks: unix datagram sockets
 * (--socket), qemu's length-prefixed stream (--stream), an inherited socketpair (--fd), and
 * vmnat's spawn mode (vmnat -- qemu ..., the socketpair made by vmnat).
 *
 * One VM at a time (describe.sequential, and the file runs in one worker): the machine has
 * 2 cores and TCG is CPU-bound. Timeouts are generous for a loaded host.
 */
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  REPO_ROOT,
  VMNAT_BIN,
  closeFd,
  describeRun,
  ensureGuest,
  makeRunDir,
  runVm,
  socketpairDgram,
  startEchoServer,
  startHttpServer,
  startVmnat,
  type LoopbackServer,
  type VmRun,
  type VmnatProcess,
} from '../helpers/vm.ts';
import { startTestDns } from '../helpers/dnsserver.ts';
import { nativeVariant } from '../../src/link/native.ts';

const VM_TEST_MS = 120_000;


/** Deterministic bytes: a download whose hash cannot match by accident. */
function blobBytes(size: number): Buffer {
  const out = Buffer.alloc(size);
  let h = createHash('sha256').update('vm-blob').digest();
  for (let off = 0; off < size; off += 32) {
    h = createHash('sha256').update(h).digest();
    h.copy(out, off);
  }
  return out;
}
const VM_RUN_MS = 60_000;

/** Lease, then two pings to the gateway: what a user checks first on a NAT network. */
const LEASE_AND_PING = 'vmnat_lease && vmnat_ping 10.0.2.2 2';

/** The libslirp layout vmnat reproduces. */
const EXPECTED_LEASE = {
  lease: 'ok',
  ip: '10.0.2.15',
  mask: '24',
  router: '10.0.2.2',
  dns: '10.0.2.3',
} as const;

function expectLeaseAndPing(r: VmRun): void {
  const why = describeRun(r);
  expect(r.timedOut, why).toBe(false);
  expect(r.results, why).toMatchObject({ ...EXPECTED_LEASE, ping: 'ok', done: '0' });
}

/** Host wall time from qemu's start to eth0 up, to the lease, and to exit: printed for the record. */
function report(name: string, r: VmRun): void {
  console.log(`[vm] ${name}: eth0 up at ${r.timesMs['eth0']} ms, lease at ${r.timesMs['lease']} ms, exit at ${r.durationMs} ms`);
}

/** Temp dirs for socket files (qemu leaves its socket behind); removed after the file. */
const dirs: string[] = [];
function tempDir(tag: string): string {
  const dir = makeRunDir(tag);
  dirs.push(dir);
  return dir;
}

describe.sequential('real VM guest (qemu, TCG)', () => {
  beforeAll(() => {
    ensureGuest();
  }, 600_000);
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  // The reference loads no vmnat code: the 'portable' vitest project (VMNAT_NATIVE=portable) skips it.
  describe.skipIf(nativeVariant() === 'portable').sequential('libslirp reference (-netdev user)', () => {
    it('leases 10.0.2.15/24 with router 10.0.2.2 and dns 10.0.2.3, and pings the gateway', async () => {
      const r = await runVm({ netdev: 'user,id=n0', script: LEASE_AND_PING, timeoutMs: VM_RUN_MS });
      expectLeaseAndPing(r);
      expect(r.results['lease_s']).toBe('86400');
      expect(r.exitCode).toBe(0);
      report('libslirp', r);
    }, VM_TEST_MS);

    it('reaches host loopback servers through 10.0.2.2 with wget and nc', async () => {
      const payload = Buffer.alloc(200_000);
      for (let i = 0; i < payload.length; i++) payload[i] = (i * 7 + (i >> 8)) & 0xff;
      const md5 = createHash('md5').update(payload).digest('hex');
      const http = await startHttpServer({ '/blob': payload });
      const echo = await startEchoServer('hello-from-host\n');
      try {
        const r = await runVm({
          netdev: 'user,id=n0',
          timeoutMs: VM_RUN_MS,
          script: `
            vmnat_lease || exit 1
            vmnat_fetch http://10.0.2.2:${http.port}/blob 30 blob
            reply=$(echo ping-from-guest | timeout 10 nc 10.0.2.2 ${echo.port} | tr '\\n' ' ')
            vmnat_result "nc_reply=$(echo $reply | tr ' ' _)"
          `,
        });
        const why = describeRun(r);
        expect(r.results, why).toMatchObject({
          lease: 'ok',
          blob: 'ok',
          blob_bytes: String(payload.length),
          blob_md5: md5,
          nc_reply: 'hello-from-host_ping-from-guest',
          done: '0',
        });
        expect(http.hits).toBe(1);
        expect(echo.hits).toBe(1);
      } finally {
        await http.close();
        await echo.close();
      }
    }, VM_TEST_MS);

    it('reports lease=fail when nothing answers DHCP (the harness sees failures)', async () => {
      const dir = tempDir('nopeer');
      const r = await runVm({
        // A datagram socket whose peer never exists: qemu drops every frame.
        netdev: `dgram,id=n0,local.type=unix,local.path=${dir}/q.sock,remote.type=unix,remote.path=${dir}/none.sock`,
        script: 'vmnat_lease eth0 2',
        timeoutMs: VM_RUN_MS,
      });
      expect(r.results, describeRun(r)).toMatchObject({ lease: 'fail', done: '1' });
      expect(r.results['ip']).toBeUndefined();
    }, VM_TEST_MS);

    it('kills a guest that outlives its timeout', async () => {
      let pid: number | undefined;
      const r = await runVm({
        netdev: 'user,id=n0',
        script: 'sleep 600',
        timeoutMs: 10_000,
        onSpawn: (child) => {
          pid = child.pid;
        },
      });
      expect(r.timedOut, describeRun(r)).toBe(true);
      expect(r.signal).toBe('SIGKILL');
      expect(r.results['done']).toBeUndefined();
      expect(pid).toBeTypeOf('number');
      expect(() => process.kill(pid ?? 0, 0)).toThrow(/ESRCH/);
    }, VM_TEST_MS);
  });

  // The CLI is being written alongside these tests: they run as soon as src/cli.ts exists.

  describe('through vmnat', () => {
    let engine: VmnatProcess | undefined;

    /** Stops the engine after each test and checks it leaves cleanly on SIGTERM. */
    afterEach(async () => {
      if (!engine) return;
      const e = engine;
      engine = undefined;
      const how = await e.stop('SIGTERM');
      expect(how, `vmnat stderr:\n${e.stderr()}`).toEqual({ code: 0, signal: null });
    });

    it('--socket: qemu dgram over unix datagram sockets', async () => {
      const dir = tempDir('sock');
      const enginePath = `${dir}/engine.sock`;
      engine = await startVmnat(['--socket', enginePath]);
      const r = await runVm({
        netdev: `dgram,id=n0,local.type=unix,local.path=${dir}/qemu.sock,remote.type=unix,remote.path=${enginePath}`,
        script: LEASE_AND_PING,
        timeoutMs: VM_RUN_MS,
      });
      expectLeaseAndPing(r);
      report('vmnat --socket', r);
    }, VM_TEST_MS);

    it('--stream: qemu stream (length-prefixed) over a unix stream socket', async () => {
      const dir = tempDir('strm');
      const enginePath = `${dir}/engine.sock`;
      // qemu 7.2 connects once at start with no retry: the ready line means vmnat listens.
      engine = await startVmnat(['--stream', enginePath]);
      const r = await runVm({
        netdev: `stream,id=n0,server=off,addr.type=unix,addr.path=${enginePath}`,
        script: LEASE_AND_PING,
        timeoutMs: VM_RUN_MS,
      });
      expectLeaseAndPing(r);
      report('vmnat --stream', r);
    }, VM_TEST_MS);

    it('--fd: a datagram socketpair, one end inherited by vmnat, the other by qemu', async () => {
      const [engineEnd, qemuEnd] = socketpairDgram();
      try {
        engine = await startVmnat(['--fd', '3'], { extraFds: { 3: engineEnd } });
      } finally {
        closeFd(engineEnd);
      }
      let qemuEndOpen = true;
      try {
        const r = await runVm({
          netdev: 'dgram,id=n0,local.type=fd,local.str=3',
          extraFds: { 3: qemuEnd },
          onSpawn: () => {
            closeFd(qemuEnd);
            qemuEndOpen = false;
          },
          script: LEASE_AND_PING,
          timeoutMs: VM_RUN_MS,
        });
        expectLeaseAndPing(r);
        report('vmnat --fd', r);
      } finally {
        if (qemuEndOpen) closeFd(qemuEnd);
      }
    }, VM_TEST_MS);

    it('spawn mode: vmnat -- qemu ... (vmnat makes the socketpair and runs the VM)', async () => {
      const r = await runVm({
        launcher: { command: process.execPath, args: [VMNAT_BIN, '--'] },
        netdev: 'dgram,id=n0,local.type=fd,local.str=4',
        script: LEASE_AND_PING,
        timeoutMs: VM_RUN_MS,
      });
      expectLeaseAndPing(r);
      // vmnat prints its ready line, runs qemu to completion, and exits with qemu's status.
      const readyLine = r.stdout.split('\n')[0] ?? '';
      expect(() => JSON.parse(readyLine) as unknown, r.stdout).not.toThrow();
      expect(r.exitCode, describeRun(r)).toBe(0);
      report('vmnat spawn mode', r);
    }, VM_TEST_MS);

    it('--socket: the guest downloads through 10.0.2.2 (sha256), talks with nc, and resolves a name at 10.0.2.3', async () => {
      const dir = tempDir('tcp');
      const enginePath = `${dir}/engine.sock`;
      const servers: LoopbackServer[] = [];
      const blob = blobBytes(4 << 20);
      const dns = await startTestDns({ 'www.vmnat.test': [{ type: 'A', name: 'www.vmnat.test', ttl: 60, data: '192.0.2.80' }] });
      try {
        const http = await startHttpServer({ '/hello': 'hello over vmnat\n', '/blob': blob });
        servers.push(http);
        const echo = await startEchoServer('hello-from-host\n');
        servers.push(echo);
        engine = await startVmnat(['--socket', enginePath, '--dns-server', `127.0.0.1:${dns.port}`]);
        const r = await runVm({
          netdev: `dgram,id=n0,local.type=unix,local.path=${dir}/qemu.sock,remote.type=unix,remote.path=${enginePath}`,
          timeoutMs: VM_RUN_MS,
          script: `
            vmnat_lease || exit 1
            vmnat_fetch http://10.0.2.2:${http.port}/hello 20 hello
            reply=$(echo ping-from-guest | timeout 10 nc 10.0.2.2 ${echo.port} | tr '\\n' ' ')
            vmnat_result "nc_reply=$(echo $reply | tr ' ' _)"
            vmnat_result "blob_sha256=$(timeout 30 wget -q -O - http://10.0.2.2:${http.port}/blob | sha256sum | cut -d' ' -f1)"
            vmnat_result "dns_a=$(timeout 10 nslookup www.vmnat.test 10.0.2.3 2>/dev/null | awk '/^Address/ {a=$NF} END {print a}')"
          `,
        });
        expect(r.results, describeRun(r)).toMatchObject({
          lease: 'ok',
          hello: 'ok',
          hello_bytes: '17',
          nc_reply: 'hello-from-host_ping-from-guest',
          blob_sha256: createHash('sha256').update(blob).digest('hex'),
          dns_a: '192.0.2.80',
          done: '0',
        });
        expect(dns.queries.map((q) => q.name)).toContain('www.vmnat.test');
      } finally {
        for (const s of servers) await s.close();
        await dns.close();
      }
    }, VM_TEST_MS);

    it('--stream: a download arrives whole (sha256) in frames the addon cut from 64 KiB segments', async () => {
      const dir = tempDir('sgso');
      const enginePath = `${dir}/engine.sock`;
      const api = `${dir}/api.sock`;
      const blob = blobBytes(4 << 20);
      const http = await startHttpServer({ '/blob': blob });
      try {
        engine = await startVmnat(['--stream', enginePath, '--dns-server', '127.0.0.1:9', '--api-socket', api]);
        const r = await runVm({
          netdev: `stream,id=n0,server=off,addr.type=unix,addr.path=${enginePath}`,
          timeoutMs: VM_RUN_MS,
          script: `
            vmnat_lease || exit 1
            vmnat_result "blob_sha256=$(timeout 30 wget -q -O - http://10.0.2.2:${http.port}/blob | sha256sum | cut -d' ' -f1)"
          `,
        });
        expect(r.results, describeRun(r)).toMatchObject({ lease: 'ok', blob_sha256: createHash('sha256').update(blob).digest('hex'), done: '0' });
        const stats = JSON.parse(execFileSync('curl', ['-sS', '--unix-socket', api, 'http://vmnat/stats']).toString()) as { links: { kind: string; txGsoFrames?: number; txFrames: number }[] };
        const link = stats.links.find((l) => l.kind === 'stream')!;
        // 4 MiB in 64 KiB segments: about 64 of them, cut into ~2,900 frames within the MTU.
        expect(link.txGsoFrames).toBeGreaterThan(30);
        expect(link.txFrames, JSON.stringify(stats.links)).toBeGreaterThan((4 << 20) / 1500);
      } finally {
        await http.close();
      }
    }, VM_TEST_MS);

    it('--socket: the host reaches the guest\'s httpd through a --hostfwd forward', async () => {
      const dir = tempDir('fwd');
      const enginePath = `${dir}/engine.sock`;
      // Host port 0: vmnat binds a free port and names it in its ready line. (A port found free
      // here and bound later was taken meanwhile by another test file: EADDRINUSE, once.)
      engine = await startVmnat(['--socket', enginePath, '--hostfwd', 'tcp::0-:80']);
      const hostPort = (engine.ready['forwards'] as unknown as { host_port: number }[])[0]!.host_port;
      const body = 'hello from the VM over a vmnat forward';
      const fetched = (async () => {
        // Poll through the forward until the guest's httpd answers (the guest boots meanwhile).
        for (let i = 0; i < 300; i++) {
          try {
            const res = await fetch(`http://127.0.0.1:${hostPort}/cgi-bin/hello`, { signal: AbortSignal.timeout(2000) });
            if (res.ok) return await res.text();
          } catch {
            /* not up yet: connection reset or refused by the guest */
          }
          await new Promise((r) => setTimeout(r, 200));
        }
        return 'never answered';
      })();
      const r = await runVm({
        netdev: `dgram,id=n0,local.type=unix,local.path=${dir}/qemu.sock,remote.type=unix,remote.path=${enginePath}`,
        timeoutMs: VM_RUN_MS,
        files: { 'www/cgi-bin/hello': `#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n${body}\\n'\ntouch /tmp/served\n` },
        script: `
          vmnat_lease || exit 1
          chmod 755 /www/cgi-bin/hello
          busybox httpd -p 80 -h /www
          i=0; while [ ! -f /tmp/served ] && [ $i -lt 400 ]; do sleep 0.1; i=$((i+1)); done
          [ -f /tmp/served ] && vmnat_result served=yes || vmnat_result served=no
          sleep 0.5
        `,
      });
      expect(await fetched).toBe(`${body}\n`);
      expect(r.results, describeRun(r)).toMatchObject({ lease: 'ok', served: 'yes', done: '0' });
    }, VM_TEST_MS);
  });
});
