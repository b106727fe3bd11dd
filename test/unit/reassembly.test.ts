import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { DATAGRAM_OVERHEAD, Ipv4Reassembler, createReassemblyStats } from '../../src/stack/reassembly.ts';
import { IPV4_MF, IpProto, Ipv4View, fillIpv4Checksum, writeIpv4 } from '../../src/stack/wire/ipv4.ts';
import { UdpView } from '../../src/stack/wire/udp.ts';
import { FRAG_UDP_PAYLOAD_LEN, IP_A, IP_B, fragPayloadByte, udpFragmentFrames } from './wire-captures.ts';

const T0 = 1_000_000;

function view(buf: Uint8Array, off = 0): Ipv4View {
  const v = Ipv4View.checked(buf, off, buf.length - off);
  if (typeof v === 'string') throw new Error(v);
  return v;
}

/** The captured fragments as IPv4 views (the Ethernet header skipped). */
function captured(): Ipv4View[] {
  return udpFragmentFrames().map((f) => view(f, 14));
}

interface FragSpec {
  ident?: number;
  offset: number;
  payload: Uint8Array;
  more: boolean;
  src?: number;
  proto?: number;
}

/** A synthetic fragment, in a fresh buffer. */
function frag(s: FragSpec): Ipv4View {
  const buf = new Uint8Array(20 + s.payload.length);
  buf.set(s.payload, 20);
  writeIpv4(buf, 0, buf.length, s.ident ?? 7, (s.more ? IPV4_MF : 0) | (s.offset / 8), 64, s.proto ?? IpProto.UDP, s.src ?? IP_A, IP_B);
  return view(buf);
}

function bytes(n: number, seed = 1): Uint8Array {
  return new Uint8Array(n).map((_, i) => (i * 31 + seed) & 0xff);
}

/** Splits `payload` into fragments of `size` bytes (a multiple of 8). */
function split(payload: Uint8Array, size: number, ident = 7): Ipv4View[] {
  const out: Ipv4View[] = [];
  for (let off = 0; off < payload.length; off += size) {
    const end = Math.min(payload.length, off + size);
    out.push(frag({ ident, offset: off, payload: payload.subarray(off, end), more: end < payload.length }));
  }
  return out;
}

/** Feeds fragments; returns the datagram and the index at which it completed. */
function feed(r: Ipv4Reassembler, frags: Ipv4View[], now = T0): { out: Uint8Array | undefined; at: number } {
  let out: Uint8Array | undefined;
  let at = -1;
  frags.forEach((f, i) => {
    const d = r.input(f, now);
    if (d !== undefined) {
      expect(out).toBeUndefined();
      out = d;
      at = i;
    }
  });
  return { out, at };
}

function expectCapturedDatagram(d: Uint8Array | undefined): void {
  if (d === undefined) throw new Error('not reassembled');
  const ip = view(d);
  expect([ip.totalLen, ip.isFragment, ip.moreFragments, ip.fragmentOffset, ip.ident]).toEqual([4028, false, false, 0, 0x0cec]);
  expect([ip.src, ip.dst, ip.protocol, ip.ttl]).toEqual([IP_A, IP_B, IpProto.UDP, 64]);
  // The kernel's UDP checksum over the whole datagram verifies: every byte is in its place.
  const udp = UdpView.checked(d, ip.payloadOff, ip.payloadLen, ip.src, ip.dst);
  if (typeof udp === 'string') throw new Error(udp);
  expect([udp.srcPort, udp.dstPort, udp.payloadLen]).toEqual([0xc6ac, 7000, FRAG_UDP_PAYLOAD_LEN]);
  for (let i = 0; i < FRAG_UDP_PAYLOAD_LEN; i++) if (d[udp.payloadOff + i] !== fragPayloadByte(i)) throw new Error(`byte ${i}`);
}

