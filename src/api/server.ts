/**
 * The control API: HTTP/1.1 + JSON on a unix socket (`--api-socket PATH`), for tools and people
 * (`curl --unix-socket PATH http://vmnat/forwards`, `vmnat ctl …`).
 *
 * Theory of operation: a plain `node:http` server bound to PATH with mode 0600 (created under umask
 * 177, so there is no window where others can connect), in a directory only we or root can change
 * (runtime-dir.ts; `EUNSAFE_DIR` otherwise). A stale socket file
 * (nobody accepts on it) is replaced; a live one is refused (`EADDRINUSE_LIVE`), a non-socket
 * path is never deleted (`EPATH_NOT_SOCKET`). close() removes the file if it is still ours.
 *
 * Endpoints (JSON bodies; errors are `{"error": "<one line>", "code": "<code>"}`):
 *   GET    /health              {"status":"ok", uptime_s, forwards}
 *   GET    /forwards            [rule…]   rule = ForwardRuleJson + tcp_accepted/tcp_active/udp_flows
 *   POST   /forwards            {name?, proto, host_addr?, host_port, guest_addr?, guest_port,
 *                               port_count?} → 201 rule; 400 bad rule, 409 port or name taken
 *   GET    /forwards/NAME       rule, or 404
 *   DELETE /forwards/NAME       204, or 404
 *   GET    /leases  /flows      arrays from the backend
 *   GET    /ports               the switch's ports: transport, MAC, address, hostname, counters
 *   GET    /dns                 the local DNS zone: [{name, addresses, source}] (config, host,
 *                               guest, api); POST /dns {name, ip} → 201 (400 bad, 409 taken);
 *                               GET/DELETE /dns/NAME → the entry / 204 (404 unknown)
 *   GET    /stats   /config     objects from the backend (stats gains `api`)
 *   GET    /filter              the filter rules in force with their hit counts (FilterJson)
 *   PUT    /filter              replace them: the body is the rule text (any content type but
 *                               JSON), or JSON {"rules": "<text>", "source"?: "<name>"}; parsed
 *                               whole first, so a bad set → 400 `bad_filter` naming line and
 *                               token, and the old set stays. 501 if the backend has no filter.
 *   GET    /mode                the mode in force (nat|host|bridged|disconnected), the configured
 *                               one, and what the pulled cable dropped (ApiMode)
 *   PUT    /mode                {"mode": "disconnected"|"connected"|<configured>} (or that word as
 *                               the body): pull or plug the cable; another mode → 409
 *                               `mode_conflict`, no mode → 400 `bad_mode`
 *   GET    /events              newline-delimited JSON, one event per line, each with `time`:
 *                               lease (bound/released/expired/declined), forward (added/removed),
 *                               flow (open/close), filter (block). On connect, each currently
 *                               bound lease is replayed as a `lease` `bound` event with
 *                               `"replay": true`, so a tool waiting for the VM's lease cannot miss
 *                               one that came first.
 *
 *   GET  /services/forwarder/all, POST /services/forwarder/expose and /unexpose: gvisor-tap-vsock's
 *                               forwarder API, in its shapes and plain-text errors (gvproxy.ts)
 *
 * Limits, so no client can disturb traffic: request bodies ≤ 64 KiB (413), 8 KiB of headers
 * (431, by Node), headers within 10 s and the whole request within 30 s (408, by Node, checked
 * every second), at most 64 connections (more are closed at accept), and an event stream whose
 * reader falls more than 1 MiB behind is dropped. Unknown path → 404, wrong method → 405 with
 * `Allow`, malformed JSON → 400 naming the problem. Nothing thrown by a handler or the backend
 * escapes: it becomes a 500 and a counter. The server is an adapter: it never blocks the engine
 * (every backend call is a synchronous snapshot, except forward add/remove).
 */
import http from 'node:http';
import net from 'node:net';
import fs from 'node:fs';
import path from 'node:path';
import { debuglog } from 'node:util';
import type { Config } from '../config.ts';
import type { ZoneEntry } from '../dns/zone.ts';
import { DnsFlagError } from '../dns/hosts.ts';
import type { DhcpLease, DhcpLeaseEvent } from '../dhcp/server.ts';
import { formatIpv4, formatMac } from '../stack/wire/addr.ts';
import { ForwardRuleError, ruleFromJson, ruleToJson, type ForwardRule, type ForwardRuleJson } from '../portfwd/rules.ts';
import { ForwardError, type ForwardEntry, type ForwardEvent } from '../portfwd/forwarder.ts';
import { checkSocketParent, RuntimeDirError } from '../runtime-dir.ts';
import { formatGuestfwd } from '../portfwd/guestfwd.ts';
import { GvproxyError, GvproxyForwarder } from './gvproxy.ts';
import { fileIdentity, listenPrivate, replaceStaleSocket, UnixSocketError } from '../unix-socket.ts';
import { FilterParseError } from '../filter/rules.ts';
import type { FilterEvent, FilterJson } from '../filter/filter.ts';

