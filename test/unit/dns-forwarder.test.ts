/**
 * The DNS forwarder against real peers: small DNS servers this test runs on loopback addresses
 * (127.53.P.x, P from the PID), speaking UDP and TCP through dns-packet. Nothing here sends a
 * query to the machine's real resolver: every forwarder gets explicit loopback servers or a temp
 * resolv.conf naming one, and host-mode tests resolve only 'localhost' for real.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { promises as dnsPromises } from 'node:dns';
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { fc } from '@fast-check/vitest';
import dnsPacket, { type Answer, type DecodedPacket, type Packet, type RecordType } from 'dns-packet';
import { DnsForwarder, DnsHostsTable, type DnsForwarderOptions } from '../../src/dns/forwarder.ts';
import { QUERIES_PER_SOCKET } from '../../src/dns/upstream.ts';

const NET = `127.53.${process.pid % 250}`;
const ip = (n: number): string => `${NET}.${n}`;

// ---------------------------------------------------------------- a test DNS server

type ZoneAnswer = Answer[] | { rcode: number } | 'drop';
type Zone = (q: { name: string; type: string }, transport: 'udp' | 'tcp') => ZoneAnswer;

interface Seen {
  transport: 'udp' | 'tcp';
  id: number;
  name: string;
  type: string;
  ednsSize: number | undefined;
  /** The forwarder's source port (UDP). */
  srcPort: number;
}

interface ServerOpts {
  host: string;
  port?: number;
  zone: Zone;
  tcp?: boolean;
  /** Ignore the client's UDP size (a non-compliant server). */
  sloppy?: boolean;
  delayMs?: number;
  /** Answer with a different question than asked (a spoofer). */
  wrongQuestion?: boolean;
}

class TestDnsServer {
  readonly seen: Seen[] = [];
  private constructor(
    private readonly opts: ServerOpts,
    private readonly udp: dgram.Socket,
    private readonly tcp: net.Server | undefined,
    readonly port: number,
  ) {}

  static async start(opts: ServerOpts): Promise<TestDnsServer> {
    // A large receive buffer: the load test sends hundreds of datagrams at once. UDP on port 0,
    // then TCP on the same number: should that be taken meanwhile (another test file), start over.
    let udp: dgram.Socket;
    let port: number;
    let tcp: net.Server | undefined;
    for (let attempt = 0; ; attempt++) {
      const u = dgram.createSocket({ type: opts.host.includes(':') ? 'udp6' : 'udp4', recvBufferSize: 4 << 20 });
      await new Promise<void>((res, rej) => {
        u.once('error', rej);
        u.bind(opts.port ?? 0, opts.host, () => res());
      });
      const p = u.address().port;
      const t = opts.tcp !== false ? net.createServer() : undefined;
      const ok =
        t === undefined ||
        (await new Promise<boolean>((res, rej) => {
          t.once('error', (err: NodeJS.ErrnoException) => (err.code === 'EADDRINUSE' && opts.port === undefined && attempt < 20 ? res(false) : rej(err)));
          t.listen(p, opts.host, () => res(true));
        }));
      if (ok) {
        udp = u;
        port = p;
        tcp = t;
        break;
      }
      u.close();
    }
    const server = new TestDnsServer(opts, udp, tcp, port);
    udp.on('message', (msg, rinfo) => {
      const out = server.respond(msg, 'udp', rinfo.port);
      if (out) setTimeout(() => udp.send(out, rinfo.port, rinfo.address), opts.delayMs ?? 0);
    });
    tcp?.on('connection', (sock) => {
      let buf = Buffer.alloc(0);
      sock.on('error', () => {});
      sock.on('data', (d) => {
        buf = Buffer.concat([buf, d]);
        while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
          const msg = buf.subarray(2, 2 + buf.readUInt16BE(0));
          buf = buf.subarray(2 + msg.length);
          const out = server.respond(msg, 'tcp');
          if (out) {
            const len = Buffer.alloc(2);
            len.writeUInt16BE(out.length);
            setTimeout(() => sock.write(Buffer.concat([len, out])), opts.delayMs ?? 0);
          }
        }
      });
    });
    live.add(server);
    return server;
  }

  private respond(msg: Buffer, transport: 'udp' | 'tcp', srcPort = 0): Buffer | undefined {
    let q: DecodedPacket;
    try {
      q = dnsPacket.decode(msg);
    } catch {
      return undefined;
    }
    const question = q.questions?.[0];
    if (!question) return undefined;
    const opt = q.additionals?.find((a) => a.type === 'OPT');
    const ednsSize = opt && 'udpPayloadSize' in opt ? opt.udpPayloadSize : undefined;
    this.seen.push({ transport, id: q.id ?? -1, name: question.name, type: question.type, ednsSize, srcPort });
    const z = this.opts.zone({ name: question.name.toLowerCase(), type: question.type }, transport);
    if (z === 'drop') return undefined;
    const questions = this.opts.wrongQuestion ? [{ ...question, name: `x${question.name}` }] : [question];
    const additionals: Answer[] = opt ? [{ type: 'OPT', name: '.', udpPayloadSize: 4096, extendedRcode: 0, ednsVersion: 0, flags: 0, flag_do: false, options: [] }] : [];
    const base = { type: 'response' as const, id: q.id, questions, additionals };
    const rc = Array.isArray(z) ? 0 : z.rcode;
    const full = dnsPacket.encode({ ...base, flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE | rc, answers: Array.isArray(z) ? z : [] });
    const limit = Math.max(512, ednsSize ?? 512);
    if (transport === 'udp' && full.length > limit && !this.opts.sloppy) {
      return dnsPacket.encode({ ...base, flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE | dnsPacket.TRUNCATED_RESPONSE, answers: [] });
    }
    return full;
  }

  close(): void {
    if (!live.delete(this)) return;
    this.udp.close();
    this.tcp?.close();
  }
}

