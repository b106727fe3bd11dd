/**
 * Frames per second the native links sustain (a script, not a test).
 *
 *   node --import tsx bench/link-fps.ts [--seconds 2] [--runs 3] [--sizes 1514,65536] [--builds default,portable]
 *
 * Theory of operation: for each case a peer blasts fixed-size frames as fast as the kernel takes
 * them (batched sendmmsg through the addon, backing off 1 ms when its queue is full) and the other
 * side counts what arrives over a measured window after a warm-up. "rx" cases receive through the
 * Link classes (FdLink on a socketpair, SocketLink on a bound path with connect-back), i.e. what
 * the engine sees; the blaster is a second process, as a VM would be. "tx" measures Link.send +
 * flush into a counting child. "1proc" puts both ends in this process (one event loop: the cost
 * of sending and receiving together). Medians over --runs. Check `uptime` first: on a 2-vCPU
 * machine shared with other work the numbers mean little.
 *
 * Builds: each case runs against each addon build in --builds (default: the normal one, and the
 * portable one when native/portable/build exists — `VMNAT_PORTABLE=1 npm run build:native`), one
 * child process of this script per build and run with VMNAT_NATIVE set, the builds alternating
 * run by run, so that the table shows the portable path (the macOS code: a recvmsg/sendmsg loop)
 * beside the Linux one (recvmmsg/sendmmsg) measured in the same minutes under the same load. The
 * column "vs default" is the portable rate over the normal one.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadNative, nativeAddonPath, nativeVariant } from '../src/link/native.ts';
import { FdLink } from '../src/link/fd.ts';
import { SocketLink } from '../src/link/socket.ts';
import type { Link } from '../src/link/types.ts';

const native = loadNative();
const addonPath = nativeAddonPath();

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? (process.argv[i + 1] ?? fallback) : fallback;
}
const seconds = Number(arg('seconds', '2'));
const runs = Number(arg('runs', '3'));
const sizes = arg('sizes', '1514,65536').split(',').map(Number);
const WARMUP_MS = 500;

/** Child program: `blast SIZE (fd|PATH)` sends forever; `count SIZE SECONDS` reports a rate. */
const childScript = `
const a = require(${JSON.stringify(addonPath)});
const [mode, sizeS, where, secS] = process.argv.slice(1);
const size = Number(sizeS);
if (mode === 'blast') {
  let fd = 3;
  if (where !== 'fd') {
    const mine = where + '.blaster';
    try { require('fs').unlinkSync(mine); } catch {}
    fd = a.unixDgramBind(mine);
    a.unixDgramConnect(fd, where);
    process.on('exit', () => { try { require('fs').unlinkSync(mine); } catch {} });
  } else a.setNonblocking(3);
  const port = new a.FramePort(fd, { kind: 'dgram', onFrames() {} });
  const f = new Uint8Array(size); f[12] = 0x08;
  const batch = Math.max(4, Math.floor(1048576 / size));
  const pump = () => {
    let full = false;
    for (let i = 0; i < batch; i++) if (!port.send(f)) { full = true; break; }
    port.flush();
    if (full) setTimeout(pump, 1); else setImmediate(pump);
  };
  pump();
} else {
  a.setNonblocking(3);
  let n = 0, t0 = 0, n0 = 0;
  const port = new a.FramePort(3, { kind: 'dgram', onFrames(slab, off, count) {
    if (t0 === 0) { t0 = performance.now(); setTimeout(() => { n0 = n; t0 = performance.now(); setTimeout(() => {
      process.stdout.write(JSON.stringify({ fps: (n - n0) / ((performance.now() - t0) / 1000) }));
      process.exit(0);
    }, Number(secS) * 1000); }, ${WARMUP_MS}); }
    n += count;
  }});
  port.start();
}
`;

