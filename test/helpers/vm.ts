/**
 * Real-VM test harness: boots the busybox guest built by scripts/build-guest.sh in qemu (TCG)
 * and collects what its test script reports.
 *
 * Theory of operation: the guest's /init (scripts/guest/init) loads virtio-net, brings eth0 up,
 * sources shell helpers (scripts/guest/vmnat.sh: vmnat_lease, vmnat_ping, vmnat_fetch,
 * vmnat_result) and runs /test.sh. We hand it /test.sh by appending a second newc cpio archive to
 * the initramfs (the kernel unpacks concatenated archives), written here per run into a private
 * temp dir. The guest prints `VMNAT-RESULT key=value ...` lines on its serial console (a file),
 * ends with `VMNAT-RESULT done=STATUS` and powers off; qemu runs with -no-reboot, so it exits.
 *
 * Timeouts: a run that outlives `timeoutMs` is killed by PID (qemu writes a -pidfile in the
 * run's temp dir, so even a qemu spawned by a launcher such as `vmnat -- qemu ...` is found
 * exactly). Nothing is ever killed by name.
 *
 * Descriptors: qemu's `-netdev ...,local.type=fd,local.str=N` and vmnat's `--fd N` take an
 * inherited descriptor; `extraFds` places parent fds at child positions through spawn's stdio
 * array (libuv dup2()s them, which also clears close-on-exec). `socketpairDgram()` makes the pair.
 *
 * Under TCG on a loaded 2-core machine a boot to a DHCP lease takes ~2 s of guest time and a
 * few seconds of wall time; timeouts here are generous (60 s) on purpose.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadNative } from '../../src/link/native.ts';

const here = path.dirname(fileURLToPath(import.meta.url));
/** The repository root (this file is test/helpers/vm.ts). */
export const REPO_ROOT = path.resolve(here, '../..');
/** Where scripts/build-guest.sh puts vmlinux and initramfs.cpio (override: VMNAT_GUEST_DIR). */
export const GUEST_DIR = process.env['VMNAT_GUEST_DIR'] ?? path.join(REPO_ROOT, '.cache/guest');
export const QEMU = process.env['VMNAT_QEMU'] ?? 'qemu-system-x86_64';
/** The vmnat CLI entry point (loads src/cli.ts through tsx). */
export const VMNAT_BIN = path.join(REPO_ROOT, 'bin/vmnat.mjs');

const RESULT_MARK = 'VMNAT-RESULT';

// ---------------------------------------------------------------------------------------------
// The guest image

/** True when qemu is on PATH. */
export function qemuAvailable(): boolean {
  return spawnSync(QEMU, ['--version'], { stdio: 'ignore' }).status === 0;
}

/**
 * Makes sure the guest image exists: runs scripts/build-guest.sh (idempotent: a no-op in ~0.1 s
 * when everything is built; a first build downloads the kernel package with apt, ~10 s here).
 * Throws with the script's output when it fails.
 */
export interface GuestImage {
  /** The uncompressed ELF kernel (qemu -kernel boots it directly: the fast path). */
  vmlinux: string;
  /** The compressed bzImage it came from (what boot loaders such as iPXE load). */
  vmlinuz: string;
  initramfs: string;
}
let guestChecked: GuestImage | undefined;
export function ensureGuest(): GuestImage {
  if (guestChecked) return guestChecked;
  const vmlinux = path.join(GUEST_DIR, 'vmlinux');
  const initramfs = path.join(GUEST_DIR, 'initramfs.cpio');
  const r = spawnSync('bash', [path.join(REPO_ROOT, 'scripts/build-guest.sh')], {
    encoding: 'utf8',
    env: { ...process.env, VMNAT_GUEST_DIR: GUEST_DIR },
    timeout: 600_000,
  });
  if (r.status !== 0 || !existsSync(vmlinux) || !existsSync(initramfs)) {
    throw new Error(`scripts/build-guest.sh failed (status ${r.status}):\n${r.stdout}${r.stderr}`);
  }
  const bootDir = path.join(GUEST_DIR, 'kernel/boot');
  const vmlinuzName = readdirSync(bootDir).find((f) => f.startsWith('vmlinuz-'));
  if (vmlinuzName === undefined) throw new Error(`no vmlinuz-* in ${bootDir}`);
  guestChecked = { vmlinux, vmlinuz: path.join(bootDir, vmlinuzName), initramfs };
  return guestChecked;
}