const live = new Set<TestDnsServer>();
const forwarders = new Set<DnsForwarder>();
const tmpDirs: string[] = [];
afterEach(() => {
  for (const f of forwarders) f.close();
  forwarders.clear();
  for (const s of live) s.close();
});
afterAll(() => {
  for (const d of tmpDirs) rmSync(d, { recursive: true, force: true });
});

/** A zone with a few record types and a TXT answer of ~1500 bytes. */
const BIG_TXT = Array.from({ length: 30 }, (_, i) => `chunk-${i}-${'x'.repeat(40)}`);
const zone: Zone = (q) => {
  const { name, type } = q;
  if (name === 'nx.test') return { rcode: 3 };
  if (name === 'www.example.test' && type === 'A') return [{ type: 'A', name, ttl: 300, data: '192.0.2.10' }];
  if (name === 'www.example.test' && type === 'AAAA') return [{ type: 'AAAA', name, ttl: 300, data: '2001:db8::10' }];
  if (name === 'example.test' && type === 'MX') return [{ type: 'MX', name, ttl: 300, data: { preference: 10, exchange: 'mail.example.test' } }];
  if (name === 'example.test' && type === 'TXT') return [{ type: 'TXT', name, ttl: 300, data: ['v=spf1 -all'] }];
  // (a copy: dns-packet's encoder turns the strings of the array it is given into Buffers in place)
  if (name === 'big.example.test' && type === 'TXT') return [{ type: 'TXT', name, ttl: 300, data: [...BIG_TXT] }];
  if (name === 'many.example.test' && type === 'A') {
    return Array.from({ length: 30 }, (_, i): Answer => ({ type: 'A', name, ttl: 60, data: `198.51.100.${i}` }));
  }
  const m = /^n(\d+)\.bulk\.test$/.exec(name);
  if (m && type === 'A') return [{ type: 'A', name, ttl: 60, data: `10.77.${Number(m[1]) >> 8}.${Number(m[1]) & 255}` }];
  return [];
};

// ---------------------------------------------------------------- helpers

interface Logged {
  info: string[];
  warn: string[];
  debug: string[];
}

function forwarder(opts: Partial<DnsForwarderOptions>): { fwd: DnsForwarder; logged: Logged } {
  const logged: Logged = { info: [], warn: [], debug: [] };
  const fwd = new DnsForwarder({
    mode: 'forward',
    servers: [],
    // Never the machine's /etc/resolv.conf: a path that does not exist unless a test makes it.
    resolvConfPath: path.join(tmpdir(), `vmnat-no-resolv-${process.pid}.conf`),
    hosts: new DnsHostsTable(),
    timeoutMs: 1000,
    log: { info: (m) => logged.info.push(m), warn: (m) => logged.warn.push(m), debug: (m) => logged.debug.push(m) },
    ...opts,
  });
  forwarders.add(fwd);
  return { fwd, logged };
}

function q(name: string, type: RecordType = 'A', opts: { id?: number; edns?: number } = {}): Uint8Array {
  const p: Packet = { type: 'query', id: opts.id ?? 0x4d2, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type, name }] };
  if (opts.edns !== undefined) p.additionals = [{ type: 'OPT', name: '.', udpPayloadSize: opts.edns, extendedRcode: 0, ednsVersion: 0, flags: 0, flag_do: false, options: [] }];
  return new Uint8Array(dnsPacket.encode(p));
}

function ask(fwd: DnsForwarder, msg: Uint8Array, transport: 'udp' | 'tcp' = 'udp', timeoutMs = 8000): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('no reply')), timeoutMs);
    let calls = 0;
    fwd.query(msg, transport, (resp) => {
      calls++;
      if (calls > 1) reject(new Error('reply called twice'));
      clearTimeout(t);
      resolve(resp);
    });
  });
}

/** Resolves true if no reply came within `ms`. */
function noReply(fwd: DnsForwarder, msg: Uint8Array, ms = 150): Promise<boolean> {
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(true), ms);
    fwd.query(msg, 'udp', () => {
      clearTimeout(t);
      resolve(false);
    });
  });
}

const dec = (b: Uint8Array): DecodedPacket => dnsPacket.decode(Buffer.from(b.buffer, b.byteOffset, b.length));
/** dns-packet decodes the rcode but its types do not declare it. */
const rcode = (p: DecodedPacket): string => (p as DecodedPacket & { rcode: string }).rcode;
const data = (p: DecodedPacket): unknown[] => (p.answers ?? []).map((a) => ('data' in a ? a.data : undefined));

