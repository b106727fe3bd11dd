/**
 * TCP configuration and counters.
 *
 * Theory of operation: one `TcpConfig` is resolved once per engine (`resolveTcpConfig`) and shared,
 * read-only, by every connection; one `TcpStats` object is shared the same way so counters are
 * engine-wide (`stats.tcp.*`). Defaults are tuned for a local virtual link: RTTs are tens of
 * microseconds, loss comes only from full queues, and the peer is a guest kernel (Linux, usually)
 * that offers MSS, window scaling and SACK.
 */
import type { BufferBudget } from './budget.ts';

export interface TcpKeepaliveConfig {
  /** Idle time (nothing received) before the first probe, ms. */
  idleMs: number;
  /** Time between unanswered probes, ms. */
  intervalMs: number;
  /** Unanswered probes before the connection is reset ('timeout'). */
  count: number;
}

export interface TcpConfig {
  /** Our MSS: advertised in SYN/SYN-ACK and the cap on segments we send (MTU - 40). */
  mss: number;
  /** Upper bound of the send buffer (bytes from the app not yet acknowledged by the peer). */
  sendBufferSize: number;
  /** Receive credit: bytes the peer may have in flight + bytes the app holds unconsumed. */
  recvWindow: number;
  /** Our window-scale shift (RFC 7323); undefined = smallest shift that fits `recvWindow`. */
  windowScale: number | undefined;
  /** Offer/accept SACK (RFC 2018). */
  sack: boolean;
  /** Initial congestion window, in segments (RFC 6928: 10). */
  initialCwndSegments: number;
  /** RTO before any RTT sample (RFC 6298: 1 s); also the SYN retransmission timeout. */
  initialRtoMs: number;
  minRtoMs: number;
  maxRtoMs: number;
  /** Consecutive RTOs (or unanswered window probes) before giving up with 'timeout'. */
  maxRetransmits: number;
  /** SYN / SYN-ACK retransmissions before giving up with 'timeout'. */
  maxSynRetransmits: number;
  /**
   * Floor of the tail loss probe timeout (RFC 8985 §7: PTO = max(2·SRTT, this)); 0 disables TLP.
   * Only used with SACK and more than one segment in flight.
   */
  tlpMinMs: number;
  /** Longest an ACK for in-order data is delayed, ms. */
  delayedAckMs: number;
  /** Keepalive probing; undefined = off. */
  keepalive: TcpKeepaliveConfig | undefined;
  /** TIME-WAIT duration, ms. */
  timeWaitMs: number;
  /** Out-of-order budget: most distinct chunks held. */
  maxOooChunks: number;
  /** Most out-of-order bytes one connection holds; 0 = the whole window. */
  maxOooBytes: number;
  /** The engine-wide budget every connection's buffers are charged to (budget.ts); none = unbounded. */
  budget: BufferBudget | undefined;
  /** Challenge ACKs (RFC 5961) per connection per second. */
  challengeAckPerSecond: number;
  /**
   * Segmentation offload: new data may leave in segments of up to this many bytes (a multiple of
   * the MSS), which the link hands to the guest's kernel as GSO. 0 = off (one MSS per segment).
   */
  tsoMaxBytes: number;
}

export const TCP_DEFAULTS: Readonly<TcpConfig> = Object.freeze({
  mss: 1460,
  sendBufferSize: 1 << 20,
  recvWindow: 1 << 20,
  windowScale: undefined,
  sack: true,
  initialCwndSegments: 10,
  initialRtoMs: 1000,
  minRtoMs: 200,
  maxRtoMs: 60_000,
  maxRetransmits: 15,
  maxSynRetransmits: 5,
  tlpMinMs: 10,
  delayedAckMs: 10,
  keepalive: undefined,
  timeWaitMs: 1000,
  maxOooChunks: 1024,
  maxOooBytes: 0,
  budget: undefined,
  challengeAckPerSecond: 10,
  tsoMaxBytes: 0,
});

/** Smallest RFC 7323 shift (0..14) such that `window >> shift` fits the 16-bit window field. */
export function windowScaleFor(window: number): number {
  let shift = 0;
  while (shift < 14 && window / 2 ** shift > 0xffff) shift++;
  return shift;
}

