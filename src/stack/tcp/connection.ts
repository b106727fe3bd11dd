/**
 * One TCP connection with a guest: the RFC 9293 state machine, sans-I/O.
 *
 * Theory of operation. vmnat terminates the guest's TCP here and carries the bytes over a host
 * socket (the NAT adapter, the "app" below). The connection is driven from outside:
 *  - `input(seg, now)` for each segment from the guest (already checksum-validated and demuxed);
 *  - `poll(now)` when `nextDeadline()` is reached (one deadline per connection: RTO/persist or
 *    SYN retransmit, delayed ACK, keepalive, TIME-WAIT);
 *  - app calls: `write`, `shutdownWrite`, `abort`, `recvConsumed`.
 * It answers through one `TcpHost` object: `emit(seg)` for segments to the guest, and events
 * `onEstablished`, `onData`, `onPeerFin`, `onWritable`, `onClose` (exactly once).
 *
 * Opening: passive, `acceptSyn` from a guest SYN after the NAT dialled the host successfully
 * ("dial the host first") → SYN-RECEIVED, SYN-ACK sent; or active, `connect` (port forwarding
 * into the guest) → SYN-SENT, SYN sent. There is no LISTEN state: listening is the NAT's job.
 *
 * States (closed union `TcpState`): syn-sent, syn-received, established, fin-wait-1, fin-wait-2,
 * close-wait, closing, last-ack, time-wait, closed. `shutdownWrite` queues our FIN after the
 * buffered data (established → fin-wait-1, close-wait → last-ack); a guest FIN raises `onPeerFin`
 * (→ close-wait, closing or time-wait). Half-close works both ways: data keeps flowing in the
 * open direction. Segment processing follows RFC 9293 §3.10.7.4's order — sequence check, RST,
 * SYN, ACK, text, FIN — with RFC 5961's defences: a RST is honoured only at exactly RCV.NXT (in
 * window otherwise → challenge ACK), a SYN in a synchronized state gets a challenge ACK, ACKs
 * below SND.UNA − MAX.SND.WND are refused; challenge ACKs are rate-limited per connection.
 *
 * Choices: no timestamps (RFC 7323 TS) — RTT is timed once per round trip (Karn), which on a local
 * link is plenty, and it saves 12 bytes per segment; PAWS is not needed because nothing on the link
 * can hold a segment long enough for the sequence space to wrap. TIME-WAIT lasts `timeWaitMs`
 * (1 s): long enough to re-ACK a guest FIN retransmitted after a lost final ACK (Linux retries at
 * ~200 ms), short because we are a NAT endpoint whose 4-tuple the guest may reuse quickly; a new
 * SYN with a higher sequence number ends TIME-WAIT at once (`input` returns 'reuse').
 *
 * Re-entrancy: the app may call any method from inside an event. During `input`/`poll`, app calls
 * only queue work; output happens once, at the end. `abort` from inside an event takes effect at
 * once and the rest of the segment is ignored.
 */
import { debuglog } from 'node:util';
import { type Seq, seqAdd, seqGt, seqLe, seqOf } from './seq.ts';
import { TcpFlag, TcpOutSegment, type TcpSegment } from './segment.ts';
import type { TcpConfig, TcpStats } from './config.ts';
import { AckVerdict, type SenderOutput, TcpSender } from './sender.ts';
import { type ReceiverSink, TcpReceiver } from './receiver.ts';
import { writeTcpOptionsSack, writeTcpOptionsSyn } from '../wire/tcp.ts';
import type { CloseReason, InputResult, TcpHost, TcpInfo, TcpOpenOptions, TcpState } from './api.ts';

export type { CloseReason, InputResult, TcpHost, TcpInfo, TcpOpenOptions, TcpState } from './api.ts';

const trace = debuglog('vmnat');

type DropCounter =
  | 'afterClose'
  | 'dupDataSegs'
  | 'outOfWindow'
  | 'rstOutOfWindow'
  | 'synInSynchronized'
  | 'noAckFlag'
  | 'noSynInSynSent'
  | 'badAck';

const SHARED_OUT = new TcpOutSegment();
const SACK_TMP = new Uint32Array(8);

function assertNever(x: never): never {
  throw new Error(`tcp: unexpected state ${String(x)}`);
}

