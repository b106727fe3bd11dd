/**
 * ICMP echo through the NAT, sans-I/O: guest pings in, a fake "kernel" behind the PingOpener seam
 * (it rewrites the identifier as a ping socket does), frames to the guest out and decoded.
 */
import { describe, expect, test } from 'vitest';
import fc from 'fast-check';
import { Stack } from '../../src/stack/stack.ts';
import { IcmpNat, type PingOpener } from '../../src/nat/icmp.ts';
import type { NativePingSocketOptions } from '../../src/link/native.ts';
import { IpProto, Ipv4View, writeIpv4 } from '../../src/stack/wire/ipv4.ts';
import { Icmpv4View, writeIcmpEcho } from '../../src/stack/wire/icmpv4.ts';
import { EtherType, EthernetView, writeEthernet } from '../../src/stack/wire/ethernet.ts';
import { internetChecksum } from '../../src/stack/wire/checksum.ts';
import { parseIpv4 } from '../../src/stack/wire/addr.ts';
import { ICMP_ECHO_REQUEST, IP_A, IP_B, MAC_A } from './wire-captures.ts';

const GW = parseIpv4('10.0.2.2')!;
const GUEST = parseIpv4('10.0.2.15')!;
const GUEST2 = parseIpv4('10.0.2.16')!;
const GUEST_MAC = 0x02_00_00_00_00_0f;
const GUEST2_MAC = 0x02_00_00_00_00_10;
const DST = parseIpv4('198.51.100.7')!;
const DST2 = parseIpv4('198.51.100.8')!;

interface FakeSocket {
  hostAddress: string;
  ident: number;
  events: NativePingSocketOptions;
  sent: { msg: Uint8Array; ttl: number }[];
  closed: boolean;
  sendResult: string | undefined;
}

function harness(opts: { maxFlows?: number; idleTimeoutMs?: number; refuse?: string } = {}) {
  const out: Uint8Array[] = [];
  const warnings: string[] = [];
  const sockets: FakeSocket[] = [];
  let clock = 0;
  let nextIdent = 0xbee0;
  const stack = new Stack({ network: parseIpv4('10.0.2.0')!, netmask: 0xffff_ff00, gateway: GW, dns: parseIpv4('10.0.2.3')!, mtu: 1500 }, (f) =>
    out.push(Uint8Array.from(f)),
  );
  const opener: PingOpener = (hostAddress, events) => {
    if (opts.refuse !== undefined) throw Object.assign(new Error(`${opts.refuse}: refused`), { code: opts.refuse });
    const s: FakeSocket = { hostAddress, ident: nextIdent++, events, sent: [], closed: false, sendResult: undefined };
    sockets.push(s);
    return {
      get ident() {
        return s.ident;
      },
      send(msg, ttl) {
        if (s.sendResult !== undefined) return s.sendResult;
        // What the kernel does: copy, put its own identifier in, fill the checksum.
        const m = Uint8Array.from(msg);
        m[4] = s.ident >>> 8;
        m[5] = s.ident & 0xff;
        m[2] = m[3] = 0;
        const ck = internetChecksum(m, 0, m.length);
        m[2] = ck >>> 8;
        m[3] = ck & 0xff;
        s.sent.push({ msg: m, ttl });
        return undefined;
      },
      close() {
        s.closed = true;
      },
    };
  };
  const nat = new IcmpNat(
    stack,
    { idleTimeoutMs: opts.idleTimeoutMs ?? 30_000, maxFlows: opts.maxFlows ?? 64, gateway: GW },
    opener,
    () => clock,
    () => {},
    { warn: (m) => warnings.push(m) },
  );
  // The constructor's probe opened (and closed) one socket: not a flow.
  sockets.length = 0;
  return {
    nat, stack, out, warnings, sockets,
    setClock: (t: number) => (clock = t),
  };
}

/** A guest echo request as an IPv4 view (what nat.ts hands over). */
function ping(src: number, dst: number, ident: number, seq: number, payload: Uint8Array, ttl = 64): Ipv4View {
  const buf = new Uint8Array(14 + 20 + 8 + payload.length);
  writeEthernet(buf, 0, 0x52_55_0a_00_02_02, GUEST_MAC, EtherType.IPv4);
  buf.set(payload, 42);
  writeIcmpEcho(buf, 34, 8, ident, seq, payload.length);
  writeIpv4(buf, 14, 20 + 8 + payload.length, 1, 0, ttl, IpProto.ICMP, src, dst);
  return Ipv4View.checked(buf, 14, buf.length - 14) as Ipv4View;
}