/** A UDP port on `host` with nothing behind it (the kernel answers ICMP port unreachable). */
async function deadPort(host: string): Promise<number> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((res) => s.bind(0, host, () => res()));
  const port = s.address().port;
  await new Promise<void>((res) => s.close(() => res()));
  return port;
}

/** A UDP socket that reads and never answers. */
async function blackhole(host: string): Promise<{ port: number; received: () => number; close: () => void }> {
  const s = dgram.createSocket('udp4');
  let n = 0;
  s.on('message', () => n++);
  await new Promise<void>((res) => s.bind(0, host, () => res()));
  return { port: s.address().port, received: () => n, close: () => s.close() };
}

// ---------------------------------------------------------------- tests

describe('forwarding over UDP', () => {
  it('answers A, AAAA, TXT and MX from the upstream, keeping the guest id', async () => {
    const srv = await TestDnsServer.start({ host: ip(1), zone });
    const { fwd } = forwarder({ servers: [{ ip: ip(1), port: srv.port }] });
    const a = dec(await ask(fwd, q('www.example.test', 'A', { id: 0x1111 })));
    expect(a).toMatchObject({ id: 0x1111, type: 'response', rcode: 'NOERROR' });
    expect(data(a)).toEqual(['192.0.2.10']);
    const aaaa = dec(await ask(fwd, q('WWW.Example.TEST', 'AAAA', { id: 0x2222 })));
    expect(aaaa.id).toBe(0x2222);
    expect(aaaa.questions?.[0]?.name).toBe('WWW.Example.TEST');
    expect(data(aaaa)).toEqual(['2001:db8::10']);
    const txt = dec(await ask(fwd, q('example.test', 'TXT', { id: 3 })));
    expect(data(txt)).toEqual([[Buffer.from('v=spf1 -all')]]);
    const mx = dec(await ask(fwd, q('example.test', 'MX', { id: 4 })));
    expect(data(mx)).toEqual([{ preference: 10, exchange: 'mail.example.test' }]);
    const nx = dec(await ask(fwd, q('nx.test', 'A', { id: 5 })));
    expect(nx).toMatchObject({ id: 5, rcode: 'NXDOMAIN' });
    // Upstream saw our own random ids, not the guest's (all five equal by chance: 2^-80).
    expect(srv.seen.map((s) => s.id)).not.toEqual([0x1111, 0x2222, 3, 4, 5]);
    expect(fwd.stats).toMatchObject({ queries: 5, forwarded: 5, servfail: 0, inFlight: 0 });
  });

  it('works with an IPv6 upstream (::1)', async () => {
    const srv = await TestDnsServer.start({ host: '::1', zone });
    const { fwd } = forwarder({ servers: [{ ip: '::1', port: srv.port }] });
    expect(data(dec(await ask(fwd, q('www.example.test'))))).toEqual(['192.0.2.10']);
  });

  it('passes a truncated answer to a UDP guest and gives the full one over TCP', async () => {
    const srv = await TestDnsServer.start({ host: ip(2), zone });
    const { fwd } = forwarder({ servers: [{ ip: ip(2), port: srv.port }] });
    const udp = await ask(fwd, q('big.example.test', 'TXT'));
    expect(udp.length).toBeLessThanOrEqual(512);
    expect(dec(udp)).toMatchObject({ flag_tc: true, id: 0x4d2 });
    expect(fwd.stats.truncatedPassedThrough).toBe(1);
    const tcp = await ask(fwd, q('big.example.test', 'TXT'), 'tcp');
    expect(tcp.length).toBeGreaterThan(1200);
    const full = dec(tcp);
    expect(full.flag_tc).toBe(false);
    expect((data(full)[0] as Buffer[]).map(String)).toEqual(BIG_TXT);
    // The TCP guest query went upstream over TCP directly.
    expect(srv.seen.map((s) => s.transport)).toEqual(['udp', 'tcp']);
    expect(fwd.stats.upstreamTcp).toBe(1);
  });

  it('asks upstream for at most maxUdpSize when the guest advertises more', async () => {
    const srv = await TestDnsServer.start({ host: ip(3), zone });
    const { fwd } = forwarder({ servers: [{ ip: ip(3), port: srv.port }] });
    const r = await ask(fwd, q('big.example.test', 'TXT', { edns: 4096 }));
    expect(srv.seen[0]!.ednsSize).toBe(1232);
    expect(r.length).toBeLessThanOrEqual(1232);
    expect(dec(r).flag_tc).toBe(true);
    // ...while an answer between 512 bytes and the cap reaches an EDNS guest whole.
    const r2 = await ask(fwd, q('many.example.test', 'A', { edns: 1400 }));
    expect(r2.length).toBeGreaterThan(512);
    expect(srv.seen[1]!.ednsSize).toBe(1232);
    expect(dec(r2).answers).toHaveLength(30);
    expect(dec(r2).flag_tc).toBe(false);
  });

  it('truncates an oversized answer from a non-compliant upstream itself', async () => {
    const srv = await TestDnsServer.start({ host: ip(4), zone, sloppy: true });
    const { fwd } = forwarder({ servers: [{ ip: ip(4), port: srv.port }] });
    const r = await ask(fwd, q('many.example.test', 'A', { id: 77 }));
    expect(r.length).toBeLessThanOrEqual(512);
    const d = dec(r);
    expect(d).toMatchObject({ id: 77, flag_tc: true });
    // A prefix of the 30 records (33 bytes each, uncompressed): as many as fit.
    expect(d.answers!.length).toBe(Math.floor((512 - 12 - 23) / 33));
    expect(data(d)).toEqual(Array.from({ length: d.answers!.length }, (_, i) => `198.51.100.${i}`));
    expect(fwd.stats.truncatedToGuest).toBe(1);
  });
});

