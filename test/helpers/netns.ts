/**
 * The Linux kernel as a guest: a network namespace whose TAP device vmnat opens.
 *
 * Each namespace is named `vmnat-<pid>-<n>` so parallel test runs never collide, and is deleted by
 * that exact name in `destroy()` (which also removes the TAP inside it).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { run, type RunResult } from './proc.ts';

let counter = 0;

export interface Netns {
  name: string;
  path: string;
  /** A private scratch directory for scripts and lease files. */
  dir: string;
  exec(cmd: string[], opts?: { timeoutMs?: number; input?: string }): Promise<RunResult>;
  destroy(): Promise<void>;
}

/**
 * `resolver`: the namespace's programs resolve names through this DNS server (vmnat's 10.0.2.3):
 * `ip netns exec` bind-mounts /etc/netns/NAME/resolv.conf over /etc/resolv.conf, so the file is
 * written there (and removed by `destroy`), never to the host's own /etc/resolv.conf.
 */
export async function createNetns(opts: { resolver?: string } = {}): Promise<Netns> {
  const name = `vmnat-${process.pid}-${++counter}`;
  const r = await run(['ip', 'netns', 'add', name]);
  if (r.code !== 0) throw new Error(`ip netns add ${name}: ${r.stderr}`);
  await run(['ip', '-n', name, 'link', 'set', 'lo', 'up']);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${name}-`));
  const etc = opts.resolver !== undefined ? path.join('/etc/netns', name) : undefined;
  if (etc !== undefined) {
    fs.mkdirSync(etc, { recursive: true });
    fs.writeFileSync(path.join(etc, 'resolv.conf'), `nameserver ${opts.resolver}\n`);
  }
  return {
    name,
    path: `/run/netns/${name}`,
    dir,
    exec: (cmd, o) => run(['ip', 'netns', 'exec', name, ...cmd], o),
    async destroy() {
      await run(['ip', 'netns', 'del', name]);
      fs.rmSync(dir, { recursive: true, force: true });
      if (etc !== undefined) fs.rmSync(etc, { recursive: true, force: true });
    },
  };
}

/**
 * A udhcpc script that configures the interface (the namespace shares the host's file system, so it
 * must not touch /etc/resolv.conf) and prints the lease as one `LEASE` line.
 */
export const UDHCPC_SCRIPT = `#!/bin/sh
case "$1" in
  bound|renew)
    [ "$1" = bound ] && ip addr flush dev "$interface"
    ip addr replace "$ip/$mask" dev "$interface"
    [ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
    [ -n "$router" ] && ip route replace default via "$router" dev "$interface"
    echo "LEASE event=$1 ip=$ip mask=$mask router=$router dns=$dns lease=$lease domain=$domain search=$search mtu=$mtu serverid=$serverid"
    ;;
esac
exit 0
`;

/** Parses `key=value` pairs from a line (values without spaces). */
export function parseKv(line: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of line.matchAll(/(\w+)=(\S*)/g)) out[m[1]!] = m[2]!;
  return out;
}

export function writeScript(dir: string, name: string, text: string): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, text, { mode: 0o755 });
  return file;
}

/** Leases an address for tap0 in `n` with busybox udhcpc (which configures it); returns the lease. */
export async function leaseWithUdhcpc(n: Netns, iface = 'tap0', extra: string[] = []): Promise<Record<string, string>> {
  const script = writeScript(n.dir, 'udhcpc.sh', UDHCPC_SCRIPT);
  const r = await n.exec(['busybox', 'udhcpc', '-f', '-q', '-n', '-t', '5', '-T', '1', '-i', iface, '-s', script, ...extra], { timeoutMs: 20_000 });
  const line = r.stdout.split('\n').find((l) => l.startsWith('LEASE'));
  if (!line) throw new Error(`udhcpc got no lease (exit ${r.code}): ${r.stdout}\n${r.stderr}`);
  return parseKv(line);
}
