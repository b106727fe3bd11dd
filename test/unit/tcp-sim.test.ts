/**
 * Two of our endpoints talking through a simulated link in virtual time: seeded loss, reordering,
 * duplication and a rate-limited drop-tail queue. Every transfer is checked end to end by hash.
 * B opens actively (as a guest would), A answers with acceptSyn (as the NAT does).
 */
import { describe, expect, it } from 'vitest';
import { Sim, randomBytes, rng, sha256, type LinkParams } from './tcp-harness.ts';
import { resolveTcpConfig, type TcpConfig } from '../../src/stack/tcp/config.ts';

const NEAR_WRAP_A = 0xffff_8000; // both directions cross 2^32 early in the transfer
const NEAR_WRAP_B = 0xffff_ff00;

function link(p: Partial<LinkParams>): LinkParams {
  return { seed: 1, delayMs: 0.5, jitterMs: 0, loss: 0, dup: 0, reorder: 0, rateBytesPerMs: 0, queueMs: 0, ...p };
}

function transfer(
  l: LinkParams,
  sizeA: number,
  sizeB: number,
  cfgA: Partial<TcpConfig> = {},
  cfgB: Partial<TcpConfig> = cfgA,
  setup?: (sim: Sim) => void,
) {
  const srcA = randomBytes(sizeA, l.seed * 7 + 1);
  const srcB = randomBytes(sizeB, l.seed * 7 + 2);
  const sim = new Sim(l, srcA, srcB, resolveTcpConfig(cfgA), resolveTcpConfig(cfgB));
  setup?.(sim);
  sim.start(NEAR_WRAP_A, NEAR_WRAP_B);
  const t = sim.run(3_600_000, () => sim.a.closeReason !== undefined && sim.b.closeReason !== undefined);
  return { sim, t, srcA, srcB };
}

function expectDelivered(r: ReturnType<typeof transfer>): void {
  expect(r.sim.b.receivedBytes).toBe(r.srcA.length);
  expect(r.sim.a.receivedBytes).toBe(r.srcB.length);
  expect(r.sim.b.digest()).toBe(sha256(r.srcA));
  expect(r.sim.a.digest()).toBe(sha256(r.srcB));
  expect(r.sim.a.peerFin && r.sim.b.peerFin).toBe(true);
}

const MB5 = 5 << 20;

describe('5 MB both ways, hashes compared', () => {
  const cases: Array<[string, Partial<LinkParams>, Partial<TcpConfig>]> = [
    ['clean link', { delayMs: 0.05 }, {}],
    ['2 % loss', { seed: 3, loss: 0.02 }, {}],
    ['10 % reordering (up to 2 ms) and 5 % duplication', { seed: 4, jitterMs: 2, reorder: 0.1, dup: 0.05 }, {}],
    ['3 % loss, 3 % duplication, 5 % reordering', { seed: 6, delayMs: 1, jitterMs: 3, loss: 0.03, dup: 0.03, reorder: 0.05 }, {}],
    ['the same without SACK (NewReno only)', { seed: 8, delayMs: 1, jitterMs: 3, loss: 0.02, dup: 0.01, reorder: 0.05 }, { sack: false }],
    ['100 Mbit/s with a 2 ms drop-tail queue (congestion losses)', { seed: 7, delayMs: 1, rateBytesPerMs: 12_500, queueMs: 2 }, {}],
    ['segmentation offload (64 KiB segments) with 2 % loss and 5 % reordering', { seed: 11, delayMs: 1, jitterMs: 2, loss: 0.02, reorder: 0.05 }, { tsoMaxBytes: 65_000 }],
  ];
  for (const [name, l, cfg] of cases) {
    it(name, () => {
      const r = transfer(link(l), MB5, MB5, cfg);
      expectDelivered(r);
      expect(r.sim.a.closeReason).toBe('fin');
      expect(r.sim.b.closeReason).toBe('fin');
      const lossy = (l.loss ?? 0) > 0 || (l.rateBytesPerMs ?? 0) > 0;
      if (lossy) {
        expect(r.sim.framesDropped).toBeGreaterThan(0);
        expect(r.sim.a.stats.retransSegs + r.sim.b.stats.retransSegs).toBeGreaterThan(0);
      }
      if (name === 'clean link') {
        expect(r.sim.a.stats.retransSegs + r.sim.b.stats.retransSegs).toBe(0);
        // Data segments are MSS-sized; ACKs ride on data or go every second segment.
        expect(r.sim.framesSent).toBeLessThan((2 * MB5 / 1460) * 1.5);
      }
    });
  }

  it('SACK recovery repairs a loss burst faster than timeouts would', () => {
    // Drop 20 consecutive A→B data frames once, mid-transfer.
    let seen = 0;
    const r = transfer(link({ seed: 9, delayMs: 1 }), MB5, 0, {}, {}, (sim) => {
      sim.filter = (from, frame) => !(from === sim.a && frame.length > 1000 && ++seen >= 1000 && seen < 1020);
    });
    expectDelivered(r);
    expect(r.sim.framesDropped).toBe(20);
    expect(r.sim.a.stats.sackRecoveries).toBe(1);
    expect(r.sim.a.stats.retransSegs).toBe(20); // each lost segment once, nothing else
    expect(r.sim.a.stats.rtoTimeouts).toBe(0);
  });
});