// Initial sequence numbers come from a pool refilled 256 at a time: one getRandomValues call per
// connection was 2–3 % of vmnat's CPU in a connect+close benchmark.
const ISS_POOL = new Uint32Array(256);
let issLeft = 0;

function randomIss(): number {
  if (issLeft === 0) {
    crypto.getRandomValues(ISS_POOL);
    issLeft = ISS_POOL.length;
  }
  return ISS_POOL[--issLeft]!;
}

export class TcpConnection implements SenderOutput, ReceiverSink {
  private st: TcpState;
  private readonly snd: TcpSender;
  private readonly rcv: TcpReceiver;
  /** Shared by all connections: `emit` is synchronous and must not call back into TCP. */
  private readonly out = SHARED_OUT;
  private sackOk = false;
  private wsOk = false;
  /** >0 while inside input/poll/kick: app calls queue work instead of transmitting. */
  private busy = 0;
  private pendingOutput = false;
  /** The host was asked (deferAck) to call flushDeferredAck at the end of this batch. */
  private ackDeferred = false;
  private writeBlocked = false;
  private readonly writableThreshold: number;
  private synRetries = 0;
  private twDeadline = Infinity;
  private lastRecv: number;
  private kaProbes = 0;
  private kaLastSent = 0;
  private caWindowStart = -Infinity;
  private caCount = 0;

  private constructor(
    private readonly host: TcpHost,
    private readonly config: TcpConfig,
    private readonly stats: TcpStats,
    iss: number,
    state: TcpState,
    now: number,
  ) {
    this.st = state;
    this.snd = new TcpSender(seqOf(iss), config, stats);
    this.rcv = new TcpReceiver(config, stats);
    this.writableThreshold = Math.max(1, config.sendBufferSize >>> 2);
    this.lastRecv = now;
  }

  /**
   * Passive open from a guest SYN (the caller checked SYN set, ACK/RST clear, and dialled the
   * host): negotiates MSS, window scale and SACK from the SYN's options, sends the SYN-ACK.
   */
  static acceptSyn(syn: TcpSegment, host: TcpHost, now: number, opts: TcpOpenOptions): TcpConnection {
    const c = new TcpConnection(host, opts.config, opts.stats, opts.iss ?? randomIss(), 'syn-received', now);
    c.stats.segsIn++;
    c.rcv.init(syn.seq);
    c.negotiate(syn);
    c.snd.initPeerWindow(syn);
    c.sendSyn(now, false);
    return c;
  }

  /** Active open (port forwarding into the guest): sends a SYN offering MSS, window scale and SACK. */
  static connect(host: TcpHost, now: number, opts: TcpOpenOptions): TcpConnection {
    const c = new TcpConnection(host, opts.config, opts.stats, opts.iss ?? randomIss(), 'syn-sent', now);
    c.sendSyn(now, false);
    return c;
  }

  get state(): TcpState {
    return this.st;
  }

  /** A method, not `this.st === 'closed'`, so TypeScript does not narrow `st` across callbacks. */
  private isClosed(): boolean {
    return this.st === 'closed';
  }

  /** Bytes `write` would accept now (0 once writing is shut down or the connection closed). */
  sendFree(): number {
    return this.canWrite() ? this.snd.buf.free : 0;
  }

  /** Bytes written by the app and not yet acknowledged by the guest. */
  get sendQueued(): number {
    return this.snd.buf.length;
  }

  /** Bytes delivered by `onData` and not yet returned with `recvConsumed`. */
  get recvHeld(): number {
    return this.rcv.held;
  }

  // ───────────────────────────── app side ─────────────────────────────

  /**
   * Queues bytes for the guest; copies up to `sendFree()` of them and returns how many it took.
   * After a short count, `onWritable` fires when space frees up. Data written before the
   * handshake completes is sent once it does.
   */
  write(buf: Uint8Array, off: number, len: number, now: number): number {
    if (!this.canWrite() || len <= 0) return 0;
    if (len > buf.length - off) len = Math.max(0, buf.length - off);
    const n = this.snd.buf.write(buf, off, len);
    if (n < len) this.writeBlocked = true;
    if (n > 0) this.kick(now);
    return n;
  }

