/**
 * The native addon's contract (native/src/*.cc implements it) and its loader.
 *
 * Theory of operation: the addon is a thin layer over system calls Node lacks: AF_UNIX datagram
 * sockets, socketpair, TAP devices (optionally opened inside another network namespace), and a
 * `FramePort` that watches one fd with a `uv_poll_t` on the main loop and moves frames in batches
 * (recvmmsg/sendmmsg on sockets; read()/write() loops on a TAP), `PingSocket`, an unprivileged
 * ICMP echo socket, and `HostTcp`, the host sockets of dialed TCP flows (reads into one buffer,
 * writes with send(); JavaScript keeps the TCP state machine). Per frame it also does the work
 * JavaScript should not: TCP/UDP checksums (verified on receive, completed on send) and software
 * GSO (`sendGso`, `gsoInto`: a 64 KiB TCP frame cut into MTU-sized ones). It holds no protocol
 * state.
 *
 * Errors thrown by the addon are `Error`s with `code` set to the errno name (`EADDRINUSE`,
 * `ENOENT`, `EPERM`, …) and `syscall` set to the failing call.
 *
 * An exception thrown by a JS callback (onFrames, onPeer, onError) does not unwind through libuv:
 * the addon passes it to Node's 'uncaughtException' machinery (napi_fatal_exception). Without a
 * listener the process reports it and exits; with one, the port keeps running.
 *
 * Two builds of the same sources can sit side by side (native/src/platform.h): the normal one
 * (native/build: on Linux the recvmmsg/sendmmsg path, on macOS the portable path) and, on Linux,
 * the portable one (native/portable/build, `VMNAT_PORTABLE=1 npm run build:native`: every platform
 * guard on its macOS branch). VMNAT_NATIVE=portable loads the latter. The variable is read once,
 * at the first load, and child processes inherit it, so one test run exercises one build
 * end to end (the engine, vmnat children it spawns, scripts that load the addon by path).
 */
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

/**
 * Receives one batch. `slab` is reused by the next batch: frames are valid only during the call.
 * Frame i occupies `slab[offsets[2*i] .. offsets[2*i] + (offsets[2*i+1] & RX_LENGTH_MASK))`; bit 30
 * of its length word (RX_L4_CHECKSUM_OK, vnet-header TAPs only) says the kernel vouches for its
 * TCP/UDP checksum (it was partial and the addon completed it, or the kernel checked it).
 */
export const RX_L4_CHECKSUM_OK = 1 << 30;
export const RX_LENGTH_MASK = RX_L4_CHECKSUM_OK - 1;
export type NativeFramesCallback = (slab: Buffer, offsets: Int32Array, count: number) => void;

export interface NativeFramePortOptions {
  /**
   * 'dgram': a SOCK_DGRAM socket (recvmmsg/sendmmsg). 'tap': a TAP char device (read/write).
   * 'stream': a connected stream socket in qemu's stream framing (a 4-byte big-endian length
   * before each frame; a bad length fails the port with 'EPROTO').
   */
  kind: 'dgram' | 'tap' | 'stream';
  /**
   * For an unconnected bound dgram socket: learn the peer from received datagrams. On the first
   * datagram from a new sender address the port connect()s the socket to it and calls `onPeer`
   * with the sender's path ('' for an unnamed socket).
   */
  learnPeer?: boolean;
  /**
   * For 'tap' opened with vnetHdr: every frame carries a 10-byte virtio_net_hdr. Received frames
   * are delivered without it; sent frames get one (all zero; NEEDS_CSUM when `send` has a gsoSize, plus GSO fields if it is above 0).
   */
  vnetHdr?: boolean;
  onFrames: NativeFramesCallback;
  onPeer?: (peerPath: string) => void;
  /** Called once if the fd fails or hangs up (e.g. socketpair peer closed): errno name or 'EOF'. */
  onError?: (code: string) => void;
  /** Largest frame accepted (bytes); larger datagrams are counted in rxErrors. Default 65536+64. */
  maxFrame?: number;
}

export interface NativeFramePortStats {
  rxFrames: number;
  rxBytes: number;
  txFrames: number;
  txBytes: number;
  txDropped: number;
  rxErrors: number;
  rxBatches: number;
  txBatches: number;
  /** Frames larger than the MTU that sendGso cut into MTU-sized ones. */
  txGsoFrames: number;
  /** Frames waiting in the send queue (the kernel said EAGAIN; they go when the fd is writable). */
  txQueued: number;
}

