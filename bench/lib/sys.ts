/**
 * Process and namespace plumbing for the benchmark scripts: bounded commands, tracked background
 * processes, per-process CPU time, and a cleanup registry that also runs on Ctrl-C and on errors.
 *
 * Theory of operation: every process the bench starts is spawned in its own process group
 * (`detached`) and recorded by PID; every namespace or link it creates is recorded by exact name.
 * `cleanup()` is synchronous (so it can run from a signal handler or `exit` hook without an event
 * loop turn): SIGKILL to each recorded process group, then `ip netns del` / `ip link del` of each
 * recorded name. Nothing is ever found or killed by pattern. Normal flow stops things gracefully
 * first (`Bg.stop`) and unregisters them, so the registry only holds what a failure left behind.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  ms: number;
}

const liveProcs = new Map<number, string>();
const namespaces = new Set<string>();
const links = new Set<string>();
const paths = new Set<string>();

function track(child: ChildProcess, what: string): void {
  if (child.pid !== undefined) liveProcs.set(child.pid, what);
}
function untrack(child: ChildProcess): void {
  if (child.pid !== undefined) liveProcs.delete(child.pid);
}

/** Kills a process group we started (negative PID), falling back to the PID itself. */
function killGroup(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(-pid, sig);
  } catch {
    try {
      process.kill(pid, sig);
    } catch {
      /* already gone */
    }
  }
}

/** Runs `cmd` to completion; SIGKILLs its process group after `timeoutMs`. Never rejects. */
export function run(cmd: string[], opts: { timeoutMs?: number; input?: string } = {}): Promise<RunResult> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    let child: ChildProcess;
    try {
      child = spawn(cmd[0]!, cmd.slice(1), { stdio: ['pipe', 'pipe', 'pipe'], detached: true });
    } catch (err) {
      resolve({ code: null, signal: null, stdout: '', stderr: String(err), timedOut: false, ms: 0 });
      return;
    }
    track(child, cmd.join(' '));
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      timedOut = true;
      if (child.pid !== undefined) killGroup(child.pid, 'SIGKILL');
    }, opts.timeoutMs ?? 30_000);
    const done = (code: number | null, signal: NodeJS.Signals | null, extra = ''): void => {
      clearTimeout(timer);
      untrack(child);
      resolve({ code, signal, stdout, stderr: stderr + extra, timedOut, ms: performance.now() - t0 });
    };
    child.on('error', (err) => done(null, null, String(err)));
    child.on('close', (code, signal) => done(code, signal));
    child.stdin!.on('error', () => {});
    if (opts.input !== undefined) child.stdin!.end(opts.input);
    else child.stdin!.end();
  });
}

/** Runs `cmd` and throws (with its stderr) unless it exits 0. */
export async function must(cmd: string[], timeoutMs = 10_000): Promise<string> {
  const r = await run(cmd, { timeoutMs });
  if (r.code !== 0) throw new Error(`${cmd.join(' ')}: ${r.timedOut ? 'timed out' : `exit ${r.code ?? r.signal}`}: ${r.stderr.trim()}`);
  return r.stdout;
}

