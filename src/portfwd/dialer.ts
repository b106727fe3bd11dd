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
 *
 * Source address (`--hostfwd-source`): `gateway` (the default, VirtualBox's and qemu's way) opens
 * every forwarded connection from the gateway. `client` (gvproxy's way) opens it from the host
 * client's own IPv4 address and port, so the guest's services see and log who connected; the
 * guest's replies go to that address through its default route, the gateway, where the NAT finds
 * the flow. Only where that reply path exists: a client address the NAT would send out (`routable`:
 * not loopback, not in the guest network, not denied); loopback, IPv6 and unix-socket clients keep
 * the gateway.
 */
import type net from 'node:net';
import type { Stack } from '../stack/stack.ts';
import type { TcpNat } from '../nat/tcp.ts';
import { parseIp, parseIpv4, type IpAddr, type Ipv4Addr, type Ipv6Addr } from '../stack/wire/addr.ts';
import { resetSocket, type ForwardedConnection, type ForwardTarget, type GuestDialer, type GuestUdpFlow, type HostUdpPeer } from './forwarder.ts';

export class NatGuestDialer implements GuestDialer {
  private nextPort = 49152 + Math.floor(Math.random() * 16384);
  /** The IPv6 gateway, when the network has IPv6: forwards to an IPv6 guest address come from it. */
  gateway6: Ipv6Addr | undefined;

  constructor(
    private readonly stack: Stack,
    private readonly tcp: TcpNat,
    private readonly gateway: Ipv4Addr,
    /** The address leased most recently (the default guest of a forward), if any. */
    private readonly currentLease: () => IpAddr | undefined,
    /**
     * The filter's say on a connection into the guest (`in`), from the host client's own address
     * (IPv4, or undefined for an IPv6 client); absent = every forward may open.
     */
    private readonly admitIn?: (proto: 'tcp', clientIp: IpAddr | undefined, clientPort: number, guestIp: IpAddr, guestPort: number) => boolean,
    /** --hostfwd-source client: may a connection from this client address keep it (the NAT would route replies to it)? */
    private readonly keepSource?: (clientIp: Ipv4Addr) => boolean,
  ) {}

  /** The client's IPv4 address if the connection keeps it as its source, else undefined (the gateway). */
  private clientSource(text: string | undefined): Ipv4Addr | undefined {
    if (this.keepSource === undefined || text === undefined) return undefined;
    const ip = parseIpv4(text.startsWith('::ffff:') ? text.slice(7) : text);
    return ip !== undefined && this.keepSource(ip) ? ip : undefined;
  }

  dialTcp(socket: net.Socket, target: ForwardTarget): ForwardedConnection | undefined {
    const guestIp = target.guestIp ?? this.currentLease();
    if (guestIp === undefined) {
      resetSocket(socket);
      return undefined;
    }
    if (this.admitIn !== undefined) {
      const text = socket.remoteAddress ?? '';
      const clientIp = parseIp(text.startsWith('::ffff:') ? text.slice(7) : text);
      if (!this.admitIn('tcp', clientIp, socket.remotePort ?? 0, guestIp, target.guestPort)) {
        resetSocket(socket); // the host client hears "refused" at once
        return undefined;
      }
    }
    if (typeof guestIp === 'string') {
      const six = this.stack.ipv6;
      const from = this.gateway6;
      if (six === undefined || from === undefined) {
        resetSocket(socket);
        return undefined;
      }
      if (six.lookup(guestIp) === undefined) {
        // A guest that has not spoken from this address yet: solicit it and hold the client's
        // connection (accepted paused) until it answers, as a router holds a packet while it
        // resolves; no answer → the client is reset.
        six.resolveThen(guestIp, this.tcp.now(), (mac) => {
          if (socket.destroyed) return;
          if (mac === undefined) resetSocket(socket);
          else this.tcp.openToGuest(socket, from, guestIp, target.guestPort, target.rule, { rewrap: false });
        });
        return socket;
      }
      return this.tcp.openToGuest(socket, from, guestIp, target.guestPort, target.rule);
    }
    const client = target.proto === 'unix' ? undefined : this.clientSource(socket.remoteAddress);
    if (client !== undefined) return this.tcp.openToGuest(socket, client, guestIp, target.guestPort, target.rule, { srcPortWanted: target.clientPort });
    return this.tcp.openToGuest(socket, this.gateway, guestIp, target.guestPort, target.rule, { clientLabel: target.proto === 'unix' ? target.clientAddr : undefined });
  }

  openUdp(target: ForwardTarget, host: HostUdpPeer): GuestUdpFlow | undefined {
    const guestIp = target.guestIp ?? this.currentLease();
    if (guestIp === undefined) return undefined;
    if (typeof guestIp === 'string') return this.openUdp6(guestIp, target, host);
    // As the client (its address and, if free, its port), or from the gateway.
    const client = this.clientSource(target.clientAddr);
    const from = client ?? this.gateway;
    const port = client !== undefined && !this.stack.isUdpBound(client, target.clientPort) ? target.clientPort : this.freeUdpPort(from);
    if (port === undefined) return undefined;
    const { stack } = this;
    stack.bindUdp(from, port, (d) => {
      // Only the guest this flow talks to may answer on its port.
      if (d.srcIp === guestIp && d.srcPort === target.guestPort) host.send(d.buf.subarray(d.off, d.off + d.len));
    });
    return {
      send: (payload) => {
        stack.sendUdp(from, port, guestIp, target.guestPort, payload);
      },
      close: () => stack.unbindUdp(from, port),
    };
  }

  /** As openUdp, to a guest's IPv6 address from the IPv6 gateway. */
  private openUdp6(guestIp: Ipv6Addr, target: ForwardTarget, host: HostUdpPeer): GuestUdpFlow | undefined {
    const six = this.stack.ipv6;
    const gateway = this.gateway6;
    if (six === undefined || gateway === undefined) return undefined;
    let port: number | undefined;
    for (let i = 0; i < 16384 && port === undefined; i++) {
      this.nextPort = this.nextPort >= 65535 ? 49152 : this.nextPort + 1;
      if (!six.isUdpBound(gateway, this.nextPort)) port = this.nextPort;
    }
    if (port === undefined) return undefined;
    const p = port;
    six.bindUdp(gateway, p, (d) => {
      if (d.srcIp === guestIp && d.srcPort === target.guestPort) host.send(d.buf.subarray(d.off, d.off + d.len));
    });
    let closed = false;
    return {
      send: (payload) => {
        if (six.lookup(guestIp) !== undefined) {
          this.stack.sendUdp(gateway, p, guestIp, target.guestPort, payload);
          return;
        }
        // Not resolved yet: the datagram waits for the guest's answer to a solicitation.
        const copy = Uint8Array.from(payload);
        six.resolveThen(guestIp, this.tcp.now(), (mac) => {
          if (!closed && mac !== undefined) this.stack.sendUdp(gateway, p, guestIp, target.guestPort, copy, mac);
        });
      },
      close: () => {
        closed = true;
        six.unbindUdp(gateway, p);
      },
    };
  }

  private freeUdpPort(on: Ipv4Addr): number | undefined {
    for (let i = 0; i < 16384; i++) {
      this.nextPort = this.nextPort >= 65535 ? 49152 : this.nextPort + 1;
      if (!this.stack.isUdpBound(on, this.nextPort)) return this.nextPort;
    }
    return undefined;
  }
}
