/**
 * vmnat's command line: flags → config → link → engine → one JSON ready line on stdout.
 *
 * Theory of operation: all validation happens before any I/O (src/config.ts); a user error prints
 * one line naming the flag and exits 2. Once the link is open and the engine attached, exactly one
 * JSON line goes to stdout (tools wait for it, as with vmnet-helper); everything else is logged on
 * stderr. SIGINT/SIGTERM close the engine (socket files removed) and exit 0. In spawn mode
 * (`vmnat … -- COMMAND`) vmnat exits with the child's status when the child exits. A link that
 * fails while running (its TAP deleted, the peer of --fd gone) is logged as an error; when no
 * working link is left vmnat exits 3.
 */
import { accessSync, constants as fsConstants, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { USAGE, ConfigError, parseArgs, type LinkConfig } from './config.ts';
import { Engine } from './engine.ts';
import { ApiServer } from './api/server.ts';
import { openLink, prepareSpawnWithSocketpair, type LinkError } from './link/index.ts';
import type { Link } from './link/types.ts';
import { NativePortLink } from './link/native-link.ts';
import { socketBufferAdvice } from './link/buffers.ts';
import { formatIpv4, formatMac } from './stack/wire/addr.ts';
import { log, setLogLevel } from './log.ts';
import { PcapOpenError } from './pcap.ts';
import { ruleToJson, type ForwardRule, type ForwardRuleJson } from './portfwd/rules.ts';
import { dropPrivileges } from './privileges.ts';
import { RuntimeDirError, checkSocketParent, ensurePrivateDir } from './runtime-dir.ts';
import { UplinkError, openUplink } from './modes/uplink.ts';
import { modeToApi } from './modes/mode.ts';

/**
 * vmnat's version from its package.json: one directory up from src/cli.ts and dist/cli.js, two
 * from the single-file bundle in dist/bundle/ (scripts/build-dist.mjs).
 */
function version(): string {
  for (const rel of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as { name?: string; version: string };
      if (pkg.name === 'vmnat') return pkg.version;
    } catch {
      // not at this depth
    }
  }
  return 'unknown';
}