describe('window scaling and large segments', () => {
  it('MSS 65480 (MTU 65520) with a 4 MiB window moves 64 MB in little virtual time', () => {
    const cfg = { mss: 65480, recvWindow: 4 << 20, sendBufferSize: 4 << 20 };
    const r = transfer(link({ delayMs: 0.05 }), 64 << 20, 0, cfg);
    expectDelivered(r);
    const info = r.sim.b.conn.info();
    expect(info.sndWscale).toBe(7);
    expect(r.sim.a.conn.info().sndMss).toBe(65480);
    // 0.1 ms RTT, window-limited: 4 MiB per RTT is ~40 GB/s; allow for slow start.
    expect(r.t - 1000).toBeLessThan(10); // minus the TIME-WAIT at the end
  });
});

describe('flow control and backpressure', () => {
  it('a slow consumer never holds more than the receive credit; nothing is dropped', () => {
    const cfg = { recvWindow: 64 * 1024, windowScale: 0 };
    const r = transfer(link({ seed: 11, delayMs: 0.2, loss: 0.01 }), 2 << 20, 2 << 20, cfg, cfg, (sim) => {
      sim.a.consumeDelayMs = 30;
      sim.b.consumeDelayMs = 7;
    });
    expectDelivered(r);
    expect(r.sim.a.maxHeld).toBeLessThanOrEqual(64 * 1024);
    expect(r.sim.b.maxHeld).toBeLessThanOrEqual(64 * 1024);
    expect(r.sim.a.maxHeld).toBeGreaterThan(32 * 1024); // the window really was the limit
    expect(r.sim.a.stats.trimmedBytes + r.sim.b.stats.trimmedBytes).toBe(0);
  });

  it('tiny buffers: 3000-byte send ring (segments cut at its end), 2000-byte window, MSS 100', () => {
    const cfg = { mss: 100, sendBufferSize: 3000, recvWindow: 2000, windowScale: 0 };
    const r = transfer(link({ seed: 12, delayMs: 0.3, loss: 0.02, reorder: 0.05, jitterMs: 1 }), 300_000, 200_000, cfg);
    expectDelivered(r);
  });

  it('zero windows are probed and reopened (consumer pauses for 2 s at a time)', () => {
    const cfg = { recvWindow: 8192, windowScale: 0 };
    const r = transfer(link({ seed: 13, delayMs: 0.5 }), 100_000, 0, cfg, cfg, (sim) => {
      sim.b.consumeDelayMs = 2000;
    });
    expectDelivered(r);
    expect(r.sim.a.stats.windowProbes).toBeGreaterThan(0);
    expect(r.sim.b.stats.windowUpdates).toBeGreaterThan(0);
  });
});

describe('random links and configurations', () => {
  it('200 seeds: every byte arrives intact, both sides close', () => {
    const failures: string[] = [];
    for (let seed = 1; seed <= 200; seed++) {
      const r = rng(seed * 99);
      const pick = <T,>(xs: T[]): T => xs[Math.floor(r() * xs.length)]!;
      const l = link({
        seed,
        delayMs: r() * 2,
        jitterMs: r() * 5,
        loss: r() * 0.12,
        dup: r() * 0.1,
        reorder: r() * 0.3,
        rateBytesPerMs: r() < 0.3 ? 2000 : 0,
        queueMs: 3,
      });
      const cfg = (): Partial<TcpConfig> => ({
        mss: pick([100, 536, 1460, 9000]),
        sendBufferSize: pick([3000, 20_000, 1 << 20]),
        recvWindow: pick([2000, 4096, 65_535, 300_000]),
        sack: r() < 0.8,
        delayedAckMs: pick([0, 10, 40]),
      });
      const sizeA = Math.floor(r() * 200_000);
      const sizeB = Math.floor(r() * 200_000);
      const cfgA = cfg();
      const cfgB = cfg();
      const consumeA = pick([0, 0, 5, 50]);
      const consumeB = pick([0, 0, 5, 50]);
      const issA = (r() * 2 ** 32) >>> 0;
      const issB = (r() * 2 ** 32) >>> 0;
      const srcA = randomBytes(sizeA, seed);
      const srcB = randomBytes(sizeB, seed + 1);
      const sim = new Sim(l, srcA, srcB, resolveTcpConfig(cfgA), resolveTcpConfig(cfgB));
      sim.a.consumeDelayMs = consumeA;
      sim.b.consumeDelayMs = consumeB;
      sim.start(issA, issB);
      sim.run(3_600_000, () => sim.a.closeReason !== undefined && sim.b.closeReason !== undefined);
      const ok =
        sim.b.receivedBytes === sizeA &&
        sim.a.receivedBytes === sizeB &&
        sim.b.digest() === sha256(srcA) &&
        sim.a.digest() === sha256(srcB) &&
        // Under heavy loss the last ACK can outlive the peer's TIME-WAIT: then it meets a RST.
        (sim.a.closeReason === 'fin' || sim.a.closeReason === 'rst') &&
        (sim.b.closeReason === 'fin' || sim.b.closeReason === 'rst');
      if (!ok) failures.push(`seed ${seed}: ${sim.a.closeReason}/${sim.b.closeReason} ${sim.b.receivedBytes}/${sizeA} ${sim.a.receivedBytes}/${sizeB}`);
    }
    expect(failures).toEqual([]);
  });
});
