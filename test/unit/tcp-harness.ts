/**
 * Test harness for src/stack/tcp: frames through the real wire encoder/parser, a scripted peer for
 * RFC-state tests, and a two-endpoint simulated link (seeded loss, reordering, duplication, a rate
 * limit with a drop-tail queue) in virtual time.
 */
import { createHash } from 'node:crypto';
import {
  TcpView,
  createTcpOptions,
  parseTcpOptions,
  TcpFlag,
} from '../../src/stack/wire/tcp.ts';
import { TcpOutSegment, TcpSegment, fillSegment, rstForSegment, tcpOutLength, writeTcpOut } from '../../src/stack/tcp/segment.ts';
import { expect } from 'vitest';
import { seqOf } from '../../src/stack/tcp/seq.ts';
import {
  type CloseReason,
  TcpConnection,
  type TcpHost,
  type TcpOpenOptions,
} from '../../src/stack/tcp/connection.ts';
import { createTcpStats, resolveTcpConfig, type TcpConfig, type TcpStats } from '../../src/stack/tcp/config.ts';

export { TcpFlag };
export const F = TcpFlag;

export const IP_GUEST = 0x0a00020f; // 10.0.2.15
export const IP_HOST = 0x0a000202; // 10.0.2.2
export const PORT_GUEST = 40000;
export const PORT_HOST = 80;

/** Serialises an out segment into TCP bytes exactly as the NAT would (header + options + payload, checksum). */
export function frameOf(o: TcpOutSegment, srcIp: number, dstIp: number, sport: number, dport: number): Uint8Array {
  const buf = new Uint8Array(tcpOutLength(o)).fill(0xa5);
  expect(writeTcpOut(buf, 0, o, sport, dport, srcIp, dstIp)).toBe(buf.length);
  return buf;
}

const scratchOpts = createTcpOptions();

/** Parses TCP bytes back into a (fresh) segment record through the wire view. */
export function segmentOf(frame: Uint8Array, srcIp: number, dstIp: number): TcpSegment {
  const view = TcpView.checked(frame, 0, frame.length, srcIp, dstIp);
  if (typeof view === 'string') throw new Error(`bad frame: ${view}`);
  const seg = new TcpSegment();
  if (!fillSegment(seg, view, scratchOpts)) throw new Error('bad options');
  return seg;
}

/** A decoded segment for assertions. */
export interface Out {
  flags: number;
  seq: number;
  ack: number;
  window: number;
  payload: Uint8Array;
  mss: number | undefined;
  windowScale: number | undefined;
  sackPermitted: boolean;
  sack: Array<[number, number]>;
}

export function decode(frame: Uint8Array, srcIp: number, dstIp: number): Out {
  const view = TcpView.checked(frame, 0, frame.length, srcIp, dstIp);
  if (typeof view === 'string') throw new Error(`bad frame: ${view}`);
  const o = createTcpOptions();
  if (!parseTcpOptions(view, o)) throw new Error('bad options');
  const sack: Array<[number, number]> = [];
  for (let i = 0; i < o.sackCount; i++) sack.push([o.sackBlocks[2 * i]!, o.sackBlocks[2 * i + 1]!]);
  return {
    flags: view.flags,
    seq: view.seq,
    ack: view.ack,
    window: view.window,
    payload: frame.slice(view.payloadOff, view.payloadOff + view.payloadLen),
    mss: o.mss,
    windowScale: o.windowScale,
    sackPermitted: o.sackPermitted,
    sack,
  };
}

export function flagsStr(f: number): string {
  const names: Array<[number, string]> = [
    [F.SYN, 'S'],
    [F.ACK, 'A'],
    [F.FIN, 'F'],
    [F.RST, 'R'],
    [F.PSH, 'P'],
  ];
  return names
    .filter(([b]) => f & b)
    .map(([, n]) => n)
    .join('');
}

// ───────────────────────── scripted peer ─────────────────────────

export interface SegSpec {
  flags: number;
  seq: number;
  ack?: number;
  window?: number;
  payload?: Uint8Array | number; // bytes, or a length of 0xab filler
  mss?: number;
  windowScale?: number;
  sackPermitted?: boolean;
  sack?: Array<[number, number]>;
}

