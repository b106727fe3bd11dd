/**
 * The data path of port forwards: how a host connection or datagram reaches the guest.
 *
 * Theory of operation: TCP reuses the NAT's TCP engine in the other direction
 * (`TcpNat.openToGuest`): vmnat connects from the gateway address on an ephemeral port, and the
 * flow then behaves as any other (backpressure, half-close, resets both ways). UDP: each host
 * client gets an ephemeral port on the gateway, bound in the stack so the guest's replies come back
 * to that client and never reach the outbound UDP NAT; datagrams go to the guest from there. An
 * empty guest address means the guest's current lease, resolved per connection or flow, so a
 * forward follows the lease when it changes.
 */
import type net from 'node:net';
import type { Stack } from '../stack/stack.ts';
import type { TcpNat } from '../nat/tcp.ts';
import { parseIpv4, type Ipv4Addr } from '../stack/wire/addr.ts';
import { resetSocket, type ForwardTarget, type GuestDialer, type GuestUdpFlow, type HostUdpPeer } from './forwarder.ts';

export class NatGuestDialer implements GuestDialer {
  private nextPort = 49152 + Math.floor(Math.random() * 16384);

  constructor(
    private readonly stack: Stack,
    private readonly tcp: TcpNat,
    private readonly gateway: Ipv4Addr,
    /** The address leased most recently (the default guest of a forward), if any. */
    private readonly currentLease: () => Ipv4Addr | undefined,
    /**
     * The filter's say on a connection into the guest (`in`), from the host client's own address
     * (IPv4, or undefined for an IPv6 client); absent = every forward may open.
     */
    private readonly admitIn?: (proto: 'tcp', clientIp: Ipv4Addr | undefined, clientPort: number, guestIp: Ipv4Addr, guestPort: number) => boolean,
  ) {}

  dialTcp(socket: net.Socket, target: ForwardTarget): net.Socket | undefined {
    const guestIp = target.guestIp ?? this.currentLease();
    if (guestIp === undefined) {
      resetSocket(socket);
      return undefined;
    }
    if (this.admitIn !== undefined) {
      const text = socket.remoteAddress ?? '';
      const clientIp = parseIpv4(text.startsWith('::ffff:') ? text.slice(7) : text);
      if (!this.admitIn('tcp', clientIp, socket.remotePort ?? 0, guestIp, target.guestPort)) {
        resetSocket(socket); // the host client hears "refused" at once
        return undefined;
      }
    }
    return this.tcp.openToGuest(socket, this.gateway, guestIp, target.guestPort, target.rule, target.proto === 'unix' ? target.clientAddr : undefined);
  }

  openUdp(target: ForwardTarget, host: HostUdpPeer): GuestUdpFlow | undefined {
    const guestIp = target.guestIp ?? this.currentLease();
    if (guestIp === undefined) return undefined;
    const port = this.freeUdpPort();
    if (port === undefined) return undefined;
    const { stack, gateway } = this;
    stack.bindUdp(gateway, port, (d) => {
      // Only the guest this flow talks to may answer on its port.
      if (d.srcIp === guestIp && d.srcPort === target.guestPort) host.send(d.buf.subarray(d.off, d.off + d.len));
    });
    return {
      send: (payload) => {
        stack.sendUdp(gateway, port, guestIp, target.guestPort, payload);
      },
      close: () => stack.unbindUdp(gateway, port),
    };
  }

  private freeUdpPort(): number | undefined {
    for (let i = 0; i < 16384; i++) {
      this.nextPort = this.nextPort >= 65535 ? 49152 : this.nextPort + 1;
      if (!this.stack.isUdpBound(this.gateway, this.nextPort)) return this.nextPort;
    }
    return undefined;
  }
}