/** An echo reply as a ping socket delivers it: the kernel's identifier in it. */
function replyFor(sent: Uint8Array): Uint8Array {
  const m = Uint8Array.from(sent);
  m[0] = 0;
  m[2] = m[3] = 0;
  const ck = internetChecksum(m, 0, m.length);
  m[2] = ck >>> 8;
  m[3] = ck & 0xff;
  return m;
}

function decode(frame: Uint8Array) {
  const eth = EthernetView.checked(frame, 0, frame.length) as EthernetView;
  const ip = Ipv4View.checked(frame, 14, frame.length - 14);
  if (typeof ip === 'string') throw new Error(`bad IP: ${ip}`);
  const icmp = Icmpv4View.checked(ip.buf, ip.payloadOff, ip.payloadLen);
  if (typeof icmp === 'string') throw new Error(`bad ICMP: ${icmp}`);
  return { eth, ip, icmp, data: ip.buf.slice(icmp.payloadOff, icmp.payloadOff + icmp.payloadLen) };
}

const PAYLOAD = Uint8Array.from({ length: 56 }, (_, i) => (i * 7 + 1) & 0xff);

describe('identifier mapping', () => {
  test('requests leave with the guest sequence and data, TTL − 1; replies come back with the guest identifier', () => {
    const h = harness();
    for (let seq = 1; seq <= 3; seq++) h.nat.input(ping(GUEST, DST, 0x1234, seq, PAYLOAD, 64), GUEST_MAC, 0, '198.51.100.7');
    expect(h.sockets).toHaveLength(1);
    const s = h.sockets[0]!;
    expect(s.hostAddress).toBe('198.51.100.7');
    expect(s.sent.map((x) => [x.msg[0], (x.msg[6]! << 8) | x.msg[7]!, x.ttl])).toEqual([[8, 1, 63], [8, 2, 63], [8, 3, 63]]);
    expect(s.sent[0]!.msg.subarray(8)).toEqual(PAYLOAD);
    expect(h.out).toHaveLength(0); // nothing until the destination answers

    // Replies out of order, as the network may deliver them.
    s.events.onMessage(Buffer.from(replyFor(s.sent[2]!.msg)), DST, 57);
    s.events.onMessage(Buffer.from(replyFor(s.sent[0]!.msg)), DST, 57);
    expect(h.out).toHaveLength(2);
    const r = h.out.map(decode);
    expect(r.map((x) => [x.ip.src, x.ip.dst, x.ip.ttl, x.icmp.type, x.icmp.code, x.icmp.ident, x.icmp.seq])).toEqual([
      [DST, GUEST, 56, 0, 0, 0x1234, 3],
      [DST, GUEST, 56, 0, 0, 0x1234, 1],
    ]);
    expect(r[0]!.eth.dst).toBe(GUEST_MAC);
    expect(r[0]!.data).toEqual(PAYLOAD);
    expect(h.nat.stats.repliesToGuest).toBe(2);
    expect(h.nat.stats.requestsFromGuest).toBe(3);
  });

  test('a captured kernel ping comes back byte for byte as the kernel would expect it', () => {
    const h = harness();
    const req = Ipv4View.checked(ICMP_ECHO_REQUEST, 14, ICMP_ECHO_REQUEST.length - 14) as Ipv4View;
    h.nat.input(req, MAC_A, 0, '10.99.0.2');
    const s = h.sockets[0]!;
    s.events.onMessage(Buffer.from(replyFor(s.sent[0]!.msg)), IP_B, 64);
    const r = decode(h.out[0]!);
    expect([r.ip.src, r.ip.dst]).toEqual([IP_B, IP_A]);
    // Same identifier, sequence and data as the request: only the type (and checksum) differ.
    const reqIcmp = ICMP_ECHO_REQUEST.subarray(34);
    expect(r.icmp.ident).toBe((reqIcmp[4]! << 8) | reqIcmp[5]!);
    expect(r.icmp.seq).toBe((reqIcmp[6]! << 8) | reqIcmp[7]!);
    expect(r.data).toEqual(reqIcmp.subarray(8));
  });

  test('guests, identifiers and destinations each get their own socket; replies never cross', () => {
    const h = harness();
    h.nat.input(ping(GUEST, DST, 7, 1, PAYLOAD), GUEST_MAC, 0, '198.51.100.7');
    h.nat.input(ping(GUEST2, DST, 7, 1, PAYLOAD), GUEST2_MAC, 0, '198.51.100.7'); // same id, other guest
    h.nat.input(ping(GUEST, DST, 8, 1, PAYLOAD), GUEST_MAC, 0, '198.51.100.7'); // other id
    h.nat.input(ping(GUEST, DST2, 7, 1, PAYLOAD), GUEST_MAC, 0, '198.51.100.8'); // other destination
    h.nat.input(ping(GUEST, DST, 7, 2, PAYLOAD), GUEST_MAC, 0, '198.51.100.7'); // first flow again
    expect(h.sockets).toHaveLength(4);
    expect(h.sockets[0]!.sent).toHaveLength(2);
    expect(new Set(h.sockets.map((s) => s.ident)).size).toBe(4);
    // Each socket's reply reaches exactly its own guest, identifier and destination.
    for (const s of h.sockets) s.events.onMessage(Buffer.from(replyFor(s.sent[0]!.msg)), s.hostAddress === '198.51.100.7' ? DST : DST2, 64);
    expect(h.out.map(decode).map((x) => [x.eth.dst, x.ip.dst, x.ip.src, x.icmp.ident])).toEqual([
      [GUEST_MAC, GUEST, DST, 7],
      [GUEST2_MAC, GUEST2, DST, 7],
      [GUEST_MAC, GUEST, DST, 8],
      [GUEST_MAC, GUEST, DST2, 7],
    ]);
  });

  test('the gateway mapping: a reply from 127.0.0.1 reaches the guest from the address it pinged', () => {
    const h = harness();
    const pinged = parseIpv4('10.0.2.2')!;
    h.nat.input(ping(GUEST, pinged, 99, 5, PAYLOAD), GUEST_MAC, 0, '127.0.0.1');
    const s = h.sockets[0]!;
    expect(s.hostAddress).toBe('127.0.0.1');
    s.events.onMessage(Buffer.from(replyFor(s.sent[0]!.msg)), parseIpv4('127.0.0.1')!, 64);
    const r = decode(h.out[0]!);
    expect([r.ip.src, r.icmp.ident, r.icmp.seq]).toEqual([pinged, 99, 5]);
  });

  test('a reply with our identifier from an address the flow never pinged is dropped', () => {
    const h = harness();
    h.nat.input(ping(GUEST, DST, 7, 1, PAYLOAD), GUEST_MAC, 0, '198.51.100.7');
    const s = h.sockets[0]!;
    s.events.onMessage(Buffer.from(replyFor(s.sent[0]!.msg)), DST2, 64);
    expect(h.out).toHaveLength(0);
    expect(h.nat.stats.dropped.foreignSource).toBe(1);
  });

  test('duplicates the destination really sent are relayed; silence produces nothing', () => {
    const h = harness();
    h.nat.input(ping(GUEST, DST, 7, 1, PAYLOAD), GUEST_MAC, 0, '198.51.100.7');
    h.nat.input(ping(GUEST, DST, 7, 2, PAYLOAD), GUEST_MAC, 0, '198.51.100.7');
    const s = h.sockets[0]!;
    s.events.onMessage(Buffer.from(replyFor(s.sent[0]!.msg)), DST, 64);
    s.events.onMessage(Buffer.from(replyFor(s.sent[0]!.msg)), DST, 64);
    for (let t = 0; t <= 40_000; t += 1000) {
      h.setClock(t);
      h.nat.poll(t);
    }
    expect(h.out.map(decode).map((x) => x.icmp.seq)).toEqual([1, 1]);
  });
});

