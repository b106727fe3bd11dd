/**
 * The DNS service behind the guest's DNS address (10.0.2.3:53, UDP and TCP).
 *
 * Theory of operation: the stack hands over one DNS message per guest query and a `reply`
 * callback. The message is parsed just enough to know what it asks (wire.ts), then answered by the
 * first source that can:
 *   1. the hosts table (--dns-host, --dns-hosts): A, AAAA, ANY and PTR for configured names,
 *   2. `--dns-mode host`: the host's getaddrinfo (hostmode.ts),
 *   3. `--dns-mode forward` (default): the upstream resolvers, from --dns-server or, when none is
 *      given, from resolv.conf (resolvconf.ts, re-read when it changes).
 *
 * Forwarding keeps the guest's bytes: the query goes upstream unchanged except for the id (a fresh
 * random id per attempt, mapped back, so guest ids never collide and never reach the network) and,
 * for UDP guests, an EDNS size above `maxUdpSize` lowered to it (so the upstream truncates
 * properly rather than us). The answer comes back unchanged except for the guest's id, and is cut
 * to the guest's UDP size if it is still too big (wire.ts truncateResponse, TC set).
 *
 * Per query, a plan of attempts: healthy upstreams in configured order, then ones that failed in
 * the last `downMs`, soonest-recovering first; a single upstream is tried twice (one lost datagram
 * should not fail a lookup). Each attempt waits `timeoutMs`; ICMP port-unreachable (connected UDP
 * sockets) or a TCP refusal moves on at once. SERVFAIL/REFUSED/NOTIMP answers also move on but are
 * kept: if nobody does better, the guest gets the upstream's own answer, not ours. Attempts stay
 * registered until the query ends, so a late answer to an earlier attempt still wins.
 *
 * Transports: UDP guests are forwarded over UDP; a truncated (TC) upstream answer is passed through
 * and the guest repeats the query over TCP, as its stub would with any server. TCP guests are
 * forwarded over TCP directly (they mostly ask over TCP *because* an answer was truncated, so a
 * UDP try would be a wasted round trip); if an upstream refuses or drops TCP, the same query goes
 * to it over UDP before moving on. Past `maxTcpUpstream` open connections TCP guests go over UDP.
 *
 * Guest input never throws: a message without a readable header (or a response, QR=1) is
 * dropped; a bad body gets FORMERR; another opcode NOTIMP; all counted in `stats`. Bounds:
 * `maxInFlight` queries (then SERVFAIL at once, counted `overloaded`), `maxTcpUpstream` TCP
 * connections, one UDP socket per upstream (plus retiring ones draining their last answers).
 *
 * `reply` is always called asynchronously, at most once, with a Uint8Array the caller owns; not at
 * all after close(). query() does not keep `msg` after it returns.
 *
 * Limits: local answers (hosts, host mode, SERVFAIL) carry no DNSSEC data and ignore the EDNS
 * version (no BADVERS); upstream answers are not cached (the guest's stub or the upstream caches);
 * reverse lookups of private ranges not in the hosts table go upstream (no RFC 6303 local zones).
 */
import { HostModeResolver, HOST_MODE_TTL, systemLookup, type HostLookup } from './hostmode.ts';
import { DnsHostsTable, type DnsUpstream } from './hosts.ts';
import { ResolvConfSource } from './resolvconf.ts';
import { QUERIES_PER_SOCKET, SOCKET_MAX_AGE_MS, Upstream, upstreamKey, type Ticket, type UpstreamClient } from './upstream.ts';
import {
  buildHeaderError,
  buildResponse,
  encodeName,
  isTruncated,
  MIN_UDP_SIZE,
  parseQuery,
  QClass,
  QType,
  Rcode,
  rcodeOf,
  responseMatches,
  truncateResponse,
  writeId,
  writeU16,
  type LocalAnswer,
  type ParsedQuery,
} from './wire.ts';

export { DnsHostsTable, DnsFlagError, parseDnsHostFlag, parseDnsServerFlag, type DnsUpstream } from './hosts.ts';

/** Defaults for the CLI: --dns-mode, the resolv.conf path, the per-attempt timeout. */
export const DNS_DEFAULTS = { mode: 'forward', resolvConfPath: '/etc/resolv.conf', timeoutMs: 2000 } as const;