/** A background process with its output captured. */
export interface Bg {
  child: ChildProcess;
  pid: number;
  cmd: string[];
  stdout(): string;
  stderr(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  running(): boolean;
  /** Resolves with the first stdout line matching `re` (rejects on exit or after `timeoutMs`). */
  waitFor(re: RegExp, timeoutMs: number): Promise<RegExpExecArray>;
  /** SIGTERM (or `sig`), then SIGKILL after `graceMs`; resolves once it is gone. */
  stop(sig?: NodeJS.Signals, graceMs?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export function startBg(cmd: string[], opts: { extraFds?: number } = {}): Bg {
  const stdio: ('ignore' | 'pipe')[] = ['ignore', 'pipe', 'pipe'];
  for (let i = 0; i < (opts.extraFds ?? 0); i++) stdio.push('pipe');
  const child = spawn(cmd[0]!, cmd.slice(1), { stdio, detached: true });
  track(child, cmd.join(' '));
  let out = '';
  let err = '';
  let gone = false;
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('error', (e) => {
      err += String(e);
      gone = true;
      untrack(child);
      resolve({ code: null, signal: null });
    });
    child.on('exit', (code, signal) => {
      gone = true;
      untrack(child);
      resolve({ code, signal });
    });
  });
  return {
    child,
    pid: child.pid ?? -1,
    cmd,
    stdout: () => out,
    stderr: () => err,
    exited,
    running: () => !gone,
    waitFor(re, timeoutMs) {
      return new Promise((resolve, reject) => {
        const check = (): boolean => {
          const m = re.exec(out);
          if (m) {
            cleanupWait();
            resolve(m);
            return true;
          }
          return false;
        };
        const onData = (): void => void check();
        const timer = setTimeout(() => {
          cleanupWait();
          reject(new Error(`${cmd[0]}: no ${re} within ${timeoutMs} ms: ${err.trim().slice(-500)}`));
        }, timeoutMs);
        const cleanupWait = (): void => {
          clearTimeout(timer);
          child.stdout!.off('data', onData);
        };
        if (check()) return;
        child.stdout!.on('data', onData);
        void exited.then(({ code, signal }) => {
          if (check()) return;
          cleanupWait();
          reject(new Error(`${cmd[0]} exited (${code ?? signal}) before ${re}: ${err.trim().slice(-500)}`));
        });
      });
    },
    async stop(sig = 'SIGTERM', graceMs = 5000) {
      if (gone) return exited;
      killGroup(child.pid!, sig);
      const t = setTimeout(() => killGroup(child.pid!, 'SIGKILL'), graceMs);
      const r = await exited;
      clearTimeout(t);
      return r;
    },
  };
}

/** User + system CPU seconds of a process (all its threads), from /proc/PID/stat; NaN if gone. */
let clkTck = 0;
export function cpuSeconds(pid: number): number {
  if (clkTck === 0) {
    try {
      clkTck = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
    } catch {
      clkTck = 100;
    }
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 2 (comm) may contain spaces: split after its closing parenthesis. utime and stime are
    // fields 14 and 15, i.e. indices 11 and 12 counting from field 3.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(rest[11]) + Number(rest[12])) / clkTck;
  } catch {
    return NaN;
  }
}

/** The CPU affinity list of a process (`taskset -p`'s list form), e.g. "0,1". */
export async function affinity(pid: number): Promise<string> {
  const out = await must(['taskset', '-c', '-p', String(pid)]);
  return out.slice(out.lastIndexOf(':') + 1).trim();
}

/** Sets the affinity of every thread of `pid` to `cpus` (a taskset list). */
export async function setAffinity(pid: number, cpus: string): Promise<void> {
  await must(['taskset', '-a', '-c', '-p', cpus, String(pid)]);
}

export async function addNetns(name: string): Promise<void> {
  namespaces.add(name);
  await must(['ip', 'netns', 'add', name]);
  await must(['ip', '-n', name, 'link', 'set', 'lo', 'up']);
}

export async function delNetns(name: string): Promise<void> {
  await run(['ip', 'netns', 'del', name], { timeoutMs: 10_000 });
  namespaces.delete(name);
}

export function registerLink(name: string): void {
  links.add(name);
}
export async function delLink(name: string): Promise<void> {
  await run(['ip', 'link', 'del', name], { timeoutMs: 10_000 });
  links.delete(name);
}
/** A file or directory to remove in cleanup. */
export function registerPath(p: string): void {
  paths.add(p);
}

/** Synchronous last-resort cleanup of everything still registered (exact PIDs and names only). */
export function cleanup(): void {
  for (const pid of liveProcs.keys()) killGroup(pid, 'SIGKILL');
  liveProcs.clear();
  for (const ns of namespaces) {
    try {
      execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore', timeout: 10_000 });
    } catch {
      /* already gone */
    }
  }
  namespaces.clear();
  for (const l of links) {
    try {
      execFileSync('ip', ['link', 'del', l], { stdio: 'ignore', timeout: 10_000 });
    } catch {
      /* already gone */
    }
  }
  links.clear();
  for (const p of paths) fs.rmSync(p, { recursive: true, force: true });
  paths.clear();
}

/** Installs cleanup on Ctrl-C, SIGTERM, uncaught errors and exit. */
export function installCleanupHandlers(): void {
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      process.stderr.write(`\nbench: ${sig}: cleaning up\n`);
      cleanup();
      process.exit(130);
    });
  }
  process.on('uncaughtException', (err) => {
    process.stderr.write(`bench: uncaught: ${err.stack ?? String(err)}\n`);
    cleanup();
    process.exit(1);
  });
  process.on('unhandledRejection', (err) => {
    process.stderr.write(`bench: unhandled rejection: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    cleanup();
    process.exit(1);
  });
  process.on('exit', () => cleanup());
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}
