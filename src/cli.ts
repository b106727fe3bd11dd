/**
 * vmnat's command line: flags → config → link → engine → one JSON ready line on stdout.
 *
 * Theory of operation: all validation happens before any I/O (src/config.ts); a user error prints
 * one line naming the flag and exits 2. Once the link is open and the engine attached, exactly one
 * JSON line goes to stdout (tools wait for it, as with vmnet-helper); everything else is logged on
 * stderr. SIGINT/SIGTERM close the engine (socket files removed) and exit 0. In spawn mode
 * (`vmnat … -- COMMAND`) vmnat exits with the child's status when the child exits.
 */
import { accessSync, constants as fsConstants, mkdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { USAGE, ConfigError, parseArgs, type LinkConfig } from './config.ts';
import { Engine } from './engine.ts';
import { ApiServer } from './api/server.ts';
import { openLink, prepareSpawnWithSocketpair } from './link/index.ts';
import type { Link } from './link/types.ts';
import { NativePortLink } from './link/native-link.ts';
import { socketBufferAdvice } from './link/buffers.ts';
import { formatIpv4, formatMac } from './stack/wire/addr.ts';
import { log, setLogLevel } from './log.ts';

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

function fail(message: string, status: number): never {
  process.stderr.write(`vmnat: ${message}\n`);
  process.exit(status);
}

/** Maps errors from opening a link to one line and an exit status (2 = the user's flags). */
function linkError(spec: LinkConfig, err: unknown): never {
  const e = err as NodeJS.ErrnoException & { errno?: unknown };
  const flag = spec.kind === 'spawn' ? '--' : `--${spec.kind}`;
  // Failures the user fixes by changing the flag's value exit 2; anything else is 1.
  const userCodes = new Set(['EADDRINUSE_LIVE', 'EPATH_NOT_SOCKET', 'EFD_TYPE', 'EADDRINUSE', 'ENOENT', 'EACCES', 'EBADF', 'ENOTSOCK', 'ENOTDIR', 'EPERM', 'ENAMETOOLONG']);
  const errno = typeof e.errno === 'string' ? e.errno : undefined;
  const user = userCodes.has(e.code ?? '') || (errno !== undefined && userCodes.has(errno));
  fail(`${flag}: ${e.message ?? String(err)}`, user ? 2 : 1);
}

async function main(argv: string[]): Promise<void> {
  if (argv[0] === 'ctl' || argv[0] === 'forward') {
    const { runCtl } = await import('./ctl.ts');
    process.exit(await runCtl(argv[0] === 'ctl' ? argv.slice(1) : argv));
  }
  let outcome;
  try {
    outcome = parseArgs(argv);
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message, 2);
    throw err;
  }
  if (outcome.action === 'help') {
    process.stdout.write(USAGE);
    return;
  }
  if (outcome.action === 'version') {
    process.stdout.write(`vmnat ${version()}\n`);
    return;
  }
  const config = outcome.config;
  setLogLevel(config.logLevel);
  for (const w of config.warnings) log.warn(w);

  const links: Link[] = [];
  let child: import('node:child_process').ChildProcess | undefined;
  let startChild: (() => Promise<import('node:child_process').ChildProcess>) | undefined;
  for (const spec of config.links) {
    try {
      if (spec.kind === 'spawn') {
        const file = spec.command[0]!;
        if (!commandExists(file)) fail(`--: ${file}: command not found`, 2);
        const prepared = prepareSpawnWithSocketpair(spec.command);
        links.push(prepared.link);
        startChild = prepared.start;
      } else {
        if (spec.kind === 'socket' || spec.kind === 'stream') {
          // Like qemu's and vfkit's examples (/tmp/vm1/net.sock): create the directory if missing.
          mkdirSync(path.dirname(spec.path), { recursive: true, mode: 0o700 });
        }
        links.push(await openLink(spec));
      }
    } catch (err) {
      await Promise.all(links.map((l) => l.close()));
      linkError(spec, err);
    }
  }
  // A datagram link whose buffers the system kept small loses big frames: say once what to raise.
  for (const l of links) {
    const buffers = l instanceof NativePortLink ? l.socketBuffers() : undefined;
    const advice = buffers === undefined ? undefined : socketBufferAdvice(process.platform, buffers, config.mtu);
    if (advice !== undefined) {
      log.warn(advice);
      break;
    }
  }
  // The engine comes after the links, so a bad transport flag costs exactly one line.
  const engine = new Engine(config);
  for (const link of links) engine.attach(link);
  const link = links[0]!;
  for (const rule of config.forwards) {
    try {
      await engine.forwards.add(rule);
    } catch (err) {
      await engine.close();
      const e = err as Error & { code?: string };
      fail(`forward: ${e.message}`, e.code === 'EADDRINUSE' || e.code === 'EACCES' || e.code === 'EADDRNOTAVAIL' ? 2 : 1);
    }
  }
  let api: ApiServer | undefined;
  if (config.apiSocket !== undefined) {
    try {
      api = await ApiServer.listen({ path: config.apiSocket, backend: engine });
    } catch (err) {
      await engine.close();
      const e = err as Error & { code?: string };
      fail(`--api-socket: ${e.message}`, e.code === 'EADDRINUSE_LIVE' || e.code === 'EPATH_NOT_SOCKET' ? 2 : 1);
    }
  }

  const ready = {
    link: config.links[0]!.kind === 'spawn' ? 'spawn' : link.kind,
    ...link.describe(),
    ...(links.length > 1 ? { links: links.map((l, i) => ({ link: config.links[i]!.kind === 'spawn' ? 'spawn' : l.kind, ...l.describe() })) } : {}),
    network: `${formatIpv4(config.network)}/${config.prefixLen}`,
    gateway: formatIpv4(config.gateway),
    dns: formatIpv4(config.dns),
    guest_ip: formatIpv4(config.firstLease),
    netmask: formatIpv4(config.netmask),
    mtu: config.mtu,
    gateway_mac: formatMac(engine.stack.gatewayMac),
    ...(config.apiSocket !== undefined ? { api_socket: config.apiSocket } : {}),
  };
  // Handlers first: a tool may send SIGTERM the moment it reads the ready line, and a signal with
  // no handler kills the process at once.
  let stopping = false;
  const stop = async (status: number): Promise<void> => {
    if (stopping) return;
    stopping = true;
    if (log.debugEnabled) log.debug(`stats: ${JSON.stringify(engine.stats())}`);
    await api?.close();
    await engine.close();
    process.exit(status);
  };
  process.on('SIGINT', () => {
    child?.kill('SIGINT');
    void stop(0);
  });
  process.on('SIGTERM', () => {
    child?.kill('SIGTERM');
    void stop(0);
  });
  process.on('SIGUSR1', () => {
    process.stderr.write(`vmnat: stats: ${JSON.stringify(engine.stats())}\n`);
  });
  // The last barrier (fault.ts): a bug in a host event of any service (a UDP reply, a DNS
  // answer, a forward) is counted and logged once, and costs that event, never every guest's
  // network. Installed only now, so a failure to start still ends vmnat with its one line.
  process.on('uncaughtException', (err) => engine.faults.caught('handling a host event', err));
  process.on('unhandledRejection', (err) => engine.faults.caught('handling a host event', err));
  process.stdout.write(JSON.stringify(ready) + '\n');
  log.info(`ready: ${ready.link} ${JSON.stringify(link.describe())}, network ${ready.network}`);

  if (startChild !== undefined) {
    try {
      child = await startChild();
    } catch (err) {
      await api?.close();
      await engine.close();
      fail(`--: ${(err as Error).message}`, 2);
    }
    child.on('exit', (code, signal) => {
      void stop(code ?? (signal ? 128 + (signalNumber(signal) ?? 1) : 1));
    });
  }
}

/** Whether `file` names an executable, directly or through PATH (so a typo fails before the ready line). */
function commandExists(file: string): boolean {
  const candidates = file.includes('/') ? [file] : (process.env['PATH'] ?? '').split(':').filter(Boolean).map((d) => path.join(d, file));
  return candidates.some((c) => {
    try {
      accessSync(c, fsConstants.X_OK);
      return statSync(c).isFile();
    } catch {
      return false;
    }
  });
}

function signalNumber(signal: NodeJS.Signals): number | undefined {
  const table: Partial<Record<NodeJS.Signals, number>> = { SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15 };
  return table[signal];
}

main(process.argv.slice(2)).catch((err: unknown) => {
  fail(`internal error: ${(err as Error).stack ?? String(err)}`, 1);
});
