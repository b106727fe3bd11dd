/**
 * `vmnat ctl …` (and its shorthand `vmnat forward add|rm|ls …`): the control API for people and
 * scripts.
 *
 * Theory of operation: parse the words, check a forward rule locally with the same parser as the
 * command line (so a typo costs no round trip and reads the same: `vmnat: --hostfwd: <reason>`),
 * then make one API call and print a table, or the API's JSON with `--json`. Exit status: 0 done;
 * 1 the request failed (vmnat unreachable, port taken, no such forward, …); 2 a usage error or a
 * bad rule. `events` follows the event stream until vmnat closes it (or the user interrupts).
 * `filter set FILE|-` reads and parses the rule file here too (a typo exits 2 with
 * `vmnat: FILE:LINE: reason`, no request), then sends it whole: vmnat swaps it in atomically.
 */
import { readFile } from 'node:fs/promises';
import { ApiClient, ApiError, ApiUnreachableError, type ForwardListItem } from './api/client.ts';
import type { ApiFlow, ApiLease, ApiMode, ApiPort } from './api/server.ts';
import type { ZoneEntry } from './dns/zone.ts';
import { ForwardRuleError, parseHostfwd, parseNatpf, ruleFromJson, ruleToJson, type ForwardRuleJson } from './portfwd/rules.ts';
import { FilterParseError, STDIN_SOURCE, parseFilter } from './filter/rules.ts';
import type { FilterJson } from './filter/filter.ts';

export const CTL_USAGE = `Usage: vmnat ctl [--api-socket PATH] [--json] COMMAND
       vmnat forward add|rm|ls ...      (short for vmnat ctl forward ...)

Talks to a running vmnat through its control API (vmnat --api-socket PATH).
The socket is --api-socket PATH, or $VMNAT_API_SOCKET.

Commands:
  forward add [tcp|udp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT   (qemu hostfwd syntax)
  forward add [NAME],tcp|udp,[HOSTIP],HOSTPORT,[GUESTIP],GUESTPORT  (VBoxManage natpf syntax)
      --hostfwd RULE / --natpf RULE say which syntax; --name NAME names the forward.
      An empty host address listens on 127.0.0.1 only (use 0.0.0.0 or [::] to expose it);
      an empty guest address follows the guest's lease. Ranges: tcp::8000..8010-:8000..8010
  forward add unix:/PATH-[GUESTADDR]:GUESTPORT                      (a unix socket on the host)
  forward rm NAME|RULE     remove a forward (open connections finish)
  forward ls               list forwards
  leases                   DHCP leases
  flows                    open flows with bytes each way
  dns                      the local DNS zone: configured names, the host's
                           (host.vmnat.internal, --host-alias), guests', the API's
  dns add NAME IP          answer NAME with IP at the DNS address, from now on
  dns rm NAME              stop answering NAME locally
  ports                    the switch's ports: each guest's transport, MAC, address,
                           hostname, traffic and drops
  stats                    all counters
  config                   the running configuration
  health                   is vmnat answering?
  filter                   filter rules with their hit counts
  filter set FILE|-        replace the filter rules with FILE (- = stdin), atomically;
                           the file is checked here first (vmnat --help: --filter)
  events                   follow lease, forward, flow and filter events (until vmnat exits)
  mode                     the mode in force (nat, host, bridged or disconnected), the
                           configured one, and what the pulled cable dropped
  mode disconnected|connected  pull the cable (every frame dropped and counted) or plug
                           it back (the configured mode's name works too)
  top                      a live view of ports, forwards and flows with their throughput
                           each way (q quits); over a pipe, one snapshot
      --interval S         seconds between refreshes (default 1)

Options:
  --json                   print the API's JSON (events: one JSON object per line)
  --api-socket PATH        the API socket (default: $VMNAT_API_SOCKET)
`;

export interface CtlIo {
  stdout: { write(s: string): unknown };
  stderr: { write(s: string): unknown };
  env: Record<string, string | undefined>;
  /** Ends `events`; defaults to SIGINT/SIGTERM. */
  signal?: AbortSignal;
  /** `top`'s keyboard (default process.stdin; a TTY is put in raw mode while it runs). */
  stdin?: NodeJS.ReadStream;
  /** All of stdin (`filter set -`); defaults to reading process.stdin. */
  readStdin?: () => Promise<string>;
}

class UsageError extends Error {}

/**
 * Runs `vmnat ctl ARGV…` (ARGV without the `ctl` word; `vmnat forward …` passes
 * `['forward', …]`). Resolves with the exit status; never throws for user errors.
 */
