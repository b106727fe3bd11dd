/**
 * `startVmnat()`: vmnat for Node.js tools, as a library call (`import { startVmnat } from 'vmnat'`).
 *
 * Theory of operation: the engine runs as a child process (`node bin/vmnat.mjs …`), not inside
 * the caller's process. A NAT engine wants its own event loop (a busy guest would otherwise
 * stall the tool, and a stalled tool the guest), installs process-wide handlers (signals, its
 * fault barrier) and may drop privileges; a child gets all that for free, and `close()` ends it
 * completely. The options become command-line flags (the one validated path; `args` passes any
 * other flag), and the control API is always on: its socket, and by default the guest's
 * `--socket`, live in a private temporary directory (mode 0700) that `close()` removes.
 *
 * Start-up: resolves with the parsed ready line (the first stdout line); rejects with
 * `VmnatStartError` carrying vmnat's one-line error and exit status when it exits first (a bad
 * flag: status 2), or when no ready line comes within `readyTimeoutMs` (the child is killed).
 *
 * Lifetime: `close()` sends SIGTERM (vmnat removes its socket files and exits 0), SIGKILL after
 * `graceMs`, then removes the private directory. A child still running when the caller's process
 * exits is killed from an `exit` hook, so a crashed tool leaves no vmnat behind.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ApiClient, type ForwardListItem, type VmnatEvent } from './client.ts';
import type { ApiLease, LeaseEvent } from './server.ts';
import { parseHostfwd, ruleToJson, type ForwardRuleJson } from '../portfwd/rules.ts';

/** bin/vmnat.mjs, from src/api/ or dist/api/ alike. */
const VMNAT_BIN = fileURLToPath(new URL('../../bin/vmnat.mjs', import.meta.url));

export type VmnatLogLevel = 'error' | 'warn' | 'info' | 'debug';

export interface VmnatOptions {
  /**
   * Guest transports (see `vmnat --help`); several make a network of guests. With none given, one
   * `--socket` in the private directory (its path is `ready.path`).
   */
  socket?: string | readonly string[];
  stream?: string | readonly string[];
  /** TAP devices (Linux; root), each optionally inside a network namespace (`/run/netns/NAME`). */
  tap?: { name: string; netns?: string } | ReadonlyArray<{ name: string; netns?: string }>;
  /** SOCK_DGRAM socketpair ends of this process, handed to vmnat (`--fd`). */
  fd?: number | readonly number[];
  /**
   * Spawn mode (`vmnat … -- COMMAND`): vmnat starts COMMAND with its end of a socketpair as fd 4
   * and exits with it. `exited` then tells the command's status.
   */
  command?: readonly string[];
  /** Guest network, e.g. `10.0.2.0/24` (the default). */
  net?: string;
  mtu?: number;
  /** Port forwards in qemu's hostfwd syntax (`tcp::2222-:22`; host port 0 binds a free port). */
  hostfwd?: readonly string[];
  /** Upstream DNS servers (`IP[:PORT]`); default: the host's resolvers. */
  dnsServers?: readonly string[];
  /** Names answered locally: `{ 'db.test': '10.0.2.2' }`. */
  dnsHosts?: Readonly<Record<string, string>>;
  /** Network boot: a directory served over TFTP at the gateway, and the boot file DHCP names. */
  tftp?: string;
  bootfile?: string;
  /** The control API's socket path; default: `api.sock` in the private directory. */
  apiSocket?: string;
  logLevel?: VmnatLogLevel;
  /** More flags, appended as given (e.g. `['--isolate', '--deny', '192.168.0.0/16']`). */
  args?: readonly string[];
  /** vmnat's environment (default: this process's). */
  env?: NodeJS.ProcessEnv;
  /** Each line vmnat logs on stderr (they are also kept: `handle.logs()`). */
  onLog?: (line: string) => void;
  /** Default 30 s. */
  readyTimeoutMs?: number;
}

/** vmnat's ready line. */
export interface VmnatReady {
  /** socket | stream | fd | tap | spawn: the first transport. */
  link: string;
  /** The first transport's own fields (e.g. `path` of a --socket). */
  path?: string;
  network: string;
  gateway: string;
  dns: string;
  guest_ip: string;
  netmask: string;
  mtu: number;
  gateway_mac: string;
  api_socket: string;
  /** Forwards given at start, host port 0 replaced by the port bound. */
  forwards?: ForwardRuleJson[];
  /** Every transport, when there are several. */
  links?: Array<Record<string, unknown>>;
  [field: string]: unknown;
}

