/**
 * `stream PATH`: a unix stream socket we listen on, speaking qemu's stream framing (4-byte
 * big-endian length, then the frame; see qemu-framing.ts) both ways. For qemu
 * `-netdev stream,addr.type=unix,addr.path=PATH` (and `-netdev socket,connect=` style peers).
 *
 * Theory of operation
 *   - Listening and stale files as for the `socket` link: a socket file nobody serves is replaced,
 *     a live one is refused with EADDRINUSE_LIVE, a non-socket is never deleted.
 *   - Each accepted connection is a `StreamConn` with its own decoder. Driven by the engine
 *     (`acceptPorts`), every connection is a guest of its own: a `StreamPort` link, one port of
 *     the switch, gone when its connection closes (a guest that reconnects is a new port).
 *     Driven alone (`start`), the newest connection wins: it replaces the old one, which is
 *     closed, and all received frames go to the one handler.
 *   - Frames are delivered one batch per received chunk; the frames are views into the chunk (or
 *     the decoder's assembly buffer), valid during the call. Shorter than 14 bytes: rxErrors.
 *     A length prefix of 0 or above qemu's limit means the peer does not speak this framing:
 *     counted in rxErrors and the connection is closed (a length-prefixed stream cannot resync).
 *   - Sending: send() writes prefix + frame into a 256 KiB staging buffer; flush() hands the
 *     filled part to the socket in one write, and later frames continue after it in the same
 *     buffer (the socket holds a view of what it still has to write; a fresh buffer is taken only
 *     when one fills). When the socket's own queue exceeds TX_BACKLOG_MAX (the guest does not
 *     read), frames are dropped and counted rather than queued without bound.
 *   - Connections accepted before start() are paused until start().
 *   - close() stops listening, closes connections and removes the socket file if still ours.
 */
import fs from 'node:fs';
import net from 'node:net';
import { debuglog } from 'node:util';
import { COMPLETE_L4_CHECKSUM, createLinkStats, type FrameBatchHandler, type Link, type LinkStats } from './types.ts';
import { loadNative, type NativeAddon } from './native.ts';
import { QEMU_MAX_FRAME, QemuFrameDecoder, writeQemuHeader } from './qemu-framing.ts';
import { MIN_FRAME } from './native-link.ts';
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

/** One accepted guest connection. */
class StreamConn {
  readonly decoder = new QemuFrameDecoder();
  /** Staging buffer for outgoing frames: [txStart, txFill) is queued, not yet written. */
  private tx: Buffer = Buffer.allocUnsafe(TX_CHUNK);
  private txStart = 0;
  private txFill = 0;
  private txPendingFrames = 0;
  private txPendingBytes = 0;

  constructor(readonly socket: net.Socket, readonly id: number) {}

  /**
   * Queues one frame; false if the guest is not reading (backlog full). `gsoSize` (the links'
   * contract, Link.send): above 0, a large TCP frame the addon cuts into MTU-sized pieces here;
   * 0 or COMPLETE_L4_CHECKSUM, a frame whose checksum the addon completes.
   */
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

  /** Frames queued but never flushed (on close). */
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
  private readonly server: net.Server;
  private readonly identity: string | undefined;
  private readonly conns = new Set<StreamConn>();
  /** Where send() goes: the newest connection. */
  private active: StreamConn | undefined;
  private handler: FrameBatchHandler | undefined;
  /** Set by acceptPorts: every connection becomes a port of its own. */
  private portHooks: { onPort: (port: Link) => void; onGone: (port: Link) => void } | undefined;
  private readonly ports = new Map<StreamConn, StreamPort>();
  private readonly frames: Uint8Array[] = [];
  private closed = false;
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
    for (const c of this.conns) c.socket.resume();
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
      c.socket.destroy();
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
    const conn = new StreamConn(socket, ++this.connectionsAccepted);
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
    socket.pause();
    socket.on('data', (chunk: Buffer) => this.onData(conn, chunk));
    socket.on('error', (err) => trace('stream %s: connection %d: %s', this.path, conn.id, err.message));
    socket.on('close', () => {
      if (this.conns.delete(conn)) conn.dropPending(this.stats);
      if (this.active === conn) this.active = undefined;
      const port = this.ports.get(conn);
      if (port !== undefined) {
        this.ports.delete(conn);
        this.portHooks?.onGone(port);
      }
      trace('stream %s: connection %d closed', this.path, conn.id);
    });
    if (this.portHooks !== undefined) this.openPort(conn);
    else if (this.handler !== undefined) socket.resume();
  }

  /** @internal */
  drop(conn: StreamConn): void {
    conn.dropPending(this.stats);
    this.conns.delete(conn);
    if (this.active === conn) this.active = undefined;
    conn.socket.destroy();
  }

  /** @internal Frames of `conn` (a port's, when ports are on), counted on `stats`. */
  onData(conn: StreamConn, chunk: Buffer): void {
    const frames = this.frames;
    emptyList(frames);
    const result = conn.decoder.decode(chunk, frames);
    let n = 0;
    let bytes = 0;
    for (const f of frames) {
      if (f.length < MIN_FRAME) {
        this.stats.rxErrors++;
        continue;
      }
      frames[n++] = f;
      bytes += f.length;
    }
    frames.length = n;
    if (!result.ok) {
      this.stats.rxErrors++;
      trace('stream %s: connection %d sent length %d (limit %d): closing it', this.path, conn.id, result.badLength, QEMU_MAX_FRAME);
      this.drop(conn);
    }
    const port = this.ports.get(conn);
    const handler = port !== undefined ? port.handler : this.handler;
    if (n === 0 || handler === undefined) return;
    this.stats.rxFrames += n;
    this.stats.rxBytes += bytes;
    if (port !== undefined) {
      port.stats.rxFrames += n;
      port.stats.rxBytes += bytes;
    }
    handler(frames);
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
    this.conn.socket.resume();
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

