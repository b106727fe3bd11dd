/**
 * The three engines under comparison, each started on a fresh network namespace whose TAP (tap0)
 * it owns, and left with the guest configured: an address, a default route via 10.0.2.2 (which
 * every engine maps to the host's 127.0.0.1) and the link MTU asked for.
 *
 * Theory of operation: each engine is configured its own idiomatic way, as its users would:
 * - vmnat: `--tap tap0 --netns PATH --mtu N`; ready when it prints its JSON line; the guest then
 *   leases with busybox udhcpc (so vmnat's DHCP server, including the MTU option, is exercised).
 * - slirp4netns: `--configure` (it sets address 10.0.2.100, route and MTU itself) and `--ready-fd`;
 *   port forwards through its JSON API socket (`add_hostfwd`).
 * - pasta: `--config-net` with vmnat's addressing (10.0.2.15/24 via 10.0.2.2) and `-f` so its PID
 *   is the engine's; ready once tap0 has its address. It only forwards ports named at start (`-t`);
 *   `-T/-U none` and `-u none` because its `auto` mode would bind whatever the guest listens on.
 * After start, `verifyGuest` checks the namespace really has the MTU, address and route, so the
 * engines are compared on the same kind of guest. A port forward that an engine rejects (vmnat
 * before it implements `--hostfwd`) is reported as `fwd: 'n/a: …'` rather than failing the engine.
 */
import net from 'node:net';
import fs from 'node:fs';
import path from 'node:path';
import { must, run, sleep, startBg, type Bg } from './sys.ts';

export const ENGINES = ['vmnat', 'slirp4netns', 'pasta'] as const;
export type EngineName = (typeof ENGINES)[number];

export const GATEWAY = '10.0.2.2';
export const TAP = 'tap0';

export interface FwdSpec {
  hostAddr: string;
  hostPort: number;
  guestPort: number;
}

/**
 * What the guest's link carries:
 * - tap: the engine's TAP with whatever offloads it negotiates (vmnat and pasta: 64 KiB GSO frames
 *   with partial checksums through the vnet header);
 * - frames: the same TAP with the guest's offloads off (`ethtool -K tap0 tso off gso off tx off sg
 *   off gro off` in the namespace) and vmnat `--no-tso`, so both directions carry MTU-sized frames
 *   with full checksums, as a VM behind a datagram or stream socket sends them;
 * - dgram (vmnat only; the others fall back to frames): vmnat `--socket S`, and bench/lib/relay.c
 *   in the namespace owns tap0 (no vnet header) and moves frames between it and S over a connected
 *   unix datagram socket — the path of qemu's dgram netdev, vfkit and krunkit, transport included;
 * - dgram-offload (vmnat only; the others keep their TAP offloads): as dgram, with the relay and
 *   vmnat in krunkit's `offloading=on` framing (relay --offload, vmnat --socket S --offload).
 */
export type LinkMode = 'tap' | 'frames' | 'dgram' | 'dgram-offload';

export interface EngineOptions {
  ns: string;
  mtu: number;
  mode?: LinkMode;
  /** Scratch directory for sockets, logs and scripts. */
  dir: string;
  vmnatBin: string;
  vmnatArgs?: string[];
  fwd?: FwdSpec;
  /** Start the engine with this RLIMIT_NOFILE (prlimit): holding thousands of flows needs fds. */
  nofile?: number;
}

/** `cmd` under prlimit when a descriptor limit is asked for (prlimit execs it: same PID). */
function withNofile(o: EngineOptions, cmd: string[]): string[] {
  return o.nofile === undefined ? cmd : ['prlimit', `--nofile=${o.nofile}:${o.nofile}`, ...cmd];
}

export interface Engine {
  name: EngineName;
  pid: number;
  /** Exact command line that started it. */
  cmd: string[];
  guestIp: string;
  /** 'ok' when the port forward in `EngineOptions.fwd` is active, else why not ("n/a: …"). */
  fwd: string;
  /** Anything odd noticed while setting the guest up. */
  notes: string[];
  /** The engine's own counters, when it has any (vmnat: SIGUSR1). */
  stats(): Promise<unknown>;
  /** Tail of what it logged. */
  log(): string;
  stop(): Promise<void>;
}