  /** No more data from the app: a FIN follows the buffered data (half-close). Idempotent. */
  shutdownWrite(now: number): void {
    if (this.snd.finQueued) return;
    const st = this.st;
    switch (st) {
      case 'syn-sent':
      case 'syn-received':
        this.snd.queueFin(); // RFC 9293 CLOSE in SYN-RECEIVED: queue until ESTABLISHED
        break;
      case 'established':
        this.snd.queueFin();
        this.st = 'fin-wait-1';
        break;
      case 'close-wait':
        this.snd.queueFin();
        this.st = 'last-ack';
        break;
      case 'fin-wait-1':
      case 'fin-wait-2':
      case 'closing':
      case 'last-ack':
      case 'time-wait':
      case 'closed':
        return;
      default:
        assertNever(st);
    }
    this.writeBlocked = false;
    this.kick(now);
  }

  /** Resets the connection (RFC 9293 ABORT: RST to the guest unless it cannot matter) and closes it. */
  abort(_now: number): void {
    const st = this.st;
    switch (st) {
      case 'closed':
        return;
      case 'syn-sent':
      case 'time-wait':
        break; // nothing the guest could hold on to
      case 'syn-received':
      case 'established':
      case 'fin-wait-1':
      case 'fin-wait-2':
      case 'close-wait':
      case 'closing':
      case 'last-ack':
        this.sendRst(this.snd.ackSeq(), true);
        break;
      default:
        assertNever(st);
    }
    this.closeWith('abort');
  }

  /** The app finished with `n` bytes from `onData`: returns credit, may open the window. */
  recvConsumed(n: number, now: number): void {
    if (this.isClosed() || n <= 0) return;
    this.rcv.held = Math.max(0, this.rcv.held - n);
    if (this.rcv.finReceived || this.st === 'syn-sent' || this.st === 'syn-received') return;
    if (!this.rcv.ackNow && this.rcv.windowUpdateWorthwhile()) {
      this.rcv.ackNow = true;
      this.stats.windowUpdates++;
      this.kick(now);
    }
  }

  // ───────────────────────────── timers ─────────────────────────────

  /** The earliest time `poll` must be called, or undefined if nothing is pending. */
  nextDeadline(): number | undefined {
    if (this.isClosed()) return undefined;
    const d = Math.min(this.snd.deadline, this.rcv.delAckDeadline, this.twDeadline, this.keepaliveDeadline());
    return d === Infinity ? undefined : d;
  }

  /** Runs whatever timers are due at `now`. Harmless to call early or often. */
  poll(now: number): void {
    if (this.isClosed()) return;
    this.busy++;
    try {
      if (now >= this.twDeadline) {
        this.closeWith('fin'); // TIME-WAIT expiry (RFC 9293 §3.10.8)
        return;
      }
      if (now >= this.snd.deadline) {
        this.onRetransmitTimer(now);
        if (this.isClosed()) return;
      }
      if (now >= this.keepaliveDeadline()) {
        this.onKeepalive(now);
        if (this.isClosed()) return;
      }
      this.finish(now);
    } finally {
      this.busy--;
    }
  }

  private onRetransmitTimer(now: number): void {
    const st = this.st;
    switch (st) {
      case 'syn-sent':
      case 'syn-received':
        // Handshake retransmission with backoff (RFC 6298 §5.5; RFC 9293 §3.8.1).
        if (++this.synRetries > this.config.maxSynRetransmits) {
          this.stats.retransmitTimeouts++;
          if (st === 'syn-received') this.sendRst(this.snd.ackSeq(), true);
          this.closeWith('timeout');
          return;
        }
        this.snd.rto.onTimeout();
        this.sendSyn(now, true);
        return;
      case 'established':
      case 'fin-wait-1':
      case 'fin-wait-2':
      case 'close-wait':
      case 'closing':
      case 'last-ack':
        if (!this.snd.onTimer(now, this)) {
          this.sendRst(this.snd.ackSeq(), true);
          this.closeWith('timeout');
        }
        return;
      case 'time-wait':
      case 'closed':
        this.snd.stopTimer();
        return;
      default:
        assertNever(st);
    }
  }

  private keepaliveDeadline(): number {
    const ka = this.config.keepalive;
    if (ka === undefined || this.snd.outstanding) return Infinity;
    switch (this.st) {
      case 'established':
      case 'close-wait':
      case 'fin-wait-2':
        return this.kaProbes === 0 ? this.lastRecv + ka.idleMs : this.kaLastSent + ka.intervalMs;
      default:
        return Infinity;
    }
  }

