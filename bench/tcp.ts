/**
 * TCP through vmnat side by side with slirp4netns (libslirp) and pasta (passt): a script, not a test.
 *
 *   node --import tsx bench/tcp.ts [--quick] [--mtu 1500,65520] [--runs 3] [--secs 10]
 *        [--rr-secs 5] [--engines vmnat,slirp4netns,pasta] [--tests up,down,fwd,rr,rr-fwd,crr]
 *        [--fwd-loopback] [--mode tap|frames|dgram|dgram-offload] [--out results.json] [--vmnat-bin PATH] [--vmnat-args "FLAGS"]
 *
 * Theory of operation: the guest is the kernel's own stack in a network namespace behind a TAP
 * (tap0) that the engine owns; "the host" is servers on 127.0.0.1, reached from the guest through
 * the gateway 10.0.2.2, which all three engines map to host loopback. For every run, MTU and
 * engine (runs outermost, engine order rotated each run, so load drift on a shared machine does
 * not favour one engine) the script makes a fresh namespace `vmnat-b<PID>-<engine>-<MTU>`, starts
 * the engine (see lib/engines.ts), runs each test once and deletes the namespace by that exact
 * name — also on Ctrl-C and on errors (lib/sys.ts). Each engine thus starts cold every run, like
 * a VM's first transfer; a 10 s iperf3 run amortizes vmnat's JIT warm-up. Tests:
 *   up    iperf3 guest→host: client in the namespace, server on 127.0.0.1 (Gbit/s)
 *   down  the same with -R, host→guest (Gbit/s)
 *   up6, down6  the same over IPv6 (vmnat only; the others are skipped): the guest's SLAAC address
 *         to [fd00:10:0:2::2], which vmnat maps to the host's ::1 (iperf3 server on ::1); beside
 *         up/down in the same run, so the table's rows compare the families (Gbit/s)
 *   fwd   host→guest through a port forward: iperf3 server in the namespace, client on the host
 *         connecting to the forwarded host port (Gbit/s). The client runs in a second namespace
 *         joined to the host by a veth pair (198.19.x.0/30, the benchmarking range) because pasta
 *         splices loopback clients socket-to-socket, a path no VM ever gets; --fwd-loopback
 *         measures from 127.0.0.1 instead.
 *   rr    1-byte request/response over one TCP connection with the engine, the server and the
 *         client all pinned to CPU 0 (unpinned, this VM's ~100 µs vCPU wake-up dominates); round
 *         trips per second
 *   rr-fwd  the same into the guest through a port forward (an interactive session into a VM:
 *         ssh): the server in the namespace, the client where the fwd test's client runs
 *   hold  (not in the default set) --hold N idle connections from the guest to a host listener,
 *         held open: the engine's RSS before (MB) and per connection (kB); engines run under
 *         prlimit --nofile=(the hard limit) and vmnat with --max-flows N+256
 *   crr   connect()+close() to a host loopback listener through 10.0.2.2; connections per second
 *         (unpinned; the listener counts what it accepted, as a check)
 * --mode (lib/engines.ts LinkMode): tap (default: the engines' TAP with its offloads), frames (the
 * guest's offloads off and vmnat --no-tso: MTU-sized frames with full checksums both ways, as a VM
 * sends them) or dgram (vmnat behind --socket with a relay between it and the guest's TAP: the
 * datagram transport's own cost included; the other engines run in frames mode) or dgram-offload
 * (the same in krunkit's offloading framing: vmnat --socket --offload; the others on their TAP).
 * For the iperf3 tests the engine's CPU time (utime+stime of its process, all threads, from
 * /proc/PID/stat) is read before and after, giving CPU seconds per GB moved and CPU share.
 * Every step is bounded by a timeout; a step that fails is recorded as 'fail' with its reason and
 * the run goes on. The table of medians (with vmnat/slirp4netns and vmnat/pasta ratios) goes to
 * stdout, progress to stderr, everything measured (each run, command lines, versions, load) to
 * --out as JSON. Check `uptime` first: on a shared 2-vCPU machine the numbers vary ±15–30 %.
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ENGINES, GATEWAY, startEngine, verifyGuest, type Engine, type EngineName, type FwdSpec, type LinkMode } from './lib/engines.ts';
import {
  addNetns, affinity, cleanup, cpuSeconds, delLink, delNetns, installCleanupHandlers, median, must,
  registerLink, registerPath, run, setAffinity, startBg, type Bg,
} from './lib/sys.ts';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const PROBE = path.join(HERE, 'lib/probe.py');
const GUEST_IPERF_PORT = 5201;
/** vmnat's IPv6 gateway (its default prefix): the host's ::1. */
const GATEWAY6 = 'fd00:10:0:2::2';

// ---- arguments ------------------------------------------------------------------------------

const TESTS = ['up', 'down', 'up6', 'down6', 'fwd', 'rr', 'rr-fwd', 'crr', 'hold'] as const;
type TestName = (typeof TESTS)[number];