const trace = debuglog('vmnat-api');

// ── the backend contract (implemented by the engine) ────────────────────────────────────────

/** A DHCP lease as the API shows it (see `leaseToApi`). */
export interface ApiLease {
  ip: string;
  mac: string;
  hostname?: string;
  state: 'offered' | 'bound';
  static: boolean;
  /** Seconds left; null for an infinite lease. */
  expires_in_s: number | null;
  /** The guest's IPv6 addresses in the network's prefix (SLAAC or DHCPv6), as vmnat saw them used from its MAC. */
  ipv6?: string[];
}

/** One open flow. Addresses are `ip:port` text; `forward` names the rule of a forwarded flow. */
export interface ApiFlow {
  proto: 'tcp' | 'udp' | 'icmp';
  /** The guest's end (`10.0.2.15:43210`). */
  guest: string;
  /** The other end as the guest sees it (`93.184.216.34:443`, or `10.0.2.2:50123` for a forward). */
  remote: string;
  /** The host socket's peer, when it differs from `remote` (gateway → 127.0.0.1, forwards). */
  host?: string;
  /**
   * The host socket's own end (`127.0.0.1:54321`): with `host`, the connection as `ss -tnp` lists
   * it for vmnat's process (for a forward, `host` is the client that connected to it).
   */
  host_local?: string;
  forward?: string;
  state?: string;
  bytes_from_guest: number;
  bytes_to_guest: number;
  /** Seconds since the flow opened. */
  age_s?: number;
  /** Seconds since its last packet either way. */
  idle_s?: number;
}

/** One switch port (a guest connection), as `/ports` shows it. */
export interface ApiPort {
  id: number;
  /** socket | fd | stream | tap, then the transport's own fields (path, tap, netns, connection). */
  transport: string;
  [field: string]: unknown;
  mac: string | null;
  ip: string | null;
  /** dhcp (leased) or static (claimed by use, anti-spoofing binds it); null: none yet. */
  address_source: 'dhcp' | 'static' | null;
  hostname: string | null;
  rx_frames: number;
  rx_bytes: number;
  tx_frames: number;
  tx_bytes: number;
  /** Frames the switch dropped from this port, by reason. */
  drops: Record<string, number>;
}

/** GET/PUT /mode (modes/mode.ts). */
export interface ApiMode {
  mode: 'nat' | 'host' | 'bridged' | 'disconnected';
  configured: 'nat' | 'host' | 'bridged';
  connected: boolean;
  /** Frames dropped while disconnected, from the ports and to them. */
  dropped_from_ports: number;
  dropped_to_ports: number;
}