describe('guest input that is not forwarded', () => {
  test('non-echo types, bad codes, bad checksums and truncation are dropped and counted', () => {
    const h = harness();
    const reply = ping(GUEST, DST, 1, 1, PAYLOAD);
    reply.buf[34] = 0; // echo reply from the guest
    reply.buf[36] = reply.buf[37] = 0;
    const ck = internetChecksum(reply.buf, 34, 8 + PAYLOAD.length);
    reply.buf[36] = ck >>> 8;
    reply.buf[37] = ck & 0xff;
    h.nat.input(reply, GUEST_MAC, 0, '198.51.100.7');
    const code = ping(GUEST, DST, 1, 1, PAYLOAD);
    code.buf[35] = 1;
    code.buf[37] = (code.buf[37]! - 1) & 0xff; // keep the checksum valid (adds 0x0100 to the sum)
    h.nat.input(code, GUEST_MAC, 0, '198.51.100.7');
    const bad = ping(GUEST, DST, 1, 1, PAYLOAD);
    bad.buf[50] = bad.buf[50]! ^ 0xff;
    h.nat.input(bad, GUEST_MAC, 0, '198.51.100.7');
    const short = new Uint8Array(14 + 24);
    short.set([8, 0, 0xf7, 0xff], 34); // 4 bytes of ICMP: less than a header
    writeIpv4(short, 14, 24, 1, 0, 64, IpProto.ICMP, GUEST, DST);
    h.nat.input(Ipv4View.checked(short, 14, 24) as Ipv4View, GUEST_MAC, 0, '198.51.100.7');
    expect(h.sockets).toHaveLength(0);
    expect(h.nat.stats.dropped).toMatchObject({ notEchoRequest: 1, badCode: 1, badChecksum: 1, truncated: 1 });
    expect(h.out).toHaveLength(0);
  });

  test('arbitrary ICMP bytes never throw and never reach the guest', () => {
    const h = harness();
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 100 }), fc.integer({ min: 2, max: 255 }), (bytes, ttl) => {
        const buf = new Uint8Array(14 + 20 + bytes.length);
        buf.set(bytes, 34);
        writeIpv4(buf, 14, 20 + bytes.length, 1, 0, ttl, IpProto.ICMP, GUEST, DST);
        const ip = Ipv4View.checked(buf, 14, buf.length - 14) as Ipv4View;
        h.nat.input(ip, GUEST_MAC, 0, '198.51.100.7');
      }),
    );
    expect(h.out).toHaveLength(0);
  });
});