export interface DnsForwarderOptions {
  /** --dns-mode: forward to upstream resolvers (default) or ask the host's getaddrinfo. */
  mode: 'forward' | 'host';
  /** --dns-server; empty → the host's resolvers from resolvConfPath. */
  servers: DnsUpstream[];
  /** Default '/etc/resolv.conf'; checked for changes at most once per resolvConfCheckMs. */
  resolvConfPath: string;
  /** --dns-host / --dns-hosts: answered first, in both modes. */
  hosts: DnsHostsTable;
  /** Per upstream attempt (default 2000), then the next upstream. */
  timeoutMs: number;
  log: { info(m: string): void; warn(m: string): void; debug(m: string): void };
  /** Queries waiting for an answer at once (default 1024); beyond that, SERVFAIL. */
  maxInFlight?: number;
  /**
   * Largest UDP answer sent to the guest whatever its EDNS size says (default 1232, the DNS Flag
   * Day 2020 size: fits a 1280-byte IPv6 MTU, so no IP fragmentation on the way to the guest).
   */
  maxUdpSize?: number;
  /** Open TCP connections to upstreams at once (default 64). */
  maxTcpUpstream?: number;
  /** How long a failed upstream is tried after the others (default 30000 ms). */
  downMs?: number;
  /** resolv.conf has no port syntax; this is the port for its servers (default 53; tests). */
  resolvConfPort?: number;
  /** Minimum time between two stats of resolv.conf (default 1000 ms; tests use 0). */
  resolvConfCheckMs?: number;
  /** When a UDP socket to an upstream is replaced (default: 100 queries or 10 s; tests shorten it). */
  upstreamSocketRotation?: { queries: number; maxAgeMs: number };
  /** getaddrinfo replacement for host mode (tests: names that must not reach a real resolver). */
  hostLookup?: HostLookup;
}

/** Counters (and one gauge, inFlight). Every drop and every fallback has its own name. */
export type DnsStats = {
  queries: number;
  answeredLocally: number;
  answeredByHost: number;
  forwarded: number;
  /** Attempts that got no answer within timeoutMs. */
  upstreamTimeouts: number;
  /** Attempts that failed at once: ICMP refused, no route, TCP refused or reset. */
  upstreamErrors: number;
  /** Upstream answers SERVFAIL/REFUSED/NOTIMP that made us try another upstream. */
  upstreamErrorRcode: number;
  /** Moves to a different upstream within one query. */
  failovers: number;
  /** A second attempt at the same (only) upstream. */
  retransmits: number;
  /** Answers to an earlier attempt that arrived after we had moved on (and were used). */
  lateAnswers: number;
  /** Upstream datagrams/messages with an unknown id or a question that is not ours. */
  upstreamMismatch: number;
  upstreamTcp: number;
  tcpFallbackToUdp: number;
  /** Upstream TC answers passed to UDP guests (they retry over TCP). */
  truncatedPassedThrough: number;
  /** Answers we cut to the guest's UDP size. */
  truncatedToGuest: number;
  /** SERVFAIL answers we made up (no upstream answered, none configured, overload, host failure). */
  servfail: number;
  noResolver: number;
  overloaded: number;
  formerr: number;
  notimp: number;
  malformedDropped: number;
  hostModeUnsupported: number;
  /** Gauge: queries waiting for an answer now. */
  inFlight: number;
};

function newStats(): DnsStats {
  return {
    queries: 0,
    answeredLocally: 0,
    answeredByHost: 0,
    forwarded: 0,
    upstreamTimeouts: 0,
    upstreamErrors: 0,
    upstreamErrorRcode: 0,
    failovers: 0,
    retransmits: 0,
    lateAnswers: 0,
    upstreamMismatch: 0,
    upstreamTcp: 0,
    tcpFallbackToUdp: 0,
    truncatedPassedThrough: 0,
    truncatedToGuest: 0,
    servfail: 0,
    noResolver: 0,
    overloaded: 0,
    formerr: 0,
    notimp: 0,
    malformedDropped: 0,
    hostModeUnsupported: 0,
    inFlight: 0,
  };
}

type Reply = (response: Uint8Array) => void;

