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
import { networkOf, type Config } from './config.ts';
import { COMPLETE_L4_CHECKSUM, type Link } from './link/types.ts';
import { loadNative, type NativeHostTcp, type NativeHostTcpCallback } from './link/native.ts';
import { Stack, type UdpDatagram } from './stack/stack.ts';
import { DhcpServer } from './dhcp/server.ts';
import { ALL_DHCP_SERVERS, DHCP6_CLIENT_PORT, DHCP6_SERVER_PORT, Dhcp6Server } from './dhcp6/server.ts';
import { PcapWriter } from './pcap.ts';
import { Nat } from './nat/nat.ts';
import { IcmpNat, nativePingOpener } from './nat/icmp.ts';
import { DnsForwarder } from './dns/forwarder.ts';
import { DnsTcpService } from './dns/tcp-endpoint.ts';
import { resolveTcpConfig, type TcpConfig } from './stack/tcp/index.ts';
import { IPV4_BROADCAST, formatIpPort, formatIpv4, formatMac, ipv6Bytes, parseIp, readMac as readMacAt, type IpAddr } from './stack/wire/addr.ts';
import { DEFAULT_SWITCH, Switch, type SwitchPort } from './switch/switch.ts';
import { log } from './log.ts';
import { PortForwarder } from './portfwd/forwarder.ts';
import { NatGuestDialer } from './portfwd/dialer.ts';
import { configToApi, leaseEvent, leaseToApi, type ApiBackend, type ApiFlow, type ApiPort, type FlowEvent, type LeaseEvent } from './api/server.ts';
import type { TcpFlow } from './nat/tcp.ts';
import { FaultBarrier } from './fault.ts';
import { TftpServer } from './tftp/server.ts';
import { LocalZone, type ZoneEntry } from './dns/zone.ts';
import { DnsNameTaken } from './api/server.ts';
import { BufferBudget } from './stack/tcp/budget.ts';
import { Services, service } from './service.ts';
import { FlowTable, type FlowAdmission, type FlowEntry } from './nat/flows.ts';
import { FilterSet, blockEvent, type FilterEvent, type FilterFlow, type FilterJson } from './filter/filter.ts';
import { IPV4_ANY, parseIpv4 as parseIpv4Text } from './stack/wire/addr.ts';
import { Ipv6View } from './stack/wire/ipv6.ts';
import { GuestForwards } from './portfwd/guestfwd.ts';
import { natTarget, type NatPolicyConfig } from './nat/policy.ts';
import { DhcpSnoop } from './modes/snoop.ts';
import { modeToApi, type ModeName } from './modes/mode.ts';
import { ModeChangeError, type ApiMode } from './api/server.ts';

/**
 * TCP buffers by MTU: at MTU 65520 one segment is 64 KiB, so windows and send buffers of 4 MiB keep
 * enough segments in flight; 1 MiB serves MTU 1500.
 */
function tcpConfigFor(config: Config, budget: BufferBudget): Partial<TcpConfig> {
  const buffer = config.tcpBufferBytes || (config.mtu > 9000 ? 4 << 20 : 1 << 20);
  // Out-of-order data per flow: half the window (a hostile guest's cheapest way to pin memory; a
  // loss burst of half a window still recovers with SACK).
  const out: Partial<TcpConfig> = { mss: config.mtu - 40, recvWindow: buffer, sendBufferSize: buffer, budget, maxOooBytes: buffer >>> 1 };
  if (config.tcpKeepaliveSec > 0) {
    // Linux's shape: after the idle time, 9 probes 75 s apart (shortened for short idle times).
    out.keepalive = { idleMs: config.tcpKeepaliveSec * 1000, intervalMs: Math.min(75, config.tcpKeepaliveSec) * 1000, count: 9 };
  }
  return out;
}

function tcpFlowToApi(f: TcpFlow, now: number): ApiFlow {
  const out: ApiFlow = {
    proto: 'tcp',
    guest: formatIpPort(f.guestIp, f.guestPort),
    remote: formatIpPort(f.dstIp, f.dstPort),
    host: f.hostShown ?? `${f.hostAddress}:${f.dstPort}`,
    state: f.conn?.state ?? 'dialing',
    bytes_from_guest: f.bytesFromGuest,
    bytes_to_guest: f.bytesToGuest,
    age_s: Math.round((now - f.openedAt) / 1000),
  };
  if (f.forward !== undefined) out.forward = f.forward;
  return out;
}

/** Lease changes logged at info level per minute (renewals are always debug). */
const LEASE_LOG_BURST = 20;