/**
 * A newc ("070701") cpio archive of regular files (mode 0755 for `test.sh`, else 0644), with
 * their parent directories. Paths are relative to the guest's root.
 */
export function cpioArchive(files: Readonly<Record<string, string | Uint8Array>>): Buffer {
  const parts: Buffer[] = [];
  let ino = 0x766d00; // distinct from the base archive's inodes (cpio numbers those from 1)
  const pad4 = (n: number): Buffer => Buffer.alloc((4 - (n % 4)) % 4);
  const entry = (name: string, mode: number, data: Uint8Array): void => {
    const nameBytes = Buffer.from(`${name}\0`, 'utf8');
    const fields = [ino++, mode, 0, 0, 1, 0, data.length, 0, 0, 0, 0, nameBytes.length, 0];
    const header = Buffer.from(`070701${fields.map((f) => f.toString(16).padStart(8, '0')).join('')}`, 'ascii');
    parts.push(header, nameBytes, pad4(header.length + nameBytes.length));
    parts.push(Buffer.from(data.buffer, data.byteOffset, data.byteLength), pad4(data.length));
  };
  const dirs = new Set<string>();
  for (const name of Object.keys(files)) {
    const segs = name.split('/').slice(0, -1);
    for (let i = 1; i <= segs.length; i++) dirs.add(segs.slice(0, i).join('/'));
  }
  for (const d of [...dirs].sort()) entry(d, 0o040755, new Uint8Array(0));
  for (const [name, content] of Object.entries(files)) {
    const data = typeof content === 'string' ? Buffer.from(content, 'utf8') : content;
    entry(name, name === 'test.sh' || name.endsWith('.sh') ? 0o100755 : 0o100644, data);
  }
  entry('TRAILER!!!', 0, new Uint8Array(0));
  const body = Buffer.concat(parts);
  // Pad to a 512-byte block like cpio(1) does; the kernel skips zeros between archives.
  return Buffer.concat([body, Buffer.alloc((512 - (body.length % 512)) % 512)]);
}

/**
 * The initramfs a run boots: the base image with `script` as /test.sh (and `files`) appended as a
 * second archive.
 */
export function guestInitrd(script: string, files: Readonly<Record<string, string | Uint8Array>> = {}): Buffer {
  const base = readFileSync(ensureGuest().initramfs);
  const test = cpioArchive({ ...files, 'test.sh': script });
  return Buffer.concat([base, Buffer.alloc((4 - (base.length % 4)) % 4), test]);
}

/** Parses every `VMNAT-RESULT k=v k=v` line of a console log; a later value wins. */
export function parseResults(log: string): Record<string, string> {
  const results: Record<string, string> = {};
  for (const line of log.split(/\r?\n/)) {
    const at = line.indexOf(RESULT_MARK);
    if (at < 0) continue;
    for (const token of line.slice(at + RESULT_MARK.length).trim().split(/\s+/)) {
      const eq = token.indexOf('=');
      if (eq > 0) results[token.slice(0, eq)] = token.slice(eq + 1);
    }
  }
  return results;
}

let macCounter = 0;
/** A locally administered MAC unique to this process and call (qemu's default is shared by all NICs). */
export function uniqueMac(): string {
  const n = ((process.pid & 0xffff) << 8) | (macCounter++ & 0xff);
  const b = [0x52, 0x54, 0x00, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff];
  return b.map((x) => x.toString(16).padStart(2, '0')).join(':');
}

// ---------------------------------------------------------------------------------------------
// Descriptors

/** A non-blocking AF_UNIX SOCK_DGRAM socketpair from the native addon (Node has none). */
export function socketpairDgram(): [number, number] {
  return loadNative().socketpairDgram();
}