describe('ICMP errors about our requests', () => {
  function withFlow() {
    const h = harness();
    const req = ping(GUEST, DST, 0x4321, 9, PAYLOAD, 5);
    const guestIcmp = req.buf.slice(34);
    h.nat.input(req, GUEST_MAC, 0, '198.51.100.7');
    return { h, s: h.sockets[0]!, guestIcmp };
  }

  test('time exceeded from a router is relayed from that router, quoting the guest request as it sent it', () => {
    const { h, s, guestIcmp } = withFlow();
    const router = parseIpv4('192.0.2.1')!;
    s.events.onError(11, 0, 0, router, Buffer.from(s.sent[0]!.msg.subarray(0, 8)));
    expect(h.out).toHaveLength(1);
    const r = decode(h.out[0]!);
    expect([r.ip.src, r.ip.dst, r.icmp.type, r.icmp.code]).toEqual([router, GUEST, 11, 0]);
    // The quote's header says guest → destination; its ICMP part is the guest's own first 8 bytes
    // (its identifier and checksum, not the kernel's).
    const q = r.data;
    expect([(q[12]! << 24 | q[13]! << 16 | q[14]! << 8 | q[15]!) >>> 0, (q[16]! << 24 | q[17]! << 16 | q[18]! << 8 | q[19]!) >>> 0, q[9]]).toEqual([GUEST, DST, 1]);
    expect(q.subarray(20, 28)).toEqual(guestIcmp.subarray(0, 8));
    expect(h.nat.stats.errorsToGuest).toBe(1);
  });

  test('destination unreachable raised by the host itself (loopback) comes from the gateway; from the destination, from it', () => {
    const { h, s } = withFlow();
    s.events.onError(3, 1, 0, parseIpv4('127.0.0.1')!, Buffer.from(s.sent[0]!.msg));
    s.events.onError(3, 3, 0, DST, Buffer.from(s.sent[0]!.msg));
    const r = h.out.map(decode);
    expect(r.map((x) => [x.ip.src, x.icmp.type, x.icmp.code])).toEqual([[GW, 3, 1], [DST, 3, 3]]);
    // A full quote: the guest's whole request, checksum included, as it sent it.
    expect(Icmpv4View.checked(r[0]!.data, 20, r[0]!.data.length - 20)).toBeInstanceOf(Icmpv4View);
  });

  test('fragmentation needed keeps its MTU; redirects and errors without an offender are dropped', () => {
    const { h, s } = withFlow();
    s.events.onError(3, 4, 1400, parseIpv4('192.0.2.1')!, Buffer.from(s.sent[0]!.msg));
    s.events.onError(5, 1, 0, parseIpv4('192.0.2.1')!, Buffer.from(s.sent[0]!.msg));
    s.events.onError(11, 0, 0, -1, Buffer.from(s.sent[0]!.msg));
    s.events.onError(11, 0, 0, parseIpv4('192.0.2.1')!, Buffer.from(s.sent[0]!.msg.subarray(0, 4)));
    expect(h.out).toHaveLength(1);
    expect(decode(h.out[0]!).icmp.nextHopMtu).toBe(1400);
    expect(h.nat.stats.dropped).toMatchObject({ errorType: 1, errorNoOffender: 1, errorTruncated: 1 });
  });

  test('a request the host cannot route gets destination unreachable from the gateway', () => {
    const h = harness();
    h.nat.input(ping(GUEST, DST, 1, 1, PAYLOAD), GUEST_MAC, 0, '198.51.100.7');
    h.sockets[0]!.sendResult = 'ENETUNREACH';
    h.nat.input(ping(GUEST, DST, 1, 2, PAYLOAD), GUEST_MAC, 0, '198.51.100.7');
    h.sockets[0]!.sendResult = 'EAGAIN';
    h.nat.input(ping(GUEST, DST, 1, 3, PAYLOAD), GUEST_MAC, 0, '198.51.100.7');
    expect(h.out).toHaveLength(1);
    const r = decode(h.out[0]!);
    expect([r.ip.src, r.icmp.type, r.icmp.code]).toEqual([GW, 3, 0]);
    expect(r.data[20 + 7]).toBe(2); // quotes the request that failed (seq 2)
    expect(h.nat.stats.sendErrors).toBe(1);
  });
});