export class Engine implements ApiBackend {
  readonly stack: Stack;
  readonly dhcp: DhcpServer;
  /** DHCPv6 (when the network has IPv6). */
  dhcp6: Dhcp6Server | undefined;
  readonly nat: Nat;
  readonly icmpNat: IcmpNat;
  readonly dns: DnsForwarder;
  /** DNS over TCP at the DNS address: bounded connections, each with bounded answers. */
  readonly dnsTcp: DnsTcpService;
  readonly forwards: PortForwarder;
  /** --guestfwd: virtual addresses and ports inside the network that lead to host sockets. */
  readonly guestForwards: GuestForwards;
  private readonly listeners = new Set<(e: LeaseEvent | FlowEvent | FilterEvent) => void>();
  /** --filter and PUT /filter: checked once per new flow (and per guest-to-guest flow start). */
  readonly filterSet: FilterSet;
  /** One reused record for filter checks (the set keeps nothing of it). */
  private readonly filterScratch: FilterFlow = { direction: 'out', proto: 'tcp', src: 0, srcPort: 0, dst: 0, dstPort: 0 };
  /** Every name answered locally at the DNS address, with its source (dns/zone.ts). */
  readonly zone: LocalZone;
  /** Names in the DNS table that belong to a guest's lease, by its address. */
  private readonly namesOfGuest = new Map<number, string[]>();
  /** The IPv6 addresses (at most 4, the newest) answered for those names, by the lease's address. */
  private readonly v6OfGuest = new Map<number, string[]>();
  /** Bound leases, newest last: an empty guest address in a forward means the newest. */
  private readonly boundLeases = new Map<number, number>();
  /** Everything with timers: polled at the earliest deadline any of them reports. */
  /** Everything with timers and counters (service.ts), polled on the one timer. */
  readonly services = new Services();
  readonly switch: Switch;
  /** What all TCP connections may buffer together (--max-buffer-memory; stack/tcp/budget.ts). */
  readonly memory: BufferBudget;
  /** Every NAT flow, TCP, UDP and ICMP (nat/flows.ts). */
  readonly flowTable = new FlowTable();
  private runts = 0;
  /** Bugs caught at an entry point and survived (fault.ts): `engine.internalErrors`. */
  readonly faults = new FaultBarrier(log.error);
  /** The links given (a multi-guest link's ports are in the switch, not here). */
  private readonly links: Link[] = [];
  /** Guest-side capture (--pcap), if any. */
  readonly pcap: PcapWriter | undefined;
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Infinity;
  private flushScheduled = false;
  /** Frames are being handled (a batch): the stack's output is flushed after it, not scheduled. */
  private inBatch = false;
  private batchNow = 0;
  private closed = false;
  private leaseLogWindow = -Infinity;
  private leaseLogCount = 0;
  private leaseLogSuppressed = 0;
  /**
   * Bridged mode and macOS vmnet (modes/mode.ts): the guests lease from the uplink's DHCP server,
   * whose ACKs this reads so anti-spoofing binds each guest to its lease.
   */
  private readonly snoop: DhcpSnoop | undefined;
  /** vmnat's stack takes part (nat, and Linux host mode for its DHCP); off where the uplink serves. */
  private readonly stackOn: boolean;

  /**
   * Large TCP frames (below MTU 65000, 64 KiB segments) while every transport takes them: a TAP
   * (its vnet header: partial checksums the kernel finishes, GSO) or a --socket/--fd given
   * --offload (whole frames, checksums summed in C). --no-tso turns it off.
   */
  private readonly offload: boolean;
  /**
   * Otherwise, while every transport is one of the addon's (a TAP with --no-tso, a --socket/--fd
   * without --offload, a spawned VM) or the stream transport (whose sending is JavaScript's but
   * calls the same C), TCP still builds 64 KiB segments and the addon cuts them
   * into MTU-sized frames (software GSO, Link.segments): the peer gets the frames it always did,
   * and JavaScript builds one frame per 64 KiB instead of one per MSS. VMNAT_SOFT_GSO=0 turns it
   * off (the path before, for side-by-side benchmarks).
   */
  private readonly softGso: boolean;
  /** TCP's largest segment while large frames are in use (0: MSS-sized only). */
  private readonly tsoMaxBytes: number;
  private softGsoOn = false;