export async function startEngine(name: EngineName, o: EngineOptions): Promise<Engine> {
  switch (name) {
    case 'vmnat':
      return startVmnat(o);
    case 'slirp4netns':
    case 'pasta': {
      // They own a TAP only: in modes frames and dgram they get the guest's offloads turned off.
      const e = await (name === 'pasta' ? startPasta(o) : startSlirp(o));
      if (o.mode === 'frames' || o.mode === 'dgram') await orStopEngine(e, () => offloadsOff(o.ns));
      return e;
    }
  }
}

async function orStopEngine<T>(e: Engine, f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (err) {
    await e.stop();
    throw err;
  }
}

/** Starts `bg`'s stop on failure so a half-started engine never outlives the attempt. */
async function orStop<T>(bg: Bg, f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (err) {
    await bg.stop('SIGKILL');
    throw err;
  }
}

function tail(s: string, n = 1500): string {
  return s.length > n ? '…' + s.slice(-n) : s;
}

// ---- vmnat ----------------------------------------------------------------------------------

const UDHCPC_SCRIPT = `#!/bin/sh
case "$1" in
  bound|renew)
    [ "$1" = bound ] && ip addr flush dev "$interface"
    ip addr replace "$ip/$mask" dev "$interface"
    [ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
    [ -n "$router" ] && ip route replace default via "$router" dev "$interface"
    echo "LEASE ip=$ip mask=$mask router=$router mtu=$mtu"
    ;;
esac
exit 0
`;

/** Builds bench/lib/relay.c once per run (cc -O2) and returns the binary's path. */
let relayBin: string | undefined;
async function relay(dir: string): Promise<string> {
  if (relayBin !== undefined) return relayBin;
  const out = path.join(dir, 'relay');
  await must(['cc', '-O2', '-o', out, path.join(path.dirname(new URL(import.meta.url).pathname), 'relay.c')], 60_000);
  relayBin = out;
  return out;
}

/** The guest's offloads off on tap0 (modes frames and dgram). */
export async function offloadsOff(ns: string): Promise<void> {
  await must(['ip', 'netns', 'exec', ns, 'ethtool', '-K', TAP, 'tso', 'off', 'gso', 'off', 'tx', 'off', 'sg', 'off', 'gro', 'off']);
}

async function startVmnat(o: EngineOptions): Promise<Engine> {
  const mode = o.mode ?? 'tap';
  const vmnatSock = path.join(o.dir, 'vmnat.sock');
  const dgram = mode === 'dgram' || mode === 'dgram-offload';
  const linkArgs = dgram ? ['--socket', vmnatSock, ...(mode === 'dgram-offload' ? ['--offload'] : [])] : ['--tap', TAP, '--netns', `/run/netns/${o.ns}`];
  // VMNAT_NODE_ARGS: node flags for vmnat (e.g. --cpu-prof, which NODE_OPTIONS refuses).
  const nodeArgs = (process.env['VMNAT_NODE_ARGS'] ?? '').split(' ').filter(Boolean);
  const base = [process.execPath, ...nodeArgs, o.vmnatBin, ...linkArgs, '--mtu', String(o.mtu), ...(mode === 'tap' || mode === 'dgram-offload' ? [] : ['--no-tso']), '--dns-server', '127.0.0.1', ...(o.vmnatArgs ?? [])];
  const fwdArgs = o.fwd ? ['--hostfwd', `tcp:${o.fwd.hostAddr}:${o.fwd.hostPort}-:${o.fwd.guestPort}`] : [];
  let fwd = o.fwd ? 'ok' : 'n/a: not asked';
  let cmd = [...base, ...fwdArgs];
  let bg = startBg(withNofile(o, cmd));
  try {
    await bg.waitFor(/^\{.*\}\s*$/m, 20_000);
  } catch (err) {
    // vmnat without port forwarding refuses the flag up front: run the rest without it.
    if (o.fwd && /--hostfwd/.test(bg.stderr())) {
      fwd = `n/a: vmnat rejects --hostfwd (${bg.stderr().trim().split('\n')[0]})`;
      cmd = base;
      bg = startBg(withNofile(o, cmd));
      await orStop(bg, () => bg.waitFor(/^\{.*\}\s*$/m, 20_000));
    } else {
      await bg.stop('SIGKILL');
      throw err;
    }
  }
  const notes: string[] = [];
  let relayBg: Bg | undefined;
  if (dgram) {
    const bin = await orStop(bg, () => relay(o.dir));
    relayBg = startBg(['ip', 'netns', 'exec', o.ns, bin, ...(mode === 'dgram-offload' ? ['--offload'] : []), TAP, path.join(o.dir, 'relay.sock'), vmnatSock]);
    await orStop(bg, () => relayBg!.waitFor(/^ready$/m, 10_000));
  }
  const guestIp = await orStop(bg, async () => {
    await must(['ip', '-n', o.ns, 'link', 'set', TAP, 'up']);
    if (mode === 'frames' || mode === 'dgram') await offloadsOff(o.ns);
    const script = path.join(o.dir, 'udhcpc.sh');
    fs.writeFileSync(script, UDHCPC_SCRIPT, { mode: 0o755 });
    const r = await run(['ip', 'netns', 'exec', o.ns, 'busybox', 'udhcpc', '-f', '-q', '-n', '-t', '5', '-T', '1', '-i', TAP, '-s', script], {
      timeoutMs: 20_000,
    });
    const lease = /LEASE ip=(\S+) .*mtu=(\S*)/.exec(r.stdout);
    if (!lease) throw new Error(`vmnat: udhcpc got no lease (exit ${r.code}): ${r.stdout}${r.stderr}`);
    // No MTU option means the default 1500; verifyGuest checks the interface either way.
    if ((lease[2] || '1500') !== String(o.mtu)) notes.push(`DHCP offered mtu=${lease[2] || '(none)'}, expected ${o.mtu}`);
    return lease[1]!;
  });
  return {
    name: 'vmnat',
    pid: bg.pid,
    cmd,
    guestIp,
    fwd,
    notes,
    log: () => tail(bg.stderr()),
    async stats() {
      const before = bg.stderr().length;
      try {
        process.kill(bg.pid, 'SIGUSR1');
      } catch {
        return undefined;
      }
      for (let i = 0; i < 40; i++) {
        const m = /vmnat: stats: (.*)\n/.exec(bg.stderr().slice(before));
        if (m) {
          try {
            return JSON.parse(m[1]!) as unknown;
          } catch {
            return m[1];
          }
        }
        await sleep(50);
      }
      return undefined;
    },
    async stop() {
      await relayBg?.stop('SIGTERM', 2000);
      await bg.stop('SIGTERM', 5000);
    },
  };
}