export interface NativeFramePort {
  /** Starts watching the fd for input. */
  start(): void;
  /** Copies one frame into the send queue; flushes by itself when the queue is full. False = dropped. */
  send(frame: Uint8Array, gsoSize?: number): boolean;
  /** Sends everything queued (sendmmsg / write loop). Frames the kernel refuses with EAGAIN stay queued up to a bound and go when the fd is writable; beyond that they are dropped and counted. */
  flush(): void;
  /**
   * Queues one IPv4/IPv6 TCP frame larger than the MTU, its checksum field holding the
   * pseudo-header sum, cut into frames of at most `gsoSize` payload bytes with complete checksums
   * (software GSO, in C). False = dropped.
   */
  sendGso(frame: Uint8Array, gsoSize: number): boolean;
  stats(): NativeFramePortStats;
  /**
   * learnPeer mode only: dissolves the association with the learned peer (connect AF_UNSPEC) and
   * drops queued frames, so the next datagram from any sender is learned afresh. For a peer whose
   * socket was replaced (a restarted VM re-binding its path): while we stay connected to the dead
   * socket, the kernel refuses the new one's datagrams to us (EPERM on its side).
   */
  resetPeer(): void;
  /** Stops watching and closes the fd. Idempotent. */
  close(): void;
}

/** Events of a `PingSocket`. Buffers are the caller's to keep. */
export interface NativePingSocketOptions {
  /**
   * An echo reply for our identifier: the whole ICMP message (header + data, identifier = ours),
   * its sender (IPv4 as a 32-bit number) and the TTL it arrived with (-1 if unknown).
   */
  /** `src`: IPv4 as a number, IPv6 as text. */
  onMessage: (message: Buffer, src: number | string, ttl: number) => void;
  /**
   * An ICMP error about one of our requests (IP_RECVERR, origin ICMP): its type, code and info
   * (the next-hop MTU of a "fragmentation needed"), the offender's address (-1 if unknown), and our
   * request as the offender quoted it (ICMP header with our identifier + data, possibly truncated).
   */
  /** `offender`: IPv4 as a number, IPv6 as text, -1 if unknown. */
  onError: (type: number, code: number, info: number, offender: number | string, quoted: Buffer) => void;
}

export interface NativePingSocket {
  /** The echo identifier the kernel gave this socket (it rewrites every request's identifier to it). */
  readonly ident: number;
  /**
   * Sends one echo request (type 8, code 0, at least 8 bytes; the kernel sets the identifier and the
   * checksum) with IP TTL `ttl` (1..255). Returns undefined, or the errno name of a failed send
   * (EAGAIN, ENETUNREACH, EHOSTUNREACH, EMSGSIZE, …).
   */
  send(message: Uint8Array, ttl: number): string | undefined;
  stats(): { rxMessages: number; rxErrors: number; localErrors: number; txMessages: number; txErrors: number };
  /** Stops watching and closes the socket. Idempotent. */
  close(): void;
}

/** Which side of the platform guards a binary was built with (native/src/platform.h). */
/** HostTcp event kinds (native/src/host_tcp.h). */
export const HostTcpEvent = { Connected: 1, ConnectFailed: 2, Data: 3, Eof: 4, Error: 5, Writable: 6 } as const;
/** HostTcp.readNow's answer for the peer's FIN. */
export const HOST_TCP_READ_EOF = -1_000_000;

/**
 * The descriptor under a net.Socket, from Node's internal `_handle.fd` (what lets the addon take
 * over a connection Node accepted: it duplicates it). Undefined where Node does not show it; the
 * callers then keep the net.Socket.
 */
export function socketDescriptor(socket: object): number | undefined {
  const fd = (socket as { _handle?: { fd?: unknown } })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}
/**
 * Added to HostTcp.connect's slot when the connect had completed inside the call (a loopback
 * destination): the socket is connected and reading, and no Connected event follows.
 */
export const HOST_TCP_CONNECTED_NOW = 1 << 24;

/**
 * One event of a `HostTcp` socket: kind (HostTcpEvent), the socket's slot, for Data the byte
 * count now in the shared read buffer (valid during the call only), for ConnectFailed/Error the
 * errno name.
 */
export type NativeHostTcpCallback = (kind: number, slot: number, n: number, code: string | undefined) => void;

/**
 * The host sockets of dialed TCP flows, owned by the addon (native/src/host_tcp.cc): non-blocking
 * fds watched by uv_poll, read into one shared buffer, written without Node's stream machinery.
 * Negative numbers are -errno.
 */