  /** Keepalive (RFC 9293 §3.8.4; RFC 1122 §4.2.3.6): <SEQ=UNA−1><ACK=RCV.NXT>, no data. */
  private onKeepalive(now: number): void {
    const ka = this.config.keepalive;
    if (ka === undefined) return;
    if (this.kaProbes >= ka.count) {
      this.stats.keepaliveTimeouts++;
      this.sendRst(this.snd.ackSeq(), true);
      this.closeWith('timeout');
      return;
    }
    this.kaProbes++;
    this.kaLastSent = now;
    this.stats.keepaliveProbes++;
    this.sendAckAt(seqAdd(this.snd.una, -1));
  }

  // ───────────────────────────── input ─────────────────────────────

  /**
   * Processes one segment from the guest. Never throws on any segment content. Returns 'reuse'
   * when a new SYN ended TIME-WAIT (the connection is now closed; treat the segment as a new SYN).
   */
  input(seg: TcpSegment, now: number): InputResult {
    this.stats.segsIn++;
    if (this.isClosed()) {
      this.drop('afterClose');
      return 'ok';
    }
    this.busy++;
    try {
      if (this.st === 'syn-sent') this.inputSynSent(seg, now);
      else if (this.inputSynchronized(seg, now) === 'reuse') return 'reuse';
      if (!this.isClosed()) {
        const rcv = this.rcv;
        if (rcv.ackSoon && !rcv.ackNow) {
          if (this.host.deferAck === undefined) rcv.ackNow = true;
          else if (!this.ackDeferred) {
            this.ackDeferred = true;
            this.host.deferAck();
          }
        }
        this.finish(now);
      }
    } finally {
      this.busy--;
    }
    return 'ok';
  }

  /** RFC 9293 §3.10.7.3: SEGMENT ARRIVES in SYN-SENT. */
  private inputSynSent(seg: TcpSegment, now: number): void {
    const f = seg.flags;
    const snd = this.snd;
    if (f & TcpFlag.ACK && (seqLe(seg.ack, snd.iss) || seqGt(seg.ack, snd.max))) {
      this.drop('badAck');
      if (!(f & TcpFlag.RST)) this.sendRst(seg.ack, false);
      return;
    }
    if (f & TcpFlag.RST) {
      if (f & TcpFlag.ACK) {
        this.stats.rstIn++;
        this.closeWith('rst');
      } else this.drop('rstOutOfWindow');
      return;
    }
    if (!(f & TcpFlag.SYN)) {
      this.drop('noSynInSynSent');
      return;
    }
    this.rcv.init(seg.seq);
    this.negotiate(seg);
    this.lastRecv = now;
    if (f & TcpFlag.ACK) {
      snd.onSynAck(seg, now);
      this.rcv.ackNow = true;
      this.becomeEstablished();
    } else {
      // Simultaneous open: SYN-RECEIVED, SYN-ACK (RFC 9293 §3.5 figure 8).
      snd.initPeerWindow(seg);
      this.st = 'syn-received';
      this.sendSyn(now, true);
    }
  }

