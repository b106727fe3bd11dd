/**
 * `stream PATH`: a unix stream socket we listen on, speaking qemu's stream framing (4-byte
 * big-endian length, then the frame; see qemu-framing.ts) both ways. For qemu
 * `-netdev stream,addr.type=unix,addr.path=PATH` (and `-netdev socket,connect=` style peers).
 *
 * Theory of operation
 *   - Listening and stale files as for the `socket` link: a socket file nobody serves is replaced,
 *     a live one is refused with EADDRINUSE_LIVE, a non-socket is never deleted.
 *   - Each accepted connection is a `StreamConn`. Driven by the engine
 *     (`acceptPorts`), every connection is a guest of its own: a `StreamPort` link, one port of
 *     the switch, gone when its connection closes (a guest that reconnects is a new port).
 *     Driven alone (`start`), the newest connection wins: it replaces the old one, which is
 *     closed, and all received frames go to the one handler.
 *   - Each connection's bytes are carried by the addon where it loads (`NativeStreamConn`): the
 *     accepted socket's descriptor is duplicated out of Node's net.Server and handed to a
 *     FramePort in its 'stream' mode, which reads, splits the framing and checks checksums in C,
 *     one JS call per batch of frames, and writes the queue of prefixed frames with one sendmsg
 *     (native/src/frame_port.cc). Without the addon a net.Socket carries it (`JsStreamConn`, with a
 *     decoder of its own).
 *   - Frames are delivered one batch per received chunk; the frames are views into the chunk (or
 *     the decoder's or the addon's buffer), valid during the call. Shorter than 14 bytes: rxErrors.
 *     A length prefix of 0 or above qemu's limit means the peer does not speak this framing:
 *     counted in rxErrors and the connection is closed (a length-prefixed stream cannot resync).
 *   - Sending (JsStreamConn): send() writes prefix + frame into a 256 KiB staging buffer; flush()
 *     hands the filled part to the socket in one write, and later frames continue after it in the
 *     same buffer (the socket holds a view of what it still has to write; a fresh buffer is taken
 *     only when one fills). When the socket's own queue exceeds TX_BACKLOG_MAX (the guest does not
 *     read), frames are dropped and counted rather than queued without bound; the addon bounds
 *     its queue the same way (4 MiB).
 *   - Connections accepted before start() are paused until start().
 *   - close() stops listening, closes connections and removes the socket file if still ours.
 */
import fs from 'node:fs';
import net from 'node:net';
import { debuglog } from 'node:util';
import { COMPLETE_L4_CHECKSUM, createLinkStats, type FrameBatchHandler, type Link, type LinkStats } from './types.ts';
import { loadNative, socketDescriptor, type NativeAddon, type NativeFramePort } from './native.ts';
import { QEMU_MAX_FRAME, QemuFrameDecoder, writeQemuHeader } from './qemu-framing.ts';
import { FrameBatchViews, MIN_FRAME } from './native-link.ts';
import { assertReplaceableSocket, fileIdentity } from './socket.ts';
import { LinkError, errnoCode, systemError } from './errors.ts';
import { emptyList } from '../lists.ts';

const trace = debuglog('vmnat-link');

const TX_CHUNK = 256 * 1024;
/** Bytes we let pile up in one connection's socket before dropping frames. */
const TX_BACKLOG_MAX = 4 * 1024 * 1024;
/** How long a liveness probe of an existing socket file may take. */
const PROBE_TIMEOUT_MS = 1000;

export interface StreamLinkOptions {
  /** Called once if the listening socket fails for good. */
  onError?: (err: LinkError) => void;
}

/**
 * The addon, for checksums and software GSO in C (Link.segments, completesChecksums); undefined
 * where it does not load (the link then takes complete frames only, as before).
 */
let nativeForStream: NativeAddon | null | undefined;
function streamNative(): NativeAddon | undefined {
  if (nativeForStream === undefined) {
    try {
      nativeForStream = loadNative();
    } catch {
      nativeForStream = null;
    }
  }
  return nativeForStream ?? undefined;
}
const gsoCounts = new Uint32Array(1);

/** What a connection reports to its listener. */
interface ConnEvents {
  /** A batch of frames (views valid during the call), with the addon's checksum verdicts if any. */
  frames(conn: StreamConn, frames: Uint8Array[], l4ChecksumOk: Uint8Array | undefined, bytes: number): void;
  /** Bytes that were not a frame (shorter than an Ethernet header, or a bad length prefix). */
  rxError(conn: StreamConn): void;
  /** The connection is gone (the guest closed it, it failed, or we destroyed it); once. */
  closed(conn: StreamConn): void;
}