// ---- slirp4netns ----------------------------------------------------------------------------

/** One request on slirp4netns's API socket (it answers one JSON object and closes). */
function slirpApi(sock: string, req: unknown): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = net.connect(sock);
    let out = '';
    const timer = setTimeout(() => {
      c.destroy();
      reject(new Error(`slirp4netns API: no answer from ${sock}`));
    }, 5000);
    c.on('connect', () => c.write(JSON.stringify(req)));
    c.on('data', (d: Buffer) => {
      out += d.toString();
      // It may or may not close after answering: a complete object is enough.
      try {
        JSON.parse(out);
        clearTimeout(timer);
        c.destroy();
        resolve(out);
      } catch {
        /* partial */
      }
    });
    c.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    c.on('close', () => {
      clearTimeout(timer);
      resolve(out);
    });
  });
}

async function startSlirp(o: EngineOptions): Promise<Engine> {
  const sock = path.join(o.dir, 'slirp.sock');
  const cmd = [
    'slirp4netns', '--configure', `--mtu=${o.mtu}`, '--disable-dns', '--api-socket', sock,
    '--ready-fd=3', '--netns-type=path', `/run/netns/${o.ns}`, TAP,
  ];
  const bg = startBg(withNofile(o, cmd), { extraFds: 1 });
  await orStop(
    bg,
    () =>
      new Promise<void>((resolve, reject) => {
        const fd3 = bg.child.stdio[3] as NodeJS.ReadableStream | null;
        const timer = setTimeout(() => reject(new Error(`slirp4netns not ready after 15 s: ${bg.stderr()}`)), 15_000);
        fd3?.once('data', () => {
          clearTimeout(timer);
          resolve();
        });
        void bg.exited.then(({ code, signal }) => {
          clearTimeout(timer);
          reject(new Error(`slirp4netns exited (${code ?? signal}): ${bg.stderr()}`));
        });
      }),
  );
  let fwd = 'n/a: not asked';
  if (o.fwd) {
    const req = {
      execute: 'add_hostfwd',
      arguments: { proto: 'tcp', host_addr: o.fwd.hostAddr, host_port: o.fwd.hostPort, guest_port: o.fwd.guestPort },
    };
    try {
      const ans = await slirpApi(sock, req);
      fwd = /"return"/.test(ans) ? 'ok' : `n/a: add_hostfwd answered ${ans.trim()}`;
    } catch (err) {
      fwd = `n/a: add_hostfwd: ${(err as Error).message}`;
    }
  }
  return {
    name: 'slirp4netns',
    pid: bg.pid,
    cmd,
    guestIp: '10.0.2.100',
    fwd,
    notes: [],
    log: () => tail(bg.stderr()),
    stats: () => Promise.resolve(undefined),
    async stop() {
      await bg.stop('SIGTERM', 5000);
    },
  };
}

