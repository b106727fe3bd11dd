/**
 * TCP over a lossy link: 5 % loss, 10 % reordering and 1 % duplication each way, injected by a
 * seeded relay between the guest's TAP and vmnat's --socket (test/helpers/faultrelay.ts). 20 MB
 * each way must still arrive with the right sha256.
 */
import { afterAll, beforeAll, expect, test } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { createNetns, leaseWithUdhcpc, type Netns } from '../helpers/netns.ts';
import { killAll, ROOT, run, startVmnat, type VmnatProcess } from '../helpers/proc.ts';
import { blob, sha256, startBlobServer, type BlobServer } from '../helpers/hostservers.ts';

const SEED = 20261123;
let ns: Netns;
let vmnat: VmnatProcess;
let relay: ChildProcess;
let http: BlobServer;
let data: Buffer;

beforeAll(async () => {
  data = blob(20 << 20, 3);
  http = await startBlobServer(data);
  ns = await createNetns();
  const sock = path.join(ns.dir, 'vmnat.sock');
  vmnat = await startVmnat(['--socket', sock]);
  expect((await run(['ip', '-n', ns.name, 'tuntap', 'add', 'dev', 'tap0', 'mode', 'tap'])).code).toBe(0);
  relay = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'test/helpers/faultrelay.ts'), 'tap0', ns.path, sock, path.join(ns.dir, 'relay.sock'), String(SEED), '0.05', '0.10', '0.01'], {
    stdio: ['ignore', 'pipe', 'inherit'],
    cwd: ROOT,
  });
  await new Promise<void>((resolve, reject) => {
    relay.stdout!.once('data', (d: Buffer) => (d.toString().startsWith('ready') ? resolve() : reject(new Error(d.toString()))));
    relay.once('exit', (c) => reject(new Error(`relay exited ${c}`)));
  });
  await leaseWithUdhcpc(ns);
}, 60_000);

afterAll(async () => {
  relay?.kill('SIGTERM');
  await vmnat?.stop();
  await ns?.destroy();
  await http?.close();
  killAll();
});

test(`20 MB down and 20 MB up through 5 % loss, 10 % reordering, 1 % duplication (seed ${SEED})`, async () => {
  const down = await ns.exec(['sh', '-c', `curl -sS --max-time 150 http://10.0.2.2:${http.port}/blob | sha256sum`], { timeoutMs: 160_000 });
  expect(down.stdout.split(' ')[0], down.stderr).toBe(sha256(data));
  const file = path.join(ns.dir, 'up.bin');
  fs.writeFileSync(file, data);
  const up = await ns.exec(['curl', '-sS', '--max-time', '150', '-T', file, `http://10.0.2.2:${http.port}/up`], { timeoutMs: 160_000 });
  expect(up.stdout.trim(), up.stderr).toBe(`${data.length} ${sha256(data)}`);
  const stats = (await vmnat.stats()) as Record<string, Record<string, number>>;
  console.log(`lossy link: tcp retransmits ${stats.tcp!.retransSegs}, fast ${stats.tcp!.fastRetransmits}, rto ${stats.tcp!.rtoTimeouts}, sack recoveries ${stats.tcp!.sackRecoveries}`);
  expect(stats.tcp!.retransSegs).toBeGreaterThan(0); // the faults were real
}, 330_000);