describe('failover', () => {
  it('moves on at once when the first upstream port is closed (ICMP refused)', async () => {
    const dead = await deadPort(ip(10));
    const srv = await TestDnsServer.start({ host: ip(11), zone });
    const { fwd, logged } = forwarder({
      servers: [
        { ip: ip(10), port: dead },
        { ip: ip(11), port: srv.port },
      ],
      timeoutMs: 10_000,
    });
    const t0 = performance.now();
    const a = dec(await ask(fwd, q('www.example.test')));
    // Far below the 10 s timeout (a wide margin: CI runs test files in parallel on 2 cores).
    expect(performance.now() - t0).toBeLessThan(5000);
    expect(data(a)).toEqual(['192.0.2.10']);
    expect(fwd.stats).toMatchObject({ upstreamErrors: 1, failovers: 1, upstreamTimeouts: 0 });
    expect(logged.warn.join('\n')).toContain(`${ip(10)}:${dead}`);
    // The dead one is now tried last: the next query goes straight to the live one.
    await ask(fwd, q('www.example.test'));
    expect(fwd.stats.failovers).toBe(1);
  });

  it('moves on after timeoutMs when the first upstream never answers, then prefers the live one', async () => {
    const hole = await blackhole(ip(12));
    const srv = await TestDnsServer.start({ host: ip(13), zone });
    const { fwd } = forwarder({
      servers: [
        { ip: ip(12), port: hole.port },
        { ip: ip(13), port: srv.port },
      ],
      timeoutMs: 300,
    });
    try {
      const t0 = performance.now();
      const a = dec(await ask(fwd, q('www.example.test', 'A', { id: 9 })));
      const took = performance.now() - t0;
      expect(took).toBeGreaterThanOrEqual(290);
      expect(took).toBeLessThan(5000);
      expect(a.id).toBe(9);
      expect(data(a)).toEqual(['192.0.2.10']);
      expect(fwd.stats).toMatchObject({ upstreamTimeouts: 1, failovers: 1 });
      await ask(fwd, q('www.example.test'));
      expect(hole.received()).toBe(1);
      expect(fwd.stats.upstreamTimeouts).toBe(1);
    } finally {
      hole.close();
    }
  });

  it('retries a single upstream once, then answers SERVFAIL', async () => {
    const hole = await blackhole(ip(14));
    const { fwd } = forwarder({ servers: [{ ip: ip(14), port: hole.port }], timeoutMs: 150 });
    try {
      const r = dec(await ask(fwd, q('www.example.test', 'A', { id: 31 })));
      expect(r).toMatchObject({ id: 31, rcode: 'SERVFAIL' });
      expect(r.questions?.[0]?.name).toBe('www.example.test');
      expect(hole.received()).toBe(2);
      expect(fwd.stats).toMatchObject({ upstreamTimeouts: 2, retransmits: 1, servfail: 1, inFlight: 0 });
    } finally {
      hole.close();
    }
  });

  it('accepts a late answer to an earlier attempt', async () => {
    const slow = await TestDnsServer.start({ host: ip(15), zone, delayMs: 350 });
    const hole = await blackhole(ip(16));
    const { fwd } = forwarder({
      servers: [
        { ip: ip(15), port: slow.port },
        { ip: ip(16), port: hole.port },
      ],
      timeoutMs: 200,
    });
    try {
      const a = dec(await ask(fwd, q('www.example.test')));
      expect(data(a)).toEqual(['192.0.2.10']);
      expect(fwd.stats).toMatchObject({ upstreamTimeouts: 1, lateAnswers: 1, servfail: 0 });
    } finally {
      hole.close();
    }
  });

  it('tries the next upstream on SERVFAIL, and returns the upstream SERVFAIL if nobody does better', async () => {
    const failing = await TestDnsServer.start({ host: ip(17), zone: () => ({ rcode: 2 }) });
    const good = await TestDnsServer.start({ host: ip(18), zone });
    const { fwd } = forwarder({
      servers: [
        { ip: ip(17), port: failing.port },
        { ip: ip(18), port: good.port },
      ],
    });
    expect(data(dec(await ask(fwd, q('www.example.test'))))).toEqual(['192.0.2.10']);
    expect(fwd.stats.upstreamErrorRcode).toBe(1);
    good.close();
    const { fwd: only } = forwarder({ servers: [{ ip: ip(17), port: failing.port }] });
    const r = dec(await ask(only, q('www.example.test', 'A', { id: 8 })));
    expect(r).toMatchObject({ id: 8, rcode: 'SERVFAIL' });
    expect(only.stats.servfail).toBe(0); // the upstream's own answer, not ours
    expect(failing.seen.length).toBe(2); // asked once per query, not again after a SERVFAIL
  });

  it('does not let a late SERVFAIL cut short the attempt under way', async () => {
    const slowFail = await TestDnsServer.start({ host: ip(21), zone: () => ({ rcode: 2 }), delayMs: 400 });
    const slowGood = await TestDnsServer.start({ host: ip(22), zone, delayMs: 250 });
    const { fwd } = forwarder({
      servers: [
        { ip: ip(21), port: slowFail.port },
        { ip: ip(22), port: slowGood.port },
      ],
      timeoutMs: 300,
    });
    // t=0 ask 21; t=300 timeout, ask 22; t=400 21's SERVFAIL (late); t=550 22's answer.
    expect(data(dec(await ask(fwd, q('www.example.test'))))).toEqual(['192.0.2.10']);
    expect(fwd.stats).toMatchObject({ upstreamTimeouts: 1, upstreamErrorRcode: 1, servfail: 0 });
  });

  it('ignores answers whose question is not ours', async () => {
    const liar = await TestDnsServer.start({ host: ip(19), zone, wrongQuestion: true });
    const { fwd } = forwarder({ servers: [{ ip: ip(19), port: liar.port }], timeoutMs: 150 });
    const r = dec(await ask(fwd, q('www.example.test')));
    expect(rcode(r)).toBe('SERVFAIL');
    expect(fwd.stats.upstreamMismatch).toBe(2);
  });

  it('sends a TCP guest query over UDP when the upstream refuses TCP', async () => {
    const udpOnly = await TestDnsServer.start({ host: ip(20), zone, tcp: false });
    const { fwd } = forwarder({ servers: [{ ip: ip(20), port: udpOnly.port }] });
    const r = dec(await ask(fwd, q('www.example.test', 'A', { id: 12 }), 'tcp'));
    expect(r).toMatchObject({ id: 12 });
    expect(data(r)).toEqual(['192.0.2.10']);
    expect(fwd.stats).toMatchObject({ upstreamTcp: 1, tcpFallbackToUdp: 1 });
    expect(udpOnly.seen.map((s) => s.transport)).toEqual(['udp']);
  });
});

