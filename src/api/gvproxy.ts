/**
 * gvisor-tap-vsock's forwarder endpoints on vmnat's control API, so tools written for gvproxy's
 * API socket (`gvproxy -listen unix:///…`, whose HTTP server mounts them at the socket's root)
 * work unchanged against `--api-socket`:
 *
 *   GET  /services/forwarder/all       200 [{"local","remote","protocol"}…] sorted by local, then
 *                                      protocol (gvproxy answers any method here)
 *   POST /services/forwarder/expose    {"local","remote","protocol"?} → 200, empty body
 *   POST /services/forwarder/unexpose  {"local","protocol"?} → 200, empty body
 *
 * Errors are gvproxy's: plain text, one line and a newline (Go's http.Error), 400 for a method
 * other than POST ("post only"), a body that is not JSON, or a tcp/udp `remote` that is not
 * HOST:PORT; 500 for everything `Expose`/`Unexpose` refuse ("proxy already running for tcp on
 * 127.0.0.1:2222", "proxy not found", a port in use, …). An empty protocol is tcp; unknown JSON
 * fields are ignored (Go's decoder does). Other paths under /services/ answer Go's 404.
 *
 * Theory of operation: this is a view over vmnat's one forward table (portfwd/forwarder.ts), not
 * a second one: expose adds a rule as POST /forwards would, unexpose removes it, and /all lists
 * every forward — the command line's too — in gvproxy's shape (a port range as one entry per
 * port). The key is gvproxy's, `protocol/local` with `local` as the caller wrote it, so what a
 * tool exposed it can unexpose with the same text; rules from elsewhere are keyed by their host
 * side as Go would print it (`127.0.0.1:2222`, `[::1]:8080`, or the socket path).
 *
 * Where vmnat differs, and why:
 *  - `local` with an empty host (`:2222`) listens on 0.0.0.0 (Go listens on every address, both
 *    families); `localhost` is 127.0.0.1. Other names are refused (500): vmnat binds addresses.
 *  - An empty remote address (`":22"`): gvproxy takes the HTTP client's address (meant for a
 *    request made from inside the guest; on a unix socket it has none and answers 400). vmnat
 *    forwards to the guest's lease, and follows it, as an empty guest address does everywhere.
 *  - `protocol: "unix"`: `local` is the socket path, `remote` `tcp://IP:PORT`; as for every vmnat
 *    unix forward, a live socket at the path is refused (gvproxy deletes whatever is there).
 *    `ssh-tunnel://` remotes and `npipe` are not implemented (500, in gvproxy's words).
 */
import { parseIpv4, formatIpv4 } from '../stack/wire/addr.ts';
import { formatHostSide, ruleFromJson, type ForwardRule } from '../portfwd/rules.ts';
import type { ForwardTable } from './server.ts';

/** One entry of GET /services/forwarder/all. */
export interface GvproxyProxy {
  local: string;
  remote: string;
  protocol: string;
}

/** An answer that is not 200: gvproxy's status and one line of text. */
export class GvproxyError extends Error {
  constructor(
    readonly status: 400 | 404 | 500,
    message: string,
  ) {
    super(message);
  }
}

interface Exposed {
  protocol: string;
  local: string;
  /** As given (`:22` stays `:22`: it follows the lease). */
  remote: string;
}

/** Go's net.SplitHostPort for the cases that matter here: `h:p`, `[v6]:p`, `:p`. */
function splitHostPort(text: string): { host: string; port: string } | undefined {
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0 || text[close + 1] !== ':') return undefined;
    return { host: text.slice(1, close), port: text.slice(close + 2) };
  }
  const c = text.lastIndexOf(':');
  if (c < 0 || text.indexOf(':') !== c) return undefined;
  return { host: text.slice(0, c), port: text.slice(c + 1) };
}

function stringField(o: Record<string, unknown>, key: string): string {
  // Go's decoder matches field names case-insensitively.
  const k = Object.keys(o).find((x) => x.toLowerCase() === key) ?? key;
  const v = o[k];
  if (v === undefined || v === null) return '';
  if (typeof v !== 'string') throw new GvproxyError(400, `json: cannot unmarshal ${typeof v} into Go struct field .${key} of type string`);
  return v;
}

export class GvproxyForwarder {
  /** gvproxy's metadata of the rules exposed through it, by rule name. */
  private readonly exposed = new Map<string, Exposed>();

  constructor(
    private readonly forwards: ForwardTable,
    /** The newest bound lease, to show in /all for rules that follow the lease. */
    private readonly currentLease: () => string | undefined,
  ) {
    forwards.subscribe((e) => {
      if (e.event === 'removed') this.exposed.delete(e.rule.name);
    });
  }