  /** RFC 9293 §3.10.7.4: SEGMENT ARRIVES in SYN-RECEIVED and the synchronized states. */
  private inputSynchronized(seg: TcpSegment, now: number): InputResult {
    const f = seg.flags;
    const rcv = this.rcv;
    const snd = this.snd;

    if (f & TcpFlag.SYN && !(f & (TcpFlag.ACK | TcpFlag.RST))) {
      // The guest's SYN again: it lost our SYN-ACK.
      if (this.st === 'syn-received' && seg.seq === rcv.irs) {
        this.sendSyn(now, true);
        return 'ok';
      }
      // A new incarnation of the 4-tuple (RFC 9293 §3.10.7.4 TIME-WAIT, RFC 6191 without TS).
      if (this.st === 'time-wait' && seqGt(seg.seq, rcv.nxt)) {
        this.closeWith('fin');
        return 'reuse';
      }
    }

    // First: sequence number acceptable?
    if (!rcv.acceptable(seg)) {
      if (rcv.isOld(seg.seq)) this.drop('dupDataSegs');
      else this.drop('outOfWindow');
      if (!(f & TcpFlag.RST)) {
        rcv.ackNow = true;
        if (this.st === 'time-wait' && f & TcpFlag.FIN) this.twDeadline = now + this.config.timeWaitMs;
      }
      return 'ok';
    }

    // Second: RST (RFC 5961 §3.2).
    if (f & TcpFlag.RST) {
      if (seg.seq === rcv.nxt) {
        this.stats.rstIn++;
        // In TIME-WAIT both sides had finished: the RST only ends the wait early (RFC 1337's
        // hazard needs old duplicates that a local link cannot hold).
        this.closeWith(this.st === 'time-wait' ? 'fin' : 'rst');
      } else {
        this.drop('rstOutOfWindow');
        this.challengeAck(now);
      }
      return 'ok';
    }

    // Fourth: SYN in a synchronized state (RFC 5961 §4.2).
    if (f & TcpFlag.SYN) {
      this.drop('synInSynchronized');
      this.challengeAck(now);
      return 'ok';
    }

    // Fifth: ACK.
    if (!(f & TcpFlag.ACK)) {
      this.drop('noAckFlag');
      return 'ok';
    }
    this.lastRecv = now;
    this.kaProbes = 0;

    if (this.st === 'syn-received') {
      if (!(seqGt(seg.ack, snd.una) && seqLe(seg.ack, snd.max))) {
        this.drop('badAck');
        this.sendRst(seg.ack, false);
        return 'ok';
      }
    }
    const verdict = snd.processAck(seg, now, this);
    if (verdict !== AckVerdict.Ok) {
      rcv.ackNow = true; // RFC 9293 / RFC 5961 §5.2: ACK and drop
      return 'ok';
    }
    if (this.st === 'syn-received') {
      this.becomeEstablished();
      if (this.isClosed()) return 'ok';
    }
    if (snd.finAcked) {
      const st = this.st;
      switch (st) {
        case 'fin-wait-1':
          this.st = 'fin-wait-2';
          break;
        case 'closing':
          this.enterTimeWait(now);
          break;
        case 'last-ack':
          this.closeWith('fin');
          return 'ok';
        case 'syn-sent':
        case 'syn-received':
        case 'established':
        case 'fin-wait-2':
        case 'close-wait':
        case 'time-wait':
        case 'closed':
          break;
        default:
          assertNever(st);
      }
    }

    // Seventh and eighth: segment text and FIN (URG is ignored: urgent data is ordinary data).
    const st = this.st;
    switch (st) {
      case 'established':
      case 'fin-wait-1':
      case 'fin-wait-2':
        if (seg.payloadLen > 0 || f & TcpFlag.FIN) {
          if (rcv.processText(seg, now, this)) this.onFin(now);
        }
        break;
      case 'close-wait':
      case 'closing':
      case 'last-ack':
      case 'time-wait':
        // The guest already sent FIN: nothing can follow. A retransmitted FIN only needs an ACK.
        if (f & TcpFlag.FIN) {
          rcv.ackNow = true;
          if (st === 'time-wait') this.twDeadline = now + this.config.timeWaitMs;
        }
        break;
      case 'syn-sent':
      case 'syn-received':
      case 'closed':
        break;
      default:
        assertNever(st);
    }
    return 'ok';
  }

  /** The guest's FIN is in order (RFC 9293 eighth check). */
  private onFin(now: number): void {
    const st = this.st;
    switch (st) {
      case 'syn-received':
      case 'established':
        this.st = 'close-wait';
        break;
      case 'fin-wait-1':
        if (this.snd.finAcked) this.enterTimeWait(now);
        else this.st = 'closing';
        break;
      case 'fin-wait-2':
        this.enterTimeWait(now);
        break;
      case 'close-wait':
      case 'closing':
      case 'last-ack':
      case 'time-wait':
      case 'syn-sent':
      case 'closed':
        return;
      default:
        assertNever(st);
    }
    this.host.onPeerFin();
  }

  private becomeEstablished(): void {
    this.st = this.snd.finQueued ? 'fin-wait-1' : 'established';
    this.snd.stopTimer();
    this.host.onEstablished();
  }

  private enterTimeWait(now: number): void {
    this.st = 'time-wait';
    this.snd.stopTimer();
    this.snd.buf.release();
    this.rcv.clearOoo();
    this.twDeadline = now + this.config.timeWaitMs;
    this.host.onTimeWait?.();
  }