export async function runCtl(argv: readonly string[], io: CtlIo = { stdout: process.stdout, stderr: process.stderr, env: process.env }): Promise<number> {
  const err = (msg: string): void => {
    io.stderr.write(`vmnat: ${msg}\n`);
  };
  let opts: ReturnType<typeof parseCtlArgs>;
  try {
    opts = parseCtlArgs(argv, io.env);
  } catch (e) {
    if (e instanceof UsageError) {
      err(`${e.message} (see vmnat ctl --help)`);
      return 2;
    }
    if (e instanceof ForwardRuleError) {
      err(e.message);
      return 2;
    }
    throw e;
  }
  if (opts.help) {
    io.stdout.write(CTL_USAGE);
    return 0;
  }
  const client = new ApiClient(opts.socket);
  const out = (s: string): void => {
    io.stdout.write(s.endsWith('\n') ? s : s + '\n');
  };
  const printJson = (v: unknown): void => out(JSON.stringify(v, null, 2));
  try {
    switch (opts.command) {
      case 'forward add': {
        const rule = await client.addForward(opts.rule!);
        if (opts.json) printJson(rule);
        else out(`added ${rule.name}: ${describeForward(rule)}`);
        return 0;
      }
      case 'forward rm': {
        await client.removeForward(opts.name!);
        if (opts.json) printJson({ removed: opts.name });
        else out(`removed ${opts.name}`);
        return 0;
      }
      case 'forward ls': {
        const list = await client.forwards();
        if (opts.json) printJson(list);
        else out(list.length === 0 ? 'no forwards' : forwardsTable(list));
        return 0;
      }
      case 'leases': {
        const leases = await client.leases();
        if (opts.json) printJson(leases);
        else out(leases.length === 0 ? 'no leases' : leasesTable(leases));
        return 0;
      }
      case 'flows': {
        const flows = await client.flows();
        if (opts.json) printJson(flows);
        else out(flows.length === 0 ? 'no open flows' : flowsTable(flows));
        return 0;
      }
      case 'ports': {
        const ports = await client.ports();
        if (opts.json) printJson(ports);
        else out(ports.length === 0 ? 'no ports' : portsTable(ports));
        return 0;
      }
      case 'stats':
      case 'config':
      case 'health': {
        const v = opts.command === 'stats' ? await client.stats() : opts.command === 'config' ? await client.config() : await client.health();
        if (opts.json) printJson(v);
        else out(keyValueLines(v));
        return 0;
      }
      case 'dns': {
        const zone = (await client.call('GET', '/dns')) as ZoneEntry[];
        if (opts.json) printJson(zone);
        else out(zone.length === 0 ? 'no local names' : table(['NAME', 'ADDRESSES', 'SOURCE'], zone.map((z) => [z.name, z.addresses.join(' '), z.source])));
        return 0;
      }
      case 'dns add': {
        const e = (await client.call('POST', '/dns', { name: opts.name, ip: opts.ip })) as ZoneEntry;
        if (opts.json) printJson(e);
        else out(`${e.name} → ${e.addresses.join(' ')}`);
        return 0;
      }
      case 'dns rm': {
        await client.call('DELETE', `/dns/${encodeURIComponent(opts.name!)}`);
        if (!opts.json) out(`removed ${opts.name}`);
        return 0;
      }
      case 'filter': {
        const f = await client.filter();
        if (opts.json) printJson(f);
        else out(filterTable(f));
        return 0;
      }
      case 'filter set': {
        const file = opts.name!;
        const source = file === '-' ? STDIN_SOURCE : file;
        let text: string;
        try {
          text = file === '-' ? await (io.readStdin ?? readStdin)() : await readFile(file, 'utf8');
        } catch (e) {
          err(`filter set: cannot read ${source}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
          return 2;
        }
        try {
          parseFilter(text, source);
        } catch (e) {
          if (!(e instanceof FilterParseError)) throw e;
          err(e.message);
          return 2;
        }
        const f = await client.setFilter(text, source);
        if (opts.json) printJson(f);
        else out(`filter: ${plural(f.rules.length, 'rule')} from ${source} in force`);
        return 0;
      }
      case 'mode': {
        const m = (opts.name === undefined ? await client.call('GET', '/mode') : await client.call('PUT', '/mode', { mode: opts.name })) as ApiMode;
        if (opts.json) printJson(m);
        else {
          const dropped = m.dropped_from_ports + m.dropped_to_ports > 0 ? `\ndropped while disconnected: ${m.dropped_from_ports} from the ports, ${m.dropped_to_ports} to them` : '';
          out(`mode: ${m.mode}${m.mode === 'disconnected' ? ` (configured: ${m.configured})` : ''}${dropped}`);
        }
        return 0;
      }
      case 'top': {
        const { runTop } = await import('./ctl-top.ts');
        const stdout = io.stdout as CtlIo['stdout'] & Partial<Pick<NodeJS.WriteStream, 'isTTY' | 'columns' | 'rows' | 'on' | 'off'>>;
        const topIo: Parameters<typeof runTop>[1] = { stdout, stderr: io.stderr, stdin: io.stdin ?? (io.stdout === process.stdout ? process.stdin : undefined) };
        if (io.signal !== undefined) topIo.signal = io.signal;
        return await runTop(client, topIo, opts.intervalS);
      }
      case 'events': {
        const ac = new AbortController();
        const stop = (): void => ac.abort();
        let signal = ac.signal;
        if (io.signal !== undefined) signal = AbortSignal.any([io.signal, ac.signal]);
        else {
          process.once('SIGINT', stop);
          process.once('SIGTERM', stop);
        }
        try {
          await client.events((e, line) => out(opts.json ? line : describeEvent(e)), signal);
        } finally {
          process.off('SIGINT', stop);
          process.off('SIGTERM', stop);
        }
        return 0;
      }
    }
  } catch (e) {
    if (e instanceof ApiUnreachableError) {
      err(e.message);
      return 1;
    }
    if (e instanceof ApiError) {
      if (e.code === 'bad_rule') {
        err(`${opts.ruleFlag}: ${e.message}`);
        return 2;
      }
      if (e.code === 'bad_filter') {
        err(e.message);
        return 2;
      }
      err(`${opts.command}: ${e.message}`);
      return 1;
    }
    err(`${opts.command}: ${(e as Error).message ?? String(e)}`);
    return 1;
  }
}

type Command = 'forward add' | 'forward rm' | 'forward ls' | 'leases' | 'flows' | 'ports' | 'stats' | 'config' | 'health' | 'events' | 'filter' | 'filter set' | 'dns' | 'dns add' | 'dns rm' | 'mode' | 'top';

interface CtlOptions {
  help: boolean;
  json: boolean;
  socket: string;
  command: Command;
  /** forward add: the checked rule, as the API's JSON. */
  rule?: ForwardRuleJson;
  /** Which syntax the rule came in (for error lines). */
  ruleFlag: string;
  /** forward rm: the forward; filter set: the file (`-` = stdin); dns add/rm: the name. */
  name?: string;
  /** dns add: the address. */
  ip?: string;
  /** top: seconds between samples. */
  intervalS: number;
}

function parseCtlArgs(argv: readonly string[], env: Record<string, string | undefined>): CtlOptions & { help: boolean } {
  let socket: string | undefined;
  let json = false;
  let help = false;
  let natpf: string | undefined;
  let hostfwd: string | undefined;
  let name: string | undefined;
  let intervalS: number | undefined;
  const words: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i]!;
    let inline: string | undefined;
    if (arg.startsWith('--') && arg.includes('=')) {
      inline = arg.slice(arg.indexOf('=') + 1);
      arg = arg.slice(0, arg.indexOf('='));
    }
    const value = (): string => {
      const v = inline ?? argv[++i];
      if (v === undefined) throw new UsageError(`${arg}: needs a value`);
      return v;
    };
    if (arg === '--help' || arg === '-h') help = true;
    else if (arg === '--json') json = true;
    else if (arg === '--api-socket') socket = value();
    else if (arg === '--natpf') natpf = value();
    else if (arg === '--hostfwd') hostfwd = value();
    else if (arg === '--name') name = value();
    else if (arg === '--interval') {
      const text = value();
      const n = Number(text);
      if (text.trim() === '' || !Number.isFinite(n) || n < 0.1 || n > 3600) throw new UsageError(`--interval: ${JSON.stringify(text)} is not a number of seconds from 0.1 to 3600`);
      intervalS = n;
    }
    else if (arg === '--') {
      words.push(...argv.slice(i + 1));
      break;
    } else if (arg.startsWith('--')) throw new UsageError(`${arg}: unknown option`);
    else words.push(arg);
  }
  if (help) return { help, json, socket: '', command: 'health', ruleFlag: '', intervalS: 1 };
  socket ??= env['VMNAT_API_SOCKET'];
  if (socket === undefined || socket === '') throw new UsageError('needs --api-socket PATH (or VMNAT_API_SOCKET)');
  const [w0, w1, ...rest] = words;
  if (w0 === undefined) throw new UsageError('needs a command');
  const base = { help, json, socket, ruleFlag: '--hostfwd', intervalS: intervalS ?? 1 };
  if (intervalS !== undefined && w0 !== 'top') throw new UsageError('--interval only applies to "top"');
  const noMore = (extra: readonly string[]): void => {
    if (extra.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(extra[0])}`);
  };
  if ((natpf !== undefined || hostfwd !== undefined || name !== undefined) && !(w0 === 'forward' && w1 === 'add')) {
    throw new UsageError('--natpf, --hostfwd and --name only apply to "forward add"');
  }
  if (w0 === 'forward' || w0 === 'forwards') {
    if (w1 === 'add') {
      const given = [natpf, hostfwd, ...rest].filter((x) => x !== undefined);
      if (given.length === 0) throw new UsageError('forward add: needs a rule (e.g. tcp::8080-:80)');
      if (given.length > 1) throw new UsageError('forward add: takes one rule');
      const text = given[0]!;
      // natpf has commas and hostfwd never does, so a bare rule's syntax is unambiguous.
      const asNatpf = natpf !== undefined || (hostfwd === undefined && text.includes(','));
      const ruleFlag = asNatpf ? '--natpf' : '--hostfwd';
      let rule;
      try {
        rule = asNatpf ? parseNatpf(text) : parseHostfwd(text);
        if (name !== undefined) rule = ruleFromJson({ ...ruleToJson(rule), name });
      } catch (e) {
        if (e instanceof ForwardRuleError) throw new ForwardRuleError(`${ruleFlag}: ${e.message}`);
        throw e;
      }
      return { ...base, command: 'forward add', rule: ruleToJson(rule), ruleFlag };
    }
    if (w1 === 'rm' || w1 === 'remove' || w1 === 'del' || w1 === 'delete') {
      const [target, ...extra] = rest;
      if (target === undefined) throw new UsageError('forward rm: needs a forward NAME (see vmnat ctl forward ls)');
      noMore(extra);
      return { ...base, command: 'forward rm', name: nameOf(target) };
    }
    if (w1 === 'ls' || w1 === 'list' || w1 === undefined) {
      noMore(rest);
      return { ...base, command: 'forward ls' };
    }
    throw new UsageError(`forward: unknown subcommand ${JSON.stringify(w1)} (add, rm, ls)`);
  }
  if (w0 === 'mode') {
    noMore(rest);
    return w1 === undefined ? { ...base, command: 'mode' } : { ...base, command: 'mode', name: w1 };
  }
  if (w0 === 'dns') {
    if (w1 === undefined || w1 === 'ls') {
      noMore(rest);
      return { ...base, command: 'dns' };
    }
    if (w1 === 'add') {
      const [name, ip, ...extra] = rest;
      if (name === undefined || ip === undefined) throw new UsageError('dns add: needs NAME IP');
      noMore(extra);
      return { ...base, command: 'dns add', name, ip };
    }
    if (w1 === 'rm') {
      const [name, ...extra] = rest;
      if (name === undefined) throw new UsageError('dns rm: needs NAME');
      noMore(extra);
      return { ...base, command: 'dns rm', name };
    }
    throw new UsageError(`dns: unknown subcommand ${JSON.stringify(w1)} (add, rm, or none to list)`);
  }
  if (w0 === 'filter') {
    if (w1 === undefined || w1 === 'ls' || w1 === 'show') {
      noMore(rest);
      return { ...base, command: 'filter' };
    }
    if (w1 === 'set') {
      const [file, ...extra] = rest;
      if (file === undefined || file === '') throw new UsageError('filter set: needs a FILE (or - for stdin)');
      noMore(extra);
      return { ...base, command: 'filter set', name: file };
    }
    throw new UsageError(`filter: unknown subcommand ${JSON.stringify(w1)} (set, or none to show the rules)`);
  }
  const simple: Record<string, Command> = { leases: 'leases', flows: 'flows', ports: 'ports', stats: 'stats', config: 'config', health: 'health', events: 'events', top: 'top' };
  const command = simple[w0];
  if (command === undefined || !Object.hasOwn(simple, w0)) throw new UsageError(`unknown command ${JSON.stringify(w0)}`);
  noMore(w1 === undefined ? rest : [w1, ...rest]);
  return { ...base, command };
}

function readStdin(): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    process.stdin.on('data', (c: Buffer) => chunks.push(c));
    process.stdin.once('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    process.stdin.once('error', reject);
  });
}

/** `forward rm` takes a name, or a rule in either syntax (whose name is then the generated one). */
function nameOf(target: string): string {
  try {
    return target.includes(',') ? parseNatpf(target).name : parseHostfwd(target).name;
  } catch {
    return target;
  }
}

// ── output ──────────────────────────────────────────────────────────────────────────────────

function ports(first: number, count: number): string {
  return count > 1 ? `${first}..${first + count - 1}` : String(first);
}

function hostSide(r: ForwardRuleJson): string {
  if (r.proto === 'unix') return `unix:${r.host_addr}`;
  return `${r.host_addr.includes(':') ? `[${r.host_addr}]` : r.host_addr}:${ports(r.host_port, r.port_count)}`;
}

function guestSide(r: ForwardRuleJson): string {
  const addr = r.guest_addr === null ? '(lease)' : r.guest_addr.includes(':') ? `[${r.guest_addr}]` : r.guest_addr;
  return `${addr}:${ports(r.guest_port, r.port_count)}`;
}

function describeForward(r: ForwardRuleJson): string {
  if (r.proto === 'unix') return `${hostSide(r)} -> guest tcp ${guestSide(r)}`;
  return `${r.proto} ${hostSide(r)} -> guest ${guestSide(r)}`;
}

/** Left-aligned columns, two spaces apart; numbers right-aligned. */
export function table(headers: readonly string[], rows: readonly (readonly (string | number)[])[]): string {
  const cells = rows.map((r) => r.map((c) => String(c)));
  const widths = headers.map((h, i) => Math.max(h.length, ...cells.map((r) => (r[i] ?? '').length)));
  const numeric = headers.map((_, i) => rows.length > 0 && rows.every((r) => typeof r[i] === 'number'));
  const line = (r: readonly string[]): string =>
    r
      .map((c, i) => (numeric[i] ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(headers), ...cells.map(line)].join('\n');
}

function forwardsTable(list: readonly ForwardListItem[]): string {
  return table(
    ['NAME', 'PROTO', 'HOST', 'GUEST', 'ACTIVE', 'TOTAL'],
    list.map((f) => [f.name, f.proto, hostSide(f), guestSide(f), f.proto === 'udp' ? f.udp_flows : f.tcp_active, f.proto === 'udp' ? '-' : f.tcp_accepted]),
  );
}

function leasesTable(leases: readonly ApiLease[]): string {
  // The IPv6 column only when some guest has been seen using IPv6 (dual-stack guests).
  const v6 = leases.some((l) => (l.ipv6?.length ?? 0) > 0);
  return table(
    ['IP', 'MAC', 'HOSTNAME', 'STATE', 'EXPIRES', ...(v6 ? ['IPV6'] : [])],
    leases.map((l) => [
      l.ip, l.mac, l.hostname ?? '-', l.static ? `${l.state} (static)` : l.state, l.expires_in_s === null ? 'never' : `in ${duration(l.expires_in_s)}`,
      ...(v6 ? [l.ipv6 !== undefined && l.ipv6.length > 0 ? l.ipv6.join(' ') : '-'] : []),
    ]),
  );
}

function portsTable(ports: readonly ApiPort[]): string {
  const where = (p: ApiPort): string => {
    const fields = Object.entries(p).filter(([k]) => ['path', 'fd', 'tap', 'netns', 'connection'].includes(k));
    return fields.length === 0 ? p.transport : `${p.transport} ${fields.map(([k, v]) => (k === 'connection' ? `#${String(v)}` : String(v))).join(' ')}`;
  };
  const drops = (p: ApiPort): string => {
    const nonZero = Object.entries(p.drops).filter(([, n]) => n > 0);
    return nonZero.length === 0 ? '-' : nonZero.map(([k, n]) => `${k}=${n}`).join(',');
  };
  return table(
    ['PORT', 'TRANSPORT', 'MAC', 'ADDRESS', 'HOSTNAME', 'RX', 'TX', 'DROPS'],
    ports.map((p) => [
      String(p.id),
      where(p),
      p.mac ?? '-',
      p.ip === null ? '-' : p.address_source === 'static' ? `${p.ip} (static)` : p.ip,
      p.hostname ?? '-',
      `${p.rx_frames} fr ${bytes(p.rx_bytes)}`,
      `${p.tx_frames} fr ${bytes(p.tx_bytes)}`,
      drops(p),
    ]),
  );
}

function flowsTable(flows: readonly ApiFlow[]): string {
  return table(
    ['PROTO', 'GUEST', 'REMOTE', 'FORWARD', 'STATE', 'FROM GUEST', 'TO GUEST', 'HOST SOCKET'],
    flows.map((f) => [f.proto, f.guest, f.remote, f.forward ?? '-', f.state ?? '-', bytes(f.bytes_from_guest), bytes(f.bytes_to_guest), hostSocket(f)]),
  );
}

/**
 * The host socket behind a flow, as netstat/ss would show it for vmnat's process: `local -> peer`
 * for a connection vmnat dialed, `local <- peer` for one a forward accepted; just the peer when
 * vmnat does not know its own end (UDP, local services).
 */
function hostSocket(f: ApiFlow): string {
  if (f.host === undefined) return '-';
  if (f.host_local === undefined) return f.host;
  return f.forward !== undefined ? `${f.host_local} <- ${f.host}` : `${f.host_local} -> ${f.host}`;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

/** The rules with their hits, then one line of totals. */
function filterTable(f: FilterJson): string {
  const totals = `${plural(f.checks, 'check')}: ${f.blocked} blocked, ${f.unmatched} matched no rule (passed)`;
  if (f.rules.length === 0) return `no filter rules: everything passes (${totals})`;
  const rows = f.rules.map((r) => [r.line, r.hits, r.text]);
  return `${table(['LINE', 'HITS', 'RULE'], rows)}
${f.source ?? 'rules'}: ${plural(f.rules.length, 'rule')}, ${totals}`;
}

export function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[u]}`;
}

function duration(s: number): string {
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  if (s < 172800) return `${Math.round(s / 3600)}h`;
  return `${Math.round(s / 86400)}d`;
}

/** Nested objects as `a.b.c  value` lines, aligned. */
export function keyValueLines(v: Record<string, unknown>): string {
  const rows: [string, string][] = [];
  const walk = (prefix: string, x: unknown): void => {
    if (typeof x === 'object' && x !== null && !Array.isArray(x) && Object.keys(x).length > 0) {
      for (const [k, y] of Object.entries(x)) walk(prefix === '' ? k : `${prefix}.${k}`, y);
    } else if (Array.isArray(x) && x.some((y) => typeof y === 'object' && y !== null)) {
      x.forEach((y, i) => walk(`${prefix}[${i}]`, y));
    } else {
      rows.push([prefix, x === null || x === undefined ? '-' : Array.isArray(x) ? x.join(', ') || '-' : typeof x === 'object' ? '-' : String(x)]);
    }
  };
  walk('', v);
  const width = Math.max(0, ...rows.map(([k]) => k.length));
  return rows.map(([k, val]) => `${k.padEnd(width)}  ${val}`).join('\n');
}

/** One readable line per event. */
export function describeEvent(e: Record<string, unknown>): string {
  const time = typeof e['time'] === 'string' ? e['time'].slice(11, 19) : '--:--:--';
  const s = (k: string, o: Record<string, unknown> = e): string => (typeof o[k] === 'string' || typeof o[k] === 'number' ? String(o[k]) : '');
  switch (e['type']) {
    case 'lease':
      return `${time} lease ${s('event')} ${s('ip')} ${s('mac')}${e['hostname'] !== undefined ? ` (${s('hostname')})` : ''}${e['replay'] === true ? ' [already bound]' : ''}`;
    case 'forward': {
      const r = e['rule'] as ForwardRuleJson | undefined;
      return `${time} forward ${s('event')} ${r === undefined ? '?' : `${r.name}: ${describeForward(r)}`}`;
    }
    case 'flow': {
      const f = (e['flow'] ?? {}) as Partial<ApiFlow>;
      const via = f.forward !== undefined ? ` [forward ${f.forward}]` : '';
      const tail = e['event'] === 'close' ? ` ${bytes(f.bytes_from_guest ?? 0)} from guest, ${bytes(f.bytes_to_guest ?? 0)} to guest${e['reason'] !== undefined ? ` (${s('reason')})` : ''}` : '';
      return `${time} flow ${s('event')} ${f.proto ?? '?'} ${f.guest ?? '?'} <-> ${f.remote ?? '?'}${via}${tail}`;
    }
    case 'filter':
      return `${time} filter ${s('event')} ${s('direction')} ${s('proto')} ${s('src')} -> ${s('dst')} (line ${s('line')}: ${s('rule')})`;
    default:
      return `${time} ${JSON.stringify(e)}`;
  }
}
