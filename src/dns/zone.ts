/**
 * The local zone: every name vmnat answers itself at the DNS address, whoever put it there.
 *
 * Theory of operation: one table (hosts.ts) answers A, AAAA and PTR queries before anything goes
 * upstream. Four kinds of entries share it, each remembered with its source so the API can show
 * and change them: `config` (--dns-host, --dns-hosts), `host` (the names that reach the host:
 * host.DOMAIN and every --host-alias, all the gateway's address, as host.docker.internal does for
 * containers), `guest` (a leased guest's DHCP hostname, as NAME and NAME.DOMAIN, gone with the
 * lease), and `api` (POST /dns at run time). A name belongs to one source: a later one never
 * takes over a name already in the zone (a guest cannot shadow host.docker.internal or a
 * configured name), and DELETE removes whatever the name is.
 */
import type { DnsHostsTable } from './hosts.ts';

export type ZoneSource = 'config' | 'host' | 'guest' | 'api';

export interface ZoneEntry {
  name: string;
  addresses: string[];
  source: ZoneSource;
}

export class LocalZone {
  private readonly sources = new Map<string, ZoneSource>();

  constructor(readonly table: DnsHostsTable) {
    for (const e of table.list()) this.sources.set(e.name, 'config');
  }

  /** Whether `name` (any case, trailing dot or not) is in the zone. */
  has(name: string): boolean {
    return this.table.lookup(name, 'A') !== undefined;
  }

  /**
   * Adds NAME → IP from `source`. False when the name belongs to another source; throws
   * DnsFlagError for a name or address that is not valid.
   */
  add(name: string, ip: string, source: ZoneSource): boolean {
    const key = this.key(name);
    const owner = this.sources.get(key);
    if (owner !== undefined && owner !== source && this.has(name)) return false;
    this.table.add(name, ip);
    this.sources.set(key, source);
    return true;
  }

  /** Removes one address of NAME (a guest's lease ended). */
  removeAddress(name: string, ip: string): void {
    this.table.remove(name, ip);
    if (!this.has(name)) this.sources.delete(this.key(name));
  }

  /** Removes NAME with all its addresses; false if it was not there. */
  remove(name: string): boolean {
    this.sources.delete(this.key(name));
    return this.table.removeName(name);
  }

  get(name: string): ZoneEntry | undefined {
    const key = this.key(name);
    return this.list().find((e) => e.name === key);
  }

  list(): ZoneEntry[] {
    return this.table.list().map((e) => ({ ...e, source: this.sources.get(e.name) ?? 'config' }));
  }

  private key(name: string): string {
    return (name.endsWith('.') ? name.slice(0, -1) : name).toLowerCase();
  }
}