export interface VmnatExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A running vmnat. */
export interface VmnatHandle {
  readonly ready: VmnatReady;
  readonly pid: number;
  /** The control API client (every endpoint: flows, ports, stats, filter, …). */
  readonly api: ApiClient;
  /** Resolves when the process has exited (by close() or on its own). */
  readonly exited: Promise<VmnatExit>;
  forwards(): Promise<ForwardListItem[]>;
  /**
   * Adds a forward: qemu hostfwd text (`tcp::0-:80`) or the API's JSON rule. Resolves with the rule
   * as bound (host port 0 replaced). Rejects with ApiError (409: port or name taken) or
   * ForwardRuleError (bad text, checked before any request).
   */
  addForward(rule: string | (Partial<ForwardRuleJson> & { guest_port: number }), name?: string): Promise<ForwardListItem>;
  removeForward(name: string): Promise<void>;
  leases(): Promise<ApiLease[]>;
  /**
   * Resolves with the first bound lease (of `mac`, if given), including one bound before the
   * call (the event stream replays them). Rejects after `timeoutMs` (default 60 s).
   */
  waitForLease(options?: { mac?: string; timeoutMs?: number; signal?: AbortSignal }): Promise<LeaseEvent>;
  /** Lease, forward, flow and filter events, as they happen: `for await (const e of vm.events())`. */
  events(options?: { signal?: AbortSignal }): AsyncGenerator<VmnatEvent, void, undefined>;
  /** What vmnat has logged on stderr so far (the last 256 KiB). */
  logs(): string;
  /** Stops vmnat (SIGTERM; SIGKILL after `graceMs`, default 5 s) and removes its private directory. */
  close(options?: { graceMs?: number }): Promise<VmnatExit>;
}

/** vmnat did not start: it exited (`exitCode` 2: a bad option, named in `message`) or timed out. */
export class VmnatStartError extends Error {
  override readonly name = 'VmnatStartError';
  constructor(
    message: string,
    readonly reason: 'exited' | 'timeout' | 'spawn',
    readonly exitCode: number | null,
    /** Everything vmnat wrote on stderr. */
    readonly stderr: string,
  ) {
    super(message);
  }
}

const LOG_CAP = 256 * 1024;
const live = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Synchronous, as 'exit' listeners must be: a vmnat must not outlive the tool that started it.
  process.on('exit', () => {
    for (const child of live) child.kill('SIGKILL');
  });
}

function list<T>(v: T | readonly T[] | undefined): readonly T[] {
  if (v === undefined) return [];
  return Array.isArray(v) ? (v as readonly T[]) : [v as T];
}

/** The command-line flags for `options` (exported for tests and for tools that log them). */
export function vmnatArgs(options: VmnatOptions, defaults: { socket: string; apiSocket: string }): { args: string[]; fds: number[] } {
  const args: string[] = [];
  const sockets = list(options.socket);
  const streams = list(options.stream);
  const fds = list(options.fd);
  const taps = list(options.tap);
  const transportFlags = new Set(['--socket', '--stream', '--fd', '--tap', '--']);
  const hasTransport =
    sockets.length + streams.length + fds.length + taps.length > 0 || options.command !== undefined || (options.args ?? []).some((a) => transportFlags.has(a));
  for (const s of hasTransport ? sockets : [defaults.socket]) args.push('--socket', s);
  for (const s of streams) args.push('--stream', s);
  for (const t of taps) args.push('--tap', t.name, ...(t.netns !== undefined ? ['--netns', t.netns] : []));
  // Descriptors go to the child at 3, 4, …: spawn's stdio array places them there.
  fds.forEach((_, i) => args.push('--fd', String(3 + i)));
  if (options.net !== undefined) args.push('--net', options.net);
  if (options.mtu !== undefined) args.push('--mtu', String(options.mtu));
  for (const f of options.hostfwd ?? []) args.push('--hostfwd', f);
  for (const d of options.dnsServers ?? []) args.push('--dns-server', d);
  for (const [name, ip] of Object.entries(options.dnsHosts ?? {})) args.push('--dns-host', `${name}=${ip}`);
  if (options.tftp !== undefined) args.push('--tftp', options.tftp);
  if (options.bootfile !== undefined) args.push('--bootfile', options.bootfile);
  args.push('--api-socket', options.apiSocket ?? defaults.apiSocket);
  if (options.logLevel !== undefined) args.push('--log-level', options.logLevel);
  args.push(...(options.args ?? []));
  if (options.command !== undefined) args.push('--', ...options.command);
  return { args, fds: [...fds] };
}

/**
 * Starts vmnat and resolves once it is ready (links open, forwards bound, API listening).
 *
 * ```ts
 * const vm = await startVmnat({ hostfwd: ['tcp::0-:22'] });
 * // qemu … -netdev dgram,…,remote.type=unix,remote.path=${vm.ready.path}
 * const lease = await vm.waitForLease();
 * await vm.close();
 * ```
 */