const argv = process.argv.slice(2);
function flag(name: string): boolean {
  return argv.includes(`--${name}`);
}
function opt(name: string): string | undefined {
  const i = argv.indexOf(`--${name}`);
  if (i >= 0) return argv[i + 1];
  const eq = argv.find((a) => a.startsWith(`--${name}=`));
  return eq?.slice(name.length + 3);
}
function list<T extends string>(name: string, all: readonly T[], fallback: readonly T[]): T[] {
  const v = opt(name);
  if (v === undefined) return [...fallback];
  const xs = v.split(',').map((s) => s.trim()).filter(Boolean);
  for (const x of xs) if (!(all as readonly string[]).includes(x)) usage(`--${name}: unknown '${x}' (one of ${all.join(',')})`);
  return xs as T[];
}
function num(name: string, fallback: number): number {
  const v = opt(name);
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) usage(`--${name}: '${v}' is not a positive number`);
  return n;
}
function usage(msg: string): never {
  process.stderr.write(`bench/tcp.ts: ${msg}\n`);
  process.exit(2);
}
if (flag('help') || flag('h')) {
  const head = fs.readFileSync(fileURLToPath(import.meta.url), 'utf8').split('*/')[0] ?? '';
  process.stdout.write(head.replace(/^\/\*\*?|^ \* ?/gm, '') + '\n');
  process.exit(0);
}

const quick = flag('quick');
const cfg = {
  quick,
  mtus: (opt('mtu') ?? '1500,65520').split(',').map((s) => {
    const n = Number(s);
    if (!Number.isInteger(n) || n < 576 || n > 65520) usage(`--mtu: '${s}' must be an integer in 576..65520`);
    return n;
  }),
  runs: Math.round(num('runs', quick ? 1 : 3)),
  secs: num('secs', quick ? 3 : 10),
  rrSecs: num('rr-secs', quick ? 2 : 5),
  engines: list<EngineName>('engines', ENGINES, ENGINES),
  tests: list<TestName>('tests', TESTS, TESTS.filter((t) => t !== 'hold')),
  /** Connections the hold test opens and keeps. */
  hold: Math.round(num('hold', quick ? 1000 : 10_000)),
  fwdLoopback: flag('fwd-loopback'),
  /** tap | frames | dgram: see lib/engines.ts LinkMode. */
  mode: ((): LinkMode => {
    const m = opt('mode') ?? 'tap';
    if (m !== 'tap' && m !== 'frames' && m !== 'dgram' && m !== 'dgram-offload') usage(`--mode: '${m}' is not one of tap|frames|dgram|dgram-offload`);
    return m;
  })(),
  out: opt('out'),
  vmnatBin: path.resolve(opt('vmnat-bin') ?? path.join(HERE, '../bin/vmnat.mjs')),
  /** Extra vmnat flags, space-separated (e.g. "--log-level debug"). */
  vmnatArgs: (opt('vmnat-args') ?? '').split(' ').filter(Boolean),
};

// ---- results --------------------------------------------------------------------------------

type Metric = 'gbps' | 'per_sec' | 'cpu_s_per_gb' | 'cpu_us_per_frame' | 'cpu_us_per_op' | 'cpu_pct' | 'retransmits' | 'rss_mb' | 'kb_per_flow';

interface RunRecord {
  ok: boolean;
  /** Why it failed (ok=false) or was skipped. */
  error?: string;
  skipped?: boolean;
  values: Partial<Record<Metric, number>>;
  /** Extra facts of the run: bytes, retransmits, accepted connections, … */
  detail: Record<string, unknown>;
}

interface Cell {
  engine: EngineName;
  mtu: number;
  test: TestName;
  runs: RunRecord[];
}

interface Session {
  engine: EngineName;
  mtu: number;
  run: number;
  ns: string;
  cmd?: string[];
  guestIp?: string;
  fwd?: string;
  notes: string[];
  error?: string;
  engineLog?: string;
  engineStats?: unknown;
}

const cells: Cell[] = [];
const sessions: Session[] = [];

function cell(engine: EngineName, mtu: number, test: TestName): Cell {
  let c = cells.find((x) => x.engine === engine && x.mtu === mtu && x.test === test);
  if (!c) {
    c = { engine, mtu, test, runs: [] };
    cells.push(c);
  }
  return c;
}

function progress(msg: string): void {
  process.stderr.write(`bench: ${msg}\n`);
}

// ---- host side ------------------------------------------------------------------------------

