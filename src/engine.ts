/**
 * The engine: links (switch ports) + the stack + services, driven by one clock and one timer.
 *
 * Theory of operation: each guest connection is a port of the switch (src/switch/switch.ts: MAC
 * learning, anti-spoofing, isolation; a transport that serves several guests offers each as a port
 * of its own). A batch of frames from a port is handled synchronously: the switch sends each frame
 * to the stack, to one other port, or (broadcast) to both. After the batch, every port with
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
import { IPV4_BROADCAST, formatIpv4, formatMac } from './stack/wire/addr.ts';
import { DEFAULT_SWITCH, Switch, type SwitchPort } from './switch/switch.ts';
import { log } from './log.ts';
import { PortForwarder } from './portfwd/forwarder.ts';
import { NatGuestDialer } from './portfwd/dialer.ts';
import { configToApi, leaseEvent, leaseToApi, type ApiBackend, type ApiFlow, type ApiPort, type FlowEvent, type LeaseEvent } from './api/server.ts';
import type { TcpFlow } from './nat/tcp.ts';
import { FaultBarrier } from './fault.ts';

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

export class Engine implements ApiBackend {
  readonly stack: Stack;
  readonly dhcp: DhcpServer;
  readonly nat: Nat;
  readonly icmpNat: IcmpNat;
  readonly dns: DnsForwarder;
  readonly forwards: PortForwarder;
  private readonly listeners = new Set<(e: LeaseEvent | FlowEvent) => void>();
  /** Names in the DNS table that belong to a guest's lease, by its address. */
  private readonly namesOfGuest = new Map<number, string[]>();
  /** Bound leases, newest last: an empty guest address in a forward means the newest. */
  private readonly boundLeases = new Map<number, number>();
  /** Everything with timers: polled at the earliest deadline any of them reports. */
  private readonly machines: { poll(now: number): void; nextDeadline(): number | undefined }[];
  readonly switch: Switch;
  private runts = 0;
  /** Bugs caught at an entry point and survived (fault.ts): `engine.internalErrors`. */
  readonly faults = new FaultBarrier(log.error);
  /** The links given (a multi-guest link's ports are in the switch, not here). */
  private readonly links: Link[] = [];
  private pcap: PcapWriter | undefined;
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Infinity;
  private flushScheduled = false;
  /** Frames are being handled (a batch): the stack's output is flushed after it, not scheduled. */
  private inBatch = false;
  private batchNow = 0;
  private closed = false;

  /**
   * The kernel may finish TCP frames for us: only the TAP transport (with its vnet header) takes
   * partial checksums and, below MTU 65000, 64 KiB GSO segments. --no-tso turns both off.
   */
  private readonly offload: boolean;

  constructor(private readonly cfg: Config) {
    const config = cfg;
    this.offload = config.links.every((l) => l.kind === 'tap') && !config.noTso;
    this.stack = new Stack(
      { network: config.network, netmask: config.netmask, gateway: config.gateway, dns: config.dns, mtu: config.mtu },
      (frame, gsoSize) => this.toGuests(frame, gsoSize),
    );
    this.switch = new Switch(
      {
        network: config.network,
        netmask: config.netmask,
        reserved: [config.gateway, config.dns],
        ownMacs: [this.stack.gatewayMac, this.stack.dnsMac],
        isolate: config.isolate,
        antiSpoof: config.antiSpoof,
        maxMacs: DEFAULT_SWITCH.maxMacs,
        macAgeMs: DEFAULT_SWITCH.macAgeMs,
      },
      (frame, now) => this.stack.input(frame, now),
      (port, ip) => {
        this.dhcp.claim(ip);
        log.info(`switch: port ${port.id} uses ${formatIpv4(ip)} without DHCP (bound to it as a static address)`);
      },
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
        this.switch.bindLease(lease.mac, lease.ip, lease.hostname, this.now());
      } else {
        this.switch.unbindLease(lease.mac, lease.ip);
      }
      this.guestNames(lease.ip, event === 'bound' ? lease.hostname : undefined);
      this.publish(leaseEvent(event, lease));
      log.info(`dhcp: ${event} ${formatIpv4(lease.ip)} to ${formatMac(lease.mac)}${lease.hostname ? ` (${lease.hostname})` : ''}`);
    };
    let exhaustedLogged = false;
    const onDhcp = (d: UdpDatagram, now: number) => {
      const exhaustedBefore = this.dhcp.stats.poolExhausted;
      const reply = this.dhcp.handle(d.buf.subarray(d.off, d.off + d.len), d.srcIp, now);
      if (this.dhcp.stats.poolExhausted > exhaustedBefore && !exhaustedLogged) {
        // Once: a guest retrying DISCOVER every few seconds must not fill the log.
        exhaustedLogged = true;
        log.warn(`dhcp: the pool ${formatIpv4(config.firstLease)}-${formatIpv4(config.lastLease)} is exhausted: a guest got no offer (every further one counts in dhcp.poolExhausted; use a larger --net)`);
      }
      if (reply !== undefined) this.stack.sendUdp(config.gateway, 67, reply.dstIp, 68, reply.payload, reply.dstMac);
    };
    this.stack.bindUdp(IPV4_BROADCAST, 67, onDhcp);
    this.stack.bindUdp(config.gateway, 67, onDhcp);
    this.nat = new Nat(
      this.stack,
      { network: config.network, netmask: config.netmask, gateway: config.gateway, dns: config.dns, hostLoopback: config.hostLoopback },
      { idleTimeoutMs: config.udpTimeoutSec * 1000, maxFlows: config.maxFlows },
      resolveTcpConfig({ ...tcpConfigFor(config), tsoMaxBytes: this.offload && config.mtu < 65_000 ? 65_000 : 0 }),
      { maxFlows: config.maxFlows, idleTimeoutMs: config.tcpIdleTimeoutSec * 1000, maxHalfOpen: 512, dialTimeoutMs: config.tcpConnectTimeoutSec * 1000, gateway: config.gateway, dupFd: (fd) => loadNative().dupFd(fd), faults: this.faults },
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
    this.machines = [this.stack, this.dhcp, this.nat, this.icmpNat, this.switch];
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

  /**
   * Guests by name: a guest whose lease carries a hostname (DHCP option 12) resolves at the DNS
   * address as NAME and NAME.DOMAIN; the names go when the lease does (or change with it). A name
   * the user configured (--dns-host) is never taken over or removed.
   */
  private guestNames(ip: number, hostname: string | undefined): void {
    const ipText = formatIpv4(ip);
    const hosts = this.cfg.dnsHosts;
    for (const name of this.namesOfGuest.get(ip) ?? []) hosts.remove(name, ipText);
    this.namesOfGuest.delete(ip);
    if (hostname === undefined) return;
    const label = hostname.split('.')[0]!.toLowerCase();
    const names = this.cfg.domain !== undefined ? [label, `${label}.${this.cfg.domain}`] : [label];
    const added: string[] = [];
    for (const name of names) {
      if (hosts.lookup(name, 'A') !== undefined) continue; // configured, or another guest's
      try {
        hosts.add(name, ipText);
        added.push(name);
      } catch {
        // not a valid DNS name: the guest just is not found by it
      }
    }
    if (added.length > 0) this.namesOfGuest.set(ip, added);
  }

  /**
   * Adds a link: a port of the switch, or — for a transport that serves several guests — the
   * source of one port per guest. Starts receiving.
   */
  attach(link: Link): void {
    this.links.push(link);
    if (link.acceptPorts !== undefined) {
      link.acceptPorts(
        (port) => this.attachPort(port),
        (port) => this.detachPort(port),
      );
    } else {
      this.attachPort(link);
    }
  }

  private attachPort(link: Link): void {
    if (this.closed) {
      void link.close();
      return;
    }
    const port = this.switch.attach(link);
    this.updateOffload();
    log.debug(`switch: port ${port.id} up (${link.kind} ${JSON.stringify(link.describe())})`);
    link.start((frames, l4ChecksumOk) => this.onFrames(port, frames, l4ChecksumOk));
  }

  private detachPort(link: Link): void {
    const port = this.switch.ports.find((p) => p.link === link);
    if (port === undefined) return;
    this.switch.detach(port);
    this.updateOffload();
    log.debug(`switch: port ${port.id} down (${link.kind} ${JSON.stringify(link.describe())})`);
  }

  /** Checksum and segmentation offload only while every port takes such frames (a TAP with a vnet header). */
  private updateOffload(): void {
    this.stack.gso = this.offload && this.switch.ports.every((p) => p.link.gso === true);
  }

  private onFrames(port: SwitchPort, frames: readonly Uint8Array[], l4ChecksumOk: Uint8Array | undefined): void {
    if (this.closed || port.closed) return;
    const now = this.now();
    const stack = this.stack;
    const sw = this.switch;
    const pcap = this.pcap;
    this.inBatch = true;
    this.batchNow = now;
    sw.current = port;
    for (let i = 0; i < frames.length; i++) {
      const frame = frames[i]!;
      stack.rxL4ChecksumOk = l4ChecksumOk !== undefined && l4ChecksumOk[i] === 1;
      if (frame.length < 14) {
        this.runts++;
        continue;
      }
      try {
        pcap?.write(frame);
        sw.input(port, frame, now);
      } catch (err) {
        // A bug this frame met (fault.ts): the frame is lost, the batch and the process go on.
        this.faults.caught('handling a guest frame', err);
      }
    }
    sw.current = undefined;
    this.inBatch = false;
    stack.rxL4ChecksumOk = false;
    this.afterWork(now);
  }

  /** End of a batch or a timer tick: host writes, link flushes, the next deadline. */
  private afterWork(now: number): void {
    try {
      this.nat.afterBatch();
    } catch (err) {
      this.faults.caught('writing guest payload to host sockets', err);
    }
    this.flushDirty();
    this.armTimer(now);
  }

  /** Frames from the stack to the guests, through the switch. */
  private toGuests(frame: Uint8Array, gsoSize?: number): void {
    this.pcap?.write(frame);
    this.switch.output(frame, this.inBatch ? this.batchNow : this.now(), gsoSize);
    if (!this.inBatch) this.scheduleFlush();
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
    this.switch.flush();
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
    for (const m of this.machines) {
      try {
        m.poll(now);
      } catch (err) {
        this.faults.caught('running timers', err);
      }
    }
    this.afterWork(now); // payload a timer delivered (none today) must not wait for the next frame
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
      return out;
    });
    const udp = this.nat.udp.list().map((f): ApiFlow => ({ proto: 'udp', guest: f.guest, remote: f.destination, host: f.host, bytes_from_guest: f.bytesFromGuest, bytes_to_guest: f.bytesToGuest }));
    return [...tcp, ...udp];
  }

  /** The switch's ports, for `/ports` and `vmnat ctl ports`. */
  ports(): ApiPort[] {
    return this.switch.ports.map((p) => {
      const out: ApiPort = {
        id: p.id,
        transport: p.link.kind,
        ...p.link.describe(),
        mac: p.mac === undefined ? null : formatMac(p.mac),
        ip: p.ip === undefined ? null : formatIpv4(p.ip),
        address_source: p.ipSource ?? null,
        hostname: p.hostname ?? null,
        rx_frames: p.stats.rxFrames,
        rx_bytes: p.stats.rxBytes,
        tx_frames: p.stats.txFrames,
        tx_bytes: p.stats.txBytes,
        drops: { ...p.stats.drops },
      };
      return out;
    });
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
      engine: { internalErrors: this.faults.internalErrors },
      links: this.links.map((l) => ({ kind: l.kind, ...l.stats })),
      switch: { ...this.switch.stats, runts: this.runts },
      ports: this.ports(),
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