/** Closes a raw fd in this process (after it was handed to a child). */
export function closeFd(fd: number): void {
  loadNative().closeFd(fd);
}

/** spawn's stdio array with `fds[childFd] = parentFd` placed at those positions. */
export function stdioWithFds(
  base: ['ignore' | 'pipe', 'ignore' | 'pipe', 'ignore' | 'pipe'],
  fds: Readonly<Record<number, number>> = {},
): Array<'ignore' | 'pipe' | number> {
  const stdio: Array<'ignore' | 'pipe' | number> = [...base];
  for (const [childFd, parentFd] of Object.entries(fds)) {
    const at = Number(childFd);
    if (!Number.isInteger(at) || at < 3) throw new Error(`extra fd position must be >= 3: ${childFd}`);
    while (stdio.length <= at) stdio.push('ignore');
    stdio[at] = parentFd;
  }
  return stdio;
}

// ---------------------------------------------------------------------------------------------
// Running a VM

export interface RunVmOptions {
  /** qemu's -netdev value; must define id=n0 (e.g. `user,id=n0`). */
  netdev: string;
  /** Shell run as /test.sh in the guest (busybox ash, helpers from scripts/guest/vmnat.sh). */
  script: string;
  /** Extra files for the test archive, by guest path relative to / (e.g. `etc/payload.bin`). */
  files?: Readonly<Record<string, string | Uint8Array>>;
  /** Guest MAC; default: uniqueMac(). */
  mac?: string;
  /** Whole-run limit; qemu is killed (by PID) past it. Default 60 s. */
  timeoutMs?: number;
  /** `{ childFd: parentFd }`: descriptors the spawned process inherits at those positions. */
  extraFds?: Readonly<Record<number, number>>;
  /**
   * Spawn qemu through a launcher: runs `command ...args qemu ...qemuArgs` (e.g. vmnat's spawn
   * mode, `node bin/vmnat.mjs -- qemu-system-x86_64 ...`). extraFds then go to the launcher.
   */
  launcher?: { command: string; args: readonly string[] };
  /** More qemu arguments, appended. */
  qemuArgs?: readonly string[];
  /**
   * Boot from the network instead of -kernel/-initrd: the NIC's iPXE ROM (Debian ipxe-qemu) runs
   * DHCP and loads what the boot file names; `script` and `files` are then unused here (put
   * `guestInitrd(...)` where the boot file points). See qemuArgv for the ROM's constraints.
   */
  netboot?: boolean;
  env?: NodeJS.ProcessEnv;
  /** Called right after the spawn (e.g. to close the parent's copies of `extraFds`). */
  onSpawn?: (child: ChildProcess) => void;
  /** Keep the run's temp dir (console log, initrd) for debugging; its path is in the result. */
  keepDir?: boolean;
}

export interface VmRun {
  /** Parsed `VMNAT-RESULT` key=value pairs (see scripts/guest/). */
  results: Record<string, string>;
  /** The guest's serial console. */
  log: string;
  /** The spawned process's exit code (qemu's or the launcher's); null if killed. */
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  /** Wall time from spawn to exit. */
  durationMs: number;
  /**
   * Host wall time (ms after spawn) at which each result key first appeared on the console,
   * sampled every 50 ms: e.g. `timesMs.lease` is boot-to-lease. Guest uptimes (`lease_uptime_s`)
   * are not trustworthy on a loaded host: the TCG guest's clock was seen running 3x ahead.
   */
  timesMs: Record<string, number>;
  /** stdout and stderr of the spawned process (qemu or launcher), capped. */
  stdout: string;
  stderr: string;
  dir: string;
}

/** Where Debian's ipxe-qemu installs qemu's NIC boot ROMs. */
export const IPXE_ROM_DIR = '/usr/lib/ipxe/qemu';
/** The kernel command line of every run (also what network-boot scripts pass). */
export const GUEST_CMDLINE = 'console=ttyS0 quiet panic=-1';

