/**
 * The TCP building blocks against simple models: sequence arithmetic, the send ring, the
 * out-of-order queue and its SACK blocks, the sender's scoreboard, RTO, NewReno, config, segments.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { type Seq, seqAdd, seqGe, seqGt, seqInRange, seqLe, seqLt, seqMax, seqMin, seqOf, seqSub } from '../../src/stack/tcp/seq.ts';
import { SendBuffer } from '../../src/stack/tcp/sendbuf.ts';
import { Reassembly } from '../../src/stack/tcp/reassembly.ts';
import { Scoreboard } from '../../src/stack/tcp/scoreboard.ts';
import { RtoEstimator } from '../../src/stack/tcp/rto.ts';
import { NewReno } from '../../src/stack/tcp/congestion.ts';
import { resolveTcpConfig, windowScaleFor } from '../../src/stack/tcp/config.ts';
import { TcpOutSegment, TcpSegment, fillSegment, rstForSegment, segLen } from '../../src/stack/tcp/segment.ts';
import { TcpView, createTcpOptions, writeTcp } from '../../src/stack/wire/tcp.ts';
import { F, IP_GUEST, IP_HOST, guestSeg } from './tcp-harness.ts';

const u32 = fc.integer({ min: 0, max: 0xffff_ffff });

describe('seq: wrapping arithmetic (RFC 9293 §3.4)', () => {
  it('compares across the 2^32 wrap', () => {
    const top = seqOf(0xffff_fff0);
    const low = seqAdd(top, 0x20);
    expect(low).toBe(0x10);
    expect(seqLt(top, low)).toBe(true);
    expect(seqGt(low, top)).toBe(true);
    expect(seqSub(low, top)).toBe(0x20);
    expect(seqSub(top, low)).toBe(-0x20);
    expect(seqMax(top, low)).toBe(low);
    expect(seqMin(top, low)).toBe(top);
    expect(seqInRange(seqOf(0), top, low)).toBe(true);
    expect(seqInRange(low, top, low)).toBe(false);
  });

  it('add/sub are inverse and order is consistent for distances below 2^31', () => {
    fc.assert(
      fc.property(u32, fc.integer({ min: -(2 ** 31) + 1, max: 2 ** 31 - 1 }), (a, d) => {
        const x = seqOf(a);
        const y = seqAdd(x, d);
        expect(y).toBeGreaterThanOrEqual(0);
        expect(y).toBeLessThanOrEqual(0xffff_ffff);
        expect(seqSub(y, x)).toBe(d);
        expect(seqLt(x, y)).toBe(d > 0);
        expect(seqLe(x, y)).toBe(d >= 0);
        expect(seqGe(y, x)).toBe(d >= 0);
      }),
    );
  });
});

describe('SendBuffer: bounded ring', () => {
  it('matches a byte-array model under random writes, acknowledgments and views', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 50_000 }),
        fc.array(fc.tuple(fc.constantFrom('w', 'c', 'v'), fc.nat(70_000), fc.nat(70_000)), { maxLength: 60 }),
        (limit, ops) => {
          const b = new SendBuffer(limit);
          let model: number[] = [];
          let counter = 0;
          for (const [op, x, y] of ops) {
            if (op === 'w') {
              const src = new Uint8Array(x % 20_000).map(() => counter++ & 0xff);
              const n = b.write(src, 0, src.length);
              expect(n).toBe(Math.min(src.length, limit - model.length));
              model.push(...src.subarray(0, n));
            } else if (op === 'c') {
              const n = model.length === 0 ? 0 : x % (model.length + 1);
              b.consume(n);
              model = model.slice(n);
            } else {
              // Reading the whole buffer through views yields the model.
              const got: number[] = [];
              let at = model.length === 0 ? 0 : x % model.length;
              const start = at;
              while (at < model.length) {
                const n = b.view(at, 1 + (y % 3000));
                expect(n).toBeGreaterThan(0);
                got.push(...b.buffer.subarray(b.viewOff, b.viewOff + n));
                at += n;
              }
              expect(got).toEqual(model.slice(start));
            }
            expect(b.length).toBe(model.length);
            expect(b.free).toBe(limit - model.length);
            expect(b.buffer.length).toBeLessThanOrEqual(limit);
          }
        },
      ),
      { numRuns: 150 },
    );
  });

  it('allocates nothing until written, and nothing after release', () => {
    const b = new SendBuffer(1 << 20);
    expect(b.buffer.length).toBe(0);
    b.write(new Uint8Array(10), 0, 10);
    expect(b.buffer.length).toBe(16 * 1024);
    b.release();
    expect(b.buffer.length).toBe(0);
    expect(b.length).toBe(0);
  });
});

describe('Reassembly: out-of-order queue and SACK blocks (RFC 2018)', () => {
  it('delivers every byte once, in order, for any arrival order, overlap and duplication', () => {
    fc.assert(
      fc.property(
        u32,
        fc.array(fc.tuple(fc.nat(3000), fc.integer({ min: 1, max: 400 })), { minLength: 1, maxLength: 80 }),
        (base, segs) => {
          const total = 3400;
          const src = new Uint8Array(total).map((_, i) => (i * 7) & 0xff);
          const q = new Reassembly(10_000);
          let nxt = seqOf(base);
          const out: number[] = [];
          const take = () => {
            for (let c = q.takeFirst(nxt); c !== undefined; c = q.takeFirst(nxt)) {
              const skip = seqSub(nxt, c.start);
              out.push(...c.data.subarray(skip));
              nxt = c.end;
            }
          };
          // Finish with the whole stream in order so everything must come out.
          for (const [off, len] of [...segs, [0, total] as [number, number]]) {
            const s = seqAdd(seqOf(base), off);
            const e = seqAdd(s, Math.min(len, total - off));
            if (seqLe(e, nxt)) continue;
            if (seqLe(s, nxt)) {
              const skip = seqSub(nxt, s);
              out.push(...src.subarray(off + skip, seqSub(e, seqOf(base))));
              nxt = e;
              take();
            } else {
              q.insert(s, src, off, seqSub(e, s));
              // SACK blocks are disjoint, above RCV.NXT, and the first holds this segment.
              const blocks = new Uint32Array(8);
              const n = q.sackBlocks(blocks, 4, nxt);
              expect(n).toBeGreaterThan(0);
              expect(seqInRange(s, blocks[0]! as Seq, blocks[1]! as Seq)).toBe(true);
              for (let i = 0; i < n; i++) {
                expect(seqGt(blocks[2 * i]! as Seq, nxt)).toBe(true);
                expect(seqLt(blocks[2 * i]! as Seq, blocks[2 * i + 1]! as Seq)).toBe(true);
                for (let j = 0; j < i; j++) {
                  const disjoint =
                    seqLe(blocks[2 * i + 1]! as Seq, blocks[2 * j]! as Seq) || seqGe(blocks[2 * i]! as Seq, blocks[2 * j + 1]! as Seq);
                  expect(disjoint).toBe(true);
                }
              }
            }
          }
          expect(out).toEqual([...src]);
          expect(q.isEmpty).toBe(true);
          expect(q.bytes).toBe(0);
        },
      ),
      { numRuns: 200 },
    );
  });

  it('stores only bytes it does not hold, and refuses past the chunk budget', () => {
    const q = new Reassembly(2);
    const b = new Uint8Array(100);
    expect(q.insert(seqOf(10), b, 0, 10)).toBe(10);
    expect(q.insert(seqOf(5), b, 0, 20)).toBe(5); // gaps [5,10) and [20,25): the budget allows one more chunk
    expect(q.lastRefused).toBe(5);
    expect(q.chunkCount).toBe(2);
    expect(q.bytes).toBe(15);
  });
});

describe('Scoreboard: SACKed ranges on the sender (RFC 6675 §3)', () => {
  it('matches a per-byte model for add/advance/isSacked/nextHole/sackedBetween', () => {
    fc.assert(
      fc.property(
        u32,
        fc.array(fc.tuple(fc.constantFrom('add', 'adv'), fc.nat(600), fc.nat(200)), { maxLength: 40 }),
        (base, ops) => {
          const sb = new Scoreboard();
          const B = seqOf(base);
          const max = seqAdd(B, 600);
          let una = 0;
          const sacked = new Array<boolean>(600).fill(false);
          for (const [op, a, len] of ops) {
            if (op === 'add') {
              sb.add(seqAdd(B, a), seqAdd(B, a + len), seqAdd(B, una), max);
              for (let i = Math.max(a, una); i < Math.min(a + len, 600); i++) sacked[i] = true;
            } else {
              una = Math.max(una, a);
              sb.advance(seqAdd(B, una));
              for (let i = 0; i < una; i++) sacked[i] = false;
            }
            expect(sb.sacked).toBe(sacked.filter(Boolean).length);
            for (let i = una; i < 600; i += 17) expect(sb.isSacked(seqAdd(B, i))).toBe(sacked[i]);
            const hi = sacked.lastIndexOf(true) + 1;
            expect(sb.highest(seqAdd(B, una))).toBe(hi > 0 ? seqAdd(B, hi) : seqAdd(B, una));
            // First hole at or after una, below the highest SACKed byte.
            let h = una;
            while (h < hi && sacked[h]) h++;
            let he = h;
            while (he < hi && !sacked[he]) he++;
            const n = sb.nextHole(seqAdd(B, una), seqAdd(B, Math.max(hi, una)));
            expect(n).toBe(he - h);
            if (n > 0) expect(sb.holeStart).toBe(seqAdd(B, h));
            const mid = una + ((600 - una) >> 1);
            expect(sb.sackedBetween(seqAdd(B, una), seqAdd(B, mid))).toBe(sacked.slice(una, mid).filter(Boolean).length);
          }
        },
      ),
      { numRuns: 200 },
    );
  });
});

describe('RtoEstimator (RFC 6298)', () => {
  it('first sample: SRTT = R, RTTVAR = R/2, RTO = R + 4·RTTVAR; later samples smooth', () => {
    const r = new RtoEstimator(1000, 10, 60_000);
    expect(r.rto).toBe(1000);
    r.sample(100);
    expect([r.srtt, r.rttvar, r.rto]).toEqual([100, 50, 300]);
    r.sample(200);
    expect(r.rttvar).toBeCloseTo(0.75 * 50 + 0.25 * 100);
    expect(r.srtt).toBeCloseTo(0.875 * 100 + 0.125 * 200);
    expect(r.rto).toBeCloseTo(r.srtt + 4 * r.rttvar);
  });

  it('floors at the minimum, doubles per timeout, caps at the maximum, resets on a sample', () => {
    const r = new RtoEstimator(1000, 200, 1500);
    r.sample(0.05);
    expect(r.rto).toBe(200);
    r.onTimeout();
    expect(r.rto).toBe(400);
    r.onTimeout();
    r.onTimeout();
    expect(r.rto).toBe(1500);
    r.sample(0.05);
    expect(r.rto).toBe(200);
  });
});

describe('NewReno (RFC 5681, 6582)', () => {
  it('initial window of 10 segments; slow start adds up to 2 SMSS per ACK', () => {
    const cc = new NewReno(1000, 10, 1 << 20, seqOf(0));
    expect(cc.cwnd).toBe(10_000);
    cc.onAck(1000);
    expect(cc.cwnd).toBe(11_000);
    cc.onAck(5000);
    expect(cc.cwnd).toBe(13_000);
  });

  it('congestion avoidance: one SMSS per window of acknowledged bytes', () => {
    const cc = new NewReno(1000, 10, 1 << 20, seqOf(0));
    cc.ssthresh = 10_000;
    for (let i = 0; i < 10; i++) cc.onAck(1000);
    expect(cc.cwnd).toBe(11_000);
  });

  it('fast recovery halves the flight (3 SMSS inflation without SACK); RTO drops to 1 SMSS', () => {
    const cc = new NewReno(1000, 10, 1 << 20, seqOf(0));
    cc.enterRecovery(20_000, seqOf(20_000), false);
    expect([cc.ssthresh, cc.cwnd, cc.inRecovery]).toEqual([10_000, 13_000, true]);
    cc.inflate();
    expect(cc.cwnd).toBe(14_000);
    cc.partialAck(3000);
    expect(cc.cwnd).toBe(12_000);
    cc.exitRecovery(5000);
    expect([cc.cwnd, cc.inRecovery]).toEqual([6000, false]);
    cc.enterRecovery(20_000, seqOf(40_000), true);
    expect(cc.cwnd).toBe(10_000);
    cc.onTimeout(3000, seqOf(50_000));
    expect([cc.ssthresh, cc.cwnd, cc.inRecovery, cc.recover]).toEqual([2000, 1000, false, 50_000]);
  });

  it('never exceeds the send-buffer cap', () => {
    const cc = new NewReno(1000, 10, 50_000, seqOf(0));
    for (let i = 0; i < 1000; i++) cc.onAck(2000);
    expect(cc.cwnd).toBe(50_000);
  });
});

describe('config', () => {
  it('derives the smallest window scale that fits the receive window', () => {
    expect(windowScaleFor(65535)).toBe(0);
    expect(windowScaleFor(65536)).toBe(1);
    expect(windowScaleFor(1 << 20)).toBe(5);
    expect(windowScaleFor(2 ** 40)).toBe(14);
    expect(resolveTcpConfig({ recvWindow: 4 << 20 }).windowScale).toBe(7);
  });

  it('clamps nonsense to safe values', () => {
    const c = resolveTcpConfig({ mss: 1, windowScale: 99, minRtoMs: -5, maxRetransmits: Number.NaN, sendBufferSize: 0 });
    expect(c.mss).toBe(64);
    expect(c.windowScale).toBe(14);
    expect(c.minRtoMs).toBe(1);
    expect(c.maxRetransmits).toBe(1);
    expect(c.sendBufferSize).toBe(1);
  });
});

describe('segments', () => {
  it('fillSegment reads fields and options through the wire view', () => {
    const s = guestSeg({ flags: F.SYN, seq: 0xfffffff0, window: 1234, mss: 1400, windowScale: 9, sackPermitted: true });
    expect([s.seq, s.flags, s.window, s.mss, s.windowScale, s.sackPermitted]).toEqual([0xfffffff0, F.SYN, 1234, 1400, 9, true]);
    expect(segLen(s)).toBe(1);
    const a = guestSeg({ flags: F.ACK, seq: 1, ack: 2, sack: [[10, 20], [30, 40]], payload: 5 });
    expect(a.sackCount).toBe(2);
    expect([...a.sackBlocks.subarray(0, 4)]).toEqual([10, 20, 30, 40]);
    expect(a.payloadLen).toBe(5);
    expect(a.mss).toBe(0);
    expect(a.windowScale).toBe(-1);
  });

  it('fillSegment rejects malformed options', () => {
    const b = new Uint8Array(24);
    b.set([2, 7, 0, 0], 20); // MSS with length 7
    writeTcp(b, 0, 1, 2, 0, 0, F.SYN, 0, 4, 0, IP_GUEST, IP_HOST);
    const v = TcpView.checked(b, 0, b.length, IP_GUEST, IP_HOST);
    if (typeof v === 'string') throw new Error(v);
    expect(fillSegment(new TcpSegment(), v, createTcpOptions())).toBe(false);
  });

  it('rstForSegment follows RFC 9293 CLOSED-state rules', () => {
    const out = new TcpOutSegment();
    expect(rstForSegment(guestSeg({ flags: F.ACK, seq: 5, ack: 77 }), out)).toBe(true);
    expect([out.flags, out.seq]).toEqual([F.RST, 77]);
    expect(rstForSegment(guestSeg({ flags: F.SYN, seq: 0xffffffff }), out)).toBe(true);
    expect([out.flags, out.seq, out.ack]).toEqual([F.RST | F.ACK, 0, 0]);
    expect(rstForSegment(guestSeg({ flags: F.PSH, seq: 100, payload: 10 }), out)).toBe(true);
    expect(out.ack).toBe(110);
    expect(rstForSegment(guestSeg({ flags: F.RST, seq: 1 }), out)).toBe(false);
  });
});