  constructor(private readonly cfg: Config) {
    const config = cfg;
    // First: a refused --pcap (PcapOpenError) must cost one line, before anything else logs.
    if (config.pcapFile !== undefined) this.pcap = new PcapWriter(config.pcapFile);
    // The network part (addresses, leases, MTU, DNS, policy) builds the switch, stack, DHCP and
    // DNS; the rest of `config` says how vmnat runs (NAT limits, forwards, links).
    const net = networkOf(cfg);
    this.memory = new BufferBudget(config.maxBufferBytes);
    // The local zone: configured names, then the names that reach the host (host.DOMAIN and every
    // --host-alias, at the gateway), guests' names as they lease, and the API's.
    this.zone = new LocalZone(net.dnsHosts);
    const gatewayText = formatIpv4(net.gateway);
    const mode = config.mode;
    const nat = mode.kind === 'nat';
    this.stackOn = nat || (mode.kind === 'host' && mode.vmnet === undefined);
    // The names that reach the host through the gateway exist only where there is a gateway.
    for (const name of nat ? [...(net.domain !== undefined ? [`host.${net.domain}`] : []), ...net.hostAliases] : []) {
      if (this.zone.has(name)) continue;
      this.zone.add(name, gatewayText, 'host');
      // Its IPv6 twin: the IPv6 gateway reaches the host's ::1 as the IPv4 one reaches 127.0.0.1.
      if (net.ipv6 !== undefined) this.zone.add(name, net.ipv6.gateway, 'host');
    }
    this.offload = config.links.every((l) => l.kind === 'tap' || ((l.kind === 'socket' || l.kind === 'fd') && l.offload === true)) && !config.noTso;
    this.softGso = !this.offload && process.env['VMNAT_SOFT_GSO'] !== '0' && config.links.every((l) => l.kind === 'tap' || l.kind === 'socket' || l.kind === 'fd' || l.kind === 'spawn' || l.kind === 'stream');
    this.tsoMaxBytes = (this.offload || this.softGso) && net.mtu < 65_000 ? 65_000 : 0;
    this.stack = new Stack(
      {
        network: net.network, netmask: net.netmask, gateway: net.gateway, dns: net.dns, mtu: net.mtu,
        ipv6: net.ipv6 === undefined ? undefined : {
          ...net.ipv6,
          mtu: net.mtu,
          searchDomains: [...new Set([...(net.domain !== undefined ? [net.domain] : []), ...net.dnsSearch])],
          raIntervalMs: 120_000,
          managed: false,
          otherConfig: true,
        },
      },
      (frame, gsoSize) => this.toGuests(frame, gsoSize),
    );
    // Guest forwards' addresses are virtual hosts of the stack, reserved like the gateway's
    // (guest forwards are NAT-mode flags: none outside it).
    this.guestForwards = new GuestForwards(config.guestForwards ?? [], net.gateway);
    const virtualHosts = [...this.guestForwards.hosts];
    const virtualMacs = virtualHosts.map((ip) => this.stack.addVirtualHost(ip));
    // Host mode: the host's address is reserved like vmnat's own. Where the uplink's DHCP serves
    // (bridged, vmnet), the subnet is the LAN's, unknown here: any unicast address may be claimed
    // or snooped (0.0.0.0/0), and nothing goes to vmnat's stack.
    const hostIp = mode.kind === 'host' && mode.vmnet === undefined ? [mode.hostIp] : [];
    this.switch = new Switch(
      {
        network: this.stackOn ? net.network : 0,
        netmask: this.stackOn ? net.netmask : 0,
        reserved: this.stackOn ? [net.gateway, net.dns, ...virtualHosts, ...hostIp] : [],
        ownMacs: this.stackOn ? [this.stack.gatewayMac, this.stack.dnsMac, ...virtualMacs] : [],
        reserved6: net.ipv6 === undefined || !this.stackOn ? [] : [net.ipv6.gateway, net.ipv6.dns, 'fe80::2'].map((x) => ipv6Bytes(x)),
        isolate: net.isolate,
        antiSpoof: net.antiSpoof,
        maxMacs: DEFAULT_SWITCH.maxMacs,
        macAgeMs: DEFAULT_SWITCH.macAgeMs,
      },
      this.stackOn ? (frame, now) => this.stack.input(frame, now) : () => undefined,
      (port, ip) => {
        this.dhcp.claim(ip);
        log.info(`switch: port ${port.id} uses ${formatIpv4(ip)} without DHCP (bound to it as a static address)`);
      },
    );
    this.switch.connected = !config.startDisconnected;
    const dhcpConfig = {
      serverIp: net.gateway,
      netmask: net.netmask,
      // Host-only: no router (nothing routes out) and no DNS (vmnat's forwarder is NAT's).
      ...(nat ? { router: net.gateway } : {}),
      dnsServers: nat ? [net.dns] : [],
      poolStart: net.firstLease,
      poolEnd: net.lastLease,
      reserved: [net.gateway, net.dns, ...virtualHosts, ...hostIp],
      leaseTimeSec: net.dhcpLeaseTimeSec,
      mtu: net.mtu,
      searchDomains: net.dnsSearch,
      staticLeases: net.dhcpStatic,
      ...(config.bootFile !== undefined ? { bootFile: config.bootFile } : {}),
      ...(config.tftpServer !== undefined ? { tftpServer: config.tftpServer } : {}),
      ...(net.domain !== undefined ? { domainName: net.domain } : {}),
    };
    this.dhcp = new DhcpServer(dhcpConfig);
    this.dhcp.onLeaseChange = (event, lease) => {
      // A renewal (the same address to the same MAC) is every T1 of every guest: debug only, so a
      // guest renewing in a loop cannot fill the log. New leases and changes stay at info.
      const renewal = event === 'bound' && this.boundLeases.get(lease.ip) === lease.mac;
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
      const line = `dhcp: ${renewal ? 'renewed' : event} ${formatIpv4(lease.ip)} to ${formatMac(lease.mac)}${lease.hostname ? ` (${lease.hostname})` : ''}`;
      if (renewal || !this.leaseLogAllowed(this.now())) log.debug(line);
      else log.info(line);
    };
    let exhaustedLogged = false;
    const onDhcp = (d: UdpDatagram, now: number) => {
      const exhaustedBefore = this.dhcp.stats.poolExhausted;
      const reply = this.dhcp.handle(d.buf.subarray(d.off, d.off + d.len), d.srcIp, now);
      if (this.dhcp.stats.poolExhausted > exhaustedBefore && !exhaustedLogged) {
        // Once: a guest retrying DISCOVER every few seconds must not fill the log.
        exhaustedLogged = true;
        log.warn(`dhcp: the pool ${formatIpv4(net.firstLease)}-${formatIpv4(net.lastLease)} is exhausted: a guest got no offer (every further one counts in dhcp.poolExhausted; use a larger --net)`);
      }
      if (reply !== undefined) this.stack.sendUdp(net.gateway, 67, reply.dstIp, 68, reply.payload, reply.dstMac);
    };
    this.stack.bindUdp(IPV4_BROADCAST, 67, onDhcp);
    this.stack.bindUdp(net.gateway, 67, onDhcp);
    this.flowTable.guestLimit = config.maxFlows;
    this.filterSet = new FilterSet(net.filter);
    const admitOut: FlowAdmission = (proto, guestIp, guestPort, dstIp, dstPort) =>
      this.filterCheck('out', proto, guestIp, proto === 'icmp' ? 0 : guestPort, dstIp, dstPort, true);
    this.switch.guestToGuest = (frame, from, to) => this.filterGuestToGuest(frame, from, to);
    const policy: NatPolicyConfig = { network: net.network, netmask: net.netmask, gateway: net.gateway, dns: net.dns, hostLoopback: net.hostLoopback, deny: net.deny, guestForwards: this.guestForwards };
    this.nat = new Nat(
      this.stack,
      policy,
      { idleTimeoutMs: config.udpTimeoutSec * 1000, maxFlows: config.maxFlows, table: this.flowTable, admit: admitOut },
      resolveTcpConfig({ ...tcpConfigFor(config, this.memory), tsoMaxBytes: this.tsoMaxBytes }),
      { maxFlows: config.maxFlows, idleTimeoutMs: config.tcpIdleTimeoutSec * 1000, maxHalfOpen: 512, dialTimeoutMs: config.tcpConnectTimeoutSec * 1000, gateway: net.gateway, dupFd: (fd) => loadNative().dupFd(fd), faults: this.faults, table: this.flowTable, admit: admitOut, maxForwardFlows: config.maxForwardFlows, hostTcp: nativeHostTcp(), hostBatch: this.hostBatch },
      (events) => this.dnsTcp.open(events),
      () => this.now(),
      // Inside a batch or host event afterWork arms the timer at the end: once is enough.
      () => {
        if (!this.inBatch) this.armTimer(this.now());
      },
    );
    // Outside nat mode nothing is routed: a guest aiming past vmnat's MAC is counted (ipv4.noRoute).
    this.stack.forward = nat ? (ip, srcMac, now) => this.nat.input(ip, srcMac, now) : () => false;
    const six = this.stack.ipv6;
    if (six !== undefined) {
      six.onNewAddress = (ip6, mac) => {
        for (const [ip4, m] of this.boundLeases) if (m === mac) this.guestAddress6(ip4, ip6);
      };
    }
    if (six !== undefined && net.ipv6 !== undefined) {
      this.nat.policy6 = { ...net.ipv6, hostLoopback: net.hostLoopback, deny: net.deny6 ?? [] };
      six.forward = (ip, srcMac, now) => this.nat.input6(ip, srcMac, now);
    }
    // One ping socket per flow (an fd each): a smaller cap than other flows.
    this.icmpNat = new IcmpNat(
      this.stack,
      { idleTimeoutMs: 30_000, maxFlows: Math.min(config.maxFlows, 1024), gateway: net.gateway, table: this.flowTable, admit: admitOut },
      nativePingOpener(),
      () => this.now(),
      () => this.armTimer(this.now()),
      log,
    );
    this.nat.icmp = (ip, srcMac, now, hostAddress) => this.icmpNat.input(ip, srcMac, now, hostAddress);
    this.nat.icmp6 = (ip, srcMac, now, hostAddress) => this.icmpNat.input(ip, srcMac, now, hostAddress);
    this.dns = new DnsForwarder({
      mode: net.dnsMode,
      servers: net.dnsServers,
      resolvConfPath: '/etc/resolv.conf',
      hosts: net.dnsHosts,
      timeoutMs: 2000,
      log,
      // vmnat fragments what it sends to the guest, so an answer may use the guest's whole EDNS size.
      maxUdpSize: 4096,
    });
    if (nat) {
      this.stack.bindUdp(net.dns, 53, (d) => {
        const { srcIp, srcPort, srcMac } = d;
        this.dns.query(d.buf.subarray(d.off, d.off + d.len), 'udp', (answer) => {
          this.stack.sendUdp(net.dns, 53, srcIp, srcPort, answer, srcMac);
        });
      });
    }
    if (six !== undefined && net.ipv6 !== undefined) {
      const dns6 = net.ipv6.dns;
      six.bindUdp(dns6, 53, (d) => {
        const { srcIp, srcPort, srcMac } = d;
        this.dns.query(d.buf.subarray(d.off, d.off + d.len), 'udp', (answer) => {
          this.stack.sendUdp(dns6, 53, srcIp, srcPort, answer, srcMac);
        });
      });
    }
    if (six !== undefined && net.ipv6 !== undefined) {
      // DHCPv6 (dhcp6/server.ts): for guests that ask (stateful) or ignore RDNSS (stateless).
      const dhcp6 = new Dhcp6Server({
        prefix: net.ipv6.prefix,
        dns: net.ipv6.dns,
        reserved: [net.ipv6.gateway, net.ipv6.dns],
        searchDomains: six.config.searchDomains,
        leaseTimeSec: net.dhcpLeaseTimeSec,
        statics: net.dhcp6Static ?? [],
        serverMac: this.stack.gatewayMac,
      });
      this.dhcp6 = dhcp6;
      six.bindUdp(ALL_DHCP_SERVERS, DHCP6_SERVER_PORT, (d, now) => {
        if (d.srcPort !== DHCP6_CLIENT_PORT) return;
        const reply = dhcp6.handle(d.buf.subarray(d.off, d.off + d.len), d.srcMac, now);
        if (reply !== undefined) this.stack.sendUdp(six.linkLocal, DHCP6_SERVER_PORT, d.srcIp, DHCP6_CLIENT_PORT, reply, d.srcMac);
      });
    }
    this.dnsTcp = new DnsTcpService(this.dns);
    // Registration order is poll order (and reverse close order); names are the stats' keys.
    const sv = this.services;
    sv.register(service('stack', this.stack, () => this.stack.stats));
    if (six !== undefined) sv.register(service('ipv6', {}, () => six.stats));
    const dhcp6 = this.dhcp6;
    if (dhcp6 !== undefined) sv.register(service('dhcp6', {}, () => dhcp6.stats));
    sv.register(service('dhcp', this.dhcp, () => this.dhcp.stats));
    sv.register(service('nat', this.nat, () => this.nat.stats, () => this.nat.close()));
    sv.register(service('udpNat', {}, () => this.nat.udp.stats));
    sv.register(service('tcpNat', {}, () => this.nat.tcp.stats));
    sv.register(service('tcp', {}, () => this.nat.tcp.tcpStats));
    sv.register(service('icmpNat', this.icmpNat, () => this.icmpNat.stats, () => this.icmpNat.closeAll()));
    sv.register(service('flows', {}, () => this.flowTable.counts()));
    sv.register(service('memory', {}, () => ({ budget: this.memory.limit, used: this.memory.used, peak: this.memory.peak, ...this.memory.stats })));
    sv.register(service('dns', {}, () => this.dns.stats, () => this.dns.close()));
    sv.register(service('dnsTcp', {}, () => this.dnsTcp.stats));
    if (config.tftpDir !== undefined) {
      const tftp = new TftpServer(this.stack, net.gateway, config.tftpDir, net.mtu, () => this.now());
      sv.register(service('tftp', tftp, () => tftp.stats, () => tftp.close()));
    }
    if (this.guestForwards.size > 0) sv.register(service('guestfwd', {}, () => this.guestForwards.stats));
    sv.register(service('switch', this.switch, () => ({ ...this.switch.stats, runts: this.runts })));
    if (!this.stackOn) {
      const snoop = new DhcpSnoop({
        bind: (mac, ip, now) => this.switch.bindLease(mac, ip, undefined, now),
        unbind: (mac, ip) => this.switch.unbindLease(mac, ip),
      });
      this.snoop = snoop;
      sv.register(service('dhcpSnoop', snoop, () => snoop.stats));
    }
    sv.register(
      service('filter', {}, () => {
        const { checks, blocked, unmatched, version } = this.filterSet.toJSON();
        return { rules: this.filterSet.size, checks, blocked, unmatched, version };
      }),
    );
    this.nat.tcp.onFlowEvent = (event, f, reason) => {
      if (f.connectTo !== undefined) {
        const gs = this.guestForwards.stats;
        if (event === 'open') gs.connections++;
        else if (reason === 'refused') gs.refused++;
        else if (reason === 'unreachable') gs.failed++;
      }
      if (this.listeners.size === 0) return;
      const e: FlowEvent = { type: 'flow', event, flow: tcpFlowToApi(f, this.now()) };
      if (reason !== undefined) e.reason = reason;
      this.publish(e);
    };
    const dialer = new NatGuestDialer(
        this.stack,
        this.nat.tcp,
        net.gateway,
        () => {
          let last: number | undefined;
          for (const ip of this.boundLeases.keys()) last = ip;
          return last;
        },
        (proto, clientIp, clientPort, guestIp, guestPort) => this.filterCheck('in', proto, clientIp ?? IPV4_ANY, clientPort, guestIp, guestPort, true),
        config.hostfwdSource === 'client' ? (ip) => ip !== net.gateway && natTarget(policy, ip, 0).kind === 'host' : undefined,
      );
    dialer.gateway6 = net.ipv6?.gateway;
    this.forwards = new PortForwarder({
      dialer,
      udpIdleTimeoutMs: config.udpTimeoutSec * 1000,
      maxUdpFlows: config.maxFlows,
      guestNetwork: { network: net.network, netmask: net.netmask, reserved: [net.gateway, net.dns], ipv6: net.ipv6 },
      // As --hostfwd is refused outside nat mode, so is a forward added at run time.
      ...(config.mode.kind !== 'nat' ? { refuseAll: `port forwards need nat mode (vmnat runs in ${config.mode.kind} mode: guests are reached by their own addresses)` } : {}),
    });
  }