/** A TCP port free on `addr` right now (the kernel's pick; closed again before use). */
function freePort(addr = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, addr, () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

let python = 'python3';

async function startProbeServer(mode: 'rr-server' | 'crr-server' | 'hold-server', pin: boolean): Promise<{ bg: Bg; port: number }> {
  const bg = startBg([...(pin ? ['taskset', '-c', '0'] : []), python, PROBE, mode]);
  try {
    const m = await bg.waitFor(/^(\d+)$/m, 10_000);
    return { bg, port: Number(m[1]) };
  } catch (err) {
    await bg.stop('SIGKILL');
    throw err;
  }
}

/** Starts a one-shot iperf3 server (optionally inside namespace `ns`) and waits until it listens. */
async function startIperfServer(port: number, bind: string | undefined, ns?: string): Promise<Bg> {
  const cmd = [
    ...(ns ? ['ip', 'netns', 'exec', ns] : []),
    'iperf3', '-s', '-1', '--forceflush', '-p', String(port), ...(bind ? ['-B', bind] : []),
  ];
  const bg = startBg(cmd);
  try {
    await bg.waitFor(/Server listening/, 10_000);
  } catch (err) {
    await bg.stop('SIGKILL');
    throw err;
  }
  return bg;
}

interface IperfJson {
  error?: string;
  end?: {
    sum_sent?: { bytes?: number; bits_per_second?: number; retransmits?: number };
    sum_received?: { bytes?: number; bits_per_second?: number; seconds?: number };
  };
}

/** The port-forward client side: where it runs and which host address it connects to. */
interface FwdClient {
  hostAddr: string;
  ns?: string;
}

// ---- tests ----------------------------------------------------------------------------------

function fail(error: string, detail: Record<string, unknown> = {}): RunRecord {
  return { ok: false, error: error.trim().slice(0, 600), values: {}, detail };
}

/** One iperf3 measurement; the engine's CPU time is read around the client's whole run. */
async function iperf(e: Engine, ns: string, mtu: number, test: 'up' | 'down' | 'up6' | 'down6' | 'fwd', fwdClient: FwdClient, fwdPort: number): Promise<RunRecord> {
  let server: Bg;
  let client: string[];
  if (test === 'up6' || test === 'down6') {
    if (e.name !== 'vmnat') return { ok: false, skipped: true, error: 'IPv6 rows: vmnat only', values: {}, detail: {} };
    // SLAAC from vmnat's router advertisement: wait until the address is no longer tentative.
    for (let i = 0; i < 100; i++) {
      const a = await run(['ip', '-n', ns, '-6', 'addr', 'show', 'dev', 'tap0', 'scope', 'global']);
      if (a.stdout.includes('inet6') && !a.stdout.includes('tentative')) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const port = await freePort('::1');
    server = await startIperfServer(port, '::1');
    client = ['ip', 'netns', 'exec', ns, 'iperf3', '-6', '-c', GATEWAY6, '-p', String(port), ...(test === 'down6' ? ['-R'] : [])];
  } else if (test === 'fwd') {
    if (e.fwd !== 'ok') return { ok: false, skipped: true, error: e.fwd, values: {}, detail: {} };
    server = await startIperfServer(GUEST_IPERF_PORT, undefined, ns);
    client = [...(fwdClient.ns ? ['ip', 'netns', 'exec', fwdClient.ns] : []), 'iperf3', '-c', fwdClient.hostAddr, '-p', String(fwdPort)];
  } else {
    const port = await freePort();
    server = await startIperfServer(port, '127.0.0.1');
    client = ['ip', 'netns', 'exec', ns, 'iperf3', '-c', GATEWAY, '-p', String(port), ...(test === 'down' ? ['-R'] : [])];
  }
  client.push('-t', String(cfg.secs), '-J', '--connect-timeout', '3000');
  try {
    const cpu0 = cpuSeconds(e.pid);
    const t0 = performance.now();
    const r = await run(client, { timeoutMs: cfg.secs * 1000 + 20_000 });
    const wall = (performance.now() - t0) / 1000;
    const cpu = cpuSeconds(e.pid) - cpu0;
    let j: IperfJson = {};
    try {
      j = JSON.parse(r.stdout) as IperfJson;
    } catch {
      /* not JSON: reported below */
    }
    if (r.timedOut) return fail(`iperf3 client timed out after ${cfg.secs + 20} s`, { cmd: client });
    if (j.error !== undefined || r.code !== 0) return fail(`iperf3: ${j.error ?? `exit ${r.code}: ${r.stderr || r.stdout}`}`, { cmd: client });
    const rx = j.end?.sum_received;
    if (!rx?.bits_per_second || !rx.bytes) return fail('iperf3: no receiver summary', { cmd: client });
    const gb = rx.bytes / 1e9;
    // CPU share over iperf3's own transfer time (the wall clock adds process start-up and exit).
    const secs = rx.seconds && rx.seconds > 0 ? rx.seconds : wall;
    return {
      ok: true,
      values: {
        gbps: rx.bits_per_second / 1e9,
        cpu_s_per_gb: cpu / gb,
        // Per MTU-sized data frame (payload MTU − 52: IP, TCP and the timestamp option), ACKs
        // included in the CPU: comparable across modes even where the link carries 64 KiB frames.
        cpu_us_per_frame: (cpu * 1e6) / (rx.bytes / (mtu - 52)),
        cpu_pct: (100 * cpu) / secs,
        // The sending kernel's count (iperf3 relays the server's with -R): segments the engine
        // lost or delayed past the RTO.
        ...(j.end?.sum_sent?.retransmits !== undefined ? { retransmits: j.end.sum_sent.retransmits } : {}),
      },
      detail: { bytes: rx.bytes, engine_cpu_s: cpu, wall_s: wall, cmd: client },
    };
  } finally {
    await server.stop('SIGKILL');
  }
}

/**
 * Pinned 1-byte ping-pong: engine (all threads), server and client on CPU 0. A fresh server per
 * measurement, so a connection an engine wedged cannot block the next run.
 */
async function rr(e: Engine, ns: string): Promise<RunRecord> {
  const { bg, port } = await startProbeServer('rr-server', true);
  try {
    return await pinnedRoundTrips(e, ['ip', 'netns', 'exec', ns], GATEWAY, port);
  } finally {
    await bg.stop('SIGKILL');
  }
}

/**
 * The ping-pong client (behind `prefix`: a namespace, or none) against HOST:PORT for cfg.rrSecs,
 * with the engine pinned to CPU 0 for the run: round trips/s and engine CPU per round trip.
 */
async function pinnedRoundTrips(e: Engine, prefix: string[], host: string, port: number): Promise<RunRecord> {
  const before = await affinity(e.pid);
  await setAffinity(e.pid, '0');
  try {
    const cmd = [...prefix, 'taskset', '-c', '0', python, PROBE, 'rr-client', host, String(port), String(cfg.rrSecs)];
    const cpu0 = cpuSeconds(e.pid);
    const r = await run(cmd, { timeoutMs: cfg.rrSecs * 1000 + 15_000 });
    return withCpuPerOp(probeResult(r, cmd, 'round trips'), cpuSeconds(e.pid) - cpu0, 'round_trips');
  } finally {
    await setAffinity(e.pid, before).catch(() => undefined);
  }
}

/**
 * rr through a port forward: the ping-pong server in the guest on the forwarded port, the client
 * on the host side (the fwd test's client namespace, or loopback), all pinned to CPU 0.
 */
async function rrFwd(e: Engine, ns: string, fwdClient: FwdClient, fwdPort: number): Promise<RunRecord> {
  if (e.fwd !== 'ok') return { ok: false, skipped: true, error: e.fwd, values: {}, detail: {} };
  const bg = startBg(['ip', 'netns', 'exec', ns, 'taskset', '-c', '0', python, PROBE, 'rr-server', '0.0.0.0', String(GUEST_IPERF_PORT)]);
  try {
    await bg.waitFor(/^(\d+)$/m, 10_000);
    return await pinnedRoundTrips(e, fwdClient.ns ? ['ip', 'netns', 'exec', fwdClient.ns] : [], fwdClient.hostAddr, fwdPort);
  } finally {
    await bg.stop('SIGKILL');
  }
}

/** This process's hard RLIMIT_NOFILE (what an engine may be given without privileges). */
function hardNofile(): number {
  const m = /^Max open files\s+\S+\s+(\d+)/m.exec(fs.readFileSync('/proc/self/limits', 'utf8'));
  return m ? Math.min(Number(m[1]), 65536) : 4096;
}

/** The engine's resident set, kB, from /proc/PID/status (all threads). */
function rssKb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

/**
 * Memory per held connection: the engine's RSS before, then with `cfg.hold` idle connections from
 * the guest to a host listener through 10.0.2.2 (held open by a probe in the namespace).
 */
async function hold(e: Engine, ns: string): Promise<RunRecord> {
  const { bg: server, port } = await startProbeServer('hold-server', false);
  const rss0 = rssKb(e.pid);
  const client = startBg(['ip', 'netns', 'exec', ns, python, PROBE, 'hold-client', GATEWAY, String(port), String(cfg.hold)]);
  try {
    const m = await client.waitFor(/^\{.*\}$/m, 180_000);
    const j = JSON.parse(m[0]) as { held?: number; error?: string };
    if (j.held === undefined) return fail(`hold-client: ${j.error ?? m[0]}`);
    await new Promise((r) => setTimeout(r, 1500));
    const rss1 = rssKb(e.pid);
    return { ok: true, values: { rss_mb: rss0 / 1024, kb_per_flow: (rss1 - rss0) / j.held }, detail: { held: j.held, rss_before_kb: rss0, rss_after_kb: rss1 } };
  } finally {
    await client.stop('SIGKILL');
    await server.stop('SIGKILL');
  }
}

async function crr(e: Engine, ns: string): Promise<RunRecord> {
  const { bg, port } = await startProbeServer('crr-server', false);
  let accepted: number | undefined;
  try {
    const cmd = ['ip', 'netns', 'exec', ns, python, PROBE, 'crr-client', GATEWAY, String(port), String(cfg.rrSecs)];
    const cpu0 = cpuSeconds(e.pid);
    const r = await run(cmd, { timeoutMs: cfg.rrSecs * 1000 + 15_000 });
    const cpu = cpuSeconds(e.pid) - cpu0;
    await bg.stop('SIGTERM', 3000);
    const m = /"accepted": (\d+)/.exec(bg.stdout());
    accepted = m ? Number(m[1]) : undefined;
    const rec = withCpuPerOp(probeResult(r, cmd, 'connections'), cpu, 'connections');
    rec.detail.accepted = accepted;
    return rec;
  } finally {
    await bg.stop('SIGKILL');
  }
}

/** The engine's CPU time per round trip or per connection (all its threads, over the client's run). */
function withCpuPerOp(rec: RunRecord, cpuS: number, countKey: 'round_trips' | 'connections'): RunRecord {
  const n = rec.detail[countKey];
  if (rec.ok && typeof n === 'number' && n > 0) {
    rec.values.cpu_us_per_op = (cpuS * 1e6) / n;
    rec.detail.engine_cpu_s = cpuS;
  }
  return rec;
}

function probeResult(r: Awaited<ReturnType<typeof run>>, cmd: string[], what: string): RunRecord {
  let j: Record<string, number | string> = {};
  try {
    j = JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as Record<string, number | string>;
  } catch {
    /* reported below */
  }
  if (r.timedOut) return fail(`probe timed out`, { cmd });
  if (typeof j.error === 'string') return fail(j.error, { cmd });
  if (r.code !== 0 || typeof j.per_sec !== 'number') return fail(`probe exit ${r.code}: ${r.stderr || r.stdout}`, { cmd });
  return { ok: true, values: { per_sec: j.per_sec }, detail: { ...j, what, cmd } };
}

// ---- one engine, one MTU --------------------------------------------------------------------

async function session(engine: EngineName, mtu: number, run1: number, dir: string, ctx: { fwdClient: FwdClient }): Promise<void> {
  const ns = `vmnat-b${process.pid}-${engine === 'slirp4netns' ? 'slirp' : engine}-${mtu}`;
  const s: Session = { engine, mtu, run: run1, ns, notes: [] };
  sessions.push(s);
  const tag = `${engine} mtu ${mtu} run ${run1}/${cfg.runs}`;
  const sdir = path.join(dir, `${engine}-${mtu}-${run1}`);
  fs.mkdirSync(sdir, { recursive: true });
  const pending = new Set<TestName>(cfg.tests);
  const record = (t: TestName, rec: RunRecord): void => {
    pending.delete(t);
    cell(engine, mtu, t).runs.push(rec);
    progress(`${tag} ${t}: ${describe(t, rec)}`);
  };
  let e: Engine | undefined;
  try {
    await addNetns(ns);
    // Connect+close at thousands per second would exhaust the default 28k ephemeral ports within
    // one TIME_WAIT period: widen the range and allow reuse, in the guest namespace only.
    await must(['ip', 'netns', 'exec', ns, 'sysctl', '-qw', 'net.ipv4.ip_local_port_range=10000 65000', 'net.ipv4.tcp_tw_reuse=1']);
    let fwd: FwdSpec | undefined;
    if (cfg.tests.includes('fwd') || cfg.tests.includes('rr-fwd')) fwd = { hostAddr: ctx.fwdClient.hostAddr, hostPort: await freePort(ctx.fwdClient.hostAddr), guestPort: GUEST_IPERF_PORT };
    e = await startEngine(engine, {
      ns, mtu, mode: cfg.mode, dir: sdir, vmnatBin: cfg.vmnatBin, fwd,
      // Holding N flows: fds for them, and vmnat's flow budget (default: from the fd limit) above N.
      vmnatArgs: cfg.tests.includes('hold') ? [...cfg.vmnatArgs, '--max-flows', String(Math.min(16384, cfg.hold + 256))] : cfg.vmnatArgs,
      ...(cfg.tests.includes('hold') ? { nofile: hardNofile() } : {}),
    }).catch((err: unknown) => {
      throw new Error(`engine start: ${(err as Error).message}`);
    });
    s.cmd = e.cmd;
    s.guestIp = e.guestIp;
    s.fwd = e.fwd;
    progress(`${tag}: ${ns}: pid ${e.pid}: ${e.cmd.join(' ')}`);
    s.notes.push(...e.notes, ...(await verifyGuest(ns, e, mtu)));
    for (const n of s.notes) progress(`${tag}: note: ${n}`);
    for (const t of cfg.tests) {
      let rec: RunRecord;
      try {
        if (!isAlive(e.pid)) rec = fail(`engine is gone: ${e.log()}`);
        else if (t === 'rr') rec = await rr(e, ns);
        else if (t === 'rr-fwd') rec = await rrFwd(e, ns, ctx.fwdClient, fwd?.hostPort ?? 0);
        else if (t === 'crr') rec = await crr(e, ns);
        else if (t === 'hold') rec = await hold(e, ns);
        else rec = await iperf(e, ns, mtu, t, ctx.fwdClient, fwd?.hostPort ?? 0);
      } catch (err) {
        rec = fail((err as Error).message);
      }
      record(t, rec);
    }
    s.engineStats = await e.stats();
  } catch (err) {
    s.error = (err as Error).message;
    progress(`${tag}: ${s.error}`);
    for (const t of [...pending]) record(t, fail(s.error));
  } finally {
    if (e) {
      if (cells.some((c) => c.engine === engine && c.mtu === mtu && c.runs.some((x) => !x.ok && !x.skipped))) s.engineLog = e.log();
      await e.stop().catch(() => undefined);
    }
    await delNetns(ns);
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function describe(t: TestName, r: RunRecord): string {
  if (r.skipped) return r.error ?? 'n/a';
  if (!r.ok) return `FAIL ${r.error ?? ''}`;
  const v = r.values;
  if (t === 'hold') return `RSS ${v.rss_mb?.toFixed(1)} MB before, ${v.kb_per_flow?.toFixed(2)} kB per held connection (${String(r.detail.held)})`;
  if (t === 'rr' || t === 'rr-fwd' || t === 'crr') return `${fmtRate(v.per_sec)}/s${r.detail.accepted !== undefined ? ` (server accepted ${String(r.detail.accepted)})` : ''}`;
  return `${v.gbps?.toFixed(2)} Gbit/s, engine ${v.cpu_s_per_gb?.toFixed(2)} CPU s/GB (${v.cpu_pct?.toFixed(0)} % CPU), ${v.retransmits ?? '?'} retransmits`;
}

// ---- report ---------------------------------------------------------------------------------

function fmtRate(x: number | undefined): string {
  if (x === undefined || !Number.isFinite(x)) return '?';
  return x >= 1000 ? `${(x / 1000).toFixed(1)}k` : x.toFixed(0);
}

interface Summary {
  median?: number;
  ok: number;
  n: number;
  skipped?: string;
  error?: string;
}

function summarize(engine: EngineName, mtu: number, test: TestName, metric: Metric): Summary {
  const c = cells.find((x) => x.engine === engine && x.mtu === mtu && x.test === test);
  if (!c) return { ok: 0, n: 0 };
  const skipped = c.runs.find((r) => r.skipped);
  if (skipped) return { ok: 0, n: c.runs.length, skipped: skipped.error ?? 'n/a' };
  const vals = c.runs.filter((r) => r.ok).map((r) => r.values[metric]).filter((v): v is number => v !== undefined && Number.isFinite(v));
  const firstErr = c.runs.find((r) => !r.ok)?.error;
  return { median: vals.length ? median(vals) : undefined, ok: vals.length, n: c.runs.length, error: firstErr };
}

function fmt(s: Summary, metric: Metric): string {
  if (s.n === 0) return '—';
  if (s.skipped) return 'n/a';
  if (s.median === undefined) return 'fail';
  const v = metric === 'per_sec' ? fmtRate(s.median) : metric === 'cpu_us_per_frame' || metric === 'kb_per_flow' || metric === 'rss_mb' ? s.median.toFixed(metric === 'rss_mb' ? 1 : 2) : metric === 'cpu_pct' || metric === 'retransmits' || metric === 'cpu_us_per_op' ? s.median.toFixed(0) : s.median.toFixed(2);
  return s.ok < s.n ? `${v} (${s.ok}/${s.n} ok)` : v;
}

function ratio(a: Summary, b: Summary): string {
  if (a.median === undefined || b.median === undefined || b.median === 0) return '—';
  return `${(a.median / b.median).toFixed(2)}×`;
}

const LABELS: Record<TestName, string> = {
  up: 'TCP guest→host (iperf3), Gbit/s',
  down: 'TCP host→guest (iperf3 -R), Gbit/s',
  up6: 'TCP guest→host over IPv6 ([::2] → ::1), Gbit/s',
  down6: 'TCP host→guest over IPv6 (-R), Gbit/s',
  fwd: 'TCP host→guest via port forward, Gbit/s',
  rr: '1-byte round trips/s, pinned to CPU 0',
  'rr-fwd': '1-byte round trips/s into the guest via port forward, pinned to CPU 0',
  crr: 'TCP connect+close per second',
  hold: 'engine RSS before holding connections, MB',
};
const CPU_LABELS: Partial<Record<TestName, string>> = {
  up: 'engine CPU s per GB, guest→host',
  down: 'engine CPU s per GB, host→guest',
  up6: 'engine CPU s per GB, guest→host, IPv6',
  down6: 'engine CPU s per GB, host→guest, IPv6',
  fwd: 'engine CPU s per GB, port forward',
};
const FRAME_LABELS: Partial<Record<TestName, string>> = {
  up: 'engine CPU µs per MTU frame, guest→host',
  down: 'engine CPU µs per MTU frame, host→guest',
  fwd: 'engine CPU µs per MTU frame, port forward',
};
const CPU_OP_LABELS: Partial<Record<TestName, string>> = {
  rr: 'engine CPU µs per round trip',
  'rr-fwd': 'engine CPU µs per round trip via port forward',
  crr: 'engine CPU µs per connection',
};
const RETRANS_LABELS: Partial<Record<TestName, string>> = {
  up: 'sender retransmits per run, guest→host',
  down: 'sender retransmits per run, host→guest',
  up6: 'sender retransmits per run, guest→host, IPv6',
  down6: 'sender retransmits per run, host→guest, IPv6',
  fwd: 'sender retransmits per run, port forward',
};

interface Row {
  test: TestName;
  metric: Metric;
  label: string;
  mtu: number;
  cells: Partial<Record<EngineName, Summary>>;
}

function rows(): Row[] {
  const out: Row[] = [];
  const add = (test: TestName, metric: Metric, label: string): void => {
    for (const mtu of cfg.mtus) {
      const r: Row = { test, metric, label, mtu, cells: {} };
      for (const e of cfg.engines) r.cells[e] = summarize(e, mtu, test, metric);
      out.push(r);
    }
  };
  for (const t of cfg.tests) add(t, t === 'rr' || t === 'rr-fwd' || t === 'crr' ? 'per_sec' : t === 'hold' ? 'rss_mb' : 'gbps', LABELS[t]);
  if (cfg.tests.includes('hold')) add('hold', 'kb_per_flow', `engine kB per held connection (${cfg.hold} held)`);
  for (const t of cfg.tests) {
    const l = CPU_LABELS[t];
    if (l) add(t, 'cpu_s_per_gb', l);
  }
  for (const t of cfg.tests) {
    const l = FRAME_LABELS[t];
    if (l) add(t, 'cpu_us_per_frame', l);
  }
  for (const t of cfg.tests) {
    const l = CPU_OP_LABELS[t];
    if (l) add(t, 'cpu_us_per_op', l);
  }
  for (const t of cfg.tests) {
    const l = RETRANS_LABELS[t];
    if (l) add(t, 'retransmits', l);
  }
  return out;
}

function table(rs: Row[]): string {
  const ratios: [EngineName, EngineName][] = [];
  if (cfg.engines.includes('vmnat')) for (const o of ['slirp4netns', 'pasta'] as const) if (cfg.engines.includes(o)) ratios.push(['vmnat', o]);
  const head = ['test', 'MTU', ...cfg.engines, ...ratios.map(([a, b]) => `${a}/${b}`)];
  const lines = [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`];
  for (const r of rs) {
    const cols = [r.label, String(r.mtu), ...cfg.engines.map((e) => fmt(r.cells[e]!, r.metric)), ...ratios.map(([a, b]) => ratio(r.cells[a]!, r.cells[b]!))];
    lines.push(`| ${cols.join(' | ')} |`);
  }
  return lines.join('\n');
}

/** One line per engine, MTU and reason (the same engine-start failure hits every test). */
function failures(): string[] {
  const groups = new Map<string, string[]>();
  for (const c of cells) {
    const bad = c.runs.filter((r) => !r.ok);
    if (bad.length === 0) continue;
    const first = bad[0]!;
    const why = `${first.skipped ? '' : `${bad.length}/${c.runs.length} failed: `}${(first.error ?? '').split('\n')[0]}`;
    const key = `${c.engine} mtu ${c.mtu}\0${why}`;
    groups.set(key, [...(groups.get(key) ?? []), c.test]);
  }
  return [...groups].map(([key, tests]) => {
    const [who, why] = key.split('\0');
    return `${who} ${tests.join(',')}: ${why}`;
  });
}

// ---- main -----------------------------------------------------------------------------------

async function versions(): Promise<Record<string, string>> {
  const v: Record<string, string> = { node: process.version, kernel: os.release() };
  const first = async (cmd: string[], re = /.+/): Promise<string> => {
    const r = await run(cmd, { timeoutMs: 5000 });
    return (re.exec(r.stdout + r.stderr)?.[0] ?? '?').trim();
  };
  v.iperf3 = await first(['iperf3', '--version'], /iperf [\d.]+/);
  const slirp = (await run(['slirp4netns', '--version'], { timeoutMs: 5000 })).stdout;
  v.slirp4netns = `${/slirp4netns version (\S+)/.exec(slirp)?.[1] ?? '?'} (libslirp ${/libslirp: (\S+)/.exec(slirp)?.[1] ?? '?'})`;
  v.pasta = await first(['dpkg-query', '-W', '-f', '${Version}', 'passt']);
  v.python = await first([python, '--version']);
  v.vmnat = await first(['git', '-C', path.join(HERE, '..'), 'rev-parse', '--short', 'HEAD']);
  return v;
}

async function main(): Promise<void> {
  installCleanupHandlers();
  const started = new Date().toISOString();
  const loadBefore = os.loadavg();
  progress(`load average ${loadBefore.map((x) => x.toFixed(2)).join(' ')} on ${os.cpus().length} CPUs`);
  for (const tool of ['ip', 'iperf3', 'taskset', 'busybox', 'python3']) {
    const r = await run(['sh', '-c', `command -v ${tool}`]);
    if (r.code !== 0) usage(`${tool} is not installed`);
  }
  python = (await must(['python3', '-c', 'import sys; print(sys.executable)'])).trim();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `vmnat-b${process.pid}-`));
  registerPath(dir);

  const ctx = { fwdClient: { hostAddr: '127.0.0.1' } as FwdClient };

  // The port-forward client's own namespace, joined to the host by a veth pair.
  const cliNs = `vmnat-b${process.pid}-cli`;
  const vethH = `vb${process.pid}h`;
  let fwdNet: string | undefined;
  if (cfg.tests.includes('fwd') && !cfg.fwdLoopback) {
    const used = await run(['ip', '-4', '-o', 'addr', 'show']);
    let k = process.pid & 255;
    while (used.stdout.includes(`198.19.${k}.`)) k = (k + 1) & 255;
    fwdNet = `198.19.${k}.0/30`;
    await addNetns(cliNs);
    registerLink(vethH);
    await must(['ip', 'link', 'add', vethH, 'mtu', '65520', 'type', 'veth', 'peer', 'name', 'eth0', 'mtu', '65520', 'netns', cliNs]);
    await must(['ip', 'addr', 'add', `198.19.${k}.1/30`, 'dev', vethH]);
    await must(['ip', 'link', 'set', vethH, 'up']);
    await must(['ip', '-n', cliNs, 'addr', 'add', `198.19.${k}.2/30`, 'dev', 'eth0']);
    await must(['ip', '-n', cliNs, 'link', 'set', 'eth0', 'up']);
    ctx.fwdClient = { hostAddr: `198.19.${k}.1`, ns: cliNs };
  }

  const ver = await versions();
  progress(`versions: ${JSON.stringify(ver)}`);
  try {
    // Runs outermost and the engine order rotated each run, so a drift in the machine's load
    // (other work on this 2-vCPU box) spreads over all engines instead of biasing one of them.
    for (let r = 0; r < cfg.runs; r++) {
      for (const mtu of cfg.mtus) {
        const order = cfg.engines.map((_, i) => cfg.engines[(i + r) % cfg.engines.length]!);
        for (const engine of order) await session(engine, mtu, r + 1, dir, ctx);
      }
    }
  } finally {
    if (fwdNet) {
      await delNetns(cliNs);
      await delLink(vethH);
    }
  }

  const rs = rows();
  const loadAfter = os.loadavg();
  const out: string[] = [];
  out.push(
    `vmnat TCP bench ${started}: ${cfg.runs} run(s) × ${cfg.secs} s iperf3, ${cfg.rrSecs} s rr/crr; ` +
      `load ${loadBefore[0]!.toFixed(2)} → ${loadAfter[0]!.toFixed(2)} on ${os.cpus().length} CPUs; medians; link mode ${cfg.mode}` +
      (cfg.mode === 'dgram' ? ' (vmnat over --socket through a relay; slirp4netns and pasta take no datagram socket: their figures are frames mode)' : '') +
      (cfg.tests.includes('fwd') ? `; port-forward client: ${cfg.fwdLoopback ? '127.0.0.1' : `veth netns (${ctx.fwdClient.hostAddr})`}` : ''),
  );
  out.push('');
  out.push(table(rs));
  out.push('');
  out.push('Ratios are vmnat ÷ other: above 1 is better for vmnat in throughput and rates, worse in CPU s/GB and retransmits.');
  // IPv6 beside IPv4, vmnat's own rows: the same transfer, each family's median.
  for (const [v6, v4] of [['up6', 'up'], ['down6', 'down']] as const) {
    if (!cfg.tests.includes(v6) || !cfg.tests.includes(v4) || !cfg.engines.includes('vmnat')) continue;
    for (const mtu of cfg.mtus) {
      const a = summarize('vmnat', mtu, v6, 'gbps');
      const b = summarize('vmnat', mtu, v4, 'gbps');
      out.push(`vmnat IPv6/IPv4 ${v4} at MTU ${mtu}: ${ratio(a, b)}`);
    }
  }
  const fl = failures();
  if (fl.length) {
    out.push('', 'Failures and skips (first reason each):');
    for (const f of fl) out.push(`- ${f}`);
  }
  process.stdout.write(out.join('\n') + '\n');

  if (cfg.out) {
    const json = {
      started,
      finished: new Date().toISOString(),
      config: cfg,
      host: { cpus: os.cpus().length, loadavg_before: loadBefore, loadavg_after: loadAfter, hostname: os.hostname() },
      versions: ver,
      fwd_client: ctx.fwdClient,
      sessions,
      summary: rs.map((r) => ({
        test: r.test,
        metric: r.metric,
        label: r.label,
        mtu: r.mtu,
        ...Object.fromEntries(Object.entries(r.cells).map(([e, s]) => [e, { median: s.median ?? null, ok: s.ok, n: s.n, skipped: s.skipped ?? null, error: s.error ?? null }])),
      })),
      runs: cells,
    };
    fs.mkdirSync(path.dirname(path.resolve(cfg.out)), { recursive: true });
    fs.writeFileSync(cfg.out, JSON.stringify(json, null, 2) + '\n');
    progress(`wrote ${cfg.out}`);
  }
}

main()
  .then(() => {
    cleanup();
    process.exit(0);
  })
  .catch((err: unknown) => {
    process.stderr.write(`bench: ${(err as Error).stack ?? String(err)}\n`);
    cleanup();
    process.exit(1);
  });
