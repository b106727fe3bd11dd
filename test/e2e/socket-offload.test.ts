/**
 * `--socket PATH --offload`: krunkit's `offloading=on` framing, end to end. A relay
 * (bench/lib/relay.c --offload, what libkrun's unixgram backend does) stands in for the VM: it owns
 * the netns guest's TAP with a vnet header and TSO/checksum offloads, so the guest's kernel sends
 * up to 64 KiB TCP frames with partial, unmarked checksums, and it writes vmnat's frames back with
 * an all-zero header (the guest then verifies every checksum vmnat sums). (Without --offload,
 * vmnat would check the guest's partial checksums and drop those frames: hence the flag.)
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createNetns, leaseWithUdhcpc, type Netns } from '../helpers/netns.ts';
import { ROOT, killAll, run, startVmnat, type VmnatProcess } from '../helpers/proc.ts';
import { blob, sha256, startBlobServer, type BlobServer } from '../helpers/hostservers.ts';

const MB = 1 << 20;
let ns: Netns;
let vmnat: VmnatProcess;
let relay: ChildProcess;
let http: BlobServer;
let data: Buffer;

type Stats = { links: { kind: string; rxFrames: number; rxBytes: number; txFrames: number; txBytes: number }[]; tcpNat: Record<string, number> };

beforeAll(async () => {
  data = blob(40 * MB, 11);
  http = await startBlobServer(data);
  ns = await createNetns();
  const bin = path.join(ns.dir, 'relay');
  const cc = spawnSync('cc', ['-O2', '-o', bin, path.join(ROOT, 'bench/lib/relay.c')], { encoding: 'utf8' });
  if (cc.status !== 0) throw new Error(`cc relay.c: ${cc.stderr}`);
  const sock = path.join(ns.dir, 'vmnat.sock');
  vmnat = await startVmnat(['--socket', sock, '--offload', '--dns-server', '127.0.0.1']);
  relay = spawn('ip', ['netns', 'exec', ns.name, bin, '--offload', 'tap0', path.join(ns.dir, 'relay.sock'), sock], { stdio: ['ignore', 'pipe', 'pipe'] });
  await new Promise<void>((resolve, reject) => {
    let out = '';
    relay.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('ready')) resolve();
    });
    relay.once('exit', (code) => reject(new Error(`relay exited ${code}`)));
  });
  await ns.exec(['ip', 'link', 'set', 'tap0', 'up']);
  await leaseWithUdhcpc(ns);
}, 60_000);

afterAll(async () => {
  relay?.kill('SIGTERM');
  await vmnat?.stop();
  await ns?.destroy();
  await http?.close();
  killAll();
});

describe('--socket --offload (krunkit offloading=on framing)', () => {
  test('the ready line says so', () => {
    expect(JSON.stringify(vmnat.ready)).toContain('"offload":"on"');
  });

  test('40 MB down and up through 10.0.2.2 arrive intact, carried in frames far above the MTU', async () => {
    const before = (await vmnat.stats()) as unknown as Stats;
    const out = path.join(ns.dir, 'down.bin');
    const r = await ns.exec(['curl', '-sS', '--max-time', '60', '-o', out, `http://10.0.2.2:${http.port}/blob`], { timeoutMs: 70_000 });
    expect(r.stderr).toBe('');
    expect(sha256(fs.readFileSync(out))).toBe(sha256(data));
    const up = await ns.exec(['curl', '-sS', '--max-time', '60', '-T', out, `http://10.0.2.2:${http.port}/up`], { timeoutMs: 70_000 });
    expect(up.stdout.trim()).toBe(`${data.length} ${sha256(data)}`);
    const after = (await vmnat.stats()) as unknown as Stats;
    const link = (s: Stats) => s.links.find((l) => l.kind === 'socket')!;
    const txAvg = (link(after).txBytes - link(before).txBytes) / (link(after).txFrames - link(before).txFrames);
    const rxAvg = (link(after).rxBytes - link(before).rxBytes) / (link(after).rxFrames - link(before).rxFrames);
    // 1,514-byte frames would average below 1,514 with the ACKs; offloaded ones are 64 KiB-sized.
    expect(txAvg).toBeGreaterThan(8000);
    expect(rxAvg).toBeGreaterThan(8000);
  }, 150_000);

  test('--offload must follow a --socket or --fd', async () => {
    const r = await run(['node', path.join(ROOT, 'bin/vmnat.mjs'), '--offload', '--socket', path.join(ns.dir, 'x.sock')]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toMatch(/--offload: only applies to --socket or --fd/);
  });
});
