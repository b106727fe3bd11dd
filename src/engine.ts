/**
 * The engine: links (switch ports) + the stack + services, driven by one clock and one timer.
 *
 * Theory of operation: each `Link` is a port of a small learning switch. A batch of frames from a
 * port is handled synchronously: every frame's source MAC is learned for that port; frames for
 * vmnat's own MACs go to the stack; broadcast and multicast go to the stack and are flooded to the
 * other ports; unicast between guests is switched port to port without touching the stack (the
 * isolation and filter rules of a later issue hook in here). After the batch, every port with
 * queued output is flushed once, so a batch costs one send syscall per port, and the single timer
 * is re-armed at the earliest deadline any machine reported.
 *
 * Time is `performance.now()` (ms, monotonic), read once per batch or timer tick.
 */
import { performance } from 'node:perf_hooks';
import type { Config } from './config.ts';
import type { Link } from './link/types.ts';
import { loadNative } from './link/native.ts';
import { Stack, type UdpDatagram } from './stack/stack.ts';
import { DhcpServer } from './dhcp/server.ts';
import { PcapWriter } from './pcap.ts';
import { Nat } from './nat/nat.ts';
import { IcmpNat, nativePingOpener } from './nat/icmp.ts';
import { DnsForwarder } from './dns/forwarder.ts';
import { DnsTcpEndpoint } from './dns/tcp-endpoint.ts';
import { resolveTcpConfig, type TcpConfig } from './stack/tcp/index.ts';
import { IPV4_BROADCAST, formatIpv4, formatMac, isGroupMac, readMac, type MacAddr } from './stack/wire/addr.ts';
import { log } from './log.ts';
import { PortForwarder } from './portfwd/forwarder.ts';
import { NatGuestDialer } from './portfwd/dialer.ts';
import { configToApi, leaseEvent, leaseToApi, type ApiBackend, type ApiFlow, type FlowEvent, type LeaseEvent } from './api/server.ts';
import type { TcpFlow } from './nat/tcp.ts';

/**
 * TCP buffers by MTU: at MTU 65520 one segment is 64 KiB, so windows and send buffers of 4 MiB keep
 * enough segments in flight; 1 MiB serves MTU 1500.
 */
function tcpConfigFor(config: Config): Partial<TcpConfig> {
  const buffer = config.tcpBufferBytes || (config.mtu > 9000 ? 4 << 20 : 1 << 20);
  const out: Partial<TcpConfig> = { mss: config.mtu - 40, recvWindow: buffer, sendBufferSize: buffer };
  if (config.tcpKeepaliveSec > 0) {
    // Linux's shape: after the idle time, 9 probes 75 s apart (shortened for short idle times).
    out.keepalive = { idleMs: config.tcpKeepaliveSec * 1000, intervalMs: Math.min(75, config.tcpKeepaliveSec) * 1000, count: 9 };
  }
  return out;
}

function tcpFlowToApi(f: TcpFlow, now: number): ApiFlow {
  const out: ApiFlow = {
    proto: 'tcp',
    guest: `${formatIpv4(f.guestIp)}:${f.guestPort}`,
    remote: `${formatIpv4(f.dstIp)}:${f.dstPort}`,
    host: `${f.hostAddress}:${f.dstPort}`,
    state: f.conn?.state ?? 'dialing',
    bytes_from_guest: f.bytesFromGuest,
    bytes_to_guest: f.bytesToGuest,
    age_s: Math.round((now - f.openedAt) / 1000),
  };
  if (f.forward !== undefined) out.forward = f.forward;
  return out;
}

/** Switch table capacity (MACs learned across all ports). */
const MAX_MACS = 4096;

export function createSwitchStats() {
  return { guestToGuest: 0, flooded: 0, runts: 0, macMoves: 0, macEvicted: 0 };
}