  /**
   * The clock (ms, monotonic). Inside a frame batch or host event it is the time the batch began,
   * read once: the NAT asks for the time per segment, and each read of the real clock is a call
   * out of optimized code (~60 ns; ~3 % of a round trip's user time when read per segment).
   */
  now(): number {
    return this.inBatch ? this.batchNow : performance.now();
  }

  /**
   * Lease lines at info level: LEASE_LOG_BURST per minute, the rest at debug with one line saying
   * how many were held back (a guest binding random MACs must not turn the log into a flood).
   */
  private leaseLogAllowed(now: number): boolean {
    if (now - this.leaseLogWindow >= 60_000) {
      if (this.leaseLogSuppressed > 0) log.info(`dhcp: ${this.leaseLogSuppressed} more lease changes in the last minute (--log-level debug shows each)`);
      this.leaseLogWindow = now;
      this.leaseLogCount = 0;
      this.leaseLogSuppressed = 0;
    }
    if (this.leaseLogCount < LEASE_LOG_BURST) {
      this.leaseLogCount++;
      return true;
    }
    this.leaseLogSuppressed++;
    return false;
  }

  /**
   * Guests by name: a guest whose lease carries a hostname (DHCP option 12) resolves at the DNS
   * address as NAME and NAME.DOMAIN; the names go when the lease does (or change with it). A name
   * the user configured (--dns-host) is never taken over or removed.
   */
  private guestNames(ip: number, hostname: string | undefined): void {
    const ipText = formatIpv4(ip);
    for (const name of this.namesOfGuest.get(ip) ?? []) {
      this.zone.removeAddress(name, ipText);
      for (const a of this.v6OfGuest.get(ip) ?? []) this.zone.removeAddress(name, a);
    }
    this.namesOfGuest.delete(ip);
    this.v6OfGuest.delete(ip);
    if (hostname === undefined) return;
    const label = hostname.split('.')[0]!.toLowerCase();
    const names = this.cfg.domain !== undefined ? [label, `${label}.${this.cfg.domain}`] : [label];
    const added: string[] = [];
    for (const name of names) {
      if (this.zone.has(name)) continue; // configured, the host's, or another guest's
      try {
        if (this.zone.add(name, ipText, 'guest')) added.push(name);
      } catch {
        // not a valid DNS name: the guest just is not found by it
      }
    }
    if (added.length === 0) return;
    this.namesOfGuest.set(ip, added);
    // The guest's IPv6 addresses seen so far (from its MAC) answer AAAA for the same names.
    const mac = this.boundLeases.get(ip);
    const six = this.stack.ipv6;
    if (mac === undefined || six === undefined) return;
    for (const [a, m] of six.neighbourList()) if (m === mac && six.inPrefix(a)) this.guestAddress6(ip, a);
  }