export interface NativeHostTcp {
  /**
   * Starts a connect to a numeric address: the slot (plus HOST_TCP_CONNECTED_NOW if it is
   * connected already), or -errno (-EINVAL: not a numeric address).
   */
  connect(host: string, port: number): number;
  /**
   * Takes a connected stream socket (a port forward's accepted connection, duplicated): the slot,
   * or -errno. The fd belongs to the addon from then on, also on failure. It is not read until
   * setReading(slot, true).
   */
  adopt(fd: number): number;
  /** Bytes the kernel took (fewer: a Writable event follows when it takes more), or -errno. */
  write(slot: number, bytes: Uint8Array): number;
  /**
   * One read now, outside the poll: bytes in the shared buffer (> 0), 0 (nothing), HOST_TCP_READ_EOF
   * (the peer's FIN; reading stops) or -errno (reading stops). No event is sent for what it returns.
   */
  readNow(slot: number): number;
  shutdownWrite(slot: number): number;
  /** Closes the socket (reset: SO_LINGER 0, the peer gets a RST); the slot is free at once. */
  close(slot: number, reset: boolean): void;
  /** Whether the socket is read (a paused flow stops reading: TCP backpressure to the host). */
  setReading(slot: number, on: boolean): void;
  /** [localAddress, localPort, peerAddress, peerPort] once connected. */
  ends(slot: number): [string, number, string, number] | undefined;
  /** Sockets open. */
  count(): number;
}

export interface NativeBuildInfo {
  /** 'linux': recvmmsg/sendmmsg, TAP, netns. 'portable': the macOS code path (built on macOS or with VMNAT_PORTABLE). */
  flavor: 'linux' | 'portable';
  platform: 'linux' | 'darwin';
}

export interface NativeAddon {
  readonly build: NativeBuildInfo;
  /**
   * The buffer sizes the kernel granted a socket (Linux reports twice what was asked: its
   * bookkeeping allowance). On macOS `snd` is also the largest datagram the socket can send.
   */
  socketBufferSizes(fd: number): { snd: number; rcv: number };
  /** Creates a non-blocking, close-on-exec AF_UNIX SOCK_DGRAM socket bound to `path`; returns its fd. Large SO_SNDBUF/SO_RCVBUF. */
  unixDgramBind(path: string): number;
  /** connect()s a datagram socket to a peer path. */
  unixDgramConnect(fd: number, peerPath: string): void;
  /**
   * True if a live socket is bound at `path` (a datagram connect succeeds, or fails with EPERM: it is
   * connected to someone else, or EPROTOTYPE: it is a stream socket); false on ECONNREFUSED/ENOENT
   * (nobody serves it: a stale file, or no file). Other errors throw.
   */
  unixDgramProbe(path: string): boolean;
  /** A non-blocking AF_UNIX SOCK_DGRAM socketpair, both ends close-on-exec; buffers enlarged. */
  socketpairDgram(): [number, number];
  setCloexec(fd: number, on: boolean): void;
  /** Sets (default) or clears O_NONBLOCK: a child handed one end of a socketpair usually wants it blocking. */
  setNonblocking(fd: number, on?: boolean): void;
  /** Returns the socket type of fd: 'dgram', 'stream', 'seqpacket', or 'other' (not a socket). */
  fdSocketType(fd: number): 'dgram' | 'stream' | 'seqpacket' | 'other';
  /**
   * Opens (creating if missing) TAP device `name` with IFF_TAP|IFF_NO_PI, non-blocking, and brings it up.
   * Linux only: on macOS and in the portable build it throws an Error with code ENOTSUP.
   * With `netnsPath` (e.g. /run/netns/NAME) or `netnsPid`, the device is opened inside that network
   * namespace (a helper thread setns()es there; the caller's namespace is untouched).
   */
  tapOpen(name: string, netnsPath?: string, netnsPid?: number, vnetHdr?: boolean): { fd: number; name: string };
  closeFd(fd: number): void;
  /** A new close-on-exec descriptor for the same open file (fcntl F_DUPFD_CLOEXEC). */
  dupFd(fd: number): number;
  /** Takes ownership of `fd` (close() closes it) — unless the constructor throws: then the caller still owns it. */
  FramePort: new (fd: number, options: NativeFramePortOptions) => NativeFramePort;
  HostTcp: new (onEvent: NativeHostTcpCallback, readBuffer: Buffer) => NativeHostTcp;
  /**
   * Software GSO for links JavaScript sends on (the stream transport): writes the MTU-sized
   * pieces of a large TCP frame (checksum partial) into `dst` from `dstOff`, each after a 4-byte
   * big-endian length if `lengthPrefix`, checksums complete. Returns the bytes written
   * (`counts[0]` = pieces), 0 when `dst` lacks room, -1 for a frame that is not TCP.
   */
  gsoInto(frame: Uint8Array, gsoSize: number, dst: Uint8Array, dstOff: number, lengthPrefix: boolean, counts: Uint32Array): number;
  /** Completes, in place, a TCP/UDP checksum whose field holds the pseudo-header sum. */
  completeL4Checksum(frame: Uint8Array): boolean;
  /**
   * An unprivileged ICMP echo socket (SOCK_DGRAM, IPPROTO_ICMP; non-blocking, close-on-exec) for
   * requests to `destination` (an IPv4 address), watched on the main loop. Throws an errno Error:
   * EACCES when net.ipv4.ping_group_range does not include the process's group (root included).
   */
  PingSocket: new (destination: string, options: NativePingSocketOptions) => NativePingSocket;
  /**
   * Portable builds only (macOS, VMNAT_PORTABLE): how PingSocket reads one received datagram —
   * an echo reply for `ident`, an ICMP error quoting one of our requests, or someone else's — with
   * or without the IP header macOS leaves in front. Exposed so tests can feed it macOS's format.
   */
  icmpClassify?: (datagram: Buffer, ident: number, src: number, ttl: number) => IcmpClassification;
  /**
   * Host-only mode (Linux): gives interface `name` the IPv4 address `addr` (u32) with `prefixLen`
   * (SIOCSIFADDR + SIOCSIFNETMASK, in vmnat's own namespace). ENOTSUP off Linux and in the portable build.
   */
  ifSetIpv4(name: string, addr: number, prefixLen: number): void;
  /** Bridged mode (Linux): enslaves interface `name` to the existing bridge `bridge` (SIOCBRADDIF). */
  ifAddToBridge(name: string, bridge: string): void;
  /** macOS builds only (vmnet.framework, native/src/vmnet.cc; untested): absent elsewhere. */
  Vmnet?: new (options: NativeVmnetOptions, onFrames: (frames: Buffer[]) => void, onError: (code: string) => void) => NativeVmnet;
}

