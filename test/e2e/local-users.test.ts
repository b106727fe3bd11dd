/**
 * Other local users cannot take over vmnat's sockets or files: the default runtime directory must
 * be ours (0700, not a symlink), the parent of a named socket must not be changeable by others,
 * socket files are born private whatever the caller's umask, and --pcap neither follows a symlink
 * nor truncates someone else's file. Each refusal is one line naming the path, exit 2.
 * (Tests run as root: "another user" is `nobody`, set with chown.)
 */
import { afterAll, describe, expect, test } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { killAll, run, startVmnat, testEnv, VMNAT_BIN } from '../helpers/proc.ts';

const NOBODY = 65534;
afterAll(() => killAll());
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vmnat-lu-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
let n = 0;
const fresh = (): string => {
  const d = path.join(tmp, `t${++n}`);
  fs.mkdirSync(d, { mode: 0o700 });
  return d;
};

/** An environment where the default runtime directory is decided by TMPDIR (no XDG_RUNTIME_DIR). */
function envWithTmp(dir: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...testEnv(), TMPDIR: dir };
  delete env['XDG_RUNTIME_DIR'];
  return env;
}

const uid = process.getuid!();
const vmnat = (args: string[], env: NodeJS.ProcessEnv = testEnv()) => run([process.execPath, VMNAT_BIN, ...args], { timeoutMs: 20_000, env });

function expectOneLine(r: { code: number | null; stdout: string; stderr: string }, want: RegExp): void {
  expect(r.code, r.stderr).toBe(2);
  expect(r.stdout).toBe('');
  const lines = r.stderr.trimEnd().split('\n');
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(want);
}

describe('the default runtime directory', () => {
  test('is $XDG_RUNTIME_DIR/vmnat when set, created 0700', async () => {
    const xdg = fresh();
    const v = await startVmnat([], { spawn: { env: { ...testEnv(), XDG_RUNTIME_DIR: xdg } } });
    try {
      expect(v.ready['path']).toBe(path.join(xdg, 'vmnat', 'net.sock'));
      expect(fs.lstatSync(path.join(xdg, 'vmnat')).mode & 0o7777).toBe(0o700);
    } finally {
      expect(await v.stop()).toBe(0);
    }
  });

  test('without XDG_RUNTIME_DIR it is $TMPDIR/vmnat-$UID', async () => {
    const t = fresh();
    const v = await startVmnat([], { spawn: { env: envWithTmp(t) } });
    try {
      expect(v.ready['path']).toBe(path.join(t, `vmnat-${uid}`, 'net.sock'));
    } finally {
      await v.stop();
    }
  });

  test('one another user pre-created with mode 0777 is refused (exit 2, one line naming it)', async () => {
    const t = fresh();
    const dir = path.join(t, `vmnat-${uid}`);
    fs.mkdirSync(dir);
    fs.chmodSync(dir, 0o777);
    fs.chownSync(dir, NOBODY, NOBODY);
    const r = await vmnat([], envWithTmp(t));
    expectOneLine(r, new RegExp(`^vmnat: runtime directory ${dir} belongs to uid ${NOBODY}, not to us`));
    expect(fs.readdirSync(dir)).toEqual([]);
  });

  test('ours but mode 0755 is refused, and not chmod()ed', async () => {
    const t = fresh();
    const dir = path.join(t, `vmnat-${uid}`);
    fs.mkdirSync(dir);
    fs.chmodSync(dir, 0o755);
    const r = await vmnat([], envWithTmp(t));
    expectOneLine(r, new RegExp(`^vmnat: runtime directory ${dir} has mode 0755, not 0700`));
    expect(fs.statSync(dir).mode & 0o7777).toBe(0o755);
  });

  test('a symlink (even to a private directory of ours) is refused', async () => {
    const t = fresh();
    const target = fresh();
    fs.symlinkSync(target, path.join(t, `vmnat-${uid}`));
    const r = await vmnat([], envWithTmp(t));
    expectOneLine(r, /^vmnat: runtime directory .* is a symlink/);
    expect(fs.readdirSync(target)).toEqual([]);
  });
});