/** PUT /mode refused: 409 for another mode (a restart is needed), 400 for no mode at all. */
export class ModeChangeError extends Error {
  constructor(
    readonly status: 400 | 409,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** POST /dns for a name another source holds (a guest's, the host's, a configured one). */
export class DnsNameTaken extends Error {
  constructor(name: string, source: string) {
    super(`${name} is already in the local zone (${source})`);
  }
}

export interface LeaseEvent {
  type: 'lease';
  event: DhcpLeaseEvent;
  ip: string;
  mac: string;
  hostname?: string;
  replay?: true;
}

export interface FlowEvent {
  type: 'flow';
  event: 'open' | 'close';
  flow: ApiFlow;
  /** For close: fin, rst, timeout, idle, evicted, … */
  reason?: string;
}

export type { FilterEvent } from '../filter/filter.ts';

export type ApiEvent = LeaseEvent | FlowEvent | ForwardEvent | FilterEvent;

/** The rule table the API edits; `PortForwarder` implements it. */
export interface ForwardTable {
  /** Resolves to the rule as added: host port 0 replaced by the port bound. */
  add(rule: ForwardRule): Promise<ForwardRule>;
  remove(name: string): Promise<boolean>;
  get(name: string): ForwardRule | undefined;
  list(): ForwardEntry[];
  subscribe(listener: (e: ForwardEvent) => void): () => void;
}

/**
 * What the engine gives the API. Every method is a cheap synchronous snapshot and must return
 * JSON-serialisable data (a throw becomes a 500, never a crash).
 */
export interface ApiBackend {
  leases(): ApiLease[];
  flows(): ApiFlow[];
  /** All counters, by subsystem. */
  stats(): Record<string, unknown>;
  /** The effective configuration (`configToApi(config)` fits). */
  config(): Record<string, unknown>;
  readonly forwards: ForwardTable;
  /**
   * Lease, flow and filter events. Forward events are not expected here: the server takes them
   * from `forwards.subscribe`. Returns the unsubscribe function.
   */
  subscribe(listener: (e: LeaseEvent | FlowEvent | FilterEvent) => void): () => void;
  /** The switch's ports (an engine has them; a backend without a switch may not). */
  ports?(): ApiPort[];
  /** The local DNS zone (GET /dns); with addDnsName/removeDnsName, POST /dns and DELETE /dns/NAME. */
  dnsZone?(): ZoneEntry[];
  /** Adds NAME → IP (source `api`); throws DnsFlagError (400) or DnsNameTaken (409). */
  addDnsName?(name: string, ip: string): ZoneEntry;
  removeDnsName?(name: string): boolean;
  /** The filter rules in force and their hits (`FilterSet.toJSON()`); absent → 501. */
  filter?(): FilterJson;
  /**
   * Replaces the filter rules with `text` atomically (`FilterSet.replace(text, source)`) and
   * answers the new set. Throws `FilterParseError` for a bad set (→ 400), leaving the old one.
   */
  replaceFilter?(text: string, source: string): FilterJson;
  /** GET /mode; with setMode, PUT /mode (throws ModeChangeError). Absent → 501. */
  mode?(): ApiMode;
  setMode?(mode: string): ApiMode;
}

// ── helpers for the engine ──────────────────────────────────────────────────────────────────

export function leaseToApi(lease: DhcpLease, now: number): ApiLease {
  const out: ApiLease = {
    ip: formatIpv4(lease.ip),
    mac: formatMac(lease.mac),
    state: lease.state,
    static: lease.static,
    expires_in_s: Number.isFinite(lease.expiresAt) ? Math.max(0, Math.round((lease.expiresAt - now) / 1000)) : null,
  };
  if (lease.hostname !== undefined) out.hostname = lease.hostname;
  return out;
}

export function leaseEvent(event: DhcpLeaseEvent, lease: DhcpLease): LeaseEvent {
  const out: LeaseEvent = { type: 'lease', event, ip: formatIpv4(lease.ip), mac: formatMac(lease.mac) };
  if (lease.hostname !== undefined) out.hostname = lease.hostname;
  return out;
}

/** The JSON view of a Config (addresses as text, maps as objects). */
export function configToApi(config: Config): Record<string, unknown> {
  const links = config.links.map((l): Record<string, unknown> => ({ ...l }));
  return {
    link: links[0],
    links,
    isolate: config.isolate,
    anti_spoof: config.antiSpoof,
    network: `${formatIpv4(config.network)}/${config.prefixLen}`,
    netmask: formatIpv4(config.netmask),
    gateway: formatIpv4(config.gateway),
    dns: formatIpv4(config.dns),
    first_lease: formatIpv4(config.firstLease),
    last_lease: formatIpv4(config.lastLease),
    mtu: config.mtu,
    dhcp_lease_time_s: config.dhcpLeaseTimeSec,
    dhcp_static: Object.fromEntries([...config.dhcpStatic].map(([mac, ip]) => [formatMac(mac), formatIpv4(ip)])),
    dns_search: config.dnsSearch,
    domain: config.domain ?? null,
    dns_mode: config.dnsMode,
    dns_servers: config.dnsServers.map((s) => (s.ip.includes(':') ? `[${s.ip}]:${s.port}` : `${s.ip}:${s.port}`)),
    dns_hosts: config.dnsHosts.size,
    host_loopback: config.hostLoopback,
    deny: config.deny.map((r) => `${formatIpv4(r.network)}/${r.mask === 0 ? 0 : Math.clz32(~r.mask >>> 0)}`),
    filter: config.filter?.source ?? null,
    udp_timeout_s: config.udpTimeoutSec,
    max_flows: config.maxFlows,
    max_forward_flows: config.maxForwardFlows,
    max_buffer_memory: config.maxBufferBytes,
    tftp: config.tftpDir ?? null,
    guest_forwards: (config.guestForwards ?? []).map(formatGuestfwd),
    hostfwd_source: config.hostfwdSource ?? 'gateway',
    pcap_file: config.pcapFile ?? null,
    log_level: config.logLevel,
    ipv6: config.ipv6 === undefined ? null : { prefix: `${config.ipv6.prefix}/64`, gateway: config.ipv6.gateway, dns: config.ipv6.dns, router: 'fe80::2', deny: (config.deny6 ?? []).map((r) => `${r.prefix}/${r.prefixLen}`) },
  };
}

// ── the server ──────────────────────────────────────────────────────────────────────────────

export interface ApiServerOptions {
  path: string;
  backend: ApiBackend;
  maxBodyBytes?: number;
  headersTimeoutMs?: number;
  requestTimeoutMs?: number;
  maxConnections?: number;
  /** An event reader further behind than this is disconnected. */
  maxEventBacklogBytes?: number;
}

export type ApiServerErrorCode = 'EADDRINUSE_LIVE' | 'EPATH_NOT_SOCKET' | 'EUNSAFE_DIR' | 'ESYSTEM';

/** Opening the API socket failed. `EADDRINUSE_LIVE`/`EPATH_NOT_SOCKET`: the user's path (exit 2). */
export class ApiServerError extends Error {
  override readonly name = 'ApiServerError';
  constructor(
    readonly code: ApiServerErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export function createApiStats() {
  return {
    connections: 0, requests: 0,
    badRequest: 0, notFound: 0, methodNotAllowed: 0, conflict: 0, tooLarge: 0, internalError: 0, clientErrors: 0,
    eventStreams: 0, eventsSent: 0, eventReadersDropped: 0,
    /** gvproxy-shaped requests refused with its 500 (a port in use, no such proxy, …). */
    gvproxyRefused: 0,
  };
}

interface Route {
  GET?: Handler;
  POST?: Handler;
  PUT?: Handler;
  DELETE?: Handler;
}
type Handler = (req: http.IncomingMessage, res: http.ServerResponse, param: string | undefined) => void | Promise<void>;

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

const JSON_TYPE = 'application/json; charset=utf-8';

export class ApiServer {
  readonly stats = createApiStats();
  readonly path: string;
  private readonly server: http.Server;
  private readonly backend: ApiBackend;
  private readonly maxBody: number;
  private readonly maxBacklog: number;
  private readonly started = Date.now();
  private readonly sockets = new Set<net.Socket>();
  private readonly streams = new Set<http.ServerResponse>();
  private identity: string | undefined;
  private closed = false;
  /** gvproxy's forwarder endpoints, a view over the same forwards. */
  private readonly gvproxy: GvproxyForwarder;

  private constructor(options: ApiServerOptions) {
    this.path = path.resolve(options.path);
    this.backend = options.backend;
    this.gvproxy = new GvproxyForwarder(this.backend.forwards, () => {
      let last: string | undefined;
      for (const l of this.backend.leases()) if (l.state === 'bound') last = l.ip;
      return last;
    });
    this.maxBody = options.maxBodyBytes ?? 64 * 1024;
    this.maxBacklog = options.maxEventBacklogBytes ?? 1024 * 1024;
    const headersTimeout = options.headersTimeoutMs ?? 10_000;
    this.server = http.createServer(
      {
        maxHeaderSize: 8192,
        headersTimeout,
        requestTimeout: Math.max(options.requestTimeoutMs ?? 30_000, headersTimeout + 1),
        keepAliveTimeout: 5000,
        // Node checks the two timeouts above on this interval (default 30 s: far too coarse).
        connectionsCheckingInterval: Math.min(1000, Math.max(50, Math.floor(headersTimeout / 4))),
      },
      (req, res) => this.onRequest(req, res),
    );
    this.server.maxConnections = options.maxConnections ?? 64;
    this.server.on('connection', (socket: net.Socket) => {
      this.stats.connections++;
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
    });
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket: net.Socket) => {
      // Node's own answers for these (400/408/431) are right; count them and make sure the
      // socket goes away.
      this.stats.clientErrors++;
      trace('client error: %s', err.code ?? err.message);
      if (!socket.writable || err.code === 'ECONNRESET') {
        socket.destroy();
        return;
      }
      const status = err.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? '408 Request Timeout' : '400 Bad Request';
      socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
      socket.destroySoon();
    });
    this.server.on('error', (err) => trace('server error: %o', err));
  }

  /** Binds PATH (mode 0600, replacing a stale socket file) and starts serving. */
  static async listen(options: ApiServerOptions): Promise<ApiServer> {
    const api = new ApiServer(options);
    await api.start();
    return api;
  }

  private async start(): Promise<void> {
    const p = this.path;
    if (Buffer.byteLength(p) > 107) throw new ApiServerError('ESYSTEM', `${p}: path longer than 107 bytes (unix socket limit)`);
    try {
      checkSocketParent(p);
    } catch (err) {
      if (err instanceof RuntimeDirError) throw new ApiServerError('EUNSAFE_DIR', err.message, { cause: err });
      throw err;
    }
    try {
      await replaceStaleSocket(p);
      this.identity = await listenPrivate(this.server, p);
    } catch (err) {
      if (err instanceof UnixSocketError) throw new ApiServerError(err.code, err.message, { cause: err });
      throw err;
    }
  }

  /** Stops serving, ends event streams and open connections, and removes the socket file. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const res of this.streams) res.end();
    const done = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeIdleConnections();
    for (const s of this.sockets) s.destroy();
    await done;
    if (this.identity !== undefined && fileIdentity(this.path) === this.identity) {
      try {
        fs.unlinkSync(this.path);
      } catch {
        // already gone
      }
    }
  }

  // ── request handling ──────────────────────────────────────────────────────────────────────

  private readonly routes = new Map<string, Route>([
    ['/health', { GET: (_q, res) => this.json(res, 200, { status: 'ok', uptime_s: Math.round((Date.now() - this.started) / 1000), forwards: this.backend.forwards.list().length }) }],
    ['/forwards', { GET: (_q, res) => this.json(res, 200, this.backend.forwards.list().map(entryToJson)), POST: (req, res) => this.addForward(req, res) }],
    ['/leases', { GET: (_q, res) => this.json(res, 200, this.backend.leases()) }],
    ['/flows', { GET: (_q, res) => this.json(res, 200, this.backend.flows()) }],
    ['/ports', { GET: (_q, res) => this.json(res, 200, this.backend.ports?.() ?? []) }],
    ['/stats', { GET: (_q, res) => this.json(res, 200, { ...this.backend.stats(), api: this.stats }) }],
    ['/config', { GET: (_q, res) => this.json(res, 200, this.backend.config()) }],
    ['/events', { GET: (req, res) => this.events(req, res) }],
    ['/dns', { GET: (_q, res) => this.json(res, 200, this.dnsBackend().dnsZone()), POST: (req, res) => this.addDns(req, res) }],
    ['/filter', { GET: (_q, res) => this.json(res, 200, this.filterBackend().filter()), PUT: (req, res) => this.putFilter(req, res) }],
    ['/mode', { GET: (_q, res) => this.json(res, 200, this.modeBackend().mode()), PUT: (req, res) => this.putMode(req, res) }],
  ]);

  /** `/dns/NAME`. */
  private readonly dnsRoute: Route = {
    GET: (_q, res, name) => {
      const entry = this.dnsBackend().dnsZone().find((e) => e.name === name!.toLowerCase().replace(/\.$/, ''));
      if (entry === undefined) throw new HttpError(404, 'not_found', `no local name ${name}`);
      this.json(res, 200, entry);
    },
    DELETE: (_q, res, name) => {
      const b = this.dnsBackend();
      if (b.removeDnsName === undefined || !b.removeDnsName(name!)) throw new HttpError(404, 'not_found', `no local name ${name}`);
      res.writeHead(204).end();
    },
  };

  private modeBackend(): Required<Pick<ApiBackend, 'mode' | 'setMode'>> & ApiBackend {
    const b = this.backend;
    if (b.mode === undefined || b.setMode === undefined) throw new HttpError(501, 'not_implemented', 'this vmnat cannot change modes');
    return b as Required<Pick<ApiBackend, 'mode' | 'setMode'>> & ApiBackend;
  }

  /** PUT /mode: JSON {"mode": NAME}, or the bare word as the body. */
  private async putMode(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const b = this.modeBackend();
    const text = (await this.readBody(req)).toString('utf8').trim();
    let name: string;
    if (text.startsWith('{')) {
      let body: unknown;
      try {
        body = JSON.parse(text);
      } catch (err) {
        throw new HttpError(400, 'bad_json', `malformed JSON: ${(err as Error).message}`);
      }
      const m = (body as { mode?: unknown }).mode;
      if (typeof m !== 'string') throw new HttpError(400, 'bad_request', 'expected {"mode": "disconnected"} or {"mode": "connected"}');
      name = m;
    } else {
      name = text.replace(/^"|"$/g, '');
    }
    try {
      this.json(res, 200, b.setMode(name));
    } catch (err) {
      if (err instanceof ModeChangeError) throw new HttpError(err.status, err.code, err.message);
      throw err;
    }
  }

  private dnsBackend(): Required<Pick<ApiBackend, 'dnsZone'>> & ApiBackend {
    const b = this.backend;
    if (b.dnsZone === undefined) throw new HttpError(501, 'not_implemented', 'this vmnat has no local DNS zone');
    return b as Required<Pick<ApiBackend, 'dnsZone'>> & ApiBackend;
  }

  private async addDns(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const text = (await this.readBody(req)).toString('utf8');
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch (err) {
      throw new HttpError(400, 'bad_json', `malformed JSON: ${(err as Error).message}`);
    }
    const o = body as { name?: unknown; ip?: unknown };
    if (body === null || typeof body !== 'object' || typeof o.name !== 'string' || typeof o.ip !== 'string') {
      throw new HttpError(400, 'bad_request', 'expected {"name": "db.test", "ip": "10.0.2.2"}');
    }
    const b = this.dnsBackend();
    if (b.addDnsName === undefined) throw new HttpError(501, 'not_implemented', 'this vmnat cannot add names');
    try {
      this.json(res, 201, b.addDnsName(o.name, o.ip));
    } catch (err) {
      if (err instanceof DnsNameTaken) throw new HttpError(409, 'name_taken', err.message);
      if (err instanceof DnsFlagError) throw new HttpError(400, 'bad_name', err.message.replace(/^--dns-host: /, ''));
      throw err;
    }
  }

  /** `/forwards/NAME`. */
  private readonly forwardRoute: Route = {
    GET: (_q, res, name) => {
      const entry = this.backend.forwards.list().find((e) => e.rule.name === name);
      if (entry === undefined) throw new HttpError(404, 'not_found', `no forward named ${name}`);
      this.json(res, 200, entryToJson(entry));
    },
    DELETE: async (_q, res, name) => {
      if (!(await this.backend.forwards.remove(name!))) throw new HttpError(404, 'not_found', `no forward named ${name}`);
      res.writeHead(204).end();
    },
  };

  private onRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
    this.stats.requests++;
    this.dispatch(req, res).catch((err: unknown) => this.fail(res, err));
  }

  private async dispatch(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    let pathname: string;
    try {
      pathname = new URL(req.url ?? '/', 'http://vmnat').pathname;
    } catch {
      throw new HttpError(400, 'bad_request', 'malformed request target');
    }
    if (pathname.startsWith('/services/')) return this.gvproxyRequest(req, res, pathname);
    if (pathname.length > 1 && pathname.endsWith('/')) pathname = pathname.slice(0, -1);
    let route = this.routes.get(pathname);
    let param: string | undefined;
    if (route === undefined && pathname.startsWith('/dns/')) {
      route = this.dnsRoute;
      try {
        param = decodeURIComponent(pathname.slice('/dns/'.length));
      } catch {
        throw new HttpError(400, 'bad_request', 'malformed percent-encoding in the name');
      }
    }
    if (route === undefined && pathname.startsWith('/forwards/')) {
      route = this.forwardRoute;
      try {
        param = decodeURIComponent(pathname.slice('/forwards/'.length));
      } catch {
        throw new HttpError(400, 'bad_request', 'malformed percent-encoding in the forward name');
      }
    }
    if (route === undefined) {
      throw new HttpError(404, 'not_found', `no such endpoint: ${pathname} (try GET /health, /forwards, /leases, /flows, /stats, /config, /filter, /mode, /events)`);
    }
    const method = req.method ?? 'GET';
    const handler = method === 'GET' || method === 'POST' || method === 'PUT' || method === 'DELETE' ? route[method] : undefined;
    if (handler === undefined) {
      res.setHeader('Allow', Object.keys(route).join(', '));
      throw new HttpError(405, 'method_not_allowed', `${method} is not allowed on ${pathname} (allowed: ${Object.keys(route).join(', ')})`);
    }
    // Bodies of methods that take none are read and thrown away (bounded by the same limit).
    if (method !== 'POST' && method !== 'PUT') await this.readBody(req);
    await handler(req, res, param);
  }

  /** gvproxy's mux under /services/: its paths, methods, bodies and plain-text errors. */
  private async gvproxyRequest(req: http.IncomingMessage, res: http.ServerResponse, pathname: string): Promise<void> {
    let body: Buffer;
    try {
      body = await this.readBody(req);
    } catch (err) {
      if (err instanceof HttpError) return this.goError(res, err.status === 413 ? 413 : 400, err.message);
      throw err;
    }
    try {
      switch (pathname) {
        case '/services/forwarder/all': {
          const text = JSON.stringify(this.gvproxy.all()) + '\n';
          // Go's json.Encoder with no Content-Type set: net/http sniffs "[…" as text/plain.
          res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': Buffer.byteLength(text) });
          res.end(text);
          return;
        }
        case '/services/forwarder/expose':
        case '/services/forwarder/unexpose': {
          if (req.method !== 'POST') throw new GvproxyError(400, 'post only');
          let parsed: unknown;
          try {
            parsed = JSON.parse(body.toString('utf8'));
          } catch (err) {
            throw new GvproxyError(400, body.length === 0 ? 'EOF' : `invalid JSON: ${(err as Error).message}`);
          }
          if (pathname.endsWith('/expose')) await this.gvproxy.expose(parsed);
          else await this.gvproxy.unexpose(parsed);
          res.writeHead(200, { 'Content-Length': 0 });
          res.end();
          return;
        }
        default:
          throw new GvproxyError(404, '404 page not found');
      }
    } catch (err) {
      if (!(err instanceof GvproxyError)) throw err;
      this.goError(res, err.status, err.message);
    }
  }

  /** Go's http.Error: the message and a newline, as text, with nosniff. */
  private goError(res: http.ServerResponse, status: number, message: string): void {
    if (status === 400) this.stats.badRequest++;
    else if (status === 404) this.stats.notFound++;
    else if (status === 413) this.stats.tooLarge++;
    else this.stats.gvproxyRefused++;
    const text = message.replace(/[\r\n]+/g, ' ') + '\n';
    const headers: http.OutgoingHttpHeaders = { 'Content-Type': 'text/plain; charset=utf-8', 'X-Content-Type-Options': 'nosniff', 'Content-Length': Buffer.byteLength(text) };
    if (status === 413) headers['Connection'] = 'close';
    res.writeHead(status, headers);
    res.end(text);
  }

  private async addForward(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const text = (await this.readBody(req)).toString('utf8');
    if (text.trim() === '') throw new HttpError(400, 'bad_request', 'empty body: expected a JSON object such as {"proto":"tcp","host_port":8080,"guest_port":80}');
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch (err) {
      throw new HttpError(400, 'bad_json', `malformed JSON: ${(err as Error).message}`);
    }
    const asked = ruleFromJson(body); // ForwardRuleError → 400
    const rule = await this.backend.forwards.add(asked); // ForwardError → 409/400/403; port 0 bound
    const entry = this.backend.forwards.list().find((e) => e.rule.name === rule.name);
    res.setHeader('Location', `/forwards/${encodeURIComponent(rule.name)}`);
    this.json(res, 201, entry === undefined ? ruleToJson(rule) : entryToJson(entry));
  }

  private filterBackend(): Required<Pick<ApiBackend, 'filter' | 'replaceFilter'>> {
    const b = this.backend;
    if (b.filter === undefined || b.replaceFilter === undefined) throw new HttpError(501, 'not_implemented', 'this vmnat has no filter rules to show or replace');
    return { filter: () => b.filter!(), replaceFilter: (text, source) => b.replaceFilter!(text, source) };
  }

  /** PUT /filter: the whole body is the new rule set (text, or JSON {"rules", "source"?}). */
  private async putFilter(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    // The body first, so that even a 501 leaves the connection clean for the next request.
    const body = (await this.readBody(req)).toString('utf8');
    const backend = this.filterBackend();
    let text = body;
    let source = 'filter';
    if (/^application\/json\b/i.test(req.headers['content-type'] ?? '')) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(body);
      } catch (err) {
        throw new HttpError(400, 'bad_json', `malformed JSON: ${(err as Error).message}`);
      }
      const o = (typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed) ? parsed : {}) as { rules?: unknown; source?: unknown };
      if (typeof o.rules !== 'string') throw new HttpError(400, 'bad_request', 'expected a JSON object {"rules": "<rule text>"} (or send the rules as text/plain)');
      if (o.source !== undefined && (typeof o.source !== 'string' || o.source === '' || o.source.length > 256 || /[\r\n]/.test(o.source))) {
        throw new HttpError(400, 'bad_request', '"source" must be a one-line name of 1..256 characters');
      }
      text = o.rules;
      source = typeof o.source === 'string' ? o.source : source;
    }
    this.json(res, 200, backend.replaceFilter(text, source)); // FilterParseError → 400
  }

  private readBody(req: http.IncomingMessage): Promise<Buffer> {
    const declared = Number(req.headers['content-length'] ?? '0');
    if (declared > this.maxBody) return Promise.reject(new HttpError(413, 'too_large', `request body of ${declared} bytes is over the ${this.maxBody}-byte limit`));
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      let over = false;
      req.on('data', (chunk: Buffer) => {
        if (over) return;
        size += chunk.length;
        if (size > this.maxBody) {
          over = true;
          reject(new HttpError(413, 'too_large', `request body is over the ${this.maxBody}-byte limit`));
          return;
        }
        chunks.push(chunk);
      });
      req.once('end', () => {
        if (!over) resolve(Buffer.concat(chunks));
      });
      req.once('error', (err) => reject(err));
    });
  }

  private events(req: http.IncomingMessage, res: http.ServerResponse): void {
    this.stats.eventStreams++;
    res.writeHead(200, { 'Content-Type': 'application/x-ndjson', 'Cache-Control': 'no-store', 'X-Content-Type-Options': 'nosniff' });
    this.streams.add(res);
    const push = (e: ApiEvent): void => {
      if (res.writableEnded || res.destroyed) return;
      if (res.writableLength > this.maxBacklog) {
        // The reader stopped reading: dropping it bounds memory; it can reconnect and resync.
        this.stats.eventReadersDropped++;
        res.destroy();
        return;
      }
      // Called synchronously from the engine's emitter: nothing may escape.
      try {
        res.write(JSON.stringify({ time: new Date().toISOString(), ...e }) + '\n');
        this.stats.eventsSent++;
      } catch (err) {
        this.stats.internalError++;
        trace('event not sent: %o', err);
      }
    };
    res.on('error', (err) => trace('event stream: %o', err));
    for (const lease of this.backend.leases()) {
      if (lease.state !== 'bound') continue;
      const e: LeaseEvent = { type: 'lease', event: 'bound', ip: lease.ip, mac: lease.mac, replay: true };
      if (lease.hostname !== undefined) e.hostname = lease.hostname;
      push(e);
    }
    const unsubscribe = [this.backend.subscribe(push), this.backend.forwards.subscribe(push)];
    const done = (): void => {
      this.streams.delete(res);
      for (const u of unsubscribe) u();
    };
    res.once('close', done);
    req.once('close', () => {
      if (!res.writableEnded) res.end();
    });
  }

  private json(res: http.ServerResponse, status: number, body: unknown): void {
    const text = JSON.stringify(body) + '\n';
    res.writeHead(status, { 'Content-Type': JSON_TYPE, 'Content-Length': Buffer.byteLength(text) });
    res.end(text);
  }

  /** Every error ends here: mapped to a status, counted, answered once; never rethrown. */
  private fail(res: http.ServerResponse, err: unknown): void {
    let status: number;
    let code: string;
    let message: string;
    if (err instanceof HttpError) {
      ({ status, code, message } = err);
    } else if (err instanceof ForwardRuleError) {
      [status, code, message] = [400, 'bad_rule', err.reason];
    } else if (err instanceof FilterParseError) {
      [status, code, message] = [400, 'bad_filter', err.message];
    } else if (err instanceof ForwardError) {
      code = err.code;
      message = err.message;
      status = err.code === 'EADDRINUSE' || err.code === 'EEXIST' ? 409 : err.code === 'EACCES' ? 403 : err.code === 'EADDRNOTAVAIL' || err.code === 'EPATH' ? 400 : err.code === 'ENOTSUP' ? 409 : err.code === 'ECLOSED' ? 503 : 500;
    } else {
      [status, code, message] = [500, 'internal', 'internal error'];
      trace('internal error: %o', err);
    }
    if (status === 400) this.stats.badRequest++;
    else if (status === 404) this.stats.notFound++;
    else if (status === 405) this.stats.methodNotAllowed++;
    else if (status === 409) this.stats.conflict++;
    else if (status === 413) this.stats.tooLarge++;
    else if (status >= 500 && status !== 501) this.stats.internalError++;
    if (res.headersSent || res.destroyed) {
      res.destroy();
      return;
    }
    const text = JSON.stringify({ error: message, code }) + '\n';
    const headers: http.OutgoingHttpHeaders = { 'Content-Type': JSON_TYPE, 'Content-Length': Buffer.byteLength(text) };
    // After a 413 the rest of the body is not read: close the connection rather than parse it.
    if (status === 413) headers['Connection'] = 'close';
    res.writeHead(status, headers);
    res.end(text);
  }
}

function entryToJson(e: ForwardEntry): ForwardRuleJson & { tcp_accepted: number; tcp_active: number; udp_flows: number } {
  return { ...ruleToJson(e.rule), tcp_accepted: e.tcpAccepted, tcp_active: e.tcpActive, udp_flows: e.udpFlows };
}