/** Merges overrides onto the defaults and clamps them to sane ranges. */
export function resolveTcpConfig(overrides: Partial<TcpConfig> = {}): TcpConfig {
  const c: TcpConfig = { ...TCP_DEFAULTS, ...overrides };
  c.mss = clampInt(c.mss, 64, 65495);
  c.sendBufferSize = clampInt(c.sendBufferSize, 1, 1 << 30);
  c.recvWindow = clampInt(c.recvWindow, 1, 1 << 30);
  c.windowScale = c.windowScale === undefined ? windowScaleFor(c.recvWindow) : clampInt(c.windowScale, 0, 14);
  c.initialCwndSegments = clampInt(c.initialCwndSegments, 1, 1000);
  c.minRtoMs = Math.max(1, c.minRtoMs);
  c.maxRtoMs = Math.max(c.minRtoMs, c.maxRtoMs);
  c.initialRtoMs = Math.min(c.maxRtoMs, Math.max(c.minRtoMs, c.initialRtoMs));
  c.maxRetransmits = clampInt(c.maxRetransmits, 1, 100);
  c.maxSynRetransmits = clampInt(c.maxSynRetransmits, 0, 100);
  c.delayedAckMs = Math.max(0, c.delayedAckMs);
  c.tlpMinMs = Math.max(0, c.tlpMinMs);
  c.timeWaitMs = Math.max(0, c.timeWaitMs);
  c.maxOooChunks = clampInt(c.maxOooChunks, 0, 1 << 20);
  c.maxOooBytes = c.maxOooBytes > 0 ? clampInt(c.maxOooBytes, 1, c.recvWindow) : c.recvWindow;
  c.challengeAckPerSecond = clampInt(c.challengeAckPerSecond, 0, 1 << 20);
  c.tsoMaxBytes = clampInt(c.tsoMaxBytes, 0, 65_000);
  if (c.keepalive !== undefined) {
    c.keepalive = {
      idleMs: Math.max(1, c.keepalive.idleMs),
      intervalMs: Math.max(1, c.keepalive.intervalMs),
      count: clampInt(c.keepalive.count, 1, 1000),
    };
  }
  return c;
}

function clampInt(v: number, lo: number, hi: number): number {
  if (!Number.isFinite(v)) return lo;
  return Math.min(hi, Math.max(lo, Math.trunc(v)));
}

/** Engine-wide TCP counters. Drops are named by cause; nothing is dropped silently. */
export function createTcpStats() {
  return {
    segsIn: 0,
    segsOut: 0,
    bytesIn: 0,
    bytesOut: 0,
    retransSegs: 0,
    fastRetransmits: 0,
    rtoTimeouts: 0,
    synRetransmits: 0,
    dupAcksIn: 0,
    sackRecoveries: 0,
    /** Retransmissions found lost by SACKs for later data (re-sent without waiting for an RTO). */
    lostRetransmits: 0,
    /** Tail loss probes sent (RFC 8985). */
    tailLossProbes: 0,
    oooSegs: 0,
    /** Out-of-order data dropped because the chunk budget was exhausted. */
    oooDropped: 0,
    dupDataSegs: 0,
    /** Segments wholly outside the receive window (answered with an ACK, RFC 9293). */
    outOfWindow: 0,
    /** Bytes beyond the advertised window, trimmed. */
    trimmedBytes: 0,
    badAck: 0,
    ackOfUnsent: 0,
    noAckFlag: 0,
    /** SYN-SENT: a segment with neither SYN nor RST. */
    noSynInSynSent: 0,
    rstIn: 0,
    rstOut: 0,
    rstOutOfWindow: 0,
    challengeAcks: 0,
    challengeAcksLimited: 0,
    synInSynchronized: 0,
    windowProbes: 0,
    windowUpdates: 0,
    keepaliveProbes: 0,
    keepaliveTimeouts: 0,
    retransmitTimeouts: 0,
    afterClose: 0,
    delayedAcks: 0,
  };
}
export type TcpStats = ReturnType<typeof createTcpStats>;