  /** A guest segment (or part of its processing) is ignored: count it by cause, trace it. */
  private drop(counter: DropCounter): void {
    this.stats[counter]++;
    trace('tcp drop %s (state %s)', counter, this.st);
  }

  private closeWith(reason: CloseReason): void {
    if (this.isClosed()) return;
    trace('tcp close %s (state %s)', reason, this.st);
    this.st = 'closed';
    this.snd.stopTimer();
    this.twDeadline = Infinity;
    this.rcv.delAckDeadline = Infinity;
    this.snd.buf.release();
    this.rcv.clearOoo();
    this.host.onClose(reason);
  }

  private negotiate(syn: TcpSegment): void {
    this.wsOk = syn.windowScale >= 0;
    this.sackOk = this.config.sack && syn.sackPermitted;
    this.rcv.wscale = this.wsOk ? (this.config.windowScale ?? 0) : 0;
    this.snd.wscale = this.wsOk ? Math.min(syn.windowScale, 14) : 0;
    this.snd.sack = this.sackOk;
    this.snd.setMss(syn.mss);
    this.rcv.mss = this.snd.mss;
  }

  // ───────────────────────────── output ─────────────────────────────

  private canWrite(): boolean {
    if (this.snd.finQueued) return false;
    switch (this.st) {
      case 'syn-sent':
      case 'syn-received':
      case 'established':
      case 'close-wait':
        return true;
      default:
        return false;
    }
  }

  /**
   * End of the frame batch (called by a host that implements `deferAck`): the owed ACK goes now,
   * unless a segment sent meanwhile carried it already.
   */
  flushDeferredAck(now: number): void {
    this.ackDeferred = false;
    if (this.isClosed() || !this.rcv.ackSoon) return;
    this.rcv.ackNow = true;
    this.kick(now);
  }

  /** Output now, or at the end of the current input/poll if inside one. */
  private kick(now: number): void {
    if (this.busy > 0) {
      this.pendingOutput = true;
      return;
    }
    this.busy++;
    try {
      this.finish(now);
    } finally {
      this.busy--;
    }
  }

  /** Transmits what is due, then raises `onWritable`; repeats if the app queued more meanwhile. */
  private finish(now: number): void {
    for (let round = 0; round < 8; round++) {
      this.pendingOutput = false;
      this.transmit(now);
      if (this.isClosed()) return;
      if (this.writeBlocked && this.snd.buf.free >= this.writableThreshold && this.canWrite()) {
        this.writeBlocked = false;
        this.host.onWritable();
        if (this.isClosed()) return;
      }
      if (!this.pendingOutput) return;
    }
    this.pendingOutput = false;
    this.transmit(now); // bounded: an app that writes from every onWritable still gets its data out
  }

  private transmit(now: number): void {
    const st = this.st;
    switch (st) {
      case 'established':
      case 'close-wait':
      case 'fin-wait-1':
      case 'closing':
      case 'last-ack':
        this.snd.output(now, this);
        break;
      case 'syn-received':
        if (this.rcv.ackNow) this.sendSyn(now, true); // our "ACK" in SYN-RECEIVED is the SYN-ACK
        return;
      case 'syn-sent':
      case 'closed':
        return;
      case 'fin-wait-2':
      case 'time-wait':
        break;
      default:
        assertNever(st);
    }
    if (this.rcv.ackDue(now)) this.sendAckAt(this.snd.ackSeq());
  }

  /** SenderOutput: a data and/or FIN segment. */
  transmitData(seq: Seq, off: number, len: number, fin: boolean): number {
    const o = this.out;
    const snd = this.snd;
    // Options first: their bytes come out of the payload (Linux's mss_now), so a full segment
    // with SACK blocks still fits the MTU — and at MTU 65,520 the 64 KiB frame buffer.
    this.fillAckFields();
    const segSize = snd.mss - o.optionsLen;
    if (len > segSize && !(this.config.tsoMaxBytes > 0 && len > snd.mss)) {
      len = segSize; // one MSS-sized segment (no offload, or too short for one): trim it
      fin = false;
    }
    o.flags = TcpFlag.ACK;
    if (fin) o.flags |= TcpFlag.FIN;
    if (len > 0 && seqAdd(seq, len) === snd.dataEnd()) o.flags |= TcpFlag.PSH;
    o.seq = seq;
    o.payload = snd.buf.buffer;
    o.payloadOff = off;
    o.payloadLen = len;
    o.gsoSize = len > segSize ? segSize : 0;
    this.emit();
    return len;
  }