/**
 * qemu's argv for one run (without the binary): TCG, no defaults, one virtio-net NIC on n0.
 *
 * Direct boot (`kernel`): -kernel/-initrd, and the NIC without a ROM. Network boot (`netboot`):
 * SeaBIOS runs the NIC's iPXE ROM (bootindex=1). Debian's pxe-virtio.rom (iPXE 2019) carries the
 * PCI ID of a modern-only virtio-net (1af4:1041) and SeaBIOS runs a ROM only for its own ID, so
 * the NIC is made modern-only (disable-legacy=on); the guest kernel's virtio_pci drives it the same.
 */
export function qemuArgv(o: {
  boot: { kind: 'kernel'; vmlinux: string; initrd: string } | { kind: 'netboot'; romfile?: string };
  serialLog: string;
  pidFile: string;
  netdev: string;
  mac: string;
  extra?: readonly string[];
}): string[] {
  const head = ['-accel', 'tcg', '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot', '-m', '256', '-smp', '1'];
  const tail = ['-serial', `file:${o.serialLog}`, '-pidfile', o.pidFile, '-netdev', o.netdev];
  if (o.boot.kind === 'kernel') {
    return [
      ...head,
      '-kernel', o.boot.vmlinux, '-initrd', o.boot.initrd,
      '-append', GUEST_CMDLINE,
      ...tail,
      '-device', `virtio-net-pci,netdev=n0,romfile=,mac=${o.mac}`,
      ...(o.extra ?? []),
    ];
  }
  const rom = o.boot.romfile ?? path.join(IPXE_ROM_DIR, 'pxe-virtio.rom');
  return [
    ...head,
    '-boot', 'n',
    ...tail,
    '-device', `virtio-net-pci,netdev=n0,romfile=${rom},disable-legacy=on,bootindex=1,mac=${o.mac}`,
    ...(o.extra ?? []),
  ];
}

/** A private temp dir for one run or one engine (name carries our PID). Short: unix socket paths have a 108-byte limit. */
export function makeRunDir(tag = 'vm'): string {
  return mkdtempSync(path.join(os.tmpdir(), `vmnat-${tag}-${process.pid}-`));
}

const OUTPUT_CAP = 256 * 1024;
function collect(stream: NodeJS.ReadableStream | null, sink: { text: string }): void {
  stream?.setEncoding('utf8');
  stream?.on('data', (chunk: string) => {
    if (sink.text.length < OUTPUT_CAP) sink.text += chunk;
  });
}

/**
 * SIGKILLs the qemu that wrote `pidFile`, only if that PID still runs a command line naming this
 * very pidfile (a stale pidfile's PID may have been reused by an unrelated process).
 */
function killPidFromFile(pidFile: string): void {
  try {
    const pid = Number(readFileSync(pidFile, 'utf8').trim());
    if (!Number.isInteger(pid) || pid <= 1) return;
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    if (cmdline.includes(pidFile)) process.kill(pid, 'SIGKILL');
  } catch {
    // No pidfile (qemu never got that far, or removed it at exit) or the process is gone.
  }
}

