/**
 * The types at the boundary between a TCP connection and its user (the NAT adapter).
 *
 * Theory of operation: see connection.ts. These are split out so the adapter can implement
 * `TcpHost` and hold `TcpState`/`CloseReason` values without reading the state machine.
 */
import type { TcpOutSegment } from './segment.ts';
import type { TcpConfig, TcpStats } from './config.ts';

export type TcpState =
  | 'syn-sent'
  | 'syn-received'
  | 'established'
  | 'fin-wait-1'
  | 'fin-wait-2'
  | 'close-wait'
  | 'closing'
  | 'last-ack'
  | 'time-wait'
  | 'closed';

/**
 * Why a connection closed: 'fin' both sides finished (after TIME-WAIT when we closed first),
 * 'rst' the guest reset it, 'timeout' retransmissions/keepalive/handshake gave up (we sent a RST
 * where it makes sense), 'abort' the app called `abort()`.
 */
export type CloseReason = 'fin' | 'rst' | 'timeout' | 'abort';

/** 'reuse': a new SYN hit a connection in TIME-WAIT, which closed; handle the segment as a new SYN. */
export type InputResult = 'ok' | 'reuse';

/** What the connection calls. Implemented by the NAT adapter (one object per connection). */
export interface TcpHost {
  /**
   * A segment to send to the guest; `seg` and its buffers are valid only during the call (the
   * record is shared by all connections). Must not call back into any TcpConnection.
   */
  emit(seg: TcpOutSegment): void;
  /** The three-way handshake completed. */
  onEstablished(): void;
  /**
   * In-order bytes from the guest, valid only during the call (copy or write them out now). They
   * count against the receive credit until the app returns them with `recvConsumed(n)`.
   */
  onData(buf: Uint8Array, off: number, len: number): void;
  /** The guest sent FIN: no more data will arrive (half-close). */
  onPeerFin(): void;
  /** Send-buffer space was freed after a `write` that did not take everything. */
  onWritable(): void;
  /** The connection is closed; called exactly once. No further events follow. */
  onClose(reason: CloseReason): void;
  /**
   * Optional. The connection owes the guest a "second full segment" ACK that may wait until the
   * end of the current frame batch: the host then calls `flushDeferredAck(now)` once. Without this
   * method such ACKs go out at once, segment by segment. (See TcpReceiver: stretch ACKs.)
   */
  deferAck?(): void;
  /**
   * The connection entered TIME-WAIT: it holds no data any more, only the 4-tuple. A host with a
   * bounded table may end it early to make room (abort() closes a TIME-WAIT connection silently).
   */
  onTimeWait?(): void;
}

export interface TcpOpenOptions {
  /** Resolved configuration (`resolveTcpConfig`), shared by connections. */
  config: TcpConfig;
  /** Shared counters (`createTcpStats`). */
  stats: TcpStats;
  /** Initial send sequence number; random when omitted. */
  iss?: number;
}

/** A read-only snapshot for logs and tests. */
export interface TcpInfo {
  state: TcpState;
  sndUna: number;
  sndNxt: number;
  sndMax: number;
  sndWnd: number;
  sndMss: number;
  cwnd: number;
  ssthresh: number;
  inRecovery: boolean;
  srtt: number;
  rto: number;
  sendQueued: number;
  rcvNxt: number;
  rcvWnd: number;
  rcvHeld: number;
  oooBytes: number;
  sackOk: boolean;
  sndWscale: number;
  rcvWscale: number;
}
