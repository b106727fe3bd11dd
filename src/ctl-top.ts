/**
 * `vmnat ctl top`: a live view of a running vmnat (guest ports, forwards, flows) with the current
 * throughput of each, both ways, refreshed like top(1).
 *
 * Theory of operation: every interval (default 1 s) one sample is three API calls (GET /ports,
 * /forwards, /flows) and the health line. Throughput is the change of each byte counter between
 * two samples over the time between them: per port (its rx/tx bytes: from and to the guest), per
 * flow (keyed by protocol and both guest-side ends), and per forward (the sum over the flows that
 * carry its name). A flow first seen in a sample counts from zero over the lesser of its age and
 * the interval. `TopModel` holds that arithmetic and `renderTop` the layout; both are pure, so they
 * are tested without a terminal.
 *
 * On a terminal: the alternate screen, the cursor hidden, the screen redrawn in place every
 * interval and on resize; stdin in raw mode, `q` (or Ctrl-C) quits and restores the terminal.
 * Over a plain pipe (stdout not a TTY): two samples one interval apart, one snapshot printed
 * without escape codes, exit 0 — what a script or a bug report wants. If vmnat goes away the view
 * ends with its error and status 1.
 */
import type { ApiClient, ForwardListItem } from './api/client.ts';
import type { ApiFlow, ApiPort } from './api/server.ts';

export interface TopSample {
  /** ms, monotonic. */
  at: number;
  ports: ApiPort[];
  forwards: ForwardListItem[];
  flows: ApiFlow[];
  uptimeS?: number;
}

/** Bytes per second each way: `fromGuest` leaves the guest, `toGuest` reaches it. */
export interface Rate {
  fromGuest: number;
  toGuest: number;
}

export interface TopView {
  intervalS: number;
  uptimeS?: number;
  ports: Array<{ port: ApiPort; rate: Rate }>;
  forwards: Array<{ forward: ForwardListItem; rate: Rate; bytes: Rate }>;
  flows: Array<{ flow: ApiFlow; rate: Rate }>;
  total: Rate;
}

const flowKey = (f: ApiFlow): string => `${f.proto} ${f.guest} ${f.remote} ${f.host_local ?? ''}`;

/** Turns successive samples into rates. */
export class TopModel {
  private prev: TopSample | undefined;
  private readonly prevFlows = new Map<string, ApiFlow>();
  private readonly prevPorts = new Map<number, ApiPort>();

  /** The view of `s` against the previous sample (rates are 0 on the first). */
  update(s: TopSample): TopView {
    const dtS = this.prev === undefined ? 0 : Math.max(0.001, (s.at - this.prev.at) / 1000);
    const per = (now: number, before: number | undefined, spanS: number): number => (spanS <= 0 ? 0 : Math.max(0, now - (before ?? 0)) / spanS);

    const ports = s.ports.map((port) => {
      const b = this.prevPorts.get(port.id);
      const span = b === undefined ? 0 : dtS;
      return { port, rate: { fromGuest: per(port.rx_bytes, b?.rx_bytes, span), toGuest: per(port.tx_bytes, b?.tx_bytes, span) } };
    });
    const flows = s.flows.map((flow) => {
      const b = this.prevFlows.get(flowKey(flow));
      // New since the last sample: all its bytes came within its age (or the interval).
      const span = this.prev === undefined ? 0 : b !== undefined ? dtS : Math.min(dtS, Math.max(flow.age_s ?? dtS, 0.001));
      return { flow, rate: { fromGuest: per(flow.bytes_from_guest, b?.bytes_from_guest, span), toGuest: per(flow.bytes_to_guest, b?.bytes_to_guest, span) } };
    });
    const forwards = s.forwards.map((forward) => {
      const rate: Rate = { fromGuest: 0, toGuest: 0 };
      const bytes: Rate = { fromGuest: 0, toGuest: 0 };
      for (const f of flows) {
        if (f.flow.forward !== forward.name) continue;
        rate.fromGuest += f.rate.fromGuest;
        rate.toGuest += f.rate.toGuest;
        bytes.fromGuest += f.flow.bytes_from_guest;
        bytes.toGuest += f.flow.bytes_to_guest;
      }
      return { forward, rate, bytes };
    });
    flows.sort((a, b) => b.rate.fromGuest + b.rate.toGuest - (a.rate.fromGuest + a.rate.toGuest) || b.flow.bytes_from_guest + b.flow.bytes_to_guest - (a.flow.bytes_from_guest + a.flow.bytes_to_guest));
    const total = ports.reduce<Rate>((t, p) => ({ fromGuest: t.fromGuest + p.rate.fromGuest, toGuest: t.toGuest + p.rate.toGuest }), { fromGuest: 0, toGuest: 0 });

    this.prev = s;
    this.prevFlows.clear();
    for (const f of s.flows) this.prevFlows.set(flowKey(f), f);
    this.prevPorts.clear();
    for (const p of s.ports) this.prevPorts.set(p.id, p);
    const view: TopView = { intervalS: dtS, ports, forwards, flows, total };
    if (s.uptimeS !== undefined) view.uptimeS = s.uptimeS;
    return view;
  }
}

