/**
 * `socket PATH`: a unix datagram socket we bind; the guest (vfkit, qemu `-netdev dgram`) sends
 * Ethernet frames to it, one per datagram.
 *
 * Theory of operation
 *   - Binding: if PATH exists and is a socket nobody serves (a datagram connect is refused), it is
 *     a leftover of a dead process and we replace it. If a live process serves it we refuse with
 *     `EADDRINUSE_LIVE` (the CLI exits 2) rather than steal a running VM's network. A path that
 *     is not a socket at all is never deleted (`EPATH_NOT_SOCKET`).
 *   - Peer: we do not know the guest's address until it speaks. The native port learns it from
 *     the first datagram and connects back (replies need an address; and a connected receiver
 *     lifts the kernel's 10-datagram queue limit for its peer — see node-io.md). Until then
 *     outgoing frames are dropped and counted.
 *   - vfkit's handshake: vfkit sends the 4-byte datagram "VFKT" when it connects. It is consumed,
 *     not delivered and not an error, wherever it appears (a restarted vfkit sends it again).
 *   - A guest that dies leaves us connected to its dead socket, and while we are, the kernel
 *     refuses any other socket's datagrams to us — even its connect() (EPERM): a restarted VM
 *     could not reach us. Every 250 ms we check the peer: its path must still hold the file we
 *     connected to (inode and birth time), and a probe connect must find it alive. If not, we dissolve the association so
 *     the next sender is learned afresh. (A send to the dead socket also dissolves it: the kernel
 *     answers ECONNREFUSED.) A guest restarting within that window may see EPERM once.
 *   - close() removes the socket file, if it is still ours (same inode).
 */
import fs from 'node:fs';
import { debuglog } from 'node:util';
import { loadNative, type NativeAddon } from './native.ts';
import { NativePortLink, type LinkOptions } from './native-link.ts';
import { LinkError, errnoCode, systemError } from './errors.ts';

const trace = debuglog('vmnat-link');

/** How often we check whether the learned peer's socket file was replaced. */
const PEER_CHECK_MS = 250;

const VFKT = [0x56, 0x46, 0x4b, 0x54] as const; // "VFKT"

export class SocketLink extends NativePortLink {
  readonly kind = 'socket' as const;
  readonly path: string;
  /** The guest's socket path once learned ('' for an unnamed sender, undefined before). */
  peer: string | undefined;
  /** vfkit handshakes seen (consumed, not delivered). */
  handshakes = 0;
  private readonly identity: string | undefined;
  private peerIdentity: string | undefined;
  private readonly peerTimer: NodeJS.Timeout;

  private constructor(native: NativeAddon, fd: number, path: string, options: LinkOptions) {
    super(fd, { kind: 'dgram', learnPeer: true }, options, native);
    this.path = path;
    this.identity = fileIdentity(path);
    this.peerTimer = setInterval(() => this.checkPeer(), PEER_CHECK_MS);
    this.peerTimer.unref();
  }

  /** Binds PATH (replacing a stale socket file) and returns the link, not yet started. */
  static open(path: string, options: LinkOptions = {}, native: NativeAddon = loadNative()): SocketLink {
    const fd = bindReplacingStale(native, path);
    try {
      return new SocketLink(native, fd, path, options);
    } catch (err) {
      native.closeFd(fd);
      throw systemError(`socket ${path}`, err);
    }
  }

  describe(): Record<string, string | number> {
    return this.offload ? { path: this.path, offload: 'on' } : { path: this.path };
  }

  protected override consumeShort(d: Uint8Array): boolean {
    if (d.length === 4 && d[0] === VFKT[0] && d[1] === VFKT[1] && d[2] === VFKT[2] && d[3] === VFKT[3]) {
      this.handshakes++;
      trace('socket %s: vfkit handshake', this.path);
      return true;
    }
    return false;
  }

  protected override afterClose(): void {
    clearInterval(this.peerTimer);
    // Remove the file only if it is still the socket we bound (nobody re-bound the path since).
    if (this.identity !== undefined && fileIdentity(this.path) === this.identity) {
      try {
        fs.unlinkSync(this.path);
      } catch {
        // already gone
      }
    }
  }

  protected override onPeerLearned(peerPath: string): void {
    this.peer = peerPath;
    this.peerIdentity = peerPath === '' || peerPath.startsWith('@') ? undefined : fileIdentity(peerPath);
    trace('socket %s: peer %s', this.path, peerPath === '' ? '(unnamed: cannot reply)' : peerPath);
  }

  private checkPeer(): void {
    const peer = this.peer;
    if (peer === undefined || this.peerIdentity === undefined) return;
    let alive: boolean;
    try {
      alive = fileIdentity(peer) === this.peerIdentity && this.native.unixDgramProbe(peer);
    } catch {
      alive = false;
    }
    if (alive) return;
    trace('socket %s: peer %s is gone or was replaced; relearning', this.path, peer);
    this.peer = undefined;
    this.peerIdentity = undefined;
    this.port.resetPeer();
  }
}

/**
 * Which file sits at `path`: inode plus birth time. The inode alone is not enough — a socket file
 * unlinked and re-bound at once often gets the same inode number back (seen on ext4).
 */
export function fileIdentity(path: string): string | undefined {
  try {
    const st = fs.lstatSync(path, { bigint: true });
    return `${st.ino}:${st.birthtimeNs !== 0n ? st.birthtimeNs : st.ctimeNs}`;
  } catch {
    return undefined;
  }
}

function bindReplacingStale(native: NativeAddon, path: string): number {
  try {
    return native.unixDgramBind(path);
  } catch (err) {
    if (errnoCode(err) !== 'EADDRINUSE') throw systemError(`socket ${path}`, err);
  }
  assertReplaceableSocket(path, (p) => native.unixDgramProbe(p));
  try {
    return native.unixDgramBind(path);
  } catch (err) {
    throw systemError(`socket ${path}`, err);
  }
}

/**
 * PATH exists: make sure it is a socket file nobody serves, and remove it. Throws
 * EPATH_NOT_SOCKET / EADDRINUSE_LIVE otherwise. Shared with the stream link.
 */
export function assertReplaceableSocket(path: string, isLive: (path: string) => boolean): void {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(path);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return; // vanished meanwhile: nothing to replace
    throw systemError(`socket ${path}`, err);
  }
  if (!st.isSocket()) {
    throw new LinkError('EPATH_NOT_SOCKET', `${path} exists and is not a socket; refusing to replace it`);
  }
  if (isLive(path)) {
    throw new LinkError('EADDRINUSE_LIVE', `${path} is in use by a running process (another vmnat or VM?)`, {
      errno: 'EADDRINUSE',
    });
  }
  trace('replacing stale socket %s', path);
  try {
    fs.unlinkSync(path);
  } catch (err) {
    if (errnoCode(err) !== 'ENOENT') throw systemError(`socket ${path}`, err);
  }
}
