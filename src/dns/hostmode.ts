/**
 * `--dns-mode host`: answer A/AAAA through the host's own name service (getaddrinfo via
 * node:dns lookup), so the guest sees exactly what host programs see: /etc/hosts, mDNS, VPN
 * split-DNS, nsswitch modules, corporate resolvers reachable only through the host's stub.
 *
 * Theory of operation: one AF_UNSPEC lookup per query returns both families at once, which is
 * what lets us tell the answers apart: addresses of the asked family → NOERROR with them; only the
 * other family → NOERROR with no records (NODATA); none at all (ENOTFOUND) → NXDOMAIN. (AF_UNSPEC
 * also keeps glibc on /etc/hosts for names it lists, instead of asking DNS for the missing family.)
 * Limits of getaddrinfo that show through: a name that exists with no address at all (only MX,
 * say) reads as NXDOMAIN; there are no TTLs, so answers carry HOST_MODE_TTL; other query types
 * cannot be asked and get SERVFAIL (ANY gets A+AAAA, RFC 8482 allows a subset).
 *
 * getaddrinfo blocks a libuv threadpool thread (4 by default, shared with fs and crypto) for as
 * long as the host's resolver takes, so at most `maxConcurrent` run at once; the rest wait in FIFO
 * order (the forwarder's in-flight limit bounds that queue).
 */
import { promises as dnsPromises } from 'node:dns';
import { parseIpv4 } from '../stack/wire/addr.ts';
import { parseIpv6 } from './hosts.ts';

/** Seconds: getaddrinfo has no TTL; short enough to follow host changes, long enough to absorb bursts. */
export const HOST_MODE_TTL = 10;

export type HostLookup = (name: string) => Promise<Array<{ address: string; family: number }>>;

/** The real one: getaddrinfo(AF_UNSPEC), every address, in the resolver's order. */
export const systemLookup: HostLookup = (name) => dnsPromises.lookup(name, { all: true, family: 0, verbatim: true });

export type HostResult =
  | { kind: 'found'; v4: Uint8Array[]; v6: Uint8Array[] }
  | { kind: 'nxdomain' }
  | { kind: 'fail'; reason: string };

export class HostModeResolver {
  private running = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(
    private readonly lookup: HostLookup,
    private readonly maxConcurrent = 2,
  ) {}

  async resolve(name: string): Promise<HostResult> {
    // A finishing lookup hands its slot straight to the next waiter, so `running` never overshoots.
    if (this.running >= this.maxConcurrent) await new Promise<void>((r) => this.waiting.push(r));
    else this.running++;
    try {
      const addrs = await this.lookup(name);
      const v4: Uint8Array[] = [];
      const v6: Uint8Array[] = [];
      for (const a of addrs) {
        const n = a.family === 4 ? parseIpv4(a.address) : undefined;
        if (n !== undefined) v4.push(Uint8Array.of(n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff));
        else if (a.family === 6) {
          // getaddrinfo may return a scoped link-local (fe80::1%eth0): the scope means nothing to the guest.
          const pct = a.address.indexOf('%');
          const b = parseIpv6(pct < 0 ? a.address : a.address.slice(0, pct));
          if (b) v6.push(b);
        }
      }
      if (v4.length === 0 && v6.length === 0) return { kind: 'nxdomain' };
      return { kind: 'found', v4, v6 };
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // Node folds EAI_NONAME and EAI_NODATA into ENOTFOUND: the name has no address at all.
      if (code === 'ENOTFOUND') return { kind: 'nxdomain' };
      return { kind: 'fail', reason: code ?? String(err) };
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.running--;
    }
  }
}