export class Engine implements ApiBackend {
  readonly stack: Stack;
  readonly dhcp: DhcpServer;
  readonly nat: Nat;
  readonly icmpNat: IcmpNat;
  readonly dns: DnsForwarder;
  readonly forwards: PortForwarder;
  private readonly listeners = new Set<(e: LeaseEvent | FlowEvent) => void>();
  /** Bound leases, newest last: an empty guest address in a forward means the newest. */
  private readonly boundLeases = new Map<number, number>();
  /** Everything with timers: polled at the earliest deadline any of them reports. */
  private readonly machines: { poll(now: number): void; nextDeadline(): number | undefined }[];
  readonly switchStats = createSwitchStats();
  private readonly links: Link[] = [];
  private readonly macToLink = new Map<MacAddr, Link>();
  private readonly dirty = new Set<Link>();
  private pcap: PcapWriter | undefined;
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Infinity;
  private flushScheduled = false;
  /** The link whose frames are being handled now (so the stack's replies can skip flooding). */
  private currentLink: Link | undefined;
  private closed = false;

  /**
   * The kernel may finish TCP frames for us: only the TAP transport (with its vnet header) takes
   * partial checksums and, below MTU 65000, 64 KiB GSO segments. --no-tso turns both off.
   */
  private readonly offload: boolean;

  constructor(private readonly cfg: Config) {
    const config = cfg;
    this.offload = config.link.kind === 'tap' && !config.noTso;
    this.stack = new Stack(
      { network: config.network, netmask: config.netmask, gateway: config.gateway, dns: config.dns, mtu: config.mtu },
      (frame, gsoSize) => this.toGuests(frame, gsoSize),
    );
    const dhcpConfig = {
      serverIp: config.gateway,
      netmask: config.netmask,
      router: config.gateway,
      dnsServers: [config.dns],
      poolStart: config.firstLease,
      poolEnd: config.lastLease,
      reserved: [config.gateway, config.dns],
      leaseTimeSec: config.dhcpLeaseTimeSec,
      mtu: config.mtu,
      searchDomains: config.dnsSearch,
      staticLeases: config.dhcpStatic,
      ...(config.domain !== undefined ? { domainName: config.domain } : {}),
    };
    this.dhcp = new DhcpServer(dhcpConfig);
    this.dhcp.onLeaseChange = (event, lease) => {
      this.boundLeases.delete(lease.ip);
      if (event === 'bound') {
        this.stack.neighbours.learn(lease.ip, lease.mac, this.now());
        this.boundLeases.set(lease.ip, lease.mac);
      }
      this.publish(leaseEvent(event, lease));
      log.info(`dhcp: ${event} ${formatIpv4(lease.ip)} to ${formatMac(lease.mac)}${lease.hostname ? ` (${lease.hostname})` : ''}`);
    };
    const onDhcp = (d: UdpDatagram, now: number) => {
      const reply = this.dhcp.handle(d.buf.subarray(d.off, d.off + d.len), d.srcIp, now);
      if (reply !== undefined) this.stack.sendUdp(config.gateway, 67, reply.dstIp, 68, reply.payload, reply.dstMac);
    };
    this.stack.bindUdp(IPV4_BROADCAST, 67, onDhcp);
    this.stack.bindUdp(config.gateway, 67, onDhcp);
    this.nat = new Nat(
      this.stack,
      { network: config.network, netmask: config.netmask, gateway: config.gateway, dns: config.dns, hostLoopback: config.hostLoopback },
      { idleTimeoutMs: config.udpTimeoutSec * 1000, maxFlows: config.maxFlows },
      resolveTcpConfig({ ...tcpConfigFor(config), tsoMaxBytes: this.offload && config.mtu < 65_000 ? 65_000 : 0 }),
      { maxFlows: config.maxFlows, idleTimeoutMs: config.tcpIdleTimeoutSec * 1000, maxHalfOpen: 512, dialTimeoutMs: config.tcpConnectTimeoutSec * 1000, gateway: config.gateway, dupFd: (fd) => loadNative().dupFd(fd) },
      (events) => new DnsTcpEndpoint(this.dns, events),
      () => this.now(),
      () => this.armTimer(this.now()),
    );
    this.stack.forward = (ip, srcMac, now) => this.nat.input(ip, srcMac, now);
    // One ping socket per flow (an fd each): a smaller cap than other flows.
    this.icmpNat = new IcmpNat(
      this.stack,
      { idleTimeoutMs: 30_000, maxFlows: Math.min(config.maxFlows, 1024), gateway: config.gateway },
      nativePingOpener(),
      () => this.now(),
      () => this.armTimer(this.now()),
      log,
    );
    this.nat.icmp = (ip, srcMac, now, hostAddress) => this.icmpNat.input(ip, srcMac, now, hostAddress);
    this.dns = new DnsForwarder({
      mode: config.dnsMode,
      servers: config.dnsServers,
      resolvConfPath: '/etc/resolv.conf',
      hosts: config.dnsHosts,
      timeoutMs: 2000,
      log,
      // vmnat fragments what it sends to the guest, so an answer may use the guest's whole EDNS size.
      maxUdpSize: 4096,
    });
    this.stack.bindUdp(config.dns, 53, (d) => {
      const { srcIp, srcPort, srcMac } = d;
      this.dns.query(d.buf.subarray(d.off, d.off + d.len), 'udp', (answer) => {
        this.stack.sendUdp(config.dns, 53, srcIp, srcPort, answer, srcMac);
      });
    });
    this.machines = [this.stack, this.dhcp, this.nat, this.icmpNat];
    this.nat.tcp.onFlowEvent = (event, f, reason) => {
      if (this.listeners.size === 0) return;
      const e: FlowEvent = { type: 'flow', event, flow: tcpFlowToApi(f, this.now()) };
      if (reason !== undefined) e.reason = reason;
      this.publish(e);
    };
    this.forwards = new PortForwarder({
      dialer: new NatGuestDialer(this.stack, this.nat.tcp, config.gateway, () => {
        let last: number | undefined;
        for (const ip of this.boundLeases.keys()) last = ip;
        return last;
      }),
      udpIdleTimeoutMs: config.udpTimeoutSec * 1000,
      maxUdpFlows: config.maxFlows,
      guestNetwork: { network: config.network, netmask: config.netmask, reserved: [config.gateway, config.dns] },
    });
    if (config.pcapFile !== undefined) this.pcap = new PcapWriter(config.pcapFile);
  }