describe('local answers', () => {
  it('answers from the hosts table with no upstream at all, and SERVFAIL otherwise (logged once)', async () => {
    const hosts = new DnsHostsTable();
    hosts.add('build.lan', '10.0.2.50');
    hosts.add('build.lan', '2001:db8::50');
    hosts.add('v4only.lan', '10.0.2.51');
    const { fwd, logged } = forwarder({ hosts });
    const a = dec(await ask(fwd, q('BUILD.lan.', 'A', { id: 1 })));
    expect(a).toMatchObject({ id: 1, rcode: 'NOERROR', flag_qr: true });
    expect(data(a)).toEqual(['10.0.2.50']);
    expect(data(dec(await ask(fwd, q('build.lan', 'AAAA'))))).toEqual(['2001:db8::50']);
    const nodata = dec(await ask(fwd, q('v4only.lan', 'AAAA')));
    expect(rcode(nodata)).toBe('NOERROR');
    expect(nodata.answers).toEqual([]);
    expect(data(dec(await ask(fwd, q('50.2.0.10.in-addr.arpa', 'PTR'))))).toEqual(['build.lan']);
    expect(fwd.stats.answeredLocally).toBe(4);
    for (let i = 0; i < 3; i++) {
      expect(dec(await ask(fwd, q('elsewhere.test', 'A', { id: 40 + i })))).toMatchObject({ id: 40 + i, rcode: 'SERVFAIL' });
    }
    expect(fwd.stats.noResolver).toBe(3);
    expect(logged.warn.filter((m) => m.includes('no usable resolver'))).toHaveLength(1);
    expect(logged.warn[0]).toContain('ENOENT');
  });

  it('keeps a hosts answer within the guest UDP size', async () => {
    const hosts = new DnsHostsTable();
    for (let i = 0; i < 60; i++) hosts.add('farm.lan', `10.9.0.${i}`);
    const { fwd } = forwarder({ hosts });
    const r = await ask(fwd, q('farm.lan'));
    expect(r.length).toBeLessThanOrEqual(512);
    expect(dec(r).flag_tc).toBe(true);
    expect(dec(await ask(fwd, q('farm.lan'), 'tcp')).answers).toHaveLength(60);
  });
});