export interface NativeVmnetOptions {
  mode: 'host' | 'bridged';
  /** Bridged: the physical interface (en0). */
  sharedInterface?: string;
  /** Host: vmnet's DHCP range and mask (dotted quads). */
  startAddress?: string;
  endAddress?: string;
  subnetMask?: string;
  /** A UUID: the same one gives the interface the same MAC across runs. */
  interfaceId?: string;
  isolation?: boolean;
}

export interface NativeVmnet {
  /** What vmnet answered at start: its MAC, MTU, largest packet, and (host mode) addresses. */
  info(): { mac: string; mtu: number; maxPacketSize: number; startAddress?: string; endAddress?: string; subnetMask?: string };
  /** One frame to the host side; false when vmnet refused it. */
  write(frame: Uint8Array): boolean;
  close(): void;
}

export interface IcmpClassification {
  kind: 'reply' | 'error' | 'ignore';
  /** reply: where the ICMP message starts; error: where our quoted request starts. */
  offset: number;
  length: number;
  src: number;
  ttl: number;
  type: number;
  code: number;
  info: number;
}

const here = path.dirname(fileURLToPath(import.meta.url));
let cached: NativeAddon | undefined;

/** Which build VMNAT_NATIVE selects: 'portable', or '' / unset / 'default' for the normal one. */
export function nativeVariant(env: NodeJS.ProcessEnv = process.env): 'default' | 'portable' {
  const v = env.VMNAT_NATIVE ?? '';
  if (v === '' || v === 'default') return 'default';
  if (v === 'portable') return 'portable';
  throw new Error(`vmnat: VMNAT_NATIVE=${JSON.stringify(v)}: expected "portable" or "default"`);
}

/** The .node file loadNative() loads (children that load the addon themselves use it too). */
export function nativeAddonPath(env: NodeJS.ProcessEnv = process.env): string {
  const dir = nativeVariant(env) === 'portable' ? '../../native/portable/build/Release' : '../../native/build/Release';
  return path.resolve(here, dir, 'vmnat.node');
}

/** Loads the addon once (see nativeAddonPath). Throws a clear error if it was not built. */
export function loadNative(): NativeAddon {
  if (cached) return cached;
  const require = createRequire(import.meta.url);
  const file = nativeAddonPath();
  try {
    cached = require(file) as NativeAddon;
  } catch (err) {
    const how = nativeVariant() === 'portable' ? 'VMNAT_PORTABLE=1 npm run build:native' : 'npm install';
    throw new Error(`vmnat: native addon not built (${file}): run ${how} (${(err as Error).message})`);
  }
  return cached;
}
