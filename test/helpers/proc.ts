/**
 * Test helpers for processes: run a command to completion, start vmnat and wait for its ready line.
 * Every process a test starts is tracked by PID and killed in `killAll()` (afterAll), never by name.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const VMNAT_BIN = path.join(ROOT, 'bin/vmnat.mjs');

const live = new Set<ChildProcess>();

/**
 * The environment children get by default: this one without sudo's SUDO_UID/SUDO_GID/SUDO_USER.
 * Run as `sudo npm test`, vmnat would otherwise drop to the invoking user once set up (as it
 * should for people); the tests that check that drop pass those variables themselves.
 */
export function testEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env['SUDO_UID'];
  delete env['SUDO_GID'];
  delete env['SUDO_USER'];
  return env;
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs `cmd` and collects its output; kills it (SIGKILL) after `timeoutMs`. */
export function run(cmd: string[], opts: { timeoutMs?: number; input?: string; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd[0]!, cmd.slice(1), { stdio: ['pipe', 'pipe', 'pipe'], env: opts.env ?? testEnv() });
    live.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      live.delete(child);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      live.delete(child);
      resolve({ code, signal, stdout, stderr });
    });
    if (opts.input !== undefined) child.stdin!.end(opts.input);
    else child.stdin!.end();
  });
}

export interface VmnatProcess {
  child: ChildProcess;
  /** The parsed JSON ready line. */
  ready: Record<string, string | number>;
  /** Everything vmnat has logged on stderr so far. */
  stderr(): string;
  /** The stats vmnat prints on SIGUSR1. */
  stats(): Promise<Record<string, unknown>>;
  /** SIGTERM, then wait for exit; returns the exit code. */
  stop(): Promise<number | null>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/**
 * Starts vmnat with `args` and resolves once it printed its ready line (rejects if it exits first).
 * `prefix` runs it through a command that execs its arguments, keeping the PID (e.g. `ip netns exec NAME`).
 */
export function startVmnat(args: string[], opts: { timeoutMs?: number; spawn?: SpawnOptions; prefix?: string[] } = {}): Promise<VmnatProcess> {
  return new Promise((resolve, reject) => {
    const argv = [...(opts.prefix ?? []), process.execPath, VMNAT_BIN, ...args];
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env: testEnv(), ...opts.spawn });
    live.add(child);
    let stdout = '';
    let stderr = '';
    let settled = false;
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) => {
      child.on('exit', (code, signal) => {
        live.delete(child);
        res({ code, signal });
        if (!settled) {
          settled = true;
          reject(new Error(`vmnat exited (${code ?? signal}) before ready: ${stderr}`));
        }
      });
    });
    const timer = setTimeout(() => {
      if (settled) return;
      settled = true;
      child.kill('SIGKILL');
      reject(new Error(`vmnat not ready after ${opts.timeoutMs ?? 15_000} ms: ${stderr}`));
    }, opts.timeoutMs ?? 15_000);
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdout!.on('data', (d: Buffer) => {
      stdout += d.toString();
      const nl = stdout.indexOf('\n');
      if (nl < 0 || settled) return;
      settled = true;
      clearTimeout(timer);
      const ready = JSON.parse(stdout.slice(0, nl)) as Record<string, string | number>;
      resolve({
        child,
        ready,
        stderr: () => stderr,
        exited,
        async stats() {
          const before = stderr.length;
          child.kill('SIGUSR1');
          for (let i = 0; i < 100; i++) {
            const m = /vmnat: stats: (.*)\n/.exec(stderr.slice(before));
            if (m) return JSON.parse(m[1]!) as Record<string, unknown>;
            await new Promise((r) => setTimeout(r, 50));
          }
          throw new Error('no stats from vmnat');
        },
        async stop() {
          if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
          child.kill('SIGTERM');
          const t = setTimeout(() => child.kill('SIGKILL'), 5000);
          const { code, signal } = await exited;
          clearTimeout(t);
          if (code === null) throw new Error(`vmnat died of ${signal} on SIGTERM: ${stderr}`);
          return code;
        },
      });
    });
  });
}

export function killAll(): void {
  for (const child of live) child.kill('SIGKILL');
  live.clear();
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
