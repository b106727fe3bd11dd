/**
 * Are a datagram link's socket buffers big enough for the frames it must carry? One line of advice
 * at start-up if not.
 *
 * Theory of operation: on a unix datagram socket the send buffer bounds the largest datagram the
 * socket may send — on macOS exactly (SO_SNDBUF; the default for a socket that never sets it is
 * net.local.dgram.maxdgram, 2,048 bytes), on Linux at half the reported value less 32 bytes
 * (the kernel doubles what it grants for bookkeeping). On macOS the receive buffer also bounds
 * what can wait for us (default net.local.dgram.recvspace), and a sender whose datagram does not
 * fit gets ENOBUFS: the frame is lost. The addon asks for 4 MiB each way and, where the system
 * refuses that (macOS: kern.ipc.maxsockbuf), settles for less; this module compares what was
 * granted with what vmnat needs — frames of the link MTU out, and 64 KiB frames in (krunkit's
 * offloads; also a burst of full-size frames) — and words the one line that says which sysctl
 * to raise. A pure function, so the macOS wording is tested on Linux.
 */

export interface SocketBuffers {
  /** SO_SNDBUF as getsockopt reports it. */
  snd: number;
  /** SO_RCVBUF as getsockopt reports it. */
  rcv: number;
}

/** The largest datagram we accept: a 64 KiB frame plus an Ethernet header and a virtio-net header, rounded up. */
export const LARGEST_DATAGRAM = 65536 + 64;

/**
 * One line for the log when `buffers` (of a unix datagram link on `platform`) cannot carry frames
 * of `mtu` bytes out and 64 KiB frames in; undefined when they can.
 */
export function socketBufferAdvice(platform: NodeJS.Platform, buffers: SocketBuffers, mtu: number): string | undefined {
  const frameOut = mtu + 14;
  if (platform === 'linux') {
    // Linux: only the send side limits a datagram's size (SO_RCVBUF does not apply to unix sockets).
    const largestOut = Math.floor(buffers.snd / 2) - 32;
    if (largestOut >= frameOut) return undefined;
    return `unix socket send buffer is ${buffers.snd} bytes: frames over ${largestOut} bytes cannot be sent (MTU ${mtu} needs ${frameOut}); raise the cap: sudo sysctl -w net.core.wmem_max=4194304`;
  }
  const needIn = 2 * LARGEST_DATAGRAM;
  if (buffers.snd >= frameOut && buffers.rcv >= needIn) return undefined;
  return (
    `unix socket buffers are ${buffers.snd}/${buffers.rcv} bytes (send/receive), below the ${frameOut}/${needIn} ` +
    `that ${mtu}-byte frames out and 64 KiB frames in need; raise the cap: sudo sysctl -w kern.ipc.maxsockbuf=8388608 ` +
    `(peers that keep the defaults also need net.local.dgram.maxdgram=65536 net.local.dgram.recvspace=262144)`
  );
}