/** Boots the guest with `script` as /test.sh and resolves when qemu (or the launcher) exits. */
export async function runVm(opts: RunVmOptions): Promise<VmRun> {
  const { vmlinux } = ensureGuest();
  const dir = makeRunDir();
  const initrd = path.join(dir, 'initrd.cpio');
  const serialLog = path.join(dir, 'console.log');
  const pidFile = path.join(dir, 'qemu.pid');
  if (!opts.netboot) writeFileSync(initrd, guestInitrd(opts.script, opts.files));
  writeFileSync(serialLog, '');

  const qargs = qemuArgv({
    boot: opts.netboot ? { kind: 'netboot' } : { kind: 'kernel', vmlinux, initrd },
    serialLog, pidFile,
    netdev: opts.netdev,
    mac: opts.mac ?? uniqueMac(),
    ...(opts.qemuArgs ? { extra: opts.qemuArgs } : {}),
  });
  const [command, args] = opts.launcher
    ? [opts.launcher.command, [...opts.launcher.args, QEMU, ...qargs]]
    : [QEMU, qargs];

  const started = performance.now();
  const child: ChildProcess = spawn(command, args, {
    stdio: stdioWithFds(['ignore', 'pipe', 'pipe'], opts.extraFds),
    env: opts.env ?? process.env,
  });
  const stdout = { text: '' };
  const stderr = { text: '' };
  collect(child.stdout, stdout);
  collect(child.stderr, stderr);
  opts.onSpawn?.(child);

  const timesMs: Record<string, number> = {};
  let seen = 0;
  const sample = (): void => {
    try {
      const text = readFileSync(serialLog, 'utf8');
      if (text.length === seen) return;
      const complete = text.lastIndexOf('\n') + 1;
      if (complete <= seen) return;
      const at = Math.round(performance.now() - started);
      for (const key of Object.keys(parseResults(text.slice(seen, complete)))) timesMs[key] ??= at;
      seen = complete;
    } catch {
      // The log is ours and exists; a read error here only loses a timestamp.
    }
  };
  const sampler = setInterval(sample, 50);

  let timedOut = false;
  const timeoutMs = opts.timeoutMs ?? 60_000;
  let graceTimer: NodeJS.Timeout | undefined;
  const timer = setTimeout(() => {
    timedOut = true;
    killPidFromFile(pidFile);
    if (opts.launcher) {
      child.kill('SIGTERM');
      graceTimer = setTimeout(() => child.kill('SIGKILL'), 3_000);
    } else {
      child.kill('SIGKILL');
    }
  }, timeoutMs);

  const [exitCode, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => {
    child.once('error', (err) => {
      stderr.text += `spawn error: ${err.message}\n`;
      resolve([null, null]);
    });
    child.once('close', (code, sig) => resolve([code, sig]));
  });
  clearTimeout(timer);
  clearInterval(sampler);
  sample();
  if (graceTimer) clearTimeout(graceTimer);
  // A launcher that exited early must not leave its qemu behind.
  if (opts.launcher) killPidFromFile(pidFile);

  const log = readFileSync(serialLog, 'utf8');
  if (!opts.keepDir && process.env['VMNAT_KEEP_VM'] !== '1') rmSync(dir, { recursive: true, force: true });
  return {
    results: parseResults(log),
    log,
    exitCode,
    signal,
    timedOut,
    durationMs: Math.round(performance.now() - started),
    timesMs,
    stdout: stdout.text,
    stderr: stderr.text,
    dir,
  };
}

/** One line describing a run, for assertion messages: results, exit, and the console. */
export function describeRun(r: VmRun): string {
  return [
    `exit=${r.exitCode} signal=${r.signal} timedOut=${r.timedOut} ${r.durationMs} ms`,
    `results=${JSON.stringify(r.results)}`,
    '--- console ---', r.log.trimEnd(),
    '--- stderr ---', r.stderr.trimEnd(),
  ].join('\n');
}

// ---------------------------------------------------------------------------------------------
// The vmnat CLI as a child process