export async function startVmnat(options: VmnatOptions = {}): Promise<VmnatHandle> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vmnat-'));
  const removeDir = (): void => rmSync(dir, { recursive: true, force: true });
  const apiSocket = options.apiSocket ?? path.join(dir, 'api.sock');
  const { args, fds } = vmnatArgs(options, { socket: path.join(dir, 'net.sock'), apiSocket });
  const stdio: Array<'ignore' | 'pipe' | number> = ['ignore', 'pipe', 'pipe', ...fds];

  let child: ChildProcess;
  try {
    child = spawn(process.execPath, [VMNAT_BIN, ...args], { stdio, env: options.env ?? process.env });
  } catch (err) {
    removeDir();
    throw new VmnatStartError(`cannot start vmnat: ${(err as Error).message}`, 'spawn', null, '');
  }
  installExitHook();
  live.add(child);

  let stderr = '';
  let partial = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    stderr = (stderr + chunk).slice(-LOG_CAP);
    if (options.onLog === undefined) return;
    partial += chunk;
    let nl: number;
    while ((nl = partial.indexOf('\n')) >= 0) {
      options.onLog(partial.slice(0, nl));
      partial = partial.slice(nl + 1);
    }
  });
  const exited = new Promise<VmnatExit>((resolve) => {
    child.once('close', (code, signal) => {
      live.delete(child);
      resolve({ code, signal });
    });
  });

  const ready = await new Promise<VmnatReady>((resolve, reject) => {
    let stdout = '';
    const timeoutMs = options.readyTimeoutMs ?? 30_000;
    const settle = (fn: () => void): void => {
      clearTimeout(timer);
      child.stdout?.off('data', onData);
      child.off('error', onError);
      fn();
    };
    const onExit = (how: VmnatExit): void => {
      const line = stderr.trim().split('\n').pop() ?? '';
      settle(() => reject(new VmnatStartError(line !== '' ? line : `vmnat exited (${how.code ?? how.signal}) before it was ready`, 'exited', how.code, stderr)));
    };
    const onError = (err: Error): void => {
      settle(() => reject(new VmnatStartError(`cannot start vmnat: ${err.message}`, 'spawn', null, stderr)));
    };
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      settle(() => reject(new VmnatStartError(`vmnat printed no ready line within ${timeoutMs} ms`, 'timeout', null, stderr)));
    }, timeoutMs);
    const onData = (chunk: Buffer): void => {
      stdout += chunk.toString('utf8');
      const nl = stdout.indexOf('\n');
      if (nl < 0) return;
      try {
        const parsed = JSON.parse(stdout.slice(0, nl)) as VmnatReady;
        settle(() => resolve(parsed));
      } catch {
        child.kill('SIGKILL');
        settle(() => reject(new VmnatStartError(`vmnat's first line is not its ready line: ${stdout.slice(0, nl)}`, 'exited', null, stderr)));
      }
    };
    child.stdout?.on('data', onData);
    child.once('error', onError);
    void exited.then(onExit);
  }).catch(async (err: unknown) => {
    await exited;
    removeDir();
    throw err;
  });
  // vmnat writes nothing more on stdout; keep the pipe drained all the same.
  child.stdout?.resume();

  const api = new ApiClient(ready.api_socket ?? apiSocket);
  let closing: Promise<VmnatExit> | undefined;
  const handle: VmnatHandle = {
    ready,
    pid: child.pid!,
    api,
    exited,
    forwards: () => api.forwards(),
    addForward(rule, name) {
      // Text is parsed here, with the command line's parser: a typo fails before any request.
      const body: Partial<ForwardRuleJson> = typeof rule === 'string' ? ruleToJson(parseHostfwd(rule)) : { ...rule };
      if (name !== undefined) body.name = name;
      return api.addForward(body);
    },
    removeForward: (name) => api.removeForward(name),
    leases: () => api.leases(),
    async waitForLease(o = {}) {
      const timeout = AbortSignal.timeout(o.timeoutMs ?? 60_000);
      const signal = o.signal !== undefined ? AbortSignal.any([o.signal, timeout]) : timeout;
      const mac = o.mac?.toLowerCase();
      for await (const e of api.eventStream({ signal })) {
        if (e.type === 'lease' && e.event === 'bound' && (mac === undefined || e.mac === mac)) return e;
      }
      throw new Error(timeout.aborted ? `no lease${mac !== undefined ? ` for ${mac}` : ''} within ${o.timeoutMs ?? 60_000} ms` : 'the event stream ended before a lease');
    },
    events: (o = {}) => api.eventStream(o),
    logs: () => stderr,
    close(o = {}) {
      closing ??= (async () => {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
        const kill = setTimeout(() => child.kill('SIGKILL'), o.graceMs ?? 5_000);
        const how = await exited;
        clearTimeout(kill);
        removeDir();
        return how;
      })();
      return closing;
    },
  };
  return handle;
}