/** What a PendingQuery needs from its forwarder. */
interface Context {
  readonly stats: DnsStats;
  readonly timeoutMs: number;
  readonly log: DnsForwarderOptions['log'];
  tcpAllowed(): boolean;
  markDown(u: Upstream, why: string): void;
  complete(p: PendingQuery, answer: Uint8Array | undefined): void;
}

/** One forwarded guest query: its attempt plan and the attempt under way. */
class PendingQuery implements UpstreamClient {
  done = false;
  private nextIndex = 0;
  private current: Ticket | undefined;
  readonly tickets: Ticket[] = [];
  private timer: NodeJS.Timeout | undefined;
  /** An upstream's own SERVFAIL/REFUSED/NOTIMP, given to the guest if nobody does better. */
  private fallback: Uint8Array | undefined;
  /** Upstreams not to ask again for this query (refused, or answered with an error). */
  private readonly exhausted = new Set<Upstream>();
  private udpFallbackTried: Upstream | undefined;

  constructor(
    private readonly ctx: Context,
    /** Our private copy of the guest query; attempts copy it again to write their id. */
    readonly wire: Uint8Array,
    readonly q: ParsedQuery,
    readonly transport: 'udp' | 'tcp',
    readonly maxUdp: number,
    readonly reply: Reply,
    private readonly plan: Upstream[],
  ) {}

  start(): void {
    this.advance();
  }

  /** Ends the current attempt (its UDP id stays registered for a late answer) and starts the next. */
  private advance(): void {
    this.stopTimer();
    if (this.current?.kind === 'tcp') this.current.upstream.release(this.current);
    const prev = this.current?.upstream;
    while (this.nextIndex < this.plan.length && this.exhausted.has(this.plan[this.nextIndex]!)) this.nextIndex++;
    const u = this.plan[this.nextIndex++];
    if (!u) {
      this.current = undefined;
      this.ctx.complete(this, this.fallback);
      return;
    }
    if (prev === u) this.ctx.stats.retransmits++;
    else if (prev) this.ctx.stats.failovers++;
    this.send(u, this.transport === 'tcp' && this.ctx.tcpAllowed() ? 'tcp' : 'udp');
  }

  private send(u: Upstream, via: 'udp' | 'tcp'): void {
    const copy = this.wire.slice();
    if (via === 'tcp') this.ctx.stats.upstreamTcp++;
    const t = via === 'tcp' ? u.sendTcp(copy, this) : u.sendUdp(copy, this);
    this.current = t;
    this.tickets.push(t);
    this.timer = setTimeout(() => this.onTimeout(), this.ctx.timeoutMs);
  }

  private onTimeout(): void {
    this.timer = undefined;
    if (this.done || !this.current) return;
    this.ctx.stats.upstreamTimeouts++;
    this.ctx.markDown(this.current.upstream, `no answer within ${this.ctx.timeoutMs} ms`);
    this.advance();
  }

  private hasMoreToTry(): boolean {
    for (let i = this.nextIndex; i < this.plan.length; i++) if (!this.exhausted.has(this.plan[i]!)) return true;
    return false;
  }

  onAnswer(msg: Buffer, ticket: Ticket): void {
    if (this.done) return;
    if (!responseMatches(msg, this.wire, this.q.questionEnd)) {
      this.ctx.stats.upstreamMismatch++;
      return;
    }
    ticket.upstream.downUntil = 0;
    const late = ticket !== this.current;
    const answer = new Uint8Array(msg.buffer, msg.byteOffset, msg.length);
    const rcode = rcodeOf(answer);
    if (rcode === Rcode.SERVFAIL || rcode === Rcode.REFUSED || rcode === Rcode.NOTIMP) {
      this.exhausted.add(ticket.upstream);
      // Keep it in case nobody does better; a late one must not cut short the attempt under way.
      if (late || this.hasMoreToTry()) {
        this.ctx.stats.upstreamErrorRcode++;
        this.fallback = answer;
        if (!late) this.advance();
        return;
      }
    }
    if (late) this.ctx.stats.lateAnswers++;
    this.ctx.complete(this, answer);
  }