/** Builds a guest segment (as the NAT would hand it over, via the wire parser). */
export function guestSeg(s: SegSpec): TcpSegment {
  const o = new TcpOutSegment();
  o.flags = s.flags;
  o.seq = seqOf(s.seq);
  o.ack = seqOf(s.ack ?? 0);
  o.window = s.window ?? 0xffff;
  let n = 0;
  const b = o.options;
  if (s.mss !== undefined) {
    b[n++] = 2;
    b[n++] = 4;
    b[n++] = s.mss >>> 8;
    b[n++] = s.mss & 0xff;
  }
  if (s.windowScale !== undefined) {
    b[n++] = 1;
    b[n++] = 3;
    b[n++] = 3;
    b[n++] = s.windowScale;
  }
  if (s.sackPermitted) {
    b[n++] = 1;
    b[n++] = 1;
    b[n++] = 4;
    b[n++] = 2;
  }
  if (s.sack !== undefined && s.sack.length > 0) {
    b[n++] = 1;
    b[n++] = 1;
    b[n++] = 5;
    b[n++] = 2 + 8 * s.sack.length;
    for (const [l, r] of s.sack) {
      for (const v of [l >>> 0, r >>> 0]) {
        b[n++] = v >>> 24;
        b[n++] = (v >>> 16) & 0xff;
        b[n++] = (v >>> 8) & 0xff;
        b[n++] = v & 0xff;
      }
    }
  }
  o.optionsLen = n;
  const p = typeof s.payload === 'number' ? new Uint8Array(s.payload).fill(0xab) : (s.payload ?? new Uint8Array(0));
  o.payload = p;
  o.payloadOff = 0;
  o.payloadLen = p.length;
  return segmentOf(frameOf(o, IP_GUEST, IP_HOST, PORT_GUEST, PORT_HOST), IP_GUEST, IP_HOST);
}

/** A TcpHost that records everything, for scripted tests. */
export class Recorder implements TcpHost {
  readonly out: Out[] = [];
  readonly events: string[] = [];
  readonly data: Uint8Array[] = [];
  closeReason: CloseReason | undefined;
  conn!: TcpConnection;
  /** Return credit right away from onData. */
  autoConsume = true;
  now = 0;

  emit(seg: TcpOutSegment): void {
    this.out.push(decode(frameOf(seg, IP_HOST, IP_GUEST, PORT_HOST, PORT_GUEST), IP_HOST, IP_GUEST));
  }
  onEstablished(): void {
    this.events.push('established');
  }
  onData(buf: Uint8Array, off: number, len: number): void {
    this.data.push(buf.slice(off, off + len));
    this.events.push(`data:${len}`);
    if (this.autoConsume) this.conn.recvConsumed(len, this.now);
  }
  onPeerFin(): void {
    this.events.push('peerfin');
  }
  onWritable(): void {
    this.events.push('writable');
  }
  onClose(reason: CloseReason): void {
    this.events.push(`close:${reason}`);
    this.closeReason = reason;
  }
  /** Takes the segments emitted since the last call. */
  take(): Out[] {
    return this.out.splice(0, this.out.length);
  }
  received(): Uint8Array {
    return concat(this.data);
  }
}

export function concat(parts: Uint8Array[]): Uint8Array {
  const n = parts.reduce((a, p) => a + p.length, 0);
  const r = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    r.set(p, o);
    o += p.length;
  }
  return r;
}

export function openOpts(config: Partial<TcpConfig> = {}, iss = 1000): TcpOpenOptions & { stats: TcpStats } {
  return { config: resolveTcpConfig(config), stats: createTcpStats(), iss };
}

// ───────────────────────── simulated link ─────────────────────────

/** mulberry32, shared with the frame fuzzer. */
export { prng as rng } from '../helpers/fuzzframes.ts';
import { prng as rng } from '../helpers/fuzzframes.ts';

export function randomBytes(n: number, seed: number): Uint8Array {
  const r = rng(seed);
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i += 4) {
    const v = (r() * 4294967296) >>> 0;
    b[i] = v & 0xff;
    if (i + 1 < n) b[i + 1] = (v >>> 8) & 0xff;
    if (i + 2 < n) b[i + 2] = (v >>> 16) & 0xff;
    if (i + 3 < n) b[i + 3] = v >>> 24;
  }
  return b;
}