// ---- pasta ----------------------------------------------------------------------------------

async function startPasta(o: EngineOptions): Promise<Engine> {
  const logFile = path.join(o.dir, 'pasta.log');
  // pasta copies addresses from the host interface with the default route; without one it needs
  // -i naming an interface that has an IPv4 address.
  const iface: string[] = [];
  const def = await run(['ip', '-4', 'route', 'show', 'default']);
  if (def.stdout.trim() === '') {
    const addrs = await run(['ip', '-4', '-o', 'addr', 'show', 'scope', 'global']);
    const first = /^\d+:\s+(\S+)/m.exec(addrs.stdout);
    if (first) iface.push('-i', first[1]!);
  }
  const cmd = [
    'pasta', '-f', '-q', '--runas', '0', '-l', logFile, ...iface, '--config-net', '-I', TAP,
    '-a', '10.0.2.15', '-n', '24', '-g', GATEWAY, '-m', String(o.mtu),
    '-t', o.fwd ? `${o.fwd.hostAddr}/${o.fwd.hostPort}:${o.fwd.guestPort}` : 'none',
    '-u', 'none', '-T', 'none', '-U', 'none', '--netns', `/run/netns/${o.ns}`,
  ];
  const bg = startBg(withNofile(o, cmd));
  const log = (): string => {
    let l = '';
    try {
      l = fs.readFileSync(logFile, 'utf8');
    } catch {
      /* no log yet */
    }
    return tail(l + bg.stderr().replace(/^Failed to send \d+ bytes to syslog\n/gm, ''));
  };
  await orStop(bg, async () => {
    for (let i = 0; i < 100; i++) {
      if (!bg.running()) throw new Error(`pasta exited: ${log()}`);
      const r = await run(['ip', '-n', o.ns, '-4', '-o', 'addr', 'show', 'dev', TAP]);
      if (r.stdout.includes('10.0.2.15/')) {
        const rt = await run(['ip', '-n', o.ns, '-4', 'route', 'show', 'default']);
        if (rt.stdout.includes(GATEWAY)) return;
      }
      await sleep(100);
    }
    throw new Error(`pasta: tap0 not configured after 10 s: ${log()}`);
  });
  return {
    name: 'pasta',
    pid: bg.pid,
    cmd,
    guestIp: '10.0.2.15',
    fwd: o.fwd ? 'ok' : 'n/a: not asked',
    notes: [],
    log,
    stats: () => Promise.resolve(undefined),
    async stop() {
      await bg.stop('SIGTERM', 5000);
    },
  };
}

// ---- common ---------------------------------------------------------------------------------

/** Checks the guest's tap0 has the address, MTU and default route the comparison assumes. */
export async function verifyGuest(ns: string, e: Engine, mtu: number): Promise<string[]> {
  const problems: string[] = [];
  const link = await run(['ip', '-n', ns, '-o', 'link', 'show', 'dev', TAP]);
  const m = /mtu (\d+)/.exec(link.stdout);
  if (!m || Number(m[1]) !== mtu) {
    problems.push(`tap0 mtu is ${m?.[1] ?? '?'}, expected ${mtu}: set it`);
    await run(['ip', '-n', ns, 'link', 'set', 'dev', TAP, 'mtu', String(mtu)]);
  }
  const addr = await run(['ip', '-n', ns, '-4', '-o', 'addr', 'show', 'dev', TAP]);
  if (!addr.stdout.includes(`${e.guestIp}/`)) problems.push(`tap0 lacks ${e.guestIp}: ${addr.stdout.trim()}`);
  const rt = await run(['ip', '-n', ns, '-4', 'route', 'show', 'default']);
  if (!rt.stdout.includes(`via ${GATEWAY}`)) problems.push(`no default route via ${GATEWAY}: ${rt.stdout.trim()}`);
  return problems;
}