  /**
   * A leased guest uses an IPv6 address of the prefix (SLAAC, DHCPv6): its DHCP names answer AAAA
   * with it too, the newest four kept (temporary addresses come and go).
   */
  private guestAddress6(ip4: number, ip6: string): void {
    const names = this.namesOfGuest.get(ip4);
    if (names === undefined) return;
    const list = this.v6OfGuest.get(ip4) ?? [];
    if (list.includes(ip6)) return;
    if (list.length >= 4) {
      const old = list.shift()!;
      for (const n of names) this.zone.removeAddress(n, old);
    }
    list.push(ip6);
    this.v6OfGuest.set(ip4, list);
    for (const n of names) {
      try {
        this.zone.add(n, ip6, 'guest');
      } catch {
        // not a valid name: as for IPv4
      }
    }
  }

  // ---- the local zone (GET/POST/DELETE /dns) ----

  dnsZone(): ZoneEntry[] {
    return this.zone.list();
  }

  /** POST /dns: NAME → IP at run time. Throws DnsFlagError (400) or a taken-name error (409). */
  addDnsName(name: string, ip: string): ZoneEntry {
    if (!this.zone.add(name, ip, 'api')) throw new DnsNameTaken(name, this.zone.get(name)?.source ?? 'config');
    return this.zone.get(name)!;
  }

