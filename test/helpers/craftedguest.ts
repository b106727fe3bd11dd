/**
 * A guest made of hand-built frames, attached to a running vmnat over `--socket` the way qemu's
 * `-netdev dgram` is: a bound unix datagram socket of its own, connected to vmnat's. Tests use it
 * to send what no well-behaved kernel sends (port 0, out-of-order data shaped to force SACK
 * blocks), and to read every frame vmnat answers with. The frame writers are the fuzz test's
 * (test/helpers/fuzzframes.ts), independent of vmnat's own.
 */
import path from 'node:path';
import { loadNative } from '../../src/link/native.ts';
import { Peer, waitFor } from '../unit/link-helpers.ts';
import { GUEST_IP, GUEST_MAC, GW_IP, GW_MAC, eth, ipv4, l4sum, udp } from './fuzzframes.ts';

export { GUEST_IP, GUEST_MAC, GW_IP, GW_MAC };

/** A received frame, decoded just enough for assertions. */
export interface SeenFrame {
  raw: Uint8Array;
  etherType: number;
  /** IPv4 only: */
  proto?: number;
  ipTotalLen?: number;
  src?: string;
  dst?: string;
  /** The IPv4 payload (L4 header onwards). */
  l4?: Uint8Array;
}

function ip4(b: Uint8Array, off: number): string {
  return `${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}`;
}

export class CraftedGuest {
  private readonly peer: Peer;

  constructor(dir: string, vmnatSocket: string) {
    const native = loadNative();
    const fd = native.unixDgramBind(path.join(dir, 'guest.sock'));
    native.unixDgramConnect(fd, vmnatSocket);
    this.peer = new Peer(fd, { maxFrame: 65_535 + 14 });
  }

  send(...frames: Uint8Array[]): void {
    this.peer.sendAll(frames);
  }

  /** Every frame vmnat sent so far, decoded. */
  frames(): SeenFrame[] {
    return this.peer.received.map((raw) => {
      const etherType = (raw[12]! << 8) | raw[13]!;
      if (etherType !== 0x0800 || raw.length < 34) return { raw, etherType };
      const ihl = (raw[14]! & 15) * 4;
      const total = (raw[16]! << 8) | raw[17]!;
      return { raw, etherType, proto: raw[23]!, ipTotalLen: total, src: ip4(raw, 26), dst: ip4(raw, 30), l4: raw.subarray(14 + ihl, 14 + total) };
    });
  }

  async waitFor(cond: (frames: SeenFrame[]) => boolean, what: string, timeoutMs = 5000): Promise<void> {
    await waitFor(() => cond(this.frames()), what, timeoutMs);
  }

  clear(): void {
    this.peer.received.length = 0;
  }

  close(): void {
    this.peer.close();
  }

  /** A UDP datagram from the guest (10.0.2.15) to `dst:dport`. */
  static udp(dst: number[], sport: number, dport: number, payload: Uint8Array): Uint8Array {
    return eth(GW_MAC, GUEST_MAC, 0x0800, ipv4(17, GUEST_IP, dst, udp(GUEST_IP, dst, sport, dport, payload)));
  }

  /** A TCP segment from the guest to `dst:dport`; `options` already padded to a multiple of 4. */
  static tcp(dst: number[], sport: number, dport: number, seq: number, ack: number, flags: number, window: number, options: number[] = [], payload: Uint8Array = new Uint8Array(0)): Uint8Array {
    const hl = 20 + options.length;
    const t = new Uint8Array(hl + payload.length);
    t[0] = sport >> 8;
    t[1] = sport & 0xff;
    t[2] = dport >> 8;
    t[3] = dport & 0xff;
    new DataView(t.buffer).setUint32(4, seq >>> 0);
    new DataView(t.buffer).setUint32(8, ack >>> 0);
    t[12] = (hl / 4) << 4;
    t[13] = flags;
    t[14] = window >> 8;
    t[15] = window & 0xff;
    t.set(options, 20);
    t.set(payload, hl);
    l4sum(6, GUEST_IP, dst, t, 16);
    return eth(GW_MAC, GUEST_MAC, 0x0800, ipv4(6, GUEST_IP, dst, t));
  }
}

/** TCP header fields of a frame's L4 bytes. */
export function tcpFields(l4: Uint8Array): { sport: number; dport: number; seq: number; ack: number; flags: number; dataOff: number; options: Uint8Array; payloadLen: number } {
  const dv = new DataView(l4.buffer, l4.byteOffset, l4.length);
  const dataOff = (l4[12]! >> 4) * 4;
  return {
    sport: dv.getUint16(0),
    dport: dv.getUint16(2),
    seq: dv.getUint32(4),
    ack: dv.getUint32(8),
    flags: l4[13]!,
    dataOff,
    options: l4.subarray(20, dataOff),
    payloadLen: l4.length - dataOff,
  };
}
