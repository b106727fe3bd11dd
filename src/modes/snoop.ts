/**
 * DHCP snooping: learning guests' leases from a DHCP server that is not vmnat's.
 *
 * Theory of operation. In bridged mode (and with vmnet on macOS) the guests lease from the LAN's
 * server, whose answers reach them through the uplink port. Anti-spoofing (switch.ts) binds a guest
 * port to its address when DHCP leases it; here the "DHCP" is what this module reads in passing:
 * every frame from the uplink that is IPv4/UDP from port 67 to 68 is parsed as a BOOTREPLY, and
 *   DHCPACK with yiaddr  → `bind(chaddr, yiaddr)`, until its lease time (option 51) runs out;
 *   DHCPNAK              → `unbind(chaddr)`.
 * Only the uplink is believed (the engine calls `inspect` for uplink frames only): a guest playing
 * DHCP server binds nothing. A lease that expires without a renewal ACK is unbound in `poll`, so
 * the port may claim or lease an address again. The frame itself is never changed or held.
 * Malformed frames are counted (`bad`), never thrown on.
 */
import { DhcpMessage, DhcpMessageType, DhcpOpt, BootOp } from '../dhcp/message.ts';
import type { Ipv4Addr, MacAddr } from '../stack/wire/addr.ts';

export interface SnoopTarget {
  bind(mac: MacAddr, ip: Ipv4Addr, now: number): void;
  unbind(mac: MacAddr, ip: Ipv4Addr): void;
}

export function createSnoopStats() {
  return { acks: 0, naks: 0, expired: 0, bad: 0 };
}

export class DhcpSnoop {
  readonly stats = createSnoopStats();
  private readonly leases = new Map<MacAddr, { ip: Ipv4Addr; expiresAt: number }>();
  private next: number | undefined;

  constructor(private readonly target: SnoopTarget) {}

  /** One frame from the uplink (at least 14 bytes). */
  inspect(frame: Uint8Array, now: number): void {
    if (frame.length < 14 + 20 + 8 + 240 || frame[12] !== 0x08 || frame[13] !== 0x00) return;
    const ihl = (frame[14]! & 0x0f) * 4;
    if (frame[23] !== 17 || ihl < 20 || ((frame[20]! & 0x1f) | frame[21]!) !== 0) return; // UDP, not a fragment
    const udp = 14 + ihl;
    if (frame.length < udp + 8) return;
    const srcPort = (frame[udp]! << 8) | frame[udp + 1]!;
    const dstPort = (frame[udp + 2]! << 8) | frame[udp + 3]!;
    if (srcPort !== 67 || dstPort !== 68) return;
    const udpLen = (frame[udp + 4]! << 8) | frame[udp + 5]!;
    const end = Math.min(frame.length, udp + Math.max(8, udpLen));
    const msg = DhcpMessage.parse(frame.subarray(udp + 8, end));
    if (typeof msg === 'string' || msg.op !== BootOp.reply) {
      this.stats.bad++;
      return;
    }
    const type = msg.option(DhcpOpt.messageType)?.[0];
    const mac = msg.chaddrMac;
    if (type === DhcpMessageType.ack && msg.yiaddr !== 0) {
      this.stats.acks++;
      const t = msg.option(DhcpOpt.leaseTime);
      const secs = t !== undefined && t.length === 4 ? ((t[0]! << 24) | (t[1]! << 16) | (t[2]! << 8) | t[3]!) >>> 0 : 0xffff_ffff;
      const old = this.leases.get(mac);
      if (old !== undefined && old.ip !== msg.yiaddr) this.target.unbind(mac, old.ip);
      const expiresAt = secs === 0xffff_ffff ? Infinity : now + secs * 1000;
      this.leases.set(mac, { ip: msg.yiaddr, expiresAt });
      if (expiresAt !== Infinity && (this.next === undefined || expiresAt < this.next)) this.next = expiresAt;
      this.target.bind(mac, msg.yiaddr, now);
    } else if (type === DhcpMessageType.nak) {
      this.stats.naks++;
      const old = this.leases.get(mac);
      if (old !== undefined) {
        this.leases.delete(mac);
        this.target.unbind(mac, old.ip);
      }
    }
  }

  poll(now: number): void {
    if (this.next === undefined || now < this.next) return;
    let next: number | undefined;
    for (const [mac, l] of this.leases) {
      if (l.expiresAt <= now) {
        this.leases.delete(mac);
        this.stats.expired++;
        this.target.unbind(mac, l.ip);
      } else if (l.expiresAt !== Infinity && (next === undefined || l.expiresAt < next)) next = l.expiresAt;
    }
    this.next = next;
  }

  nextDeadline(): number | undefined {
    return this.next;
  }
}