export interface VmnatProcess {
  readonly child: ChildProcess;
  /** The parsed JSON ready line. */
  readonly ready: Record<string, unknown>;
  stdout(): string;
  stderr(): string;
  /** Sends `signal` (default SIGTERM), waits for exit (SIGKILL after `graceMs`), returns how it exited. */
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/**
 * Starts `node bin/vmnat.mjs ...args` and resolves on its JSON ready line (the first stdout line).
 * Rejects, with its output, if it exits or prints no ready line within `readyTimeoutMs`.
 */
export async function startVmnat(
  args: readonly string[],
  opts: {
    extraFds?: Readonly<Record<number, number>>;
    readyTimeoutMs?: number;
    env?: NodeJS.ProcessEnv;
    /** Sees each stderr chunk as it arrives (e.g. to time NODE_DEBUG trace lines). */
    onStderr?: (chunk: string) => void;
  } = {},
): Promise<VmnatProcess> {
  // VMNAT_NODE_ARGS: extra node flags for vmnat (e.g. `--cpu-prof`, which NODE_OPTIONS refuses), for benchmarks.
  const nodeArgs = (process.env['VMNAT_NODE_ARGS'] ?? '').split(' ').filter(Boolean);
  const child = spawn(process.execPath, [...nodeArgs, VMNAT_BIN, ...args], {
    stdio: stdioWithFds(['ignore', 'pipe', 'pipe'], opts.extraFds),
    env: opts.env ?? process.env,
  });
  const out = { text: '' };
  const err = { text: '' };
  collect(child.stdout, out);
  collect(child.stderr, err);
  if (opts.onStderr) child.stderr?.on('data', opts.onStderr);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('close', (code, signal) => resolve({ code, signal }));
    child.once('error', () => resolve({ code: null, signal: null }));
  });

  const ready = await new Promise<Record<string, unknown>>((resolve, reject) => {
    const timeoutMs = opts.readyTimeoutMs ?? 30_000;
    const fail = (why: string): void => {
      cleanup();
      child.kill('SIGKILL');
      reject(new Error(`vmnat ${args.join(' ')}: ${why}\n--- stdout ---\n${out.text}\n--- stderr ---\n${err.text}`));
    };
    const timer = setTimeout(() => fail(`no ready line within ${timeoutMs} ms`), timeoutMs);
    const onData = (): void => {
      const nl = out.text.indexOf('\n');
      if (nl < 0) return;
      const line = out.text.slice(0, nl);
      cleanup();
      try {
        const parsed: unknown = JSON.parse(line);
        if (typeof parsed !== 'object' || parsed === null) throw new Error('not an object');
        resolve(parsed as Record<string, unknown>);
      } catch {
        child.kill('SIGKILL');
        reject(new Error(`vmnat: first stdout line is not a JSON object: ${line}\n--- stderr ---\n${err.text}`));
      }
    };
    const onExit = (): void => fail('exited before its ready line');
    const cleanup = (): void => {
      clearTimeout(timer);
      child.stdout?.off('data', onData);
      child.off('close', onExit);
    };
    // Our collector is registered first, so out.text already holds the chunk when onData runs.
    child.stdout?.on('data', onData);
    child.once('close', onExit);
  });

  return {
    child,
    ready,
    stdout: () => out.text,
    stderr: () => err.text,
    async stop(signal: NodeJS.Signals = 'SIGTERM', graceMs = 5_000) {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      const grace = setTimeout(() => child.kill('SIGKILL'), graceMs);
      const how = await exited;
      clearTimeout(grace);
      return how;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Host-loopback servers for guests to reach through the gateway address (10.0.2.2)

export interface LoopbackServer {
  readonly port: number;
  /** Connections (TCP) or requests (HTTP) served so far. */
  readonly hits: number;
  close(): Promise<void>;
}

async function listenLoopback(server: net.Server | http.Server, count: () => number): Promise<LoopbackServer> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const addr = server.address();
  if (addr === null || typeof addr === 'string') throw new Error('no TCP address');
  return {
    port: addr.port,
    get hits() {
      return count();
    },
    close: () =>
      new Promise<void>((resolve) => {
        if ('closeAllConnections' in server) server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/**
 * An HTTP server on 127.0.0.1 (random port) serving fixed bodies by path; 404 otherwise.
 * Guests fetch it with `vmnat_fetch http://10.0.2.2:PORT/path` (busybox wget under `timeout`).
 */
export function startHttpServer(routes: Readonly<Record<string, string | Uint8Array>>): Promise<LoopbackServer> {
  let hits = 0;
  const server = http.createServer((req, res) => {
    hits++;
    const body = routes[req.url ?? ''];
    if (body === undefined) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
  return listenLoopback(server, () => hits);
}

/**
 * A TCP server on 127.0.0.1 (random port) that answers each connection with `greeting` (if
 * any), then echoes what it receives. Guests reach it with `timeout 10 nc 10.0.2.2 PORT`.
 */
export function startEchoServer(greeting = ''): Promise<LoopbackServer> {
  let hits = 0;
  const server = net.createServer((sock) => {
    hits++;
    sock.on('error', () => sock.destroy());
    if (greeting) sock.write(greeting);
    sock.pipe(sock);
  });
  return listenLoopback(server, () => hits);
}