interface Result {
  fps: number;
  batch: number;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function startChild(args: string[], extraFd?: number): ChildProcess {
  const stdio: ('ignore' | 'inherit' | 'pipe' | number)[] = ['ignore', 'pipe', 'inherit'];
  if (extraFd !== undefined) stdio.push(extraFd);
  return spawn(process.execPath, ['-e', childScript, ...args], { stdio });
}

async function measureRx(link: Link, child: ChildProcess): Promise<Result> {
  let frames = 0;
  let batches = 0;
  link.start((fs) => {
    frames += fs.length;
    batches++;
  });
  await sleep(WARMUP_MS);
  const f0 = frames;
  const b0 = batches;
  const t0 = performance.now();
  await sleep(seconds * 1000);
  const dt = (performance.now() - t0) / 1000;
  const res = { fps: (frames - f0) / dt, batch: (frames - f0) / Math.max(1, batches - b0) };
  child.kill();
  await link.close();
  return res;
}

async function rxFd(size: number): Promise<Result> {
  const [ours, theirs] = native.socketpairDgram();
  const child = startChild(['blast', String(size), 'fd'], theirs);
  native.closeFd(theirs);
  return measureRx(FdLink.adopt(ours), child);
}

async function rxSocket(size: number, dir: string): Promise<Result> {
  const p = path.join(dir, `link-${size}.sock`);
  const link = SocketLink.open(p);
  const child = startChild(['blast', String(size), p]);
  return measureRx(link, child);
}

async function rxOneProcess(size: number): Promise<Result> {
  const [ours, theirs] = native.socketpairDgram();
  const sender = new native.FramePort(theirs, { kind: 'dgram', onFrames: () => {} });
  const frame = new Uint8Array(size);
  const batch = Math.max(4, Math.floor(262144 / size));
  let running = true;
  const pump = (): void => {
    if (!running) return;
    for (let i = 0; i < batch; i++) if (!sender.send(frame)) break;
    sender.flush();
    setImmediate(pump);
  };
  pump();
  const link = FdLink.adopt(ours);
  const fakeChild = { kill: () => (running = false) } as unknown as ChildProcess;
  const r = await measureRx(link, fakeChild);
  sender.close();
  return r;
}

async function txFd(size: number): Promise<Result> {
  const [ours, theirs] = native.socketpairDgram();
  const child = startChild(['count', String(size), 'fd', String(seconds)], theirs);
  native.closeFd(theirs);
  const link = FdLink.adopt(ours);
  link.start(() => {});
  const frame = new Uint8Array(size);
  const batch = Math.max(4, Math.floor(1048576 / size));
  let running = true;
  let sent = 0;
  const pump = (): void => {
    if (!running) return;
    let full = false;
    for (let i = 0; i < batch; i++) {
      if (!link.send(frame)) {
        full = true;
        break;
      }
      sent++;
    }
    link.flush();
    if (full) setTimeout(pump, 1);
    else setImmediate(pump);
  };
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  const done = new Promise<void>((r) => child.on('exit', () => r()));
  pump();
  await done;
  running = false;
  await link.close();
  const parsed = JSON.parse(out || '{"fps":0}') as { fps: number };
  return { fps: parsed.fps, batch: NaN };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? NaN;
}

interface Row {
  build: string;
  name: string;
  size: number;
  fps: number;
  /** NaN where not measured (JSON carries it as null). */
  batch: number | null;
}

/** Runs every case against the addon this process loaded; one JSON line of rows on stdout. */
async function measureAll(): Promise<Row[]> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `vmnat-bench-${process.pid}-`));
  const cases: [string, (size: number) => Promise<Result>][] = [
    ['rx fd (socketpair, 2 procs)', rxFd],
    ['rx socket (bound path, 2 procs)', (s) => rxSocket(s, dir)],
    ['rx fd (1 proc, both ends)', rxOneProcess],
    ['tx fd (Link.send, 2 procs)', txFd],
  ];
  const rows: Row[] = [];
  try {
    for (const [name, fn] of cases) {
      for (const size of sizes) {
        const rs: Result[] = [];
        for (let i = 0; i < runs; i++) rs.push(await fn(size));
        rows.push({ build: nativeVariant(), name, size, fps: median(rs.map((r) => r.fps)), batch: median(rs.map((r) => r.batch)) });
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return rows;
}

async function main(): Promise<void> {
  if (process.env['VMNAT_BENCH_CHILD'] === '1') {
    process.stdout.write(JSON.stringify(await measureAll()) + '\n');
    return;
  }
  const portableBuilt = fs.existsSync(nativeAddonPath({ VMNAT_NATIVE: 'portable' }));
  const builds = arg('builds', portableBuilt ? 'default,portable' : 'default').split(',');
  console.log(`link-fps: node ${process.version}, ${os.cpus().length} CPUs, load ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}, ${seconds}s × ${runs} runs (median), builds ${builds.join(', ')} (${native.build.flavor} here)`);
  // Runs alternate between the builds (one child per build per run, each measuring every case
  // once), so that load from elsewhere falls on both alike; medians are taken here.
  const samples: Row[] = [];
  for (let run = 0; run < runs; run++) {
    for (const build of builds) {
      const argv = [...process.argv.slice(2).filter((a, i, xs) => a !== '--runs' && xs[i - 1] !== '--runs'), '--runs', '1'];
      const r = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), ...argv], {
        env: { ...process.env, VMNAT_NATIVE: build, VMNAT_BENCH_CHILD: '1' },
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      const line = r.stdout.trim().split('\n').pop() ?? '';
      if (r.status !== 0 || !line.startsWith('[')) throw new Error(`build ${build}: bench child failed (${r.status}): ${r.stdout}`);
      samples.push(...(JSON.parse(line) as Row[]));
    }
  }
  const all: Row[] = [];
  for (const build of builds) {
    for (const key of [...new Set(samples.map((x) => `${x.name}/${x.size}`))]) {
      const xs = samples.filter((x) => x.build === build && `${x.name}/${x.size}` === key);
      if (xs.length === 0) continue;
      const batches = xs.map((x) => x.batch ?? NaN);
      all.push({ build, name: xs[0]!.name, size: xs[0]!.size, fps: median(xs.map((x) => x.fps)), batch: median(batches) });
    }
  }
  const rows: string[][] = [['case', 'frame B', 'build', 'frames/s', 'Gbit/s', 'frames/batch', 'vs default']];
  const byKey = new Map(all.filter((x) => x.build === 'default').map((x) => [`${x.name}/${x.size}`, x.fps]));
  const order = [...new Set(all.map((x) => `${x.name}/${x.size}`))];
  for (const key of order) {
    for (const x of all.filter((y) => `${y.name}/${y.size}` === key)) {
      const base = byKey.get(key);
      rows.push([
        x.name,
        String(x.size),
        x.build,
        Math.round(x.fps).toLocaleString('en-US'),
        ((x.fps * x.size * 8) / 1e9).toFixed(2),
        x.batch === null || Number.isNaN(x.batch) ? '-' : x.batch.toFixed(1),
        x.build === 'default' || base === undefined ? '' : `${((x.fps / base) * 100).toFixed(0)} %`,
      ]);
    }
  }
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  for (const r of rows) console.log(r.map((cell, c) => (c === 0 || c === 2 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  '));
}

await main();