describe('resolv.conf', () => {
  function tempDir(): string {
    const d = mkdtempSync(path.join(tmpdir(), 'vmnat-dns-'));
    tmpDirs.push(d);
    return d;
  }

  it('uses its nameservers and picks up a change (rewrite and replace-by-rename)', async () => {
    const one = await TestDnsServer.start({ host: ip(30), zone: (qq) => [{ type: 'A', name: qq.name, ttl: 1, data: '10.30.0.1' }] });
    const two = await TestDnsServer.start({ host: ip(31), port: one.port, zone: (qq) => [{ type: 'A', name: qq.name, ttl: 1, data: '10.31.0.1' }] });
    const three = await TestDnsServer.start({ host: ip(32), port: one.port, zone: (qq) => [{ type: 'A', name: qq.name, ttl: 1, data: '10.32.0.1' }] });
    const dir = tempDir();
    const conf = path.join(dir, 'resolv.conf');
    writeFileSync(conf, `# test\nnameserver ${ip(30)}\n`);
    const { fwd, logged } = forwarder({ resolvConfPath: conf, resolvConfPort: one.port, resolvConfCheckMs: 0 });
    expect(data(dec(await ask(fwd, q('a.test'))))).toEqual(['10.30.0.1']);
    writeFileSync(conf, `nameserver ${ip(31)}\noptions edns0\n`);
    expect(data(dec(await ask(fwd, q('a.test'))))).toEqual(['10.31.0.1']);
    writeFileSync(path.join(dir, 'new'), `nameserver ${ip(32)}\n`);
    renameSync(path.join(dir, 'new'), conf);
    expect(data(dec(await ask(fwd, q('a.test'))))).toEqual(['10.32.0.1']);
    expect(logged.info.filter((m) => m.includes('upstream resolvers'))).toHaveLength(3);
    expect(two.seen).toHaveLength(1);
    // Deleted: SERVFAIL with the reason logged; back: answers again.
    rmSync(conf);
    expect(rcode(dec(await ask(fwd, q('a.test'))))).toBe('SERVFAIL');
    expect(logged.warn.join('\n')).toMatch(/no usable resolver .*ENOENT/);
    writeFileSync(conf, `nameserver ${ip(30)}\n`);
    expect(data(dec(await ask(fwd, q('a.test'))))).toEqual(['10.30.0.1']);
  });

  it('checks the file at most once per resolvConfCheckMs', async () => {
    const one = await TestDnsServer.start({ host: ip(33), zone: (qq) => [{ type: 'A', name: qq.name, ttl: 1, data: '10.33.0.1' }] });
    const two = await TestDnsServer.start({ host: ip(34), port: one.port, zone: (qq) => [{ type: 'A', name: qq.name, ttl: 1, data: '10.34.0.1' }] });
    const conf = path.join(tempDir(), 'resolv.conf');
    writeFileSync(conf, `nameserver ${ip(33)}\n`);
    const { fwd } = forwarder({ resolvConfPath: conf, resolvConfPort: one.port, resolvConfCheckMs: 400 });
    expect(data(dec(await ask(fwd, q('b.test'))))).toEqual(['10.33.0.1']);
    writeFileSync(conf, `nameserver ${ip(34)}\n`);
    expect(data(dec(await ask(fwd, q('b.test'))))).toEqual(['10.33.0.1']);
    await new Promise((r) => setTimeout(r, 450));
    expect(data(dec(await ask(fwd, q('b.test'))))).toEqual(['10.34.0.1']);
    expect(two.seen).toHaveLength(1);
  });
});

describe('bad guest input', () => {
  it('drops what has no header or is a response; FORMERR/NOTIMP with the id kept otherwise', async () => {
    const srv = await TestDnsServer.start({ host: ip(40), zone });
    const { fwd } = forwarder({ servers: [{ ip: ip(40), port: srv.port }] });
    expect(await noReply(fwd, Uint8Array.of(1, 2, 3, 4, 5))).toBe(true);
    const resp = q('www.example.test');
    resp[2]! |= 0x80;
    expect(await noReply(fwd, resp)).toBe(true);
    expect(fwd.stats.malformedDropped).toBe(2);

    const noQuestion = q('www.example.test', 'A', { id: 0x5151 }).slice(0, 12);
    noQuestion[5] = 0;
    expect(dec(await ask(fwd, noQuestion))).toMatchObject({ id: 0x5151, rcode: 'FORMERR', flag_qr: true });
    const cut = q('www.example.test', 'A', { id: 0x5252 }).slice(0, 20);
    expect(dec(await ask(fwd, cut))).toMatchObject({ id: 0x5252, rcode: 'FORMERR' });
    const update = q('www.example.test', 'A', { id: 0x5353 });
    update[2] = (update[2]! & 0x87) | (5 << 3);
    expect(dec(await ask(fwd, update))).toMatchObject({ id: 0x5353, rcode: 'NOTIMP', opcode: 'UPDATE' });
    expect(fwd.stats).toMatchObject({ formerr: 2, notimp: 1, forwarded: 0 });
    expect(srv.seen).toHaveLength(0);
  });

  it('never throws on arbitrary bytes, and every reply carries the query id', async () => {
    const srv = await TestDnsServer.start({ host: ip(41), zone });
    const { fwd } = forwarder({ servers: [{ ip: ip(41), port: srv.port }], timeoutMs: 200 });
    const samples = fc.sample(
      fc.oneof(
        fc.uint8Array({ maxLength: 80 }),
        fc.tuple(fc.integer({ min: 0, max: 40 }), fc.uint8Array({ minLength: 1, maxLength: 6 })).map(([at, junk]) => {
          const m = q('www.example.test', 'A', { edns: 1232 });
          m.set(junk.subarray(0, Math.max(0, m.length - at)), Math.min(at, m.length));
          return m;
        }),
      ),
      { numRuns: 1500, seed: 42 },
    );
    const replies: Array<Promise<void>> = [];
    for (const m of samples) {
      replies.push(
        new Promise<void>((resolve) => {
          const t = setTimeout(resolve, 1500); // dropped: fine
          expect(() =>
            fwd.query(m, 'udp', (r) => {
              clearTimeout(t);
              expect(r.length).toBeGreaterThanOrEqual(12);
              expect((r[0]! << 8) | r[1]!).toBe((m[0]! << 8) | m[1]!);
              expect(r[2]! & 0x80).toBe(0x80);
              expect(r.length).toBeLessThanOrEqual(1232);
              resolve();
            }),
          ).not.toThrow();
        }),
      );
    }
    await Promise.all(replies);
    expect(fwd.stats.queries).toBe(1500);
    expect(fwd.stats.inFlight).toBe(0);
  });
});