  /** A pure ACK with sequence number `seq` (`ackSeq()`, or SND.UNA − 1 for a keepalive). */
  private sendAckAt(seq: Seq): void {
    const o = this.out;
    o.flags = TcpFlag.ACK;
    o.seq = seq;
    o.payloadLen = 0;
    this.fillAckFields();
    this.emit();
  }

  private fillAckFields(): void {
    const o = this.out;
    const rcv = this.rcv;
    o.ack = rcv.nxt;
    o.window = rcv.windowField();
    o.optionsLen = 0;
    if (this.sackOk) {
      const n = rcv.sackBlocks(SACK_TMP, 4);
      if (n > 0) o.optionsLen = writeTcpOptionsSack(o.options, 0, SACK_TMP, n);
    }
  }

  private sendSyn(now: number, retransmission: boolean): void {
    const o = this.out;
    const active = this.st === 'syn-sent';
    const cfg = this.config;
    o.flags = active ? TcpFlag.SYN : TcpFlag.SYN | TcpFlag.ACK;
    o.seq = this.snd.iss;
    o.ack = active ? seqOf(0) : this.rcv.nxt;
    o.window = this.rcv.synWindow();
    o.optionsLen = writeTcpOptionsSyn(o.options, 0, {
      mss: cfg.mss,
      windowScale: active || this.wsOk ? cfg.windowScale : undefined,
      sackPermitted: active ? cfg.sack : this.sackOk,
    });
    o.payloadLen = 0;
    if (retransmission) this.stats.synRetransmits++;
    this.snd.timeHandshake(now, retransmission);
    this.snd.armHandshakeTimer(now);
    this.emit();
  }

  private sendRst(seq: Seq, withAck: boolean): void {
    const o = this.out;
    o.flags = withAck ? TcpFlag.RST | TcpFlag.ACK : TcpFlag.RST;
    o.seq = seq;
    o.ack = withAck ? this.rcv.nxt : seqOf(0);
    o.window = 0;
    o.optionsLen = 0;
    o.payloadLen = 0;
    this.stats.rstOut++;
    this.emit();
  }

  /** RFC 5961 §7: challenge ACKs, at most `challengeAckPerSecond` per connection. */
  private challengeAck(now: number): void {
    if (now - this.caWindowStart >= 1000) {
      this.caWindowStart = now;
      this.caCount = 0;
    }
    if (this.caCount >= this.config.challengeAckPerSecond) {
      this.stats.challengeAcksLimited++;
      return;
    }
    this.caCount++;
    this.stats.challengeAcks++;
    this.rcv.ackNow = true;
  }

  private emit(): void {
    const o = this.out;
    this.stats.segsOut++;
    this.stats.bytesOut += o.payloadLen;
    if (o.flags & TcpFlag.ACK) this.rcv.ackSent();
    this.host.emit(o);
    o.gsoSize = 0; // the record is shared: only transmitData sets it
  }

  // ───────────────────────────── ReceiverSink ─────────────────────────────

  /** @internal ReceiverSink: in-order data for the app. */
  deliver(buf: Uint8Array, off: number, len: number): void {
    this.host.onData(buf, off, len);
  }

  /** @internal ReceiverSink. */
  get alive(): boolean {
    return !this.isClosed();
  }

  /** A snapshot of the connection's variables (allocates: for logs and tests). */
  info(): TcpInfo {
    const s = this.snd;
    const r = this.rcv;
    return {
      state: this.st,
      sndUna: s.una,
      sndNxt: s.nxt,
      sndMax: s.max,
      sndWnd: s.wnd,
      sndMss: s.mss,
      cwnd: s.cc.cwnd,
      ssthresh: s.cc.ssthresh,
      inRecovery: s.cc.inRecovery,
      srtt: s.rto.srtt,
      rto: s.rto.rto,
      sendQueued: s.buf.length,
      rcvNxt: r.nxt,
      rcvWnd: Math.max(0, (r.rightEdge - r.nxt) | 0),
      rcvHeld: r.held,
      oooBytes: r.oooBytes,
      sackOk: this.sackOk,
      sndWscale: s.wscale,
      rcvWscale: r.wscale,
    };
  }
}