export function sha256(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

export interface LinkParams {
  seed: number;
  /** One-way delay, ms. */
  delayMs: number;
  /** Extra uniform random delay in [0, jitterMs) for reordered packets. */
  jitterMs: number;
  loss: number;
  dup: number;
  /** Probability that a packet gets the jitter (is reordered). */
  reorder: number;
  /** Serialisation rate, bytes per ms (0 = unlimited). */
  rateBytesPerMs: number;
  /** Drop-tail: a packet that would wait longer than this in the queue is dropped. */
  queueMs: number;
}

interface Event {
  at: number;
  order: number;
  fn: () => void;
}

/** Binary min-heap of events by (at, order). */
class EventQueue {
  private h: Event[] = [];
  private order = 0;
  get size(): number {
    return this.h.length;
  }
  peek(): Event | undefined {
    return this.h[0];
  }
  push(at: number, fn: () => void): void {
    const e = { at, order: this.order++, fn };
    const h = this.h;
    h.push(e);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (less(h[p]!, e)) break;
      h[i] = h[p]!;
      i = p;
    }
    h[i] = e;
  }
  pop(): Event | undefined {
    const h = this.h;
    const top = h[0];
    const last = h.pop();
    if (top === undefined || last === undefined || h.length === 0) return top;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= h.length) break;
      const r = l + 1;
      const c = r < h.length && less(h[r]!, h[l]!) ? r : l;
      if (less(last, h[c]!)) break;
      h[i] = h[c]!;
      i = c;
    }
    h[i] = last;
    return top;
  }
}
function less(a: Event, b: Event): boolean {
  return a.at < b.at || (a.at === b.at && a.order < b.order);
}

/** One side of the simulation: a connection plus a streaming app (sends `source`, hashes what arrives). */
export class SimEndpoint implements TcpHost {
  conn!: TcpConnection;
  peer!: SimEndpoint;
  readonly hash = createHash('sha256');
  receivedBytes = 0;
  sentOff = 0;
  shutdownDone = false;
  established = false;
  peerFin = false;
  closeReason: CloseReason | undefined;
  closedAt = -1;
  /** Delay before returning receive credit (0 = from inside onData). */
  consumeDelayMs = 0;
  writeChunk = 64 * 1024;
  maxHeld = 0;

  constructor(
    readonly name: string,
    readonly sim: Sim,
    readonly ip: number,
    readonly port: number,
    public source: Uint8Array,
    readonly stats: TcpStats,
  ) {}

  emit(seg: TcpOutSegment): void {
    const frame = frameOf(seg, this.ip, this.peer.ip, this.port, this.peer.port);
    this.sim.transmit(this, frame);
  }
  onEstablished(): void {
    this.established = true;
    this.pump();
  }
  onData(buf: Uint8Array, off: number, len: number): void {
    this.hash.update(buf.subarray(off, off + len));
    this.receivedBytes += len;
    this.maxHeld = Math.max(this.maxHeld, this.conn.recvHeld);
    if (this.consumeDelayMs <= 0) this.conn.recvConsumed(len, this.sim.now);
    else this.sim.at(this.sim.now + this.consumeDelayMs, () => this.conn.recvConsumed(len, this.sim.now));
  }
  onPeerFin(): void {
    this.peerFin = true;
  }
  onWritable(): void {
    this.pump();
  }
  onClose(reason: CloseReason): void {
    this.closeReason = reason;
    this.closedAt = this.sim.now;
  }
  pump(): void {
    while (this.sentOff < this.source.length) {
      const n = this.conn.write(
        this.source,
        this.sentOff,
        Math.min(this.writeChunk, this.source.length - this.sentOff),
        this.sim.now,
      );
      if (n === 0) return;
      this.sentOff += n;
    }
    if (!this.shutdownDone) {
      this.shutdownDone = true;
      this.conn.shutdownWrite(this.sim.now);
    }
  }
  digest(): string {
    return this.hash.copy().digest('hex');
  }
}

export class Sim {
  now = 0;
  private readonly q = new EventQueue();
  private readonly rand: () => number;
  readonly a: SimEndpoint;
  readonly b: SimEndpoint;
  private busyUntil = new Map<SimEndpoint, number>();
  framesSent = 0;
  framesDropped = 0;
  /** Optional tap on every frame put on the link. */
  onFrame: ((from: SimEndpoint, frame: Uint8Array) => void) | undefined;
  /** Optional filter: return false to drop a frame deterministically. */
  filter: ((from: SimEndpoint, frame: Uint8Array) => boolean) | undefined;

