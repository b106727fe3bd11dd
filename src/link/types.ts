/**
 * The link layer's one interface.
 *
 * Theory of operation: every transport (unix datagram socket, inherited fd, qemu stream socket,
 * TAP device) is a `Link` that delivers received Ethernet frames to one handler in batches and
 * accepts frames to send. Frames carry no FCS and no padding; a 42-byte ARP is a valid frame.
 *
 * A link may carry several guests at once (the stream transport accepts a reconnecting guest, a
 * later switch puts many links on one network), so the engine treats each `Link` as a switch
 * port: it learns which guest MACs sit behind which link, and sends unicast frames only there.
 *
 * Received frames are views into a buffer the link reuses: they are valid only during the
 * handler call. Whoever keeps bytes past that copies them.
 */

export type LinkKind = 'socket' | 'fd' | 'stream' | 'tap' | 'vmnet';

/** `Link.send`'s second argument for a frame whose TCP/UDP checksum the link completes. */
export const COMPLETE_L4_CHECKSUM = -1;

/**
 * Frames in: called once per received batch; each frame is valid during the call only.
 * `l4ChecksumOk` (links whose kernel checks or computes checksums, i.e. a TAP with a vnet header):
 * `l4ChecksumOk[i] === 1` when frame i's TCP/UDP checksum is known good and need not be summed.
 */
export type FrameBatchHandler = (frames: readonly Uint8Array[], l4ChecksumOk?: Uint8Array) => void;

export interface LinkStats {
  rxFrames: number;
  rxBytes: number;
  txFrames: number;
  txBytes: number;
  /** Frames we could not send (no peer yet, queue full, socket error). */
  txDropped: number;
  /** Receive errors and datagrams that were not frames (too short, too long). */
  rxErrors: number;
  /** Frames larger than the MTU the link cut into MTU-sized ones itself (software GSO). */
  txGsoFrames?: number;
}

export interface Link {
  readonly kind: LinkKind;
  /** Fields for the ready line (e.g. `{ path }`, `{ tap, netns }`). */
  describe(): Record<string, string | number>;
  /** Starts delivering frames to `handler`. */
  start(handler: FrameBatchHandler): void;
  /**
   * Queues one frame to send. The bytes are copied (or written) before this returns, so the caller
   * may reuse its buffer at once. Returns false when the frame was dropped (counted in txDropped).
   * `gsoSize` (only on links with `gso`; omitted for a complete frame): the frame is one IPv4 TCP
   * segment with just the pseudo-header sum in its checksum field, which the kernel completes (or,
   * delivering locally, trusts without summing the payload). Above 0 the frame is also larger than
   * the MTU and the kernel cuts it into `gsoSize` segments. `COMPLETE_L4_CHECKSUM` (-1, only on
   * links with `completesChecksums`): see there.
   */
  send(frame: Uint8Array, gsoSize?: number): boolean;
  /** The link takes TCP frames larger than the MTU with GSO (a TAP with a vnet header). */
  readonly gso?: boolean;
  /**
   * Software GSO: the link can cut a TCP frame larger than the MTU (`send(frame, gsoSize > 0)`,
   * checksum partial) into MTU-sized frames with complete checksums itself (the native links, in
   * C), for peers that take MTU-sized frames only. Used while `softGso` is set (by the engine:
   * when the peer's own offload is not in use).
   */
  readonly segments?: boolean;
  softGso?: boolean;
  /**
   * The link completes checksums itself: `send(frame, COMPLETE_L4_CHECKSUM)` takes an IPv4/IPv6
   * TCP or UDP frame whose checksum field holds only the pseudo-header sum, and the link sums the
   * rest while it copies the frame (the native links: in C, at about a third of JavaScript's cost).
   */
  readonly completesChecksums?: boolean;
  /** Pushes queued frames to the kernel now (one batched syscall where the transport allows). */
  flush(): void;
  readonly stats: LinkStats;
  /** Stops I/O, closes descriptors and removes socket files this link created. Idempotent. */
  close(): Promise<void>;
  /**
   * Transports that serve several guests (a stream socket's connections) offer each guest as a
   * link of its own — a port of the switch — instead of being one: `onPort` for each new guest,
   * `onGone` when its connection ends. The listening link itself then carries no frames.
   */
  acceptPorts?(onPort: (port: Link) => void, onGone: (port: Link) => void): void;
}

export function createLinkStats(): LinkStats {
  return { rxFrames: 0, rxBytes: 0, txFrames: 0, txBytes: 0, txDropped: 0, rxErrors: 0 };
}