/** One accepted guest connection, whichever way its bytes are carried. */
interface StreamConn {
  readonly id: number;
  /** Starts delivering frames (connections wait, paused, until the link or their port starts). */
  resume(): void;
  /**
   * Queues one frame; false if the guest is not reading (backlog full). `gsoSize` (the links'
   * contract, Link.send): above 0, a large TCP frame cut into MTU-sized pieces in C; 0 or
   * COMPLETE_L4_CHECKSUM, a frame whose checksum is completed in C.
   */
  enqueue(frame: Uint8Array, stats: LinkStats, gsoSize?: number): boolean;
  flush(stats: LinkStats): void;
  /** Frames queued but never flushed (on close). */
  dropPending(stats: LinkStats): void;
  destroy(): void;
}

/** The length of an Ethernet + IPv4/IPv6 + TCP header (what every software GSO piece repeats). */
function tcpHeadersLength(frame: Uint8Array): number {
  const l4 = frame[12] === 0x86 ? 54 : 14 + ((frame[14] ?? 0) & 0x0f) * 4;
  return l4 + ((frame[l4 + 12] ?? 0) >> 4) * 4;
}

/** A connection carried by the addon: a FramePort in its 'stream' mode owns the descriptor. */
class NativeStreamConn implements StreamConn {
  private readonly port: NativeFramePort;
  private readonly batch = new FrameBatchViews();
  private readonly onShort = (): void => this.events.rxError(this);
  private txPendingFrames = 0;
  private txPendingBytes = 0;
  private started = false;
  private gone = false;

  constructor(
    native: NativeAddon,
    fd: number,
    readonly id: number,
    private readonly events: ConnEvents,
  ) {
    this.port = new native.FramePort(fd, {
      kind: 'stream',
      maxFrame: QEMU_MAX_FRAME,
      onFrames: (slab, offsets, count) => this.onBatch(slab, offsets, count),
      onError: (code) => this.onPortError(code),
    });
  }

  resume(): void {
    if (this.started || this.gone) return;
    this.started = true;
    this.port.start();
  }

  enqueue(frame: Uint8Array, stats: LinkStats, gsoSize?: number): boolean {
    if (this.gone) return false;
    if (gsoSize !== undefined && gsoSize > 0) {
      if (!this.port.sendGso(frame, gsoSize)) return false;
      const hdr = tcpHeadersLength(frame);
      const pieces = Math.max(1, Math.ceil((frame.length - hdr) / gsoSize));
      this.txPendingFrames += pieces;
      this.txPendingBytes += frame.length + (pieces - 1) * hdr;
      if (pieces > 1) stats.txGsoFrames = (stats.txGsoFrames ?? 0) + 1;
      return true;
    }
    const complete = gsoSize === 0 || gsoSize === COMPLETE_L4_CHECKSUM;
    if (!(complete ? this.port.send(frame, COMPLETE_L4_CHECKSUM) : this.port.send(frame))) return false;
    this.txPendingFrames++;
    this.txPendingBytes += frame.length;
    return true;
  }

  flush(stats: LinkStats): void {
    if (this.txPendingFrames === 0) return;
    this.port.flush();
    stats.txFrames += this.txPendingFrames;
    stats.txBytes += this.txPendingBytes;
    this.txPendingFrames = 0;
    this.txPendingBytes = 0;
  }

  dropPending(stats: LinkStats): void {
    stats.txDropped += this.txPendingFrames;
    this.txPendingFrames = 0;
    this.txPendingBytes = 0;
  }

  destroy(): void {
    if (this.gone) return;
    this.gone = true;
    this.port.close();
    // As a net.Socket's 'close' comes after destroy(): never inside the caller's own call.
    queueMicrotask(() => this.events.closed(this));
  }

  private onBatch(slab: Buffer, offsets: Int32Array, count: number): void {
    const batch = this.batch;
    batch.read(slab, offsets, count, false, this.onShort);
    if (batch.frames.length > 0) this.events.frames(this, batch.frames, batch.anyChecksumOk ? batch.checksumOk : undefined, batch.bytes);
  }

  private onPortError(code: string): void {
    // EPROTO: a length prefix out of range (counted in the port; the listener counts it too).
    if (code === 'EPROTO') {
      this.events.rxError(this);
      trace('stream: connection %d sent a bad length prefix (limit %d): closing it', this.id, QEMU_MAX_FRAME);
    } else if (code !== 'EOF') {
      trace('stream: connection %d: %s', this.id, code);
    }
    this.destroy();
  }
}

