/**
 * TFTP at the gateway (`--tftp DIR`, issue 14), with busybox's tftp client in a netns guest: a
 * 10 MB file arrives whole (sha256) with the default 512-byte blocks (block numbers roll over)
 * and with a large blksize; paths that leave DIR — `..`, and a symlink pointing out — are refused
 * with a TFTP error; writes are refused; a missing file is "not found".
 */
import { afterAll, beforeAll, expect, test } from 'vitest';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { createNetns, leaseWithUdhcpc, type Netns } from '../helpers/netns.ts';
import { killAll, startVmnat, type VmnatProcess } from '../helpers/proc.ts';

let ns: Netns;
let vmnat: VmnatProcess;
let root: string;
const data = crypto.randomBytes(10 << 20);
const sha = (b: Uint8Array) => crypto.createHash('sha256').update(b).digest('hex');

beforeAll(async () => {
  ns = await createNetns();
  root = fs.mkdtempSync(path.join(ns.dir, 'tftproot-'));
  fs.mkdirSync(path.join(root, 'boot'));
  fs.writeFileSync(path.join(root, 'boot', 'big.bin'), data);
  fs.writeFileSync(path.join(ns.dir, 'secret.txt'), 'outside the root\n');
  fs.symlinkSync(path.join(ns.dir, 'secret.txt'), path.join(root, 'escape.txt'));
  vmnat = await startVmnat(['--tap', 'tap0', '--netns', ns.path, '--tftp', root, '--dns-server', '127.0.0.1:9']);
  await ns.exec(['ip', 'link', 'set', 'tap0', 'up']);
  await leaseWithUdhcpc(ns);
});
afterAll(async () => {
  await vmnat?.stop();
  await ns?.destroy();
  killAll();
});

async function get(remote: string, extra: string[] = []): Promise<{ code: number | null; stderr: string; bytes?: Buffer }> {
  const local = path.join(ns.dir, `got-${Date.now()}-${Math.random()}`);
  const r = await ns.exec(['busybox', 'tftp', '-g', '-r', remote, '-l', local, ...extra, '10.0.2.2'], { timeoutMs: 120_000 });
  const bytes = fs.existsSync(local) ? fs.readFileSync(local) : undefined;
  fs.rmSync(local, { force: true });
  return { code: r.code, stderr: r.stderr, ...(bytes ? { bytes } : {}) };
}

test('a 10 MB file with 512-byte blocks (20,481 blocks: numbers roll over) and with blksize 1428', async () => {
  const small = await get('/boot/big.bin');
  expect(small.code, small.stderr).toBe(0);
  expect(sha(small.bytes!)).toBe(sha(data));
  const big = await get('boot/big.bin', ['-b', '1428']);
  expect(big.code, big.stderr).toBe(0);
  expect(sha(big.bytes!)).toBe(sha(data));
  const stats = (await vmnat.stats()) as { tftp: { completed: number; bytesSent: number } };
  expect(stats.tftp.completed).toBe(2);
  expect(stats.tftp.bytesSent).toBe(2 * data.length);
});

test('paths out of the root, writes and missing files get TFTP errors', async () => {
  const up = await get('../secret.txt');
  expect(up.code).not.toBe(0);
  expect(up.stderr).toMatch(/access violation/);
  const link = await get('escape.txt');
  expect(link.code).not.toBe(0);
  expect(link.stderr).toMatch(/access violation/);
  const missing = await get('nope.bin');
  expect(missing.stderr).toMatch(/file not found/);
  fs.writeFileSync(path.join(ns.dir, 'up.txt'), 'hello');
  const put = await ns.exec(['busybox', 'tftp', '-p', '-l', path.join(ns.dir, 'up.txt'), '-r', 'up.txt', '10.0.2.2']);
  expect(put.code).not.toBe(0);
  expect(put.stderr).toMatch(/read-only|access violation/);
  expect(fs.existsSync(path.join(root, 'up.txt'))).toBe(false);
  const stats = (await vmnat.stats()) as { tftp: { refusedPath: number; refusedWrite: number; notFound: number }; engine: { internalErrors: number } };
  expect(stats.tftp).toMatchObject({ refusedPath: 2, refusedWrite: 1, notFound: 1 });
  expect(stats.engine.internalErrors).toBe(0);
});

test('--bootfile: the lease names the boot file and the TFTP server (BOOTP header and options 66/67); the guest boots from them', async () => {
  const n2 = await createNetns();
  const v2 = await startVmnat(['--tap', 'tap0', '--netns', n2.path, '--tftp', root, '--bootfile', 'boot/big.bin', '--dns-server', '127.0.0.1:9']);
  try {
    await n2.exec(['ip', 'link', 'set', 'tap0', 'up']);
    const script = path.join(n2.dir, 'pxe.sh');
    fs.writeFileSync(script, '#!/bin/sh\ncase "$1" in bound)\n  ip addr replace "$ip/$mask" dev "$interface"\n  echo "PXE siaddr=$siaddr boot_file=$boot_file tftp=$tftp bootfile=$bootfile";;\nesac\n', { mode: 0o755 });
    const r = await n2.exec(['busybox', 'udhcpc', '-f', '-q', '-n', '-t', '5', '-T', '1', '-i', 'tap0', '-s', script, '-O', 'tftp', '-O', 'bootfile'], { timeoutMs: 20_000 });
    const line = r.stdout.split('\n').find((l) => l.startsWith('PXE')) ?? '';
    expect(line).toBe('PXE siaddr=10.0.2.2 boot_file=boot/big.bin tftp=10.0.2.2 bootfile=boot/big.bin');
    const local = path.join(n2.dir, 'boot.bin');
    const got = await n2.exec(['busybox', 'tftp', '-g', '-r', 'boot/big.bin', '-l', local, '-b', '1428', '10.0.2.2'], { timeoutMs: 60_000 });
    expect(got.code, got.stderr).toBe(0);
    expect(sha(fs.readFileSync(local))).toBe(sha(data));
  } finally {
    await v2.stop();
    await n2.destroy();
  }
});
