/**
 * The part every addon-backed link shares (unix datagram socket, inherited fd, TAP).
 *
 * Theory of operation: a native `FramePort` watches the fd on the event loop and hands us one
 * batch at a time as (slab, offsets, count). We turn the batch into `Uint8Array` views over the
 * slab — no copy — drop what is not an Ethernet frame (shorter than the 14-byte header: counted in
 * rxErrors; a subclass may claim some short datagrams first, e.g. vfkit's handshake), and call the
 * handler once. The views and the array holding them are reused by the next batch: a handler that
 * keeps bytes copies them.
 *
 * Sending goes straight to the port, which copies into its queue; `flush()` is one sendmmsg.
 *
 * An exception thrown by the handler is not caught here: the addon hands it to Node's
 * 'uncaughtException' machinery (see native.ts), so a bug in the engine is loud.
 *
 * A fatal port error (TAP deleted, socketpair peer gone) stops receiving and is reported once
 * through `onError`; the link stays open until close().
 */
import { debuglog } from 'node:util';
import { loadNative, RX_L4_CHECKSUM_OK, RX_LENGTH_MASK, type NativeAddon, type NativeFramePort, type NativeFramePortOptions } from './native.ts';
import { COMPLETE_L4_CHECKSUM, createLinkStats, type FrameBatchHandler, type Link, type LinkKind, type LinkStats } from './types.ts';
import { LinkError } from './errors.ts';
import { emptyList } from '../lists.ts';
import type { SocketBuffers } from './buffers.ts';

const trace = debuglog('vmnat-link');

/** The Ethernet header: anything shorter is not a frame. */
export const MIN_FRAME = 14;

/**
 * A FramePort batch (slab, offsets, count) as Uint8Array views over the slab — no copy — with
 * the addon's checksum verdict per frame. The views, the array holding them and the verdicts are
 * reused by the next batch: a handler that keeps bytes copies them.
 */
export class FrameBatchViews {
  readonly frames: Uint8Array[] = [];
  /** Per frame: 1 if its L4 checksum is known good (grown as needed). */
  checksumOk = new Uint8Array(64);
  /** Some frame of the batch has a known-good checksum (else the verdicts need not be passed on). */
  anyChecksumOk = false;
  /** Frame bytes in the batch. */
  bytes = 0;

  /**
   * Fills `frames` from a batch. `trustChecksums`: every frame counts as verified (an offloading
   * VM leaves them partial). Datagrams shorter than an Ethernet header go to `onShort` instead.
   */
  read(slab: Buffer, offsets: Int32Array, count: number, trustChecksums: boolean, onShort: (datagram: Uint8Array) => void): void {
    const frames = this.frames;
    emptyList(frames);
    if (this.checksumOk.length < count) this.checksumOk = new Uint8Array(count);
    const checksumOk = this.checksumOk;
    const buffer = slab.buffer;
    const base = slab.byteOffset;
    let bytes = 0;
    let anyOk = false;
    for (let i = 0; i < count; i++) {
      const word = offsets[2 * i + 1] ?? 0;
      const len = word & RX_LENGTH_MASK;
      const view = new Uint8Array(buffer, base + (offsets[2 * i] ?? 0), len);
      if (len < MIN_FRAME) {
        onShort(view);
        continue;
      }
      const ok = trustChecksums || (word & RX_L4_CHECKSUM_OK) !== 0;
      checksumOk[frames.length] = ok ? 1 : 0;
      anyOk ||= ok;
      frames.push(view);
      bytes += len;
    }
    this.bytes = bytes;
    this.anyChecksumOk = anyOk;
  }
}

export interface LinkOptions {
  /** Called once when a running link fails for good (e.g. its TAP was deleted). */
  onError?: (err: LinkError) => void;
  /**
   * Datagram links (--socket/--fd ... --offload): the VM offloads as krunkit's `offloading=on`
   * (libkrun's unixgram backend) does. There is no virtio-net header on the wire: its frames may
   * be up to 64 KiB (TSO) with TCP/UDP checksums left partial and unmarked, and it takes frames
   * up to 64 KiB from us — with complete checksums, since nothing could say they are partial.
   * So received checksums are trusted (as a kernel trusts CHECKSUM_PARTIAL from a local VM), and
   * large TCP frames go out whole with the checksum summed in C (COMPLETE_L4_CHECKSUM).
   */
  offload?: boolean;
}