describe('load', () => {
  it('answers 800 concurrent queries that all use the same guest id, each with its own answer (TCP capped)', async () => {
    const srv = await TestDnsServer.start({ host: ip(50), zone });
    // A generous timeout: on a loaded 2-core machine an answer can take seconds, and a retry would
    // make the first answer a stray (upstreamMismatch) — this test is about ids, not timeouts.
    const { fwd } = forwarder({ servers: [{ ip: ip(50), port: srv.port }], timeoutMs: 15_000 });
    const N = 800;
    const answers = await Promise.all(
      Array.from({ length: N }, (_, i) => ask(fwd, q(`n${i}.bulk.test`, 'A', { id: 7 }), i % 10 === 0 ? 'tcp' : 'udp')),
    );
    answers.forEach((r, i) => {
      const d = dec(r);
      expect(d.id).toBe(7);
      expect(d.questions?.[0]?.name).toBe(`n${i}.bulk.test`);
      expect(data(d)).toEqual([`10.77.${i >> 8}.${i & 255}`]);
    });
    expect(fwd.stats).toMatchObject({ forwarded: N, servfail: 0, inFlight: 0, upstreamMismatch: 0 });
    // 80 TCP guest queries, but at most 64 upstream TCP connections at once: the rest go over UDP.
    expect(fwd.stats.upstreamTcp).toBe(64);
    expect(srv.seen.filter((s) => s.transport === 'tcp')).toHaveLength(64);
  });

  it('moves to a new random source port every QUERIES_PER_SOCKET (100) queries (RFC 5452)', async () => {
    const srv = await TestDnsServer.start({ host: ip(53), zone });
    const { fwd } = forwarder({ servers: [{ ip: ip(53), port: srv.port }] });
    for (let batch = 0; batch < 5; batch++) {
      const rs = await Promise.all(Array.from({ length: 250 }, (_, i) => ask(fwd, q(`n${batch * 250 + i}.bulk.test`))));
      expect(rs.every((r) => dec(r).answers!.length === 1)).toBe(true);
    }
    const ports = srv.seen.map((s) => s.srcPort);
    expect(QUERIES_PER_SOCKET).toBe(100);
    expect(new Set(ports.slice(0, QUERIES_PER_SOCKET)).size).toBe(1);
    expect(ports[QUERIES_PER_SOCKET]).not.toBe(ports[0]);
    // 1,250 queries: at least 12 ports (a late-bound socket may hold on to none of its 100).
    expect(new Set(ports).size).toBeGreaterThanOrEqual(12);
  });

  it('a UDP socket older than its maximum age takes no new query: a quiet guest moves port too', async () => {
    const srv = await TestDnsServer.start({ host: ip(53), zone });
    const { fwd } = forwarder({ servers: [{ ip: ip(53), port: srv.port }], upstreamSocketRotation: { queries: 100, maxAgeMs: 150 } });
    for (let i = 0; i < 4; i++) {
      expect(dec(await ask(fwd, q(`n${i}.bulk.test`))).answers).toHaveLength(1);
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(new Set(srv.seen.map((s) => s.srcPort)).size).toBe(4);
  });

  it('bounds in-flight queries: beyond the limit, SERVFAIL at once', async () => {
    const hole = await blackhole(ip(51));
    const { fwd } = forwarder({ servers: [{ ip: ip(51), port: hole.port }], timeoutMs: 20_000, maxInFlight: 20 });
    try {
      for (let i = 0; i < 20; i++) fwd.query(q(`n${i}.bulk.test`), 'udp', () => {});
      const t0 = performance.now();
      const r = dec(await ask(fwd, q('extra.test', 'A', { id: 99 })));
      expect(performance.now() - t0).toBeLessThan(5000); // not the 20 s upstream timeout
      expect(r).toMatchObject({ id: 99, rcode: 'SERVFAIL' });
      expect(fwd.stats).toMatchObject({ overloaded: 1, inFlight: 20 });
    } finally {
      fwd.close();
      hole.close();
    }
  });

  it('close() drops pending queries without replying', async () => {
    const hole = await blackhole(ip(52));
    const { fwd } = forwarder({ servers: [{ ip: ip(52), port: hole.port }], timeoutMs: 100 });
    try {
      let replies = 0;
      fwd.query(q('www.example.test'), 'udp', () => replies++);
      fwd.query(q('www.example.test'), 'tcp', () => replies++);
      await new Promise((r) => setTimeout(r, 20));
      fwd.close();
      await new Promise((r) => setTimeout(r, 400));
      expect(replies).toBe(0);
      fwd.query(q('www.example.test'), 'udp', () => replies++);
      await new Promise((r) => setTimeout(r, 50));
      expect(replies).toBe(0);
    } finally {
      hole.close();
    }
  });
});

describe('--dns-mode host', () => {
  it('resolves localhost through getaddrinfo: the addresses of the asked family, NODATA for the other', async () => {
    const want = await dnsPromises.lookup('localhost', { all: true, family: 0 });
    const v4 = want.filter((a) => a.family === 4).map((a) => a.address);
    const v6 = want.filter((a) => a.family === 6).map((a) => a.address);
    const { fwd } = forwarder({ mode: 'host' });
    const a = dec(await ask(fwd, q('localhost', 'A', { id: 21 })));
    expect(a).toMatchObject({ id: 21, rcode: 'NOERROR' });
    expect(data(a)).toEqual(v4);
    const aaaa = dec(await ask(fwd, q('localhost', 'AAAA', { id: 22 })));
    expect(aaaa).toMatchObject({ id: 22, rcode: 'NOERROR' });
    expect(data(aaaa)).toEqual(v6);
    expect(fwd.stats.answeredByHost).toBe(2);
  });

  it('maps lookup results and errors to NOERROR, NODATA, NXDOMAIN and SERVFAIL', async () => {
    const table: Record<string, Array<{ address: string; family: number }> | string> = {
      'both.test': [
        { address: '192.0.2.1', family: 4 },
        { address: '2001:db8::1', family: 6 },
        { address: '192.0.2.2', family: 4 },
      ],
      'six.test': [{ address: 'fe80::1%eth0', family: 6 }],
      'gone.test': 'ENOTFOUND',
      'flaky.test': 'EAI_AGAIN',
    };
    const asked: string[] = [];
    const { fwd } = forwarder({
      mode: 'host',
      hostLookup: async (name) => {
        asked.push(name);
        const r = table[name];
        if (r === undefined || typeof r === 'string') throw Object.assign(new Error(String(r)), { code: r ?? 'ENOTFOUND' });
        return r;
      },
    });
    expect(data(dec(await ask(fwd, q('Both.Test', 'A'))))).toEqual(['192.0.2.1', '192.0.2.2']);
    expect(data(dec(await ask(fwd, q('both.test', 'AAAA'))))).toEqual(['2001:db8::1']);
    expect(data(dec(await ask(fwd, q('both.test', 'ANY' as RecordType))))).toEqual(['192.0.2.1', '192.0.2.2', '2001:db8::1']);
    const six = dec(await ask(fwd, q('six.test', 'A')));
    expect(six).toMatchObject({ rcode: 'NOERROR', answers: [] });
    expect(data(dec(await ask(fwd, q('six.test', 'AAAA'))))).toEqual(['fe80::1']);
    expect(rcode(dec(await ask(fwd, q('gone.test', 'A'))))).toBe('NXDOMAIN');
    expect(rcode(dec(await ask(fwd, q('flaky.test', 'A'))))).toBe('SERVFAIL');
    expect(rcode(dec(await ask(fwd, q('both.test', 'MX'))))).toBe('SERVFAIL');
    expect(asked).toEqual(['both.test', 'both.test', 'both.test', 'six.test', 'six.test', 'gone.test', 'flaky.test']);
    expect(fwd.stats).toMatchObject({ hostModeUnsupported: 1, answeredByHost: 6 });
  });

  it('answers the hosts table first, and runs at most two lookups at once', async () => {
    const hosts = new DnsHostsTable();
    hosts.add('pinned.test', '10.0.2.99');
    let running = 0;
    let peak = 0;
    const { fwd } = forwarder({
      mode: 'host',
      hosts,
      hostLookup: async () => {
        running++;
        peak = Math.max(peak, running);
        await new Promise((r) => setTimeout(r, 20));
        running--;
        return [{ address: '192.0.2.9', family: 4 }];
      },
    });
    expect(data(dec(await ask(fwd, q('pinned.test'))))).toEqual(['10.0.2.99']);
    const all = await Promise.all(Array.from({ length: 10 }, (_, i) => ask(fwd, q(`h${i}.test`))));
    expect(all.map((r) => data(dec(r)))).toEqual(Array.from({ length: 10 }, () => ['192.0.2.9']));
    expect(peak).toBe(2);
  });
});