  onError(ticket: Ticket, reason: string): void {
    if (this.done || ticket !== this.current) return;
    this.ctx.stats.upstreamErrors++;
    const u = ticket.upstream;
    if (ticket.kind === 'tcp' && this.udpFallbackTried !== u) {
      // Some resolvers (home routers) do not speak TCP: ask the same one over UDP first.
      this.udpFallbackTried = u;
      this.ctx.stats.tcpFallbackToUdp++;
      this.ctx.log.debug(`dns: ${u.key} over TCP: ${reason}; trying it over UDP`);
      this.stopTimer();
      u.release(ticket);
      this.send(u, 'udp');
      return;
    }
    this.exhausted.add(u);
    this.ctx.markDown(u, reason);
    this.advance();
  }

  stopTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }
}

export class DnsForwarder {
  readonly stats: DnsStats = newStats();
  private readonly maxInFlight: number;
  private readonly maxUdpSize: number;
  private readonly rotation: { queries: number; maxAgeMs: number };
  private readonly maxTcpUpstream: number;
  private readonly downMs: number;
  private readonly resolvConf: ResolvConfSource | undefined;
  private readonly hostResolver: HostModeResolver | undefined;
  /** Upstreams by key, and the configured order. */
  private upstreams = new Map<string, Upstream>();
  private upstreamOrder: Upstream[] = [];
  private upstreamGeneration = -1;
  /** Upstreams dropped from resolv.conf whose sockets still wait for answers. */
  private readonly draining = new Set<Upstream>();
  private readonly pending = new Set<PendingQuery>();
  private closed = false;
  private readonly ctx: Context;

  constructor(private readonly opts: DnsForwarderOptions) {
    this.maxInFlight = opts.maxInFlight ?? 1024;
    this.maxUdpSize = Math.max(MIN_UDP_SIZE, Math.min(65535, opts.maxUdpSize ?? 1232));
    this.rotation = opts.upstreamSocketRotation ?? { queries: QUERIES_PER_SOCKET, maxAgeMs: SOCKET_MAX_AGE_MS };
    this.maxTcpUpstream = opts.maxTcpUpstream ?? 64;
    this.downMs = opts.downMs ?? 30_000;
    if (opts.mode === 'host') {
      this.hostResolver = new HostModeResolver(opts.hostLookup ?? systemLookup);
    } else if (opts.servers.length > 0) {
      this.setUpstreams(opts.servers);
    } else {
      this.resolvConf = new ResolvConfSource(opts.resolvConfPath, opts.resolvConfPort ?? 53, opts.resolvConfCheckMs ?? 1000, opts.log);
      // Read it now, so the first query does not wait and a missing resolver is logged at start.
      void this.resolvConf.current();
    }
    const self = this;
    this.ctx = {
      stats: this.stats,
      timeoutMs: opts.timeoutMs,
      log: opts.log,
      tcpAllowed: () => {
        let open = 0;
        for (const u of this.upstreamOrder) open += u.openTcp;
        return open < this.maxTcpUpstream;
      },
      markDown: (u, why) => {
        const now = performance.now();
        if (u.downUntil <= now) {
          const others = this.upstreamOrder.length > 1 ? `; trying the other resolvers first for ${Math.round(this.downMs / 1000)} s` : '';
          this.opts.log.warn(`dns: upstream ${u.key}: ${why}${others}`);
        }
        u.downUntil = now + this.downMs;
      },
      complete: (p, answer) => self.complete(p, answer),
    };
  }

  /**
   * One query from a guest: a DNS message (UDP payload, or a TCP message without its length
   * prefix). `reply` is called at most once, asynchronously. For UDP the response fits 512 bytes
   * or the query's EDNS size (capped at maxUdpSize), or is truncated with TC set.
   */
  query(msg: Uint8Array, transport: 'udp' | 'tcp', reply: Reply): void {
    if (this.closed) return;
    this.stats.queries++;
    const parsed = parseQuery(msg);
    if (parsed.kind === 'drop') {
      this.stats.malformedDropped++;
      this.opts.log.debug(`dns: dropped guest message: ${parsed.reason}`);
      return;
    }
    if (parsed.kind !== 'ok') {
      this.stats[parsed.kind]++;
      this.opts.log.debug(`dns: ${parsed.kind.toUpperCase()} to guest query ${parsed.id}: ${parsed.reason}`);
      const rcode = parsed.kind === 'formerr' ? Rcode.FORMERR : Rcode.NOTIMP;
      this.later(reply, buildHeaderError(parsed.id, parsed.flags, rcode));
      return;
    }
    const q = parsed.query;
    const maxUdp = transport === 'tcp' ? 65535 : Math.min(this.maxUdpSize, Math.max(MIN_UDP_SIZE, q.edns?.udpSize ?? 0));
    if (this.stats.inFlight >= this.maxInFlight) {
      this.stats.overloaded++;
      this.servfail(msg, q, transport, maxUdp, reply);
      return;
    }
    const local = this.answerFromHosts(msg, q);
    if (local) {
      this.stats.answeredLocally++;
      this.later(reply, this.fit(local, transport, maxUdp));
      return;
    }
    if (this.hostResolver) {
      this.resolveOnHost(msg, q, transport, maxUdp, reply);
      return;
    }
    this.forward(msg, q, transport, maxUdp, reply);
  }