  /** GET /services/forwarder/all. */
  all(): GvproxyProxy[] {
    const out: GvproxyProxy[] = [];
    const lease = this.currentLease();
    for (const { rule } of this.forwards.list()) {
      const meta = this.exposed.get(rule.name);
      const remoteAddr = rule.guestAddr ?? lease ?? '';
      if (meta !== undefined) {
        const given = meta.protocol === 'unix' ? undefined : splitHostPort(meta.remote);
        // ":22" is shown with the address it reaches now, as gvproxy shows the one it filled in.
        const remote = given !== undefined && given.host === '' ? `${remoteAddr}:${given.port}` : meta.remote;
        out.push({ local: meta.local, remote, protocol: meta.protocol });
        continue;
      }
      if (rule.proto === 'unix') {
        out.push({ local: rule.hostAddr, remote: `tcp://${remoteAddr}:${rule.guestPort}`, protocol: 'unix' });
        continue;
      }
      for (let i = 0; i < rule.portCount; i++) {
        const host = rule.hostAddr.includes(':') ? `[${rule.hostAddr}]` : rule.hostAddr;
        out.push({ local: `${host}:${rule.hostPort + i}`, remote: `${remoteAddr}:${rule.guestPort + i}`, protocol: rule.proto });
      }
    }
    out.sort((a, b) => (a.local === b.local ? cmp(a.protocol, b.protocol) : cmp(a.local, b.local)));
    return out;
  }

  /** POST /services/forwarder/expose with the parsed JSON body. */
  async expose(body: unknown): Promise<void> {
    const req = asObject(body);
    const protocol = stringField(req, 'protocol') || 'tcp';
    const local = stringField(req, 'local');
    const remote = stringField(req, 'remote');
    let remoteHost = '';
    let remotePort = '';
    if (protocol !== 'unix' && protocol !== 'npipe') {
      // gvproxy's remote(): SplitHostPort, a 400 when it fails.
      const r = splitHostPort(remote);
      if (r === undefined) throw new GvproxyError(400, `address ${remote}: missing port in address`);
      remoteHost = r.host;
      remotePort = r.port;
    }
    if (this.find(protocol, local) !== undefined) throw new GvproxyError(500, `proxy already running for ${protocol} on ${local}`);
    let rule: ForwardRule;
    switch (protocol) {
      case 'tcp':
      case 'udp': {
        const l = splitHostPort(local);
        if (l === undefined) throw new GvproxyError(500, `listen ${protocol} ${local}: address ${local}: missing port in address`);
        const hostAddr = l.host === '' ? '0.0.0.0' : l.host === 'localhost' ? '127.0.0.1' : l.host;
        rule = this.rule({ proto: protocol, host_addr: hostAddr, host_port: portNumber(l.port, local), guest_addr: remoteAddress(remoteHost), guest_port: portNumber(remotePort, remote) });
        break;
      }
      case 'unix': {
        let url: URL;
        try {
          url = new URL(remote);
        } catch {
          throw new GvproxyError(500, `failed to parse remote uri :${remote} : parse ${JSON.stringify(remote)}: invalid URI`);
        }
        const scheme = url.protocol.replace(/:$/, '');
        if (scheme !== 'tcp') throw new GvproxyError(500, `remote protocol for unix forwarder is not implemented: ${scheme}`);
        rule = this.rule({ proto: 'unix', host_addr: local, guest_addr: remoteAddress(url.hostname), guest_port: portNumber(url.port, remote) });
        break;
      }
      default:
        throw new GvproxyError(500, `unknown protocol ${protocol}`);
    }
    let added: ForwardRule;
    try {
      added = await this.forwards.add(rule);
    } catch (err) {
      throw new GvproxyError(500, err instanceof Error ? err.message : String(err));
    }
    this.exposed.set(added.name, { protocol, local, remote });
  }

  /** POST /services/forwarder/unexpose with the parsed JSON body. */
  async unexpose(body: unknown): Promise<void> {
    const req = asObject(body);
    const protocol = stringField(req, 'protocol') || 'tcp';
    const local = stringField(req, 'local');
    const name = this.find(protocol, local);
    if (name === undefined || !(await this.forwards.remove(name))) throw new GvproxyError(500, 'proxy not found');
  }

  /** The rule gvproxy would call `protocol/local`. */
  private find(protocol: string, local: string): string | undefined {
    for (const { rule } of this.forwards.list()) {
      const meta = this.exposed.get(rule.name);
      if (meta !== undefined) {
        if (meta.protocol === protocol && meta.local === local) return rule.name;
        continue;
      }
      if (rule.portCount !== 1 || rule.proto !== protocol) continue;
      if ((rule.proto === 'unix' ? rule.hostAddr : formatHostSide(rule)) === local) return rule.name;
    }
    return undefined;
  }

  private rule(json: Record<string, unknown>): ForwardRule {
    try {
      return ruleFromJson(json);
    } catch (err) {
      throw new GvproxyError(500, err instanceof Error && 'reason' in err ? String((err as { reason: unknown }).reason) : String(err));
    }
  }
}

function asObject(body: unknown): Record<string, unknown> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new GvproxyError(400, `json: cannot unmarshal ${Array.isArray(body) ? 'array' : body === null ? 'null' : typeof body} into Go value of type types.ExposeRequest`);
  }
  return body as Record<string, unknown>;
}

function portNumber(text: string, whole: string): number {
  if (!/^\d{1,5}$/.test(text) || Number(text) > 65535) throw new GvproxyError(500, `invalid port in ${JSON.stringify(whole)}`);
  return Number(text);
}

/** A remote host: '' → null (the lease); else it must be IPv4 (gvproxy's tcpipAddress). */
function remoteAddress(host: string): string | null {
  if (host === '') return null;
  const ip = parseIpv4(host);
  if (ip === undefined) throw new GvproxyError(500, `invalid remote addr ${JSON.stringify(host)} (an IPv4 address of a guest)`);
  return formatIpv4(ip);
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
