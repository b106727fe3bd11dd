/**
 * The host's resolvers, from resolv.conf, kept current.
 *
 * Theory of operation: the forwarder asks `current()` before forwarding a query. If the last check
 * is older than `checkIntervalMs` (default 1 s), it stats the file (following symlinks) and
 * re-reads it when device, inode, size, mtime or ctime changed; the query waits for that stat
 * (tens of microseconds) so the first query after a network change already uses the new servers.
 *
 * Why lazy stat and not fs.watch: resolv.conf is usually replaced by rename (NetworkManager,
 * resolvconf, systemd-resolved) or is a symlink whose target changes; an inotify watch on the
 * file follows the old inode and goes silent after the first replacement, and a watch on /etc sees
 * neither changes behind a symlink nor a replaced /run directory. Stat follows the link and sees a
 * new inode. Why lazy and not a polling timer (fs.watchFile): it costs nothing while the guest is
 * quiet, needs no timer to clean up, and can never be staler than one interval at query time. This
 * is also what glibc (>= 2.26) does: it stats resolv.conf on lookups and reloads on change.
 *
 * Parsing follows resolv.conf(5): `nameserver ADDR` lines (IPv4, or IPv6 with an optional %zone),
 * `#`/`;` comments, the first three servers only (glibc's MAXNS). Other options (timeout,
 * attempts, rotate, search) are not used: the forwarder has its own timeout, and search lists are
 * the guest's business (DHCP). resolv.conf has no port syntax: servers use `port` (53; tests
 * override it to reach their own loopback server).
 */
import { stat, readFile } from 'node:fs/promises';
import { parseIpv4 } from '../stack/wire/addr.ts';
import { formatIpv6, parseIpv6, type DnsUpstream } from './hosts.ts';

/** glibc's MAXNS: servers beyond the third are ignored by the host's own resolver too. */
export const RESOLV_MAXNS = 3;

export interface ResolvConf {
  servers: DnsUpstream[];
  /** `nameserver` values that were not addresses (reported, not fatal). */
  invalid: string[];
}

export function parseResolvConf(text: string, port = 53): ResolvConf {
  const out: ResolvConf = { servers: [], invalid: [] };
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.replace(/[#;].*$/, '').trim();
    const m = /^nameserver\s+(\S+)/.exec(line);
    if (!m) continue;
    const addr = m[1]!;
    let ip: string | undefined;
    if (parseIpv4(addr) !== undefined) ip = addr;
    else {
      const pct = addr.indexOf('%');
      const v6 = parseIpv6(pct < 0 ? addr : addr.slice(0, pct));
      if (v6 && (pct < 0 || pct < addr.length - 1)) ip = formatIpv6(v6) + (pct < 0 ? '' : addr.slice(pct));
    }
    if (ip === undefined) out.invalid.push(addr);
    else if (out.servers.length < RESOLV_MAXNS) out.servers.push({ ip, port });
  }
  return out;
}

export interface ResolvConfLog {
  info(m: string): void;
  warn(m: string): void;
}

export class ResolvConfSource {
  private servers: DnsUpstream[] = [];
  /** Why there are no servers (logged once per change of reason), or '' when there are. */
  private problem = 'not read yet';
  private fileKey = '';
  private checkedAt = -Infinity;
  private checking: Promise<void> | undefined;
  /** Bumped each time the server list changes (the forwarder rebuilds its upstream table). */
  generation = 0;

  constructor(
    private readonly path: string,
    private readonly port: number,
    private readonly checkIntervalMs: number,
    private readonly log: ResolvConfLog,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** The servers, or a promise settling when a due check is done. Never rejects. */
  current(): DnsUpstream[] | Promise<DnsUpstream[]> {
    if (this.checking) return this.checking.then(() => this.servers);
    if (this.now() - this.checkedAt < this.checkIntervalMs) return this.servers;
    this.checkedAt = this.now();
    this.checking = this.check().finally(() => {
      this.checking = undefined;
    });
    return this.checking.then(() => this.servers);
  }

  /** The servers as of the last check (never waits). */
  get last(): DnsUpstream[] {
    return this.servers;
  }

  /** Why no server is usable ('' if there is one). */
  get whyNone(): string {
    return this.problem;
  }

  private async check(): Promise<void> {
    let key: string;
    try {
      const st = await stat(this.path);
      key = `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
    } catch (err) {
      this.fileKey = '';
      this.update([], `cannot read ${this.path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
      return;
    }
    if (key === this.fileKey) return;
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (err) {
      this.fileKey = '';
      this.update([], `cannot read ${this.path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
      return;
    }
    this.fileKey = key;
    const parsed = parseResolvConf(text, this.port);
    if (parsed.invalid.length > 0) {
      this.log.warn(`dns: ${this.path}: ignoring nameserver ${parsed.invalid.join(', ')} (not an IP address)`);
    }
    this.update(parsed.servers, parsed.servers.length === 0 ? `${this.path} names no nameserver` : '');
  }

  private update(servers: DnsUpstream[], problem: string): void {
    const same =
      servers.length === this.servers.length && servers.every((s, i) => s.ip === this.servers[i]!.ip && s.port === this.servers[i]!.port);
    if (!same) {
      this.servers = servers;
      this.generation++;
      if (servers.length > 0) {
        this.log.info(`dns: upstream resolvers from ${this.path}: ${servers.map((s) => s.ip).join(', ')}`);
      }
    }
    if (problem !== this.problem) {
      this.problem = problem;
      if (problem) this.log.warn(`dns: no usable resolver (${problem}); DNS queries get SERVFAIL until that changes`);
    }
  }
}