/** A connection carried by a net.Socket (the addon did not load, or Node hid the descriptor). */
class JsStreamConn implements StreamConn {
  readonly decoder = new QemuFrameDecoder();
  private readonly frames: Uint8Array[] = [];
  /** Staging buffer for outgoing frames: [txStart, txFill) is queued, not yet written. */
  private tx: Buffer = Buffer.allocUnsafe(TX_CHUNK);
  private txStart = 0;
  private txFill = 0;
  private txPendingFrames = 0;
  private txPendingBytes = 0;

  constructor(
    readonly socket: net.Socket,
    readonly id: number,
    private readonly events: ConnEvents,
  ) {
    socket.pause();
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => trace('stream: connection %d: %s', id, err.message));
    socket.on('close', () => events.closed(this));
  }

  resume(): void {
    this.socket.resume();
  }

  destroy(): void {
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    const frames = this.frames;
    emptyList(frames);
    const result = this.decoder.decode(chunk, frames);
    let n = 0;
    let bytes = 0;
    for (const f of frames) {
      if (f.length < MIN_FRAME) {
        this.events.rxError(this);
        continue;
      }
      frames[n++] = f;
      bytes += f.length;
    }
    frames.length = n;
    if (!result.ok) {
      this.events.rxError(this);
      trace('stream: connection %d sent length %d (limit %d): closing it', this.id, result.badLength, QEMU_MAX_FRAME);
      this.socket.destroy();
    }
    if (n > 0) this.events.frames(this, frames, undefined, bytes);
  }

  enqueue(frame: Uint8Array, stats: LinkStats, gsoSize?: number): boolean {
    if (this.socket.destroyed || this.socket.writableLength + (this.txFill - this.txStart) > TX_BACKLOG_MAX) {
      return false;
    }
    if (gsoSize !== undefined && gsoSize > 0) {
      const native = streamNative();
      if (native === undefined) return false;
      let n = native.gsoInto(frame, gsoSize, this.tx, this.txFill, true, gsoCounts);
      if (n === 0) {
        this.flush(stats);
        // Pieces of a 64 KiB frame take at most ~46 headers more than the frame itself.
        this.tx = Buffer.allocUnsafe(Math.max(TX_CHUNK, frame.length * 2));
        this.txStart = 0;
        this.txFill = 0;
        n = native.gsoInto(frame, gsoSize, this.tx, this.txFill, true, gsoCounts);
      }
      if (n <= 0) return false;
      this.txFill += n;
      this.txPendingFrames += gsoCounts[0]!;
      this.txPendingBytes += n - 4 * gsoCounts[0]!;
      stats.txGsoFrames = (stats.txGsoFrames ?? 0) + 1;
      return true;
    }
    const need = frame.length + 4;
    if (this.txFill + need > this.tx.length) {
      this.flush(stats);
      if (this.txFill + need > this.tx.length) {
        this.tx = Buffer.allocUnsafe(Math.max(TX_CHUNK, need));
        this.txStart = 0;
        this.txFill = 0;
      }
    }
    writeQemuHeader(this.tx, this.txFill, frame.length);
    this.tx.set(frame, this.txFill + 4);
    if (gsoSize === 0 || gsoSize === COMPLETE_L4_CHECKSUM) streamNative()?.completeL4Checksum(this.tx.subarray(this.txFill + 4, this.txFill + need));
    this.txFill += need;
    this.txPendingFrames++;
    this.txPendingBytes += frame.length;
    return true;
  }

  flush(stats: LinkStats): void {
    if (this.txFill === this.txStart) return;
    if (!this.socket.destroyed) {
      this.socket.write(this.tx.subarray(this.txStart, this.txFill));
      stats.txFrames += this.txPendingFrames;
      stats.txBytes += this.txPendingBytes;
    } else {
      stats.txDropped += this.txPendingFrames;
    }
    this.txStart = this.txFill;
    this.txPendingFrames = 0;
    this.txPendingBytes = 0;
  }

  dropPending(stats: LinkStats): void {
    stats.txDropped += this.txPendingFrames;
    this.txPendingFrames = 0;
    this.txPendingBytes = 0;
    this.txStart = this.txFill;
  }
}