  now(): number {
    return performance.now();
  }

  /** Adds a port and starts receiving from it. */
  attach(link: Link): void {
    this.links.push(link);
    // Checksum and segmentation offload only while every port takes such frames (today: a TAP with
    // a vnet header).
    this.stack.gso = this.offload && this.links.every((l) => l.gso === true);
    link.start((frames, l4ChecksumOk) => this.onFrames(link, frames, l4ChecksumOk));
  }

  private onFrames(link: Link, frames: readonly Uint8Array[], l4ChecksumOk: Uint8Array | undefined): void {
    if (this.closed) return;
    const now = this.now();
    const stack = this.stack;
    this.currentLink = link;
    for (let i = 0; i < frames.length; i++) {
      const frame = frames[i]!;
      stack.rxL4ChecksumOk = l4ChecksumOk !== undefined && l4ChecksumOk[i] === 1;
      if (frame.length < 14) {
        this.switchStats.runts++;
        continue;
      }
      this.pcap?.write(frame);
      const src = readMac(frame, 6);
      if (!isGroupMac(src)) {
        const known = this.macToLink.get(src);
        if (known !== link) {
          if (known !== undefined) this.switchStats.macMoves++;
          else if (this.macToLink.size >= MAX_MACS) {
            // Bounded: a guest spraying random source MACs must not grow memory. Forget the oldest.
            const oldest = this.macToLink.keys().next();
            if (!oldest.done) this.macToLink.delete(oldest.value);
            this.switchStats.macEvicted++;
          }
          this.macToLink.set(src, link);
        }
      }
      const dst = readMac(frame, 0);
      if (dst === stack.gatewayMac || dst === stack.dnsMac) {
        stack.input(frame, now);
      } else if (isGroupMac(dst)) {
        stack.input(frame, now);
        if (this.links.length > 1) this.flood(frame, link);
      } else {
        const port = this.macToLink.get(dst);
        if (port !== undefined && port !== link) {
          this.switchStats.guestToGuest++;
          this.sendOn(port, frame);
        } else {
          stack.input(frame, now); // counted there as eth.notForUs
        }
      }
    }
    this.currentLink = undefined;
    stack.rxL4ChecksumOk = false;
    this.nat.afterBatch();
    this.flushDirty();
    this.armTimer(now);
  }