/** Exit status when every link has failed while running (1: internal error; 2: bad flags). */
const EXIT_LINK_FAILED = 3;

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
  // Socket files (link, API) are born 0600 whatever the caller's umask; a spawned child gets the
  // caller's umask back.
  const callerUmask = process.umask(0o077);
  for (const w of config.warnings) log.warn(w);

  const links: Link[] = [];
  // A link that fails for good (its TAP deleted, the peer of --fd gone) stops passing frames. Until
  // the ready line, failures wait here; then each is logged, and once no link works vmnat exits
  // with EXIT_LINK_FAILED rather than sit there silently.
  const earlyFailures: LinkError[] = [];
  let linkFailed = (err: LinkError): void => void earlyFailures.push(err);
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
          // Only a directory nobody else can change keeps the socket ours (runtime-dir.ts).
          try {
            if (config.runtimeDir !== undefined) ensurePrivateDir(config.runtimeDir);
            else checkSocketParent(spec.path, config.dropTo?.uid);
          } catch (err) {
            if (!(err instanceof RuntimeDirError)) throw err;
            await Promise.all(links.map((l) => l.close()));
            fail(config.runtimeDir !== undefined ? err.message : `--${spec.kind}: ${err.message}`, 2);
          }
        }
        links.push(await openLink(spec, { onError: (err) => linkFailed(err) }));
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
  if (config.apiSocket !== undefined) {
    // Checked again when the API binds; here so that a refusal is the only line printed.
    try {
      checkSocketParent(config.apiSocket, config.dropTo?.uid);
    } catch (err) {
      if (err instanceof RuntimeDirError) fail(`--api-socket: ${err.message}`, 2);
      throw err;
    }
  }
  // Host-only and bridged modes: the host's TAP, a TAP on the bridge, or vmnet (modes/uplink.ts).
  // Once running, losing it ends vmnat as losing every guest link does: the network is gone.
  const uplinkEarly: LinkError[] = [];
  let uplinkFailed = (err: LinkError): void => void uplinkEarly.push(err);
  let uplink: Link | undefined;
  try {
    uplink = openUplink(config.mode, { onError: (err) => uplinkFailed(err) });
  } catch (err) {
    await Promise.all(links.map((l) => l.close()));
    if (err instanceof UplinkError) fail(err.message, 2);
    throw err;
  }
  // The engine comes after the links, so a bad transport flag costs exactly one line.
  let engine: Engine;
  try {
    engine = new Engine(config);
  } catch (err) {
    await Promise.all(links.map((l) => l.close()));
    await uplink?.close();
    if (err instanceof PcapOpenError) fail(`--pcap: ${err.message}`, 2);
    throw err;
  }
  for (const link of links) engine.attach(link);
  if (uplink !== undefined) engine.attachUplink(uplink);
  const link = links[0]!;
  const forwards: ForwardRuleJson[] = [];
  const addForwards = async (rules: readonly ForwardRule[]): Promise<void> => {
    for (const rule of rules) {
      try {
        // Host port 0 binds a free port: the ready line says which.
        forwards.push(ruleToJson(await engine.forwards.add(rule)));
      } catch (err) {
        await engine.close();
        const e = err as Error & { code?: string };
        fail(`forward: ${e.message}`, e.code === 'EADDRINUSE' || e.code === 'EACCES' || e.code === 'EADDRNOTAVAIL' || e.code === 'EPATH' ? 2 : 1);
      }
    }
  };
  // Ports first (below 1024 they may need root); unix socket forwards after the privilege drop
  // below, as the API socket, so the user owns the 0600 file and can connect to it.
  await addForwards(config.forwards.filter((r) => r.proto !== 'unix'));
  // Root is needed no more: the links are open, forwards bound. The API socket comes after, so
  // the user owns it and can connect to it.
  if (config.dropTo !== undefined) {
    const t = config.dropTo;
    try {
      engine.pcap?.chown(t.uid, t.gid);
      dropPrivileges(t);
    } catch (err) {
      await engine.close();
      fail(`--user: cannot become uid ${t.uid} gid ${t.gid}: ${(err as Error).message}`, 1);
    }
    log.info(`running as uid ${t.uid} gid ${t.gid}${t.name !== undefined ? ` (${t.name})` : ''}, from ${t.source}`);
  }
  await addForwards(config.forwards.filter((r) => r.proto === 'unix'));
  let api: ApiServer | undefined;
  if (config.apiSocket !== undefined) {
    try {
      api = await ApiServer.listen({ path: config.apiSocket, backend: engine });
    } catch (err) {
      await engine.close();
      const e = err as Error & { code?: string };
      fail(`--api-socket: ${e.message}`, e.code === 'EADDRINUSE_LIVE' || e.code === 'EPATH_NOT_SOCKET' || e.code === 'EUNSAFE_DIR' ? 2 : 1);
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
    ...(config.ipv6 !== undefined ? { ipv6_prefix: `${config.ipv6.prefix}/64`, gateway6: config.ipv6.gateway, dns6: config.ipv6.dns } : {}),
    ...(config.apiSocket !== undefined ? { api_socket: config.apiSocket } : {}),
    ...(forwards.length > 0 ? { forwards } : {}),
    mode: engine.mode().mode,
    ...modeToApi(config.mode),
    ...(uplink !== undefined ? { uplink: { link: uplink.kind, ...uplink.describe() } } : {}),
  };
  // Fields of the NAT layout that mean nothing in this mode (modeToApi marks them null) are left out.
  for (const [k, v] of Object.entries(ready)) if (v === null) delete (ready as Record<string, unknown>)[k];
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
  // Spawn mode: the child's exit decides the status (its socketpair end dies with it).
  const watched = links.filter((_, i) => config.links[i]!.kind !== 'spawn').length;
  let failed = 0;
  linkFailed = (err) => {
    failed++;
    log.error(`${err.message}${failed < watched ? ` (${watched - failed} link${watched - failed === 1 ? '' : 's'} still working)` : ''}`);
    if (failed >= watched && startChild === undefined) {
      log.error(`no working link left: exiting with status ${EXIT_LINK_FAILED}`);
      void stop(EXIT_LINK_FAILED);
    }
  };
  for (const err of earlyFailures.splice(0)) linkFailed(err);
  uplinkFailed = (err) => {
    log.error(`${err.message}: the ${config.mode.kind} network's uplink is gone: exiting with status ${EXIT_LINK_FAILED}`);
    void stop(EXIT_LINK_FAILED);
  };
  for (const err of uplinkEarly.splice(0)) uplinkFailed(err);
  process.stdout.write(JSON.stringify(ready) + '\n');
  log.info(`ready: ${ready.link} ${JSON.stringify(link.describe())}, mode ${ready.mode}${ready.network !== undefined ? `, network ${ready.network}` : ''}`);

  if (startChild !== undefined) {
    process.umask(callerUmask);
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