export class StreamLink implements Link {
  readonly kind = 'stream' as const;
  readonly path: string;
  readonly stats: LinkStats = createLinkStats();
  /** Guest connections accepted so far (including replaced ones). */
  connectionsAccepted = 0;
  /** Of those, the ones the addon carried (the rest had a net.Socket: no addon, or no descriptor). */
  connectionsInAddon = 0;
  private readonly server: net.Server;
  private readonly identity: string | undefined;
  private readonly conns = new Set<StreamConn>();
  /** Where send() goes: the newest connection. */
  private active: StreamConn | undefined;
  private handler: FrameBatchHandler | undefined;
  /** Set by acceptPorts: every connection becomes a port of its own. */
  private portHooks: { onPort: (port: Link) => void; onGone: (port: Link) => void } | undefined;
  private readonly ports = new Map<StreamConn, StreamPort>();
  private closed = false;
  private readonly connEvents: ConnEvents = {
    frames: (conn, frames, l4ChecksumOk, bytes) => this.deliver(conn, frames, l4ChecksumOk, bytes),
    rxError: (conn) => {
      this.stats.rxErrors++;
      const port = this.ports.get(conn);
      if (port !== undefined) port.stats.rxErrors++;
    },
    closed: (conn) => this.connClosed(conn),
  };
  private readonly onError: ((err: LinkError) => void) | undefined;

  private constructor(server: net.Server, path: string, options: StreamLinkOptions) {
    this.server = server;
    this.path = path;
    this.onError = options.onError;
    this.identity = fileIdentity(path);
    server.on('connection', (socket) => this.accept(socket));
    server.on('error', (err) => {
      const e = systemError(`stream ${path}`, err);
      trace('%s', e.message);
      this.onError?.(new LinkError('ELINK_FAILED', e.message, { cause: err, errno: errnoCode(err) }));
    });
  }

  /** Listens on PATH (replacing a stale socket file). The link delivers nothing until start(). */
  static async open(path: string, options: StreamLinkOptions = {}): Promise<StreamLink> {
    let server: net.Server;
    try {
      server = await listen(path);
    } catch (err) {
      if (errnoCode(err) !== 'EADDRINUSE') throw systemError(`stream ${path}`, err);
      const live = await probeStream(path);
      assertReplaceableSocket(path, () => live);
      try {
        server = await listen(path);
      } catch (err2) {
        throw systemError(`stream ${path}`, err2);
      }
    }
    return new StreamLink(server, path, options);
  }

  describe(): Record<string, string | number> {
    return { path: this.path };
  }

  start(handler: FrameBatchHandler): void {
    if (this.closed) return;
    this.handler = handler;
    for (const c of this.conns) c.resume();
  }

  acceptPorts(onPort: (port: Link) => void, onGone: (port: Link) => void): void {
    if (this.closed) return;
    this.portHooks = { onPort, onGone };
    for (const c of this.conns) this.openPort(c);
  }

  private openPort(conn: StreamConn): void {
    const hooks = this.portHooks!;
    const port = new StreamPort(this, conn);
    this.ports.set(conn, port);
    hooks.onPort(port);
  }

  /** Checksums and software GSO in C, where the addon loads (see StreamConn.enqueue). */
  readonly completesChecksums = streamNative() !== undefined;
  readonly segments = streamNative() !== undefined;
  softGso = false;

  send(frame: Uint8Array, gsoSize?: number): boolean {
    const conn = this.active;
    if (this.closed || conn === undefined || !conn.enqueue(frame, this.stats, gsoSize)) {
      this.stats.txDropped++;
      return false;
    }
    return true;
  }