describe('named socket paths', () => {
  test('--socket in a directory another user owns and can write is refused', async () => {
    const dir = path.join(fresh(), 'shared');
    fs.mkdirSync(dir);
    fs.chmodSync(dir, 0o777);
    fs.chownSync(dir, NOBODY, NOBODY);
    const r = await vmnat(['--socket', path.join(dir, 'net.sock')]);
    expectOneLine(r, new RegExp(`^vmnat: --socket: directory ${dir} belongs to uid ${NOBODY}`));
  });

  test('--stream in a world-writable directory without the sticky bit is refused', async () => {
    const dir = path.join(fresh(), 'open');
    fs.mkdirSync(dir);
    fs.chmodSync(dir, 0o777);
    const r = await vmnat(['--stream', path.join(dir, 'net.sock')]);
    expectOneLine(r, new RegExp(`^vmnat: --stream: directory ${dir} has mode 0777`));
  });

  test('--api-socket in a directory another user owns is refused', async () => {
    const dir = path.join(fresh(), 'api');
    fs.mkdirSync(dir, { mode: 0o700 });
    fs.chownSync(dir, NOBODY, NOBODY);
    const r = await vmnat(['--socket', path.join(fresh(), 'net.sock'), '--api-socket', path.join(dir, 'api.sock')]);
    expectOneLine(r, new RegExp(`^vmnat: --api-socket: directory ${dir} belongs to uid ${NOBODY}`));
  });

  test('a sticky world-writable directory (like /tmp) is fine; a missing one is created 0700', async () => {
    const sticky = path.join(fresh(), 'sticky');
    fs.mkdirSync(sticky);
    fs.chmodSync(sticky, 0o1777);
    const v = await startVmnat(['--socket', path.join(sticky, 'sub', 'net.sock')]);
    try {
      expect(fs.statSync(path.join(sticky, 'sub')).mode & 0o7777).toBe(0o700);
    } finally {
      await v.stop();
    }
  });

  test('socket files are born private even under umask 000', async () => {
    const dir = fresh();
    const sock = path.join(dir, 'net.sock');
    const api = path.join(dir, 'api.sock');
    const v = await startVmnat(['--socket', sock, '--api-socket', api], { prefix: ['sh', '-c', 'umask 000; exec "$0" "$@"'] });
    try {
      expect(fs.lstatSync(sock).mode & 0o077).toBe(0);
      expect(fs.lstatSync(api).mode & 0o077).toBe(0);
    } finally {
      await v.stop();
    }
  });
});

describe('--pcap', () => {
  test('a symlink is refused and its target untouched', async () => {
    const dir = fresh();
    const victim = path.join(dir, 'victim');
    fs.writeFileSync(victim, 'precious');
    const link = path.join(dir, 'cap.pcap');
    fs.symlinkSync(victim, link);
    const r = await vmnat(['--socket', path.join(dir, 'net.sock'), '--pcap', link]);
    expectOneLine(r, /^vmnat: --pcap: .*cap\.pcap is a symlink/);
    expect(fs.readFileSync(victim, 'utf8')).toBe('precious');
  });

  test('another user\'s file is refused and not truncated', async () => {
    const dir = fresh();
    const theirs = path.join(dir, 'theirs.pcap');
    fs.writeFileSync(theirs, 'their capture');
    fs.chownSync(theirs, NOBODY, NOBODY);
    const r = await vmnat(['--socket', path.join(dir, 'net.sock'), '--pcap', theirs]);
    expectOneLine(r, new RegExp(`^vmnat: --pcap: ${theirs} belongs to uid ${NOBODY}`));
    expect(fs.readFileSync(theirs, 'utf8')).toBe('their capture');
  });

  test('our own old capture is replaced', async () => {
    const dir = fresh();
    const mine = path.join(dir, 'mine.pcap');
    fs.writeFileSync(mine, 'x'.repeat(1000));
    const v = await startVmnat(['--socket', path.join(dir, 'net.sock'), '--pcap', mine]);
    await v.stop();
    expect(fs.readFileSync(mine).readUInt32LE(0)).toBe(0xa1b2c3d4);
    expect(fs.statSync(mine).size).toBeLessThan(1000);
  });
});