export abstract class NativePortLink implements Link {
  abstract readonly kind: LinkKind;
  protected readonly native: NativeAddon;
  protected readonly port: NativeFramePort;
  private handler: FrameBatchHandler | undefined;
  private readonly batch = new FrameBatchViews();
  private readonly onShort = (view: Uint8Array): void => {
    if (!this.consumeShort(view)) {
      this.rx.rxErrors++;
      trace('%s: dropped %d-byte datagram (shorter than an Ethernet header)', this.kind, view.length);
    }
  };
  private readonly rx = createLinkStats();
  private closed = false;
  private readonly onError: ((err: LinkError) => void) | undefined;
  private readonly portFd: number;
  private readonly datagram: boolean;
  /** Takes TCP frames larger than the MTU (a vnet-header TAP, or an offloading datagram link). */
  readonly gso: boolean;
  /** An offloading datagram link (LinkOptions.offload). */
  readonly offload: boolean;

  protected constructor(
    fd: number,
    portOptions: Omit<NativeFramePortOptions, 'onFrames' | 'onError' | 'onPeer'>,
    options: LinkOptions,
    native: NativeAddon = loadNative(),
  ) {
    this.native = native;
    this.onError = options.onError;
    this.portFd = fd;
    this.datagram = portOptions.kind === 'dgram';
    this.offload = this.datagram && options.offload === true;
    this.gso = portOptions.vnetHdr === true || this.offload;
    this.port = new native.FramePort(fd, {
      ...portOptions,
      onFrames: (slab, offsets, count) => this.onBatch(slab, offsets, count),
      onError: (code) => this.onPortError(code),
      onPeer: (peerPath) => this.onPeerLearned(peerPath),
    });
  }

  abstract describe(): Record<string, string | number>;

  /**
   * A subclass's chance to consume a short datagram that is not a frame but not an error either
   * (vfkit's "VFKT"). Return true to swallow it.
   */
  protected consumeShort(_datagram: Uint8Array): boolean {
    return false;
  }

  /** learnPeer ports: the port connected back to a new sender. */
  protected onPeerLearned(_peerPath: string): void {}

  /** A datagram socket's granted buffer sizes (see buffers.ts); undefined for a TAP or once closed. */
  socketBuffers(): SocketBuffers | undefined {
    if (!this.datagram || this.closed) return undefined;
    return this.native.socketBufferSizes(this.portFd);
  }

  start(handler: FrameBatchHandler): void {
    if (this.closed) return;
    this.handler = handler;
    this.port.start();
  }

  /** The addon completes TCP/UDP checksums while it queues a frame (COMPLETE_L4_CHECKSUM). */
  readonly completesChecksums = true;

  /** Software GSO in C (Link.segments): every native port can. */
  readonly segments = true;
  softGso = false;

  send(frame: Uint8Array, gsoSize?: number): boolean {
    if (this.closed) return false;
    if (gsoSize === undefined) return this.port.send(frame);
    if (this.softGso) {
      // The peer takes MTU-sized frames with complete checksums: the addon cuts and sums them.
      if (gsoSize > 0) return this.port.sendGso(frame, gsoSize);
      return this.port.send(frame, COMPLETE_L4_CHECKSUM);
    }
    // No header to say a checksum is partial: the offloading VM gets it complete, summed in C.
    if (this.offload && gsoSize >= 0) return this.port.send(frame, COMPLETE_L4_CHECKSUM);
    return this.port.send(frame, gsoSize);
  }

  flush(): void {
    if (!this.closed) this.port.flush();
  }

  get stats(): LinkStats {
    const n = this.port.stats();
    return {
      rxFrames: this.rx.rxFrames,
      rxBytes: this.rx.rxBytes,
      txFrames: n.txFrames,
      txBytes: n.txBytes,
      txDropped: n.txDropped,
      rxErrors: this.rx.rxErrors + n.rxErrors,
      txGsoFrames: n.txGsoFrames,
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.handler = undefined;
    this.port.close();
    this.afterClose();
  }

  /** Subclass cleanup after the fd is closed (remove a socket file, …). */
  protected afterClose(): void {}

  private onBatch(slab: Buffer, offsets: Int32Array, count: number): void {
    const handler = this.handler;
    if (handler === undefined) return;
    const batch = this.batch;
    batch.read(slab, offsets, count, this.offload, this.onShort);
    const frames = batch.frames;
    if (frames.length === 0) return;
    this.rx.rxFrames += frames.length;
    this.rx.rxBytes += batch.bytes;
    handler(frames, batch.anyChecksumOk ? batch.checksumOk : undefined);
  }

  private onPortError(code: string): void {
    const err = new LinkError('ELINK_FAILED', `${this.kind} link ${JSON.stringify(this.describe())} failed: ${code}`, {
      errno: code,
    });
    trace('%s', err.message);
    this.onError?.(err);
  }
}