  constructor(
    readonly link: LinkParams,
    sourceA: Uint8Array,
    sourceB: Uint8Array,
    readonly configA: TcpConfig = resolveTcpConfig(),
    readonly configB: TcpConfig = resolveTcpConfig(),
  ) {
    this.rand = rng(link.seed);
    this.a = new SimEndpoint('A', this, IP_HOST, PORT_HOST, sourceA, createTcpStats());
    this.b = new SimEndpoint('B', this, IP_GUEST, PORT_GUEST, sourceB, createTcpStats());
    this.a.peer = this.b;
    this.b.peer = this.a;
  }

  /** B actively opens (SYN), A answers with acceptSyn when the SYN arrives: like the NAT's passive open. */
  start(issA = 0x7fff_f000, issB = 0xffff_ff00): void {
    this.issA = issA;
    this.b.conn = TcpConnection.connect(this.b, this.now, { config: this.configB, stats: this.b.stats, iss: issB });
  }
  private issA = 0;
  private readonly rstOut = new TcpOutSegment();

  at(t: number, fn: () => void): void {
    this.q.push(t, fn);
  }

  transmit(from: SimEndpoint, frame: Uint8Array): void {
    this.framesSent++;
    this.onFrame?.(from, frame);
    if (this.filter !== undefined && !this.filter(from, frame)) {
      this.framesDropped++;
      return;
    }
    const L = this.link;
    let depart = this.now;
    if (L.rateBytesPerMs > 0) {
      const busy = Math.max(this.busyUntil.get(from) ?? 0, this.now);
      if (busy - this.now > L.queueMs) {
        this.framesDropped++;
        return;
      }
      depart = busy + (frame.length + 40) / L.rateBytesPerMs;
      this.busyUntil.set(from, depart);
    }
    if (this.rand() < L.loss) {
      this.framesDropped++;
      return;
    }
    const copies = this.rand() < L.dup ? 2 : 1;
    for (let c = 0; c < copies; c++) {
      const extra = this.rand() < L.reorder ? this.rand() * L.jitterMs : 0;
      const to = from.peer;
      this.q.push(depart + L.delayMs + extra, () => this.deliver(to, frame));
    }
  }

  /** Optional tap on every frame delivered. */
  onDeliver: ((to: SimEndpoint, frame: Uint8Array) => void) | undefined;

  private deliver(to: SimEndpoint, frame: Uint8Array): void {
    this.onDeliver?.(to, frame);
    const seg = segmentOf(frame, to.peer.ip, to.ip);
    if (to.conn === undefined) {
      // A: the passive side is created from the first SYN, as the NAT does after dialling.
      if (seg.flags & F.SYN && !(seg.flags & F.ACK)) {
        to.conn = TcpConnection.acceptSyn(seg, to, this.now, { config: this.configA, stats: to.stats, iss: this.issA });
      }
      return;
    }
    if (to.conn.state === 'closed') {
      // No connection any more: answer as the NAT does for an unknown 4-tuple (RFC 9293 CLOSED).
      if (rstForSegment(seg, this.rstOut)) to.emit(this.rstOut);
      return;
    }
    const r = to.conn.input(seg, this.now);
    if (r === 'reuse') throw new Error('unexpected reuse in simulation');
  }

  /** Runs until `done()` or `maxMs` of virtual time. Returns the virtual time reached. */
  run(maxMs: number, done: () => boolean): number {
    let spins = 0;
    let lastNow = -1;
    while (!done()) {
      let next = this.q.peek()?.at ?? Infinity;
      for (const e of [this.a, this.b]) {
        const d = e.conn?.nextDeadline();
        if (d !== undefined && d < next) next = d;
      }
      if (next === Infinity || next > maxMs) break;
      this.now = Math.max(this.now, next);
      if (this.now === lastNow) {
        if (++spins > 100_000) throw new Error(`simulation stuck at t=${this.now}`);
      } else {
        spins = 0;
        lastNow = this.now;
      }
      while ((this.q.peek()?.at ?? Infinity) <= this.now) this.q.pop()!.fn();
      for (const e of [this.a, this.b]) {
        const d = e.conn?.nextDeadline();
        if (d !== undefined && d <= this.now) e.conn.poll(this.now);
      }
    }
    return this.now;
  }
}