  /** DELETE /dns/NAME; false if no such name. */
  removeDnsName(name: string): boolean {
    return this.zone.remove(name);
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

  /**
   * Adds the mode's uplink (modes/uplink.ts): the host's TAP, a TAP on a bridge, or vmnet. A port
   * of the switch like a guest's, but trusted (switch.ts).
   */
  attachUplink(link: Link): void {
    this.links.push(link);
    if (this.closed) {
      void link.close();
      return;
    }
    const port = this.switch.attach(link, { uplink: true });
    this.updateOffload(); // the uplink takes no GSO frames: the stack segments from now on
    log.debug(`switch: port ${port.id} up (uplink ${link.kind} ${JSON.stringify(link.describe())})`);
    link.start((frames, l4ChecksumOk) => this.onFrames(port, frames, l4ChecksumOk));
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

  /**
   * Checksum and segmentation offload only while every port takes such frames (a TAP with a vnet
   * header); else, while every port's link completes checksums (the native ones), TCP frames leave
   * the stack with the pseudo-header sum and the addon sums the rest in C.
   */
  private updateOffload(): void {
    const ports = this.switch.ports;
    const kernelGso = this.offload && ports.every((p) => p.link.gso === true);
    const softGso = !kernelGso && this.softGso && ports.every((p) => p.link.segments === true);
    this.stack.gso = kernelGso || softGso;
    this.softGsoOn = softGso;
    for (const p of ports) if (p.link.segments === true) p.link.softGso = softGso;
    // A port that takes neither (none today: every transport is native or opts out at start)
    // must only ever get MSS-sized segments.
    this.nat?.tcp.setTsoMaxBytes(this.stack.gso ? this.tsoMaxBytes : 0);
    this.stack.linkCompletesChecksums = ports.length > 0 && ports.every((p) => p.link.completesChecksums === true);
  }

  private onFrames(port: SwitchPort, frames: readonly Uint8Array[], l4ChecksumOk: Uint8Array | undefined): void {
    if (this.closed || port.closed) return;
    const now = performance.now();
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
        if (port.uplink && this.snoop !== undefined && sw.connected) this.snoop.inspect(frame, now);
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
    // Still part of the batch: what the NAT sends now (ACKs, a host's answer read right after
    // its request was written) goes out with the flush below, not a setImmediate later.
    const outer = this.inBatch;
    this.inBatch = true;
    this.batchNow = now;
    try {
      this.nat.afterBatch();
    } catch (err) {
      this.faults.caught('writing guest payload to host sockets', err);
    } finally {
      this.inBatch = outer;
    }
    this.flushDirty();
    this.armTimer(now);
  }

  /** Frames from the stack to the guests, through the switch. */
  private toGuests(frame: Uint8Array, gsoSize?: number): void {
    // A capture shows checksums complete where the guest gets them complete (software GSO too:
    // its super-frame is captured as built, one record, with the checksum summed here).
    this.pcap?.write(frame, gsoSize === COMPLETE_L4_CHECKSUM || (gsoSize !== undefined && this.softGsoOn));
    this.switch.output(frame, this.inBatch ? this.batchNow : this.now(), gsoSize);
    if (!this.inBatch) this.scheduleFlush();
  }

  /**
   * Host socket events run as a batch of their own: frames they send to the guests are flushed
   * once when the event ends (not by a setImmediate later), and the timer is re-armed.
   */
  private readonly hostBatch = {
    begin: (): boolean => {
      if (this.inBatch || this.closed) return false;
      this.inBatch = true;
      this.batchNow = performance.now();
      return true;
    },
    end: (opened: boolean): void => {
      if (!opened) return;
      this.inBatch = false;
      this.afterWork(this.batchNow);
    },
  };

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      this.flushDirty();
      // What was sent outside a batch may have started a timer (an IPv6 neighbour solicitation
      // waiting for its answer): make sure the one timer covers it.
      this.armTimer(this.now());
    });
  }

  private flushDirty(): void {
    this.switch.flush();
    this.pcap?.flush();
  }

  private armTimer(now: number): void {
    const at = this.services.nextDeadline();
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
    for (const m of this.services.all) {
      try {
        m.poll(now);
      } catch (err) {
        this.faults.caught(`running ${m.name} timers`, err);
      }
    }
    this.afterWork(now); // payload a timer delivered (none today) must not wait for the next frame
  }

  private publish(e: LeaseEvent | FlowEvent | FilterEvent): void {
    for (const l of this.listeners) l(e);
  }

  // ---- ApiBackend ----
  leases() {
    const now = this.now();
    const six = this.stack.ipv6;
    const v6ByMac = new Map<number, string[]>();
    if (six !== undefined) {
      for (const [ip, mac] of six.neighbourList()) {
        if (!six.inPrefix(ip)) continue;
        const list = v6ByMac.get(mac) ?? [];
        list.push(ip);
        v6ByMac.set(mac, list);
      }
    }
    return this.dhcp.leases(now).map((l) => {
      const out = leaseToApi(l, now);
      const v6 = v6ByMac.get(l.mac);
      if (v6 !== undefined) out.ipv6 = v6.sort();
      return out;
    });
  }

  // ---- the filter ----

  /**
   * One check of the filter rules (no rules: pass, at the cost of one comparison). `count`: a
   * new flow (hits are counted and a block is an event); false only re-decides a packet.
   */
  private filterCheck(direction: 'in' | 'out', proto: FilterFlow['proto'], src: IpAddr, srcPort: number, dst: IpAddr, dstPort: number, count: boolean): boolean {
    if (this.filterSet.size === 0) return true;
    const f = this.filterScratch;
    f.direction = direction;
    f.proto = proto;
    f.src = src;
    f.srcPort = srcPort;
    f.dst = dst;
    f.dstPort = dstPort;
    const v = count ? this.filterSet.check(f, this.cfg) : this.filterSet.match(f, this.cfg);
    if (v.action === 'pass') return true;
    if (count && this.listeners.size > 0) this.publish(blockEvent(f, v));
    return false;
  }

  /**
   * A unicast frame between two guests: `out` for the sender, `in` for the receiver. A packet
   * that starts a flow (TCP SYN, ICMP echo request, any UDP datagram) counts hits and raises the
   * block event; the rest of the flow is re-decided without counting. A blocked flow start gets
   * ICMP "administratively prohibited" from the gateway, so the sender fails at once.
   */
  private filterGuestToGuest(frame: Uint8Array, from: SwitchPort, to: SwitchPort): boolean {
    if (this.filterSet.size === 0) return true;
    if (frame.length >= 54 && frame[12] === 0x86 && frame[13] === 0xdd) return this.filterGuestToGuest6(frame);
    if (frame.length < 34 || frame[12] !== 0x08 || frame[13] !== 0x00) return true; // ARP and the rest
    const ihl = (frame[14]! & 15) * 4;
    const l4 = 14 + ihl;
    const protoNum = frame[23]!;
    const src = ((frame[26]! << 24) | (frame[27]! << 16) | (frame[28]! << 8) | frame[29]!) >>> 0;
    const dst = ((frame[30]! << 24) | (frame[31]! << 16) | (frame[32]! << 8) | frame[33]!) >>> 0;
    const fragment = ((frame[20]! & 0x1f) << 8 | frame[21]!) !== 0;
    const proto = protoNum === 6 ? 'tcp' : protoNum === 17 ? 'udp' : protoNum === 1 ? 'icmp' : 'other';
    let srcPort = 0;
    let dstPort = 0;
    let starts = proto === 'other' || proto === 'udp';
    if ((proto === 'tcp' || proto === 'udp') && !fragment && frame.length >= l4 + 4) {
      srcPort = (frame[l4]! << 8) | frame[l4 + 1]!;
      dstPort = (frame[l4 + 2]! << 8) | frame[l4 + 3]!;
      if (proto === 'tcp' && frame.length >= l4 + 14) starts = (frame[l4 + 13]! & 0x12) === 0x02; // SYN, not SYN-ACK
    } else if (proto === 'icmp' && frame.length > l4) {
      starts = frame[l4] === 8; // echo request
    }
    // The uplink (the host, the LAN) is no guest: only the guest's side of the rules applies.
    const ok = (from.uplink || this.filterCheck('out', proto, src, srcPort, dst, dstPort, starts)) && (to.uplink || this.filterCheck('in', proto, src, srcPort, dst, dstPort, starts));
    if (!ok && starts && this.stackOn && !from.uplink) {
      const ip = frame.subarray(14);
      this.stack.sendIcmpErrorQuoting(ip.subarray(0, Math.min(ip.length, ihl + 8)), readMacAt(frame, 6), this.cfg.gateway, src, 3, 13);
    }
    return ok;
  }

  /**
   * As filterGuestToGuest, for IPv6: Neighbor Discovery and MLD pass as ARP does (without them
   * nothing works, and they open no flow); a blocked flow start gets ICMPv6 "administratively
   * prohibited" from the gateway.
   */
  private filterGuestToGuest6(frame: Uint8Array): boolean {
    const ip = Ipv6View.checked(frame, 14, frame.length - 14);
    if (typeof ip === 'string') return true; // malformed: the receiving guest's stack drops it
    const p = ip.protocol;
    const proto = p === 6 ? 'tcp' : p === 17 ? 'udp' : p === 58 ? 'icmp' : 'other';
    const l4 = ip.payloadOff;
    const firstPiece = !ip.isFragment || ip.fragmentOffset === 0;
    let srcPort = 0;
    let dstPort = 0;
    let starts = proto === 'other' || proto === 'udp';
    if ((proto === 'tcp' || proto === 'udp') && firstPiece && ip.payloadLen >= 4) {
      srcPort = (frame[l4]! << 8) | frame[l4 + 1]!;
      dstPort = (frame[l4 + 2]! << 8) | frame[l4 + 3]!;
      if (proto === 'tcp' && ip.payloadLen >= 14) starts = (frame[l4 + 13]! & 0x12) === 0x02;
    } else if (proto === 'icmp' && firstPiece && ip.payloadLen >= 1) {
      const type = frame[l4]!;
      if ((type >= 130 && type <= 137) || type === 143) return true; // MLD and NDP
      starts = type === 128; // echo request
    }
    const src = ip.src;
    const dst = ip.dst;
    const ok = this.filterCheck('out', proto, src, srcPort, dst, dstPort, starts) && this.filterCheck('in', proto, src, srcPort, dst, dstPort, starts);
    if (!ok && starts) this.stack.ipv6?.sendErrorAbout(ip, readMacAt(frame, 6), 1, 1);
    return ok;
  }

  /** GET /filter. */
  filter(): FilterJson {
    return this.filterSet.toJSON();
  }

  /**
   * PUT /filter: the new rules take effect at once, atomically (a bad set throws and the old one
   * stays); open flows the new set blocks are ended, the rest carry on.
   */
  replaceFilter(text: string, source: string): FilterJson {
    this.filterSet.replace(text, source);
    if (this.filterSet.size > 0) {
      const closed = this.flowTable.closeWhere((f) => this.blockedNow(f));
      if (closed > 0) log.info(`filter: ${closed} open flow(s) the new rules block were closed`);
    }
    this.armTimer(this.now());
    this.scheduleFlush();
    return this.filterSet.toJSON();
  }

  /** Would the rules in force refuse this open flow? (Forwards are `in` from their host client.) */
  private blockedNow(f: FlowEntry): boolean {
    if (f.hostAddress === 'dns') return false;
    const proto = f.proto;
    if (f.forward !== undefined) {
      const client = parseIp(f.hostAddress) ?? IPV4_ANY;
      return !this.filterCheck('in', proto, client, 0, f.guestIp, f.guestPort, false);
    }
    return !this.filterCheck('out', proto, f.guestIp, proto === 'icmp' ? 0 : f.guestPort, f.dstIp, f.dstPort, false);
  }

  /** Every open flow of every protocol, from the one flow table. */
  flows(): ApiFlow[] {
    return this.flowTable.list(this.now());
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
    return { ...configToApi(this.cfg), mode: this.currentMode(), configured_mode: this.cfg.mode.kind, ...modeToApi(this.cfg.mode) };
  }

  // ---- modes (GET/PUT /mode) ----

  private currentMode(): ModeName {
    return this.switch.connected ? this.cfg.mode.kind : 'disconnected';
  }

  /** GET /mode: the mode in force, the configured one, and what the pulled cable dropped. */
  mode(): ApiMode {
    let fromGuests = 0;
    for (const p of this.switch.ports) fromGuests += p.stats.drops.disconnected;
    return {
      mode: this.currentMode(),
      configured: this.cfg.mode.kind,
      connected: this.switch.connected,
      dropped_from_ports: fromGuests,
      dropped_to_ports: this.switch.stats.disconnectedToGuests,
    };
  }

  /**
   * PUT /mode: `disconnected` pulls the cable, `connected` (or the configured mode's name) plugs it
   * back. Another mode needs a restart: throws ModeChangeError (409), or (400) for no mode at all.
   */
  setMode(name: string): ApiMode {
    const configured = this.cfg.mode.kind;
    let connect: boolean;
    if (name === 'disconnected') connect = false;
    else if (name === 'connected' || name === configured) connect = true;
    else if (name === 'nat' || name === 'host' || name === 'bridged') {
      throw new ModeChangeError(409, 'mode_conflict', `vmnat runs in ${configured} mode: it switches between ${configured} and disconnected only (restart it with --mode ${name})`);
    } else throw new ModeChangeError(400, 'bad_mode', `${JSON.stringify(name)} is not one of ${configured}|connected|disconnected`);
    if (connect !== this.switch.connected) {
      this.switch.connected = connect;
      log.info(`mode: ${connect ? `connected (${configured})` : 'disconnected: every frame is dropped until the cable is plugged back'}`);
      this.armTimer(this.now());
    }
    return this.mode();
  }

  subscribe(listener: (e: LeaseEvent | FlowEvent | FilterEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** All counters, by subsystem. */
  stats(): Record<string, unknown> {
    const { stack, ...services } = this.services.counters();
    return {
      engine: { internalErrors: this.faults.internalErrors },
      links: this.links.map((l) => ({ kind: l.kind, ...l.stats })),
      ports: this.ports(),
      ...stack, // eth, arp, ipv4, … at the top, as they always were
      ...services,
      portfwd: this.forwards.stats,
      pcap: this.pcap ? { frames: this.pcap.framesWritten } : undefined,
    };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    await this.services.close();
    this.flushDirty();
    await Promise.all(this.links.map((l) => l.close()));
    this.pcap?.close();
  }
}

/**
 * Dialed TCP flows' host sockets from the addon (native/src/host_tcp.cc). VMNAT_HOST_SOCKETS=node
 * keeps Node's net.Socket instead: the path before, kept for side-by-side benchmarks.
 */
function nativeHostTcp(): ((onEvent: NativeHostTcpCallback, readBuffer: Buffer) => NativeHostTcp) | undefined {
  if (process.env['VMNAT_HOST_SOCKETS'] === 'node') return undefined;
  return (onEvent, readBuffer) => new (loadNative().HostTcp)(onEvent, readBuffer);
}