describe('limits', () => {
  test('flows expire after the idle timeout and their sockets close; late replies are ignored', () => {
    const h = harness({ idleTimeoutMs: 30_000 });
    h.nat.input(ping(GUEST, DST, 1, 1, PAYLOAD), GUEST_MAC, 0, '198.51.100.7');
    expect(h.nat.nextDeadline()).toBe(1000);
    h.setClock(29_000);
    h.nat.poll(29_000);
    expect(h.nat.size).toBe(1);
    h.setClock(30_000);
    h.nat.poll(30_000);
    expect(h.nat.size).toBe(0);
    expect(h.sockets[0]!.closed).toBe(true);
    expect(h.nat.nextDeadline()).toBeUndefined();
    h.sockets[0]!.events.onMessage(Buffer.from(replyFor(h.sockets[0]!.sent[0]!.msg)), DST, 64);
    expect(h.out).toHaveLength(0);
    expect(h.nat.stats.flowsExpired).toBe(1);
  });

  test('the flow limit closes the least recently used flow', () => {
    const h = harness({ maxFlows: 2 });
    h.nat.input(ping(GUEST, DST, 1, 1, PAYLOAD), GUEST_MAC, 0, '198.51.100.7');
    h.nat.input(ping(GUEST, DST, 2, 1, PAYLOAD), GUEST_MAC, 0, '198.51.100.7');
    h.nat.input(ping(GUEST, DST, 1, 2, PAYLOAD), GUEST_MAC, 0, '198.51.100.7'); // id 1 is now the most recent
    h.nat.input(ping(GUEST, DST, 3, 1, PAYLOAD), GUEST_MAC, 0, '198.51.100.7');
    expect(h.sockets.map((s) => s.closed)).toEqual([false, true, false]);
    expect(h.nat.stats.flowsEvicted).toBe(1);
    expect(h.nat.list().map((f) => f.guestIdent).sort()).toEqual([1, 3]);
  });
});

describe('ping sockets not permitted', () => {
  test('one clear line at start, then pings are dropped and counted, nothing made up', () => {
    const h = harness({ refuse: 'EACCES' });
    expect(h.warnings).toHaveLength(1);
    expect(h.warnings[0]).toMatch(/ping sockets are not permitted \(EACCES\).*ping_group_range/);
    for (let seq = 1; seq <= 5; seq++) h.nat.input(ping(GUEST, DST, 1, seq, PAYLOAD), GUEST_MAC, 0, '198.51.100.7');
    expect(h.nat.stats.dropped.notPermitted).toBe(5);
    expect(h.out).toHaveLength(0);
    expect(h.warnings).toHaveLength(1);
    expect(h.nat.notPermitted).toBe('EACCES');
  });

  test('other open failures (EMFILE) are counted per ping and do not disable ICMP', () => {
    const h = harness({ refuse: 'EMFILE' });
    expect(h.warnings).toHaveLength(0);
    h.nat.input(ping(GUEST, DST, 1, 1, PAYLOAD), GUEST_MAC, 0, '198.51.100.7');
    expect(h.nat.stats.openErrors).toBe(1);
    expect(h.nat.notPermitted).toBeUndefined();
  });
});