  /** Stops everything: sockets closed, timers cleared, pending queries dropped without a reply. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const p of this.pending) {
      p.done = true;
      p.stopTimer();
    }
    this.pending.clear();
    this.stats.inFlight = 0;
    for (const u of this.upstreams.values()) u.close();
    for (const u of this.draining) u.close();
    this.draining.clear();
    this.upstreams.clear();
    this.upstreamOrder = [];
  }

  private answerFromHosts(msg: Uint8Array, q: ParsedQuery): Uint8Array | undefined {
    if (q.qclass !== QClass.IN || this.opts.hosts.size === 0) return undefined;
    const answers: LocalAnswer[] = [];
    const ttl = 0; // dnsmasq's local-ttl default: local data can change under the guest's feet
    if (q.qtype === QType.A || q.qtype === QType.AAAA || q.qtype === QType.ANY) {
      const v4 = this.opts.hosts.lookupRdata(q.qname, 'A');
      if (v4 === undefined) return undefined;
      const v6 = this.opts.hosts.lookupRdata(q.qname, 'AAAA') ?? [];
      if (q.qtype !== QType.AAAA) for (const r of v4) answers.push({ type: QType.A, ttl, rdata: r });
      if (q.qtype !== QType.A) for (const r of v6) answers.push({ type: QType.AAAA, ttl, rdata: r });
    } else if (q.qtype === QType.PTR) {
      const names = this.opts.hosts.lookupPtr(q.qname);
      if (!names) return undefined;
      for (const n of names) answers.push({ type: QType.PTR, ttl, rdata: encodeName(n) });
    } else {
      return undefined;
    }
    return buildResponse(msg, q, Rcode.NOERROR, answers, this.maxUdpSize);
  }

  private resolveOnHost(msg: Uint8Array, q: ParsedQuery, transport: 'udp' | 'tcp', maxUdp: number, reply: Reply): void {
    const wanted = q.qtype === QType.A || q.qtype === QType.AAAA || q.qtype === QType.ANY;
    if (q.qclass !== QClass.IN || !wanted || q.qname === '' || q.qnameEscaped) {
      this.stats.hostModeUnsupported++;
      this.servfail(msg, q, transport, maxUdp, reply);
      return;
    }
    const question = msg.slice(0, q.questionEnd);
    this.stats.inFlight++;
    void this.hostResolver!.resolve(q.qname).then((r) => {
      if (this.closed) return;
      this.stats.inFlight--;
      if (r.kind === 'fail') {
        this.opts.log.debug(`dns: host lookup of ${q.qname}: ${r.reason}`);
        this.servfail(question, q, transport, maxUdp, reply);
        return;
      }
      this.stats.answeredByHost++;
      const answers: LocalAnswer[] = [];
      if (r.kind === 'found') {
        if (q.qtype !== QType.AAAA) for (const b of r.v4) answers.push({ type: QType.A, ttl: HOST_MODE_TTL, rdata: b });
        if (q.qtype !== QType.A) for (const b of r.v6) answers.push({ type: QType.AAAA, ttl: HOST_MODE_TTL, rdata: b });
      }
      const rcode = r.kind === 'nxdomain' ? Rcode.NXDOMAIN : Rcode.NOERROR;
      reply(this.fit(buildResponse(question, q, rcode, answers, this.maxUdpSize), transport, maxUdp));
    });
  }

  private forward(msg: Uint8Array, q: ParsedQuery, transport: 'udp' | 'tcp', maxUdp: number, reply: Reply): void {
    const wire = msg.slice();
    // Ask upstream for no more than we can hand to the guest, so the upstream truncates (it knows
    // which records matter) instead of us. TCP guests have no such limit.
    if (transport === 'udp' && q.edns && q.edns.udpSize > this.maxUdpSize) writeU16(wire, q.edns.sizeOffset, this.maxUdpSize);
    this.stats.inFlight++;
    const servers = this.resolvConf ? this.resolvConf.current() : undefined;
    if (servers instanceof Promise) {
      void servers.then(() => {
        if (this.closed) return;
        this.stats.inFlight--;
        this.startForward(wire, q, transport, maxUdp, reply);
      });
      return;
    }
    this.stats.inFlight--;
    this.startForward(wire, q, transport, maxUdp, reply);
  }

  private startForward(wire: Uint8Array, q: ParsedQuery, transport: 'udp' | 'tcp', maxUdp: number, reply: Reply): void {
    if (this.resolvConf && this.resolvConf.generation !== this.upstreamGeneration) {
      this.upstreamGeneration = this.resolvConf.generation;
      this.setUpstreams(this.resolvConf.last);
    }
    if (this.upstreamOrder.length === 0) {
      this.stats.noResolver++;
      this.servfail(wire, q, transport, maxUdp, reply);
      return;
    }
    const now = performance.now();
    const rank = (u: Upstream): number => (u.downUntil > now ? u.downUntil : 0);
    const order = this.upstreamOrder.slice().sort((a, b) => rank(a) - rank(b));
    const plan = order.length === 1 ? [order[0]!, order[0]!] : order;
    const p = new PendingQuery(this.ctx, wire, q, transport, maxUdp, reply, plan);
    this.pending.add(p);
    this.stats.inFlight++;
    this.stats.forwarded++;
    p.start();
  }

  private complete(p: PendingQuery, answer: Uint8Array | undefined): void {
    if (p.done) return;
    p.done = true;
    p.stopTimer();
    this.pending.delete(p);
    this.stats.inFlight--;
    for (const t of p.tickets) t.upstream.release(t);
    if (!answer) {
      this.opts.log.debug(`dns: no upstream answered ${p.q.qname}; SERVFAIL`);
      this.stats.servfail++;
      p.reply(this.fit(buildResponse(p.wire, p.q, Rcode.SERVFAIL, [], this.maxUdpSize), p.transport, p.maxUdp));
      return;
    }
    writeId(answer, p.q.id);
    if (p.transport === 'udp' && isTruncated(answer)) this.stats.truncatedPassedThrough++;
    p.reply(this.fit(answer, p.transport, p.maxUdp));
  }

  /** The response cut to what the guest's transport can carry (TCP: the 16-bit length prefix). */
  private fit(resp: Uint8Array, transport: 'udp' | 'tcp', maxUdp: number): Uint8Array {
    const limit = transport === 'tcp' ? 65535 : maxUdp;
    if (resp.length <= limit) return resp;
    this.stats.truncatedToGuest++;
    return truncateResponse(resp, limit);
  }

  private servfail(msg: Uint8Array, q: ParsedQuery, transport: 'udp' | 'tcp', maxUdp: number, reply: Reply): void {
    this.stats.servfail++;
    this.later(reply, this.fit(buildResponse(msg, q, Rcode.SERVFAIL, [], this.maxUdpSize), transport, maxUdp));
  }

  /** Replies on a microtask: the caller never sees its reply before query() returns. */
  private later(reply: Reply, resp: Uint8Array): void {
    queueMicrotask(() => {
      if (!this.closed) reply(resp);
    });
  }

  private setUpstreams(servers: DnsUpstream[]): void {
    const next = new Map<string, Upstream>();
    for (const s of servers) {
      const key = upstreamKey(s.ip, s.port);
      if (next.has(key)) continue;
      next.set(key, this.upstreams.get(key) ?? new Upstream(s.ip, s.port, () => this.stats.upstreamMismatch++, this.rotation));
    }
    for (const [key, u] of this.upstreams) {
      if (next.has(key)) continue;
      u.remove();
      this.draining.add(u);
    }
    for (const u of this.draining) if (u.drained) this.draining.delete(u);
    this.upstreams = next;
    this.upstreamOrder = [...next.values()];
  }
}
