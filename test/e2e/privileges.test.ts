/**
 * With --tap vmnat runs as root; once the TAP (in its namespace) is open it becomes --user, or the
 * user sudo names in SUDO_UID/SUDO_GID, for good. Checked from the outside in /proc/PID/status,
 * and the guest still gets its network. As root without either, vmnat stays root (the tests' own
 * default).
 */
import { afterAll, afterEach, describe, expect, test } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createNetns, leaseWithUdhcpc, type Netns } from '../helpers/netns.ts';
import { killAll, run, startVmnat, testEnv, VMNAT_BIN, type VmnatProcess } from '../helpers/proc.ts';

const NOBODY = 65534;
let ns: Netns | undefined;
let vmnat: VmnatProcess | undefined;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vmnat-priv-'));
afterEach(async () => {
  await vmnat?.stop();
  vmnat = undefined;
  await ns?.destroy();
  ns = undefined;
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
  killAll();
});

/** The four ids of a /proc/PID/status line (real, effective, saved, filesystem). */
function ids(pid: number, field: 'Uid' | 'Gid'): number[] {
  const m = new RegExp(`^${field}:\\s+(.*)$`, 'm').exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m![1]!.trim().split(/\s+/).map(Number);
}
function groups(pid: number): number[] {
  const m = /^Groups:\s*(.*)$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m![1]!.trim() === '' ? [] : m![1]!.trim().split(/\s+/).map(Number);
}

async function tapGuest(args: string[], env: NodeJS.ProcessEnv = testEnv()): Promise<{ pid: number; n: Netns }> {
  const n = await createNetns();
  ns = n;
  vmnat = await startVmnat(['--tap', 'tap0', '--netns', n.path, ...args], { spawn: { env } });
  return { pid: vmnat.child.pid!, n };
}

async function guestWorks(n: Netns): Promise<void> {
  const lease = await leaseWithUdhcpc(n);
  expect(lease.router).toBe('10.0.2.2');
  const ping = await n.exec(['busybox', 'ping', '-c', '2', '-W', '2', '10.0.2.2'], { timeoutMs: 15_000 });
  expect(ping.stdout).toMatch(/2 packets received/);
}

describe.sequential('dropping root after opening the TAP', () => {
  test('--user nobody: every uid and gid is nobody\'s, no supplementary root group; the guest still works', async () => {
    const { pid, n } = await tapGuest(['--user', 'nobody']);
    expect(ids(pid, 'Uid')).toEqual([NOBODY, NOBODY, NOBODY, NOBODY]);
    expect(ids(pid, 'Gid')).toEqual([NOBODY, NOBODY, NOBODY, NOBODY]);
    expect(groups(pid)).not.toContain(0);
    expect(vmnat!.stderr()).toMatch(/running as uid 65534 gid 65534 \(nobody\), from --user/);
    await guestWorks(n);
  });

  test('SUDO_UID/SUDO_GID (sudo vmnat --tap …) without --user: dropped to that user', async () => {
    const { pid, n } = await tapGuest([], { ...testEnv(), SUDO_UID: String(NOBODY), SUDO_GID: String(NOBODY), SUDO_USER: 'nobody' });
    expect(ids(pid, 'Uid')).toEqual([NOBODY, NOBODY, NOBODY, NOBODY]);
    expect(ids(pid, 'Gid')).toEqual([NOBODY, NOBODY, NOBODY, NOBODY]);
    await guestWorks(n);
  });

  test('as root without SUDO_UID or --user vmnat stays root (the default the tests run with)', async () => {
    const { pid, n } = await tapGuest([]);
    expect(ids(pid, 'Uid')).toEqual([0, 0, 0, 0]);
    await guestWorks(n);
  });

  test('the API socket and unix socket forwards are created after the drop: the user owns them', async () => {
    const dir = path.join(tmp, 'api');
    fs.chmodSync(tmp, 0o711); // nobody may pass through, not list or write
    fs.mkdirSync(dir, { mode: 0o700 });
    fs.chownSync(dir, NOBODY, NOBODY);
    const api = path.join(dir, 'api.sock');
    const docker = path.join(dir, 'docker.sock');
    await tapGuest(['--user', String(NOBODY), '--api-socket', api, '--hostfwd', `unix:${docker}-:2375`]);
    expect(fs.lstatSync(api).uid).toBe(NOBODY);
    // A unix socket forward too (a 0600 file root owned would keep the user out of it).
    expect(fs.lstatSync(docker).uid).toBe(NOBODY);
    expect(fs.lstatSync(docker).mode & 0o777).toBe(0o600);
  });

  test('--user naming nobody known is one line, exit 2', async () => {
    const r = await run([process.execPath, VMNAT_BIN, '--socket', path.join(tmp, 'x.sock'), '--user', 'no-such-user-vmnat'], { timeoutMs: 20_000 });
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toEqual(['vmnat: --user: no user named "no-such-user-vmnat" (not in /etc/passwd)']);
  });
});
