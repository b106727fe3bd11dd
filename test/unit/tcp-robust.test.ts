/**
 * Guest input never throws: arbitrary segment sequences (any flags, sequence and acknowledgment
 * numbers near and far, windows, options, payloads), interleaved with timer polls and app calls,
 * in every state a connection can reach. Invariants checked after every step.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { TcpConnection } from '../../src/stack/tcp/connection.ts';
import { seqLe } from '../../src/stack/tcp/seq.ts';
import { F, Recorder, guestSeg, openOpts, type SegSpec } from './tcp-harness.ts';

const ISS = 0xffff_fff0;
const GISS = 0x7fff_fff0;

type Step =
  | { kind: 'seg'; spec: SegSpec }
  | { kind: 'poll'; dt: number }
  | { kind: 'write'; n: number }
  | { kind: 'consume'; n: number }
  | { kind: 'shutdown' }
  | { kind: 'abort' };

const near = (base: number) =>
  fc.oneof(
    fc.integer({ min: -70_000, max: 70_000 }).map((d) => (base + d) >>> 0),
    fc.integer({ min: 0, max: 0xffff_ffff }),
  );

const segArb: fc.Arbitrary<Step> = fc
  .record({
    flags: fc.oneof(fc.constantFrom(F.ACK, F.ACK | F.PSH, F.ACK | F.FIN, F.RST, F.SYN, F.RST | F.ACK, F.SYN | F.ACK), fc.integer({ min: 0, max: 255 })),
    seq: near(GISS + 1),
    ack: near(ISS + 1),
    window: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 0xffff })),
    payload: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 3000 })),
    mss: fc.option(fc.integer({ min: 0, max: 0xffff }), { nil: undefined }),
    windowScale: fc.option(fc.integer({ min: 0, max: 255 }), { nil: undefined }),
    sackPermitted: fc.boolean(),
    sack: fc.array(fc.tuple(near(ISS + 1), near(ISS + 1)), { maxLength: 2 }),
  })
  .map((spec) => ({ kind: 'seg' as const, spec }));

const stepArb: fc.Arbitrary<Step> = fc.oneof(
  { weight: 60, arbitrary: segArb },
  { weight: 20, arbitrary: fc.integer({ min: 0, max: 5000 }).map((dt) => ({ kind: 'poll' as const, dt })) },
  { weight: 10, arbitrary: fc.integer({ min: 0, max: 100_000 }).map((n) => ({ kind: 'write' as const, n })) },
  { weight: 10, arbitrary: fc.integer({ min: 0, max: 100_000 }).map((n) => ({ kind: 'consume' as const, n })) },
  { weight: 3, arbitrary: fc.constant({ kind: 'shutdown' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'abort' as const }) },
);

function start(mode: 'passive' | 'active' | 'established'): { c: TcpConnection; rec: Recorder } {
  const rec = new Recorder();
  const o = openOpts({ sendBufferSize: 64 * 1024, recvWindow: 32 * 1024, keepalive: { idleMs: 3000, intervalMs: 500, count: 2 } }, ISS);
  let c: TcpConnection;
  if (mode === 'active') c = TcpConnection.connect(rec, 0, o);
  else {
    c = TcpConnection.acceptSyn(guestSeg({ flags: F.SYN, seq: GISS, window: 1000, mss: 500, windowScale: 2, sackPermitted: true }), rec, 0, o);
    if (mode === 'established') c.input(guestSeg({ flags: F.ACK, seq: GISS + 1, ack: (ISS + 1) >>> 0, window: 1000 }), 0);
  }
  rec.conn = c;
  rec.autoConsume = false;
  return { c, rec };
}

describe('arbitrary input never throws and keeps invariants', () => {
  for (const mode of ['passive', 'active', 'established'] as const) {
    it(`from ${mode} open`, () => {
      fc.assert(
        fc.property(fc.array(stepArb, { maxLength: 60 }), (steps) => {
          const { c, rec } = start(mode);
          let now = 0;
          const closes = () => rec.events.filter((e) => e.startsWith('close')).length;
          for (const st of steps) {
            switch (st.kind) {
              case 'seg':
                c.input(guestSeg(st.spec), now);
                break;
              case 'poll':
                now += st.dt;
                c.poll(now);
                break;
              case 'write':
                c.write(new Uint8Array(st.n), 0, st.n, now);
                break;
              case 'consume':
                c.recvConsumed(st.n, now);
                break;
              case 'shutdown':
                c.shutdownWrite(now);
                break;
              case 'abort':
                c.abort(now);
                break;
            }
            const i = c.info();
            expect(seqLe(i.sndUna as never, i.sndNxt as never) || i.state === 'closed').toBe(true);
            expect(seqLe(i.sndNxt as never, i.sndMax as never) || i.state === 'closed').toBe(true);
            expect(i.rcvHeld).toBeGreaterThanOrEqual(0);
            expect(i.sendQueued).toBeLessThanOrEqual(64 * 1024);
            expect(i.cwnd).toBeGreaterThan(0);
            const d = c.nextDeadline();
            if (d !== undefined) expect(Number.isFinite(d)).toBe(true);
            expect(closes()).toBeLessThanOrEqual(1);
            if (i.state === 'closed') expect(d).toBeUndefined();
          }
          // Emitted segments are well formed (decoded through the wire parser by the recorder).
          for (const o of rec.out) expect(o.payload.length).toBeLessThanOrEqual(65_535);
          // Time always ends it: drive the clock far ahead, everything drains or times out.
          for (let k = 0; k < 200 && c.state !== 'closed'; k++) {
            const d = c.nextDeadline();
            if (d === undefined) break;
            now = Math.max(now, d);
            c.poll(now);
          }
          expect(closes()).toBe(c.state === 'closed' ? 1 : 0);
        }),
        { numRuns: Number(process.env.TCP_FUZZ_RUNS ?? 300) },
      );
    });
  }
});