  flush(): void {
    this.active?.flush(this.stats);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.handler = undefined;
    const closing = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const c of this.conns) {
      c.dropPending(this.stats);
      c.destroy();
    }
    this.conns.clear();
    for (const p of this.ports.values()) this.portHooks?.onGone(p);
    this.ports.clear();
    this.active = undefined;
    await closing;
    // libuv unlinks the path when the listening pipe closes; make sure, but only if still ours.
    if (this.identity !== undefined && fileIdentity(this.path) === this.identity) {
      try {
        fs.unlinkSync(this.path);
      } catch {
        // already gone
      }
    }
  }

  private accept(socket: net.Socket): void {
    if (this.closed) {
      socket.destroy();
      return;
    }
    const conn = this.carry(socket, ++this.connectionsAccepted);
    if (this.portHooks === undefined) {
      // Alone, newest wins (a reconnecting guest).
      for (const old of this.conns) {
        trace('stream %s: connection %d replaced by %d', this.path, old.id, conn.id);
        this.drop(old);
      }
      this.active = conn;
    }
    this.conns.add(conn);
    trace('stream %s: guest connected (%d)', this.path, conn.id);
    if (this.portHooks !== undefined) this.openPort(conn);
    else if (this.handler !== undefined) conn.resume();
  }

  /**
   * The accepted socket's bytes go to the addon where it loads: its descriptor is duplicated and
   * the net.Socket destroyed (closing only Node's descriptor; Node has read nothing yet, this
   * runs inside its 'connection' event). Else the net.Socket carries them.
   */
  private carry(socket: net.Socket, id: number): StreamConn {
    const native = streamNative();
    const fd = socketDescriptor(socket);
    if (native !== undefined && fd !== undefined) {
      let copy = -1;
      try {
        copy = native.dupFd(fd);
        const conn = new NativeStreamConn(native, copy, id, this.connEvents);
        socket.destroy();
        this.connectionsInAddon++;
        return conn;
      } catch (err) {
        trace('stream %s: connection %d stays on a net.Socket: %s', this.path, id, (err as Error).message);
        if (copy >= 0) fs.closeSync(copy);
      }
    }
    return new JsStreamConn(socket, id, this.connEvents);
  }

  private connClosed(conn: StreamConn): void {
    if (this.conns.delete(conn)) conn.dropPending(this.stats);
    if (this.active === conn) this.active = undefined;
    const port = this.ports.get(conn);
    if (port !== undefined) {
      this.ports.delete(conn);
      this.portHooks?.onGone(port);
    }
    trace('stream %s: connection %d closed', this.path, conn.id);
  }

  /** @internal */
  drop(conn: StreamConn): void {
    conn.dropPending(this.stats);
    this.conns.delete(conn);
    if (this.active === conn) this.active = undefined;
    conn.destroy();
  }

  /** Frames of `conn` (a port's, when ports are on), counted on `stats`. */
  private deliver(conn: StreamConn, frames: Uint8Array[], l4ChecksumOk: Uint8Array | undefined, bytes: number): void {
    const port = this.ports.get(conn);
    const handler = port !== undefined ? port.handler : this.handler;
    if (handler === undefined) return;
    const n = frames.length;
    this.stats.rxFrames += n;
    this.stats.rxBytes += bytes;
    if (port !== undefined) {
      port.stats.rxFrames += n;
      port.stats.rxBytes += bytes;
    }
    handler(frames, l4ChecksumOk);
  }
}

/** One guest's connection on a stream socket, as a switch port (see `StreamLink.acceptPorts`). */
class StreamPort implements Link {
  readonly kind = 'stream' as const;
  readonly stats: LinkStats = createLinkStats();
  handler: FrameBatchHandler | undefined;

  constructor(
    private readonly listener: StreamLink,
    private readonly conn: StreamConn,
  ) {}

  describe(): Record<string, string | number> {
    return { path: this.listener.path, connection: this.conn.id };
  }

  start(handler: FrameBatchHandler): void {
    this.handler = handler;
    this.conn.resume();
  }

  readonly completesChecksums = streamNative() !== undefined;
  readonly segments = streamNative() !== undefined;
  softGso = false;
  /** This port's send counters as the listener's counters last took them in (see flush). */
  private counted: LinkStats = createLinkStats();

  send(frame: Uint8Array, gsoSize?: number): boolean {
    if (!this.conn.enqueue(frame, this.stats, gsoSize)) {
      this.stats.txDropped++;
      this.listener.stats.txDropped++;
      this.counted.txDropped++; // the listener has this one already
      return false;
    }
    return true;
  }

  flush(): void {
    // The listener's own counters add up its ports' (as for received frames), so the stream
    // link's line in the counters shows what it sent.
    // What this port counted since the listener last took its share (a full staging buffer also
    // flushes from inside send(), so the difference around this call alone would miss frames).
    const s = this.stats;
    this.conn.flush(s);
    const l = this.listener.stats;
    const c = this.counted;
    l.txFrames += s.txFrames - c.txFrames;
    l.txBytes += s.txBytes - c.txBytes;
    l.txDropped += s.txDropped - c.txDropped;
    if (s.txGsoFrames !== undefined) l.txGsoFrames = (l.txGsoFrames ?? 0) + s.txGsoFrames - (c.txGsoFrames ?? 0);
    this.counted = { ...s };
  }

  async close(): Promise<void> {
    this.listener.drop(this.conn);
  }
}

function listen(path: string): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const server = net.createServer({ pauseOnConnect: false });
    const onError = (err: Error): void => {
      server.close();
      reject(err);
    };
    server.once('error', onError);
    server.listen(path, () => {
      server.off('error', onError);
      resolve(server);
    });
  });
}

/** True if someone accepts a stream connection on PATH (or it is a live socket of another type). */
function probeStream(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(path);
    const done = (live: boolean): void => {
      clearTimeout(timer);
      s.destroy();
      resolve(live);
    };
    const timer = setTimeout(() => done(true), PROBE_TIMEOUT_MS);
    s.once('connect', () => done(true));
    s.once('error', (err) => {
      const code = errnoCode(err);
      done(!(code === 'ECONNREFUSED' || code === 'ENOENT'));
    });
  });
}