describe('Ipv4Reassembler', () => {
  it('reassembles the captured fragments in every arrival order, exactly on the last one', () => {
    const orders = [
      [0, 1, 2], [2, 1, 0], [1, 0, 2], [1, 2, 0], [0, 2, 1], [2, 0, 1],
    ];
    for (const order of orders) {
      const r = new Ipv4Reassembler();
      const f = captured();
      const { out, at } = feed(r, order.map((i) => f[i]!));
      expect(at).toBe(2);
      expectCapturedDatagram(out);
      expect(r.stats.reassembled).toBe(1);
      expect([r.size, r.bytesHeld, r.nextDeadline()]).toEqual([0, 0, undefined]);
    }
  });

  it('copies fragment bytes: the frame buffers may be reused at once', () => {
    const r = new Ipv4Reassembler();
    const frames = udpFragmentFrames();
    const views = frames.map((f) => view(f, 14));
    r.input(views[0]!, T0);
    r.input(views[1]!, T0);
    frames[0]!.fill(0); // the link reuses its buffer
    frames[1]!.fill(0);
    expectCapturedDatagram(r.input(views[2]!, T0));
  });

  it('tolerates exact duplicates', () => {
    const r = new Ipv4Reassembler();
    const [a, b, c] = captured() as [Ipv4View, Ipv4View, Ipv4View];
    const { out, at } = feed(r, [b, a, b, a, c]);
    expect(at).toBe(4);
    expectCapturedDatagram(out);
    expect(r.stats.duplicate).toBe(2);
    // A duplicate after completion starts a new (incomplete) datagram, as in any stack.
    expect(r.input(c, T0)).toBeUndefined();
    expect(r.size).toBe(1);
  });

  it('reassembles any shuffle of a random split, with random duplicates (property)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 3000 }),
        fc.integer({ min: 1, max: 200 }),
        fc.array(fc.nat(), { maxLength: 400 }),
        fc.array(fc.nat(), { maxLength: 5 }),
        (extra, unit, shuffleKeys, dups) => {
          const len = unit * 8 + extra; // at least two fragments
          const payload = bytes(len, len);
          const frags = split(payload, unit * 8);
          const order = frags.map((f, i) => ({ f, k: shuffleKeys[i] ?? i }));
          order.sort((x, y) => x.k - y.k);
          const seq = order.map((o) => o.f);
          for (const d of dups) seq.splice(d % seq.length, 0, seq[(d >>> 3) % seq.length]!);
          const r = new Ipv4Reassembler();
          const seen = new Set<Ipv4View>();
          let completions = 0;
          for (const f of seq) {
            seen.add(f);
            const d = r.input(f, T0);
            if (completions === 0) {
              // The first completion comes exactly when every distinct fragment has arrived.
              expect(d !== undefined).toBe(seen.size === frags.length);
            }
            if (d === undefined) continue;
            // Later ones: duplicates after completion open a new record that may complete again.
            completions++;
            expect(view(d).totalLen).toBe(20 + len);
            expect([...d.subarray(20)]).toEqual([...payload]);
          }
          expect(completions).toBeGreaterThanOrEqual(1);
          expect(r.stats.overlap).toBe(0);
        },
      ),
      { numRuns: 200 },
    );
  });

  it('drops the whole datagram on an overlap, and its later fragments too, until the timeout', () => {
    const r = new Ipv4Reassembler({ timeoutMs: 1000 });
    const p = bytes(32);
    expect(r.input(frag({ offset: 0, payload: p.subarray(0, 16), more: true }), T0)).toBeUndefined();
    expect(r.input(frag({ offset: 8, payload: p.subarray(8, 24), more: true }), T0)).toBeUndefined();
    expect(r.stats.overlap).toBe(1);
    expect(r.bytesHeld).toBe(DATAGRAM_OVERHEAD); // the data is released at once; the tombstone stays
    // The remaining fragments would complete a valid datagram: they are discarded.
    expect(r.input(frag({ offset: 16, payload: p.subarray(16, 32), more: false }), T0 + 1)).toBeUndefined();
    expect(r.input(frag({ offset: 0, payload: p.subarray(0, 16), more: true }), T0 + 2)).toBeUndefined();
    expect(r.stats.discarded).toBe(2);
    expect(r.stats.reassembled).toBe(0);
    // After the tombstone expires, the same key may be used again.
    r.poll(T0 + 1000);
    expect(r.size).toBe(0);
    expect(r.stats.timeout).toBe(0); // a tombstone expiring is not a reassembly timeout
    const { out } = feed(r, split(p, 16), T0 + 1001);
    expect(out?.length).toBe(52);
  });

  it('treats the same range with different bytes as an overlap, and nested or covering ranges too', () => {
    const p = bytes(48);
    const q = bytes(48, 99);
    const cases: [FragSpec, FragSpec][] = [
      [{ offset: 8, payload: p.subarray(8, 16), more: true }, { offset: 8, payload: q.subarray(8, 16), more: true }],
      [{ offset: 8, payload: p.subarray(8, 32), more: true }, { offset: 16, payload: p.subarray(16, 24), more: true }],
      [{ offset: 16, payload: p.subarray(16, 24), more: true }, { offset: 8, payload: p.subarray(8, 32), more: true }],
      [{ offset: 16, payload: p.subarray(16, 48), more: false }, { offset: 0, payload: p.subarray(0, 24), more: true }],
    ];
    for (const [a, b] of cases) {
      const r = new Ipv4Reassembler();
      r.input(frag(a), T0);
      r.input(frag(b), T0);
      expect(r.stats.overlap).toBe(1);
    }
  });

  it('expires an incomplete datagram after timeoutMs, offering the quote for ICMP Time Exceeded', () => {
    const r = new Ipv4Reassembler({ timeoutMs: 30_000 });
    const [a, , c] = captured() as [Ipv4View, Ipv4View, Ipv4View];
    r.input(a, T0);
    r.input(c, T0 + 5000);
    expect(r.nextDeadline()).toBe(T0 + 30_000); // from the first fragment, not restarted
    const quotes: string[] = [];
    const onExpired = (h: Uint8Array, first8: Uint8Array) => quotes.push(`${h.length}/${[...first8].join(',')}`);
    r.poll(T0 + 29_999, onExpired);
    expect(r.size).toBe(1);
    r.poll(T0 + 30_000, onExpired);
    expect([r.size, r.bytesHeld, r.stats.timeout, r.nextDeadline()]).toEqual([0, 0, 1, undefined]);
    // The IP header and the UDP header (first 8 payload bytes) of the first fragment.
    expect(quotes).toEqual(['20/198,172,27,88,15,168,71,119']);

    // Without fragment zero there is nothing to quote (RFC 792), but it still times out.
    r.input(c, T0 + 40_000);
    r.poll(T0 + 70_000, onExpired);
    expect([r.stats.timeout, quotes.length]).toEqual([2, 1]);
  });

  it('starts afresh when a fragment arrives after the deadline but before poll', () => {
    const r = new Ipv4Reassembler({ timeoutMs: 1000 });
    const [a, b, c] = captured() as [Ipv4View, Ipv4View, Ipv4View];
    r.input(a, T0);
    r.input(b, T0 + 2000); // a's datagram is stale: b opens a new one
    expect(r.stats.timeout).toBe(1);
    expect(r.input(c, T0 + 2000)).toBeUndefined(); // fragment 0 is gone with the old record
    expectCapturedDatagram(r.input(a, T0 + 2500));
  });

  it('keeps datagrams apart by (src, dst, protocol, ident)', () => {
    const r = new Ipv4Reassembler();
    const p = bytes(24, 5);
    const q = bytes(24, 6);
    const mk = (payload: Uint8Array, ident: number, src: number, proto: number) => [
      frag({ ident, src, proto, offset: 0, payload: payload.subarray(0, 16), more: true }),
      frag({ ident, src, proto, offset: 16, payload: payload.subarray(16), more: false }),
    ];
    const one = mk(p, 1, IP_A, IpProto.UDP);
    const others = [mk(q, 2, IP_A, IpProto.UDP), mk(q, 1, 0x0a000001, IpProto.UDP), mk(q, 1, IP_A, IpProto.TCP)];
    r.input(one[0]!, T0);
    for (const o of others) r.input(o[0]!, T0);
    expect(r.size).toBe(4);
    const d = r.input(one[1]!, T0);
    expect([...d!.subarray(20)]).toEqual([...p]);
    for (const o of others) expect([...r.input(o[1]!, T0)!.subarray(20)]).toEqual([...q]);
    expect(r.stats.overlap).toBe(0);
  });

  it('keeps the first fragment header options and fixes length, flags and checksum', () => {
    const r = new Ipv4Reassembler();
    const first = new Uint8Array(24 + 16);
    writeIpv4(first, 0, first.length, 9, IPV4_MF | 0x4000, 61, IpProto.UDP, IP_A, IP_B, 0x10);
    first.copyWithin(24, 20, 20); // keep layout explicit: header is 24 bytes
    first[0] = 0x46; // IHL 6: one word of options
    first.set([1, 1, 1, 0], 20); // NOP NOP NOP EOL
    first.set(bytes(16, 3), 24);
    fillIpv4Checksum(first, 0);
    r.input(view(first), T0);
    const d = r.input(frag({ ident: 9, offset: 16, payload: bytes(8, 4), more: false }), T0);
    const ip = view(d!);
    expect([ip.headerLen, ip.totalLen, ip.tos, ip.ttl, ip.dontFragment, ip.isFragment]).toEqual([24, 48, 0x10, 61, true, false]);
    expect([...d!.subarray(20, 24)]).toEqual([1, 1, 1, 0]);
  });

  it('reassembles a 65,535-byte datagram and refuses any fragment reaching past it', () => {
    const r = new Ipv4Reassembler();
    const payload = bytes(65535 - 20, 11);
    const { out, at } = feed(r, split(payload, 1480));
    expect(at).toBe(44);
    expect(out!.length).toBe(65535);
    expect(view(out!).totalLen).toBe(65535);
    expect(out!.subarray(20)).toEqual(payload);

    // One byte more, at the end of an otherwise valid datagram: the whole is 65,536 bytes.
    const over = split(bytes(65535 - 20 + 1, 12), 1480);
    const r2 = new Ipv4Reassembler();
    expect(feed(r2, over).out).toBeUndefined();
    expect(r2.stats.tooBig).toBe(1);
    // The ping of death: the highest offset with a large payload.
    expect(r2.input(frag({ ident: 99, offset: 65528, payload: bytes(1000), more: false }), T0)).toBeUndefined();
    expect(r2.stats.tooBig).toBe(2);
  });

  it('drops malformed fragments and datagrams whose fragments disagree on the length', () => {
    const r = new Ipv4Reassembler();
    r.input(frag({ ident: 1, offset: 0, payload: bytes(12), more: true }), T0); // not a multiple of 8
    r.input(frag({ ident: 1, offset: 8, payload: bytes(0), more: true }), T0); // empty, more to come
    expect(r.stats.badFragment).toBe(2);
    expect(r.size).toBe(0);

    r.input(frag({ ident: 2, offset: 16, payload: bytes(8), more: false }), T0);
    r.input(frag({ ident: 2, offset: 32, payload: bytes(8), more: false }), T0); // a second, different end
    r.input(frag({ ident: 3, offset: 16, payload: bytes(8), more: false }), T0);
    r.input(frag({ ident: 3, offset: 24, payload: bytes(8), more: true }), T0); // past the known end
    r.input(frag({ ident: 4, offset: 32, payload: bytes(8), more: true }), T0);
    r.input(frag({ ident: 4, offset: 8, payload: bytes(8), more: false }), T0); // ends before held data
    expect(r.stats.inconsistent).toBe(3);

    const whole = new Uint8Array(28);
    writeIpv4(whole, 0, 28, 5, 0, 64, IpProto.UDP, IP_A, IP_B);
    expect(r.input(view(whole), T0)).toBeUndefined();
    expect(r.stats.notFragment).toBe(1);
  });

  it('stays within maxDatagrams and maxBytesTotal under a flood of distinct idents, and still works', () => {
    const stats = createReassemblyStats();
    const r = new Ipv4Reassembler({}, stats);
    const chunk = bytes(1480);
    let maxSize = 0;
    let maxBytes = 0;
    for (let ident = 0; ident < 10_000; ident++) {
      r.input(frag({ ident: ident & 0xffff, src: 0x0b000000 + (ident >>> 16), offset: 0, payload: chunk, more: true }), T0 + ident);
      maxSize = Math.max(maxSize, r.size);
      maxBytes = Math.max(maxBytes, r.bytesHeld);
    }
    expect(maxSize).toBeLessThanOrEqual(64);
    expect(maxBytes).toBeLessThanOrEqual(1 << 20);
    expect(stats.evicted).toBe(10_000 - r.size);
    // A legitimate datagram still gets through (evicting the oldest flood entries).
    expectCapturedDatagram(feed(r, captured(), T0 + 10_001).out);
  });

  it('bounds memory against a flood of tiny fragments of one datagram', () => {
    const limit = 64 * 1024;
    const r = new Ipv4Reassembler({ maxBytesTotal: limit });
    let maxBytes = 0;
    // 8-byte fragments with gaps, in reverse order: never completes, maximal per-byte overhead.
    for (let off = 65000 - 16; off >= 0; off -= 16) {
      r.input(frag({ ident: 1, offset: off - (off % 8), payload: bytes(8), more: true }), T0);
      maxBytes = Math.max(maxBytes, r.bytesHeld);
    }
    expect(maxBytes).toBeLessThanOrEqual(limit);
    expect(r.stats.evicted).toBeGreaterThan(0);
  });

  it('gives up a datagram larger than maxBytesTotal instead of exceeding it', () => {
    const r = new Ipv4Reassembler({ maxBytesTotal: 10_000 });
    const { out } = feed(r, split(bytes(20_000), 1480));
    expect(out).toBeUndefined();
    expect(r.bytesHeld).toBeLessThanOrEqual(10_000);
    expect(r.stats.evicted).toBeGreaterThan(0);
    expectCapturedDatagram(feed(r, captured()).out); // smaller ones still fit
  });
});