/** 1234567 → "1.2 MB/s" (decimal units, as network tools count). */
export function formatRate(bytesPerS: number): string {
  return `${formatBytes(bytesPerS)}/s`;
}

export function formatBytes(n: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let v = n;
  let u = 0;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return u === 0 ? `${Math.round(v)} B` : `${v >= 100 ? v.toFixed(0) : v.toFixed(1)} ${units[u]}`;
}

function grid(headers: readonly string[], rows: ReadonlyArray<readonly string[]>, right: ReadonlySet<number>): string[] {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: readonly string[]): string =>
    r.map((c, i) => (right.has(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd();
  return [line(headers), ...rows.map(line)];
}

function portWhere(p: ApiPort): string {
  const extra = ['path', 'tap', 'netns', 'fd', 'connection'].filter((k) => p[k] !== undefined && p[k] !== null).map((k) => (k === 'connection' ? `#${String(p[k])}` : String(p[k])));
  return [p.transport, ...extra].join(' ');
}

function uptime(s: number): string {
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h > 0 ? `${h}h${String(m).padStart(2, '0')}m` : m > 0 ? `${m}m${String(Math.floor(s % 60)).padStart(2, '0')}s` : `${Math.floor(s)}s`;
}

/**
 * The screen: a summary line, then PORTS, FORWARDS and FLOWS (busiest first). `height` limits
 * the flow rows to what fits (the rest is counted); `width` cuts long lines.
 */
export function renderTop(v: TopView, o: { width?: number; height?: number; hint?: string } = {}): string[] {
  const counts = { tcp: 0, udp: 0, icmp: 0 };
  for (const f of v.flows) counts[f.flow.proto]++;
  const lines: string[] = [];
  lines.push(
    [
      'vmnat',
      v.uptimeS !== undefined ? `up ${uptime(v.uptimeS)}` : undefined,
      `${v.ports.length} port${v.ports.length === 1 ? '' : 's'}`,
      `${v.flows.length} flow${v.flows.length === 1 ? '' : 's'} (tcp ${counts.tcp}, udp ${counts.udp}, icmp ${counts.icmp})`,
      `${v.forwards.length} forward${v.forwards.length === 1 ? '' : 's'}`,
      `from guests ${formatRate(v.total.fromGuest)}`,
      `to guests ${formatRate(v.total.toGuest)}`,
    ].filter((x) => x !== undefined).join('  ·  ') + (o.hint !== undefined ? `   ${o.hint}` : ''),
  );
  lines.push('');
  lines.push('PORTS');
  lines.push(
    ...grid(
      ['ID', 'TRANSPORT', 'MAC', 'ADDRESS', 'HOSTNAME', 'FROM GUEST', 'TO GUEST', 'TOTAL FROM', 'TOTAL TO'],
      v.ports.map(({ port: p, rate }) => [String(p.id), portWhere(p), p.mac ?? '-', p.ip ?? '-', p.hostname ?? '-', formatRate(rate.fromGuest), formatRate(rate.toGuest), formatBytes(p.rx_bytes), formatBytes(p.tx_bytes)]),
      new Set([0, 5, 6, 7, 8]),
    ).map((l) => `  ${l}`),
  );
  lines.push('');
  lines.push('FORWARDS');
  if (v.forwards.length === 0) lines.push('  none');
  else {
    lines.push(
      ...grid(
        ['NAME', 'PROTO', 'HOST', 'GUEST', 'OPEN', 'FROM GUEST', 'TO GUEST', 'TOTAL FROM', 'TOTAL TO'],
        v.forwards.map(({ forward: f, rate, bytes }) => [
          f.name,
          f.proto,
          `${f.host_addr}:${f.host_port}${f.port_count > 1 ? `..${f.host_port + f.port_count - 1}` : ''}`,
          `${f.guest_addr ?? 'guest'}:${f.guest_port}`,
          String(f.proto === 'tcp' ? f.tcp_active : f.udp_flows),
          formatRate(rate.fromGuest),
          formatRate(rate.toGuest),
          formatBytes(bytes.fromGuest),
          formatBytes(bytes.toGuest),
        ]),
        new Set([4, 5, 6, 7, 8]),
      ).map((l) => `  ${l}`),
    );
  }
  lines.push('');
  const room = o.height === undefined ? v.flows.length : Math.max(0, o.height - lines.length - 2);
  const shown = v.flows.slice(0, room);
  lines.push(`FLOWS${shown.length < v.flows.length ? ` (busiest ${shown.length} of ${v.flows.length})` : ''}`);
  if (v.flows.length === 0) lines.push('  none');
  else {
    lines.push(
      ...grid(
        ['PROTO', 'GUEST', 'REMOTE', 'FORWARD', 'STATE', 'FROM GUEST', 'TO GUEST', 'AGE'],
        shown.map(({ flow: f, rate }) => [f.proto, f.guest, f.remote, f.forward ?? '-', f.state ?? '-', formatRate(rate.fromGuest), formatRate(rate.toGuest), f.age_s !== undefined ? uptime(f.age_s) : '-']),
        new Set([5, 6, 7]),
      ).map((l) => `  ${l}`),
    );
  }
  return o.width === undefined ? lines : lines.map((l) => (l.length > o.width! ? l.slice(0, o.width) : l));
}

export interface TopIo {
  stdout: { write(s: string): unknown; isTTY?: boolean; columns?: number; rows?: number; on?(ev: 'resize', fn: () => void): unknown; off?(ev: 'resize', fn: () => void): unknown };
  stderr: { write(s: string): unknown };
  stdin?: NodeJS.ReadStream;
  signal?: AbortSignal;
}

async function sample(client: ApiClient): Promise<TopSample> {
  const [ports, forwards, flows, health] = await Promise.all([client.ports(), client.forwards(), client.flows(), client.health()]);
  const s: TopSample = { at: performance.now(), ports, forwards, flows };
  if (typeof health['uptime_s'] === 'number') s.uptimeS = health['uptime_s'];
  return s;
}

/** Runs the view; resolves with the exit status. */
export async function runTop(client: ApiClient, io: TopIo, intervalS: number): Promise<number> {
  const model = new TopModel();
  const wait = (ms: number, signal: AbortSignal): Promise<void> =>
    new Promise((r) => {
      const t = setTimeout(r, ms);
      signal.addEventListener('abort', () => (clearTimeout(t), r()), { once: true });
    });

  if (io.stdout.isTTY !== true) {
    // One snapshot: two samples, so that the rates are rates.
    model.update(await sample(client));
    await wait(intervalS * 1000, io.signal ?? new AbortController().signal);
    io.stdout.write(renderTop(model.update(await sample(client))).join('\n') + '\n');
    return 0;
  }

  const quit = new AbortController();
  const signal = io.signal !== undefined ? AbortSignal.any([io.signal, quit.signal]) : quit.signal;
  const stdin = io.stdin;
  const onKey = (data: Buffer | string): void => {
    const s = typeof data === 'string' ? data : data.toString('latin1');
    if (s.includes('q') || s.includes('Q') || s.includes('\x03')) quit.abort();
  };
  const onSignal = (): void => quit.abort();
  let view: TopView | undefined;
  const draw = (): void => {
    if (view === undefined) return;
    const width = io.stdout.columns ?? 120;
    const height = io.stdout.rows ?? 40;
    const lines = renderTop(view, { width, height, hint: `(q quits; every ${intervalS} s)` });
    // Home, each line then clear to its end, then clear below: no flicker, no scrolling.
    io.stdout.write(`\x1b[H${lines.slice(0, height).map((l) => `${l}\x1b[K`).join('\r\n')}\x1b[J`);
  };
  io.stdout.write('\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J');
  if (stdin?.isTTY === true) stdin.setRawMode(true);
  stdin?.on('data', onKey);
  stdin?.resume();
  io.stdout.on?.('resize', draw);
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  let status = 0;
  try {
    model.update(await sample(client));
    // The first screen after a short first interval, not a whole one.
    let next = Math.min(intervalS * 1000, 300);
    while (!signal.aborted) {
      await wait(next, signal);
      next = intervalS * 1000;
      if (signal.aborted) break;
      view = model.update(await sample(client));
      draw();
    }
  } catch (e) {
    status = 1;
    io.stdout.write('\x1b[?25h\x1b[?1049l');
    io.stderr.write(`vmnat: top: ${(e as Error).message}\n`);
    return status;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    io.stdout.off?.('resize', draw);
    stdin?.off('data', onKey);
    if (stdin?.isTTY === true) stdin.setRawMode(false);
    stdin?.pause();
  }
  io.stdout.write('\x1b[?25h\x1b[?1049l');
  return status;
}
