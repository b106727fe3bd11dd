/**
 * A network of guests, measured: does a vmnat with idle guests attached serve one busy guest as
 * fast as a vmnat with that guest alone (socket_vmnet's flooding costs one VM's iperf3 ~75 % with
 * four idle VMs), and how fast do two guests talk to each other through vmnat's switch?
 *
 * Theory of operation: every guest is a network namespace behind its own TAP (`--tap tap0 --netns
 * NS`, repeated), leased by busybox udhcpc. Three measurements, each the median of ROUNDS iperf3
 * runs of SECS seconds, alternating configurations round by round so drift hits both alike:
 *   alone   one guest, iperf3 to a server on the host's loopback through 10.0.2.2, up and down
 *   idle4   the same guest with four more guests attached and leased (idle: the kernel's own
 *           chatter only), up and down
 *   g2g     guest A → guest B (iperf3 server inside B's namespace) through the switch, both ways
 * plus vmnat's CPU seconds per GB for each. The ratio idle4/alone is what the target (idle guests
 * cost < 5 %) is about. Run alone on the machine: `node --import tsx bench/multi-guest.ts`.
 * Options: --secs N (default 5), --rounds N (default 3), --mtu N (default 1500).
 * Everything it creates is named with its PID and removed by name (bench/lib/sys.ts).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { addNetns, cleanup, cpuSeconds, delNetns, installCleanupHandlers, median, must, run, startBg, type Bg } from './lib/sys.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const VMNAT = path.join(ROOT, 'bin/vmnat.mjs');
const args = process.argv.slice(2);
const opt = (name: string, dflt: number): number => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const SECS = opt('secs', 5);
const ROUNDS = opt('rounds', 3);
const MTU = opt('mtu', 1500);

const UDHCPC = `#!/bin/sh
case "$1" in bound|renew)
  ip addr replace "$ip/$mask" dev "$interface"; [ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
  ip route replace default via "$router" dev "$interface"; echo "LEASE $ip";;
esac
`;

interface Net {
  vmnat: Bg;
  guests: { ns: string; ip: string }[];
  stop(): Promise<void>;
}

let counter = 0;
async function network(count: number, dir: string): Promise<Net> {
  const names: string[] = [];
  for (let i = 0; i < count; i++) {
    const ns = `vmnat-bmg-${process.pid}-${++counter}`;
    await addNetns(ns);
    await must(['ip', '-n', ns, 'link', 'set', 'lo', 'up']);
    names.push(ns);
  }
  const vmnat = startBg([process.execPath, VMNAT, ...names.flatMap((ns) => ['--tap', 'tap0', '--netns', `/run/netns/${ns}`]), '--mtu', String(MTU), '--dns-server', '127.0.0.1:9']);
  await vmnat.waitFor(/\{.*\}/, 15_000);
  const script = path.join(dir, 'udhcpc.sh');
  fs.writeFileSync(script, UDHCPC, { mode: 0o755 });
  const guests: Net['guests'] = [];
  for (const ns of names) {
    await must(['ip', '-n', ns, 'link', 'set', 'tap0', 'up']);
    const out = await must(['ip', 'netns', 'exec', ns, 'busybox', 'udhcpc', '-f', '-q', '-n', '-t', '5', '-T', '1', '-i', 'tap0', '-s', script], 20_000);
    const ip = /LEASE (\S+)/.exec(out)?.[1];
    if (ip === undefined) throw new Error(`${ns}: no lease: ${out}`);
    guests.push({ ns, ip });
  }
  return {
    vmnat,
    guests,
    async stop() {
      await vmnat.stop();
      for (const ns of names) await delNetns(ns);
    },
  };
}

let nextPort = 20_000 + (process.pid % 20_000);
/** iperf3 from `clientNs` to `serverAddr` (server on the host, or in `serverNs`); Gbit/s and vmnat CPU s/GB. */
async function iperf(vmnatPid: number, clientNs: string, serverAddr: string, serverNs: string | undefined, reverse: boolean): Promise<{ gbps: number; cpuPerGB: number }> {
  // A bench, not a test: a fresh port per run from a per-PID range (iperf3 cannot take port 0).
  const port = nextPort++;
  const server = startBg([...(serverNs ? ['ip', 'netns', 'exec', serverNs] : []), 'iperf3', '-s', '-1', '--forceflush', '-p', String(port), ...(serverNs ? [] : ['-B', '127.0.0.1'])]);
  await server.waitFor(/Server listening/, 10_000);
  const cpu0 = cpuSeconds(vmnatPid);
  const r = await run(['ip', 'netns', 'exec', clientNs, 'iperf3', '-c', serverAddr, '-p', String(port), '-t', String(SECS), '-J', ...(reverse ? ['-R'] : [])], { timeoutMs: (SECS + 20) * 1000 });
  const cpu = cpuSeconds(vmnatPid) - cpu0;
  await server.stop('SIGKILL');
  const j = JSON.parse(r.stdout) as { end?: { sum_received?: { bits_per_second?: number; bytes?: number } }; error?: string };
  const rx = j.end?.sum_received;
  if (!rx?.bits_per_second || !rx.bytes) throw new Error(`iperf3: ${j.error ?? r.stderr}`);
  return { gbps: rx.bits_per_second / 1e9, cpuPerGB: cpu / (rx.bytes / 1e9) };
}