  private flood(frame: Uint8Array, except: Link | undefined): void {
    this.switchStats.flooded++;
    for (const port of this.links) if (port !== except) this.sendOn(port, frame);
  }

  private sendOn(link: Link, frame: Uint8Array, gsoSize?: number): void {
    link.send(frame, gsoSize);
    this.dirty.add(link);
  }

  /** Frames from the stack to the guests: unicast to the port that holds the MAC, else flood. */
  private toGuests(frame: Uint8Array, gsoSize?: number): void {
    this.pcap?.write(frame);
    const dst = readMac(frame, 0);
    const port = isGroupMac(dst) ? undefined : this.macToLink.get(dst);
    if (port !== undefined) this.sendOn(port, frame, gsoSize);
    else for (const l of this.links) this.sendOn(l, frame, gsoSize);
    if (this.currentLink === undefined) this.scheduleFlush();
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      this.flushDirty();
    });
  }

  private flushDirty(): void {
    for (const link of this.dirty) link.flush();
    this.dirty.clear();
    this.pcap?.flush();
  }

  private armTimer(now: number): void {
    let at = Infinity;
    for (const m of this.machines) {
      const d = m.nextDeadline();
      if (d !== undefined && d < at) at = d;
    }
    if (at === Infinity || at >= this.timerAt) return;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(() => this.onTimer(), Math.max(0, at - now) + 1);
    this.timer.unref();
  }

  private onTimer(): void {
    this.timer = undefined;
    this.timerAt = Infinity;
    if (this.closed) return;
    const now = this.now();
    for (const m of this.machines) m.poll(now);
    this.nat.afterBatch(); // payload a timer delivered (none today) must not wait for the next frame
    this.flushDirty();
    this.armTimer(now);
  }

  private publish(e: LeaseEvent | FlowEvent): void {
    for (const l of this.listeners) l(e);
  }

  // ---- ApiBackend ----
  leases() {
    const now = this.now();
    return this.dhcp.leases(now).map((l) => leaseToApi(l, now));
  }

  flows(): ApiFlow[] {
    const tcp = this.nat.tcp.list().map((f): ApiFlow => {
      const out: ApiFlow = { proto: 'tcp', guest: f.guest, remote: f.destination, host: f.host, state: f.state, bytes_from_guest: f.bytesFromGuest, bytes_to_guest: f.bytesToGuest, age_s: Math.round(f.ageMs / 1000) };
      if (f.forward !== undefined) out.forward = f.forward;
      if (f.hostLocal !== undefined) out.host_local = f.hostLocal;
      return out;
    });
    const udp = this.nat.udp.list().map((f): ApiFlow => ({ proto: 'udp', guest: f.guest, remote: f.destination, host: f.host, bytes_from_guest: f.bytesFromGuest, bytes_to_guest: f.bytesToGuest }));
    return [...tcp, ...udp];
  }

  config(): Record<string, unknown> {
    return configToApi(this.cfg);
  }

  subscribe(listener: (e: LeaseEvent | FlowEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** All counters, by subsystem. */
  stats(): Record<string, unknown> {
    return {
      links: this.links.map((l) => ({ kind: l.kind, ...l.stats })),
      switch: this.switchStats,
      ...this.stack.stats,
      dhcp: this.dhcp.stats,
      nat: this.nat.stats,
      udpNat: this.nat.udp.stats,
      tcpNat: this.nat.tcp.stats,
      icmpNat: this.icmpNat.stats,
      tcp: this.nat.tcp.tcpStats,
      dns: this.dns.stats,
      portfwd: this.forwards.stats,
      pcap: this.pcap ? { frames: this.pcap.framesWritten } : undefined,
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.nat.close();
    this.icmpNat.closeAll();
    this.dns.close();
    this.flushDirty();
    await Promise.all(this.links.map((l) => l.close()));
    this.pcap?.close();
  }
}