async function main(): Promise<void> {
  installCleanupHandlers();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `vmnat-bench-mg-${process.pid}-`));
  const results: Record<string, { gbps: number[]; cpu: number[] }> = {};
  const add = (k: string, v: { gbps: number; cpuPerGB: number }) => {
    results[k] ??= { gbps: [], cpu: [] };
    results[k]!.gbps.push(v.gbps);
    results[k]!.cpu.push(v.cpuPerGB);
  };
  try {
    for (let round = 0; round < ROUNDS; round++) {
      for (const idle of round % 2 === 0 ? [0, 4] : [4, 0]) {
        const n = await network(1 + idle, dir);
        try {
          const g = n.guests[0]!;
          add(`${idle === 0 ? 'alone' : 'idle4'} up`, await iperf(n.vmnat.pid, g.ns, '10.0.2.2', undefined, false));
          add(`${idle === 0 ? 'alone' : 'idle4'} down`, await iperf(n.vmnat.pid, g.ns, '10.0.2.2', undefined, true));
        } finally {
          await n.stop();
        }
      }
      const n = await network(2, dir);
      try {
        const [a, b] = n.guests as [{ ns: string; ip: string }, { ns: string; ip: string }];
        add('g2g a→b', await iperf(n.vmnat.pid, a.ns, b.ip, b.ns, false));
        add('g2g b→a', await iperf(n.vmnat.pid, a.ns, b.ip, b.ns, true));
      } finally {
        await n.stop();
      }
      process.stderr.write(`round ${round + 1}/${ROUNDS} done\n`);
    }
  } finally {
    cleanup();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const lines = [`# multi-guest bench (${new Date().toISOString().slice(0, 10)}, MTU ${MTU}, ${ROUNDS} × ${SECS} s, medians)`, '', '| run | Gbit/s | vmnat CPU s/GB |', '|---|---|---|'];
  for (const [k, v] of Object.entries(results)) lines.push(`| ${k} | ${median(v.gbps).toFixed(2)} | ${median(v.cpu).toFixed(2)} |`);
  const ratio = (dir: string) => median(results[`idle4 ${dir}`]!.gbps) / median(results[`alone ${dir}`]!.gbps);
  lines.push('', `idle4/alone: up ${ratio('up').toFixed(3)}, down ${ratio('down').toFixed(3)} (target ≥ 0.95)`);
  process.stdout.write(lines.join('\n') + '\n');
}

void main().catch((err: unknown) => {
  cleanup();
  process.stderr.write(`bench failed: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
