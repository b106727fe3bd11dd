/**
 * Command line → validated configuration.
 *
 * Theory of operation: every flag is parsed and checked here, before anything opens a socket, so
 * a mistake costs the user one clear line naming the flag (`vmnat: --mtu: 70000 is not in
 * 68..65520`) and exit status 2, never a stack trace. The result is a plain immutable `Config`
 * the engine builds itself from. Defaults follow VirtualBox's NAT layout: network 10.0.2.0/24,
 * gateway .2 (which reaches the host's loopback), DNS .3, first lease .15.
 *
 * Platform: parsing takes the platform as a parameter (default process.platform), so the macOS
 * rules are tested on Linux. On macOS --tap, --netns and --netns-pid are refused (no TAP devices,
 * no network namespaces there) and unix socket paths are limited to 103 bytes (sun_path is 104
 * bytes there, 108 on Linux). The default socket lives in the runtime directory (runtime-dir.ts):
 * macOS sets no XDG_RUNTIME_DIR, so there it is $TMPDIR/vmnat-$UID, and macOS makes $TMPDIR per
 * user (/var/folders/…/T/).
 */
import path from 'node:path';
import { Address4 } from 'ip-address';
import type { Dhcp6Static } from './dhcp6/server.ts';
import { formatIpv4, parseIpv4, parseIpv6Bytes, parseMac, prefixMask, readIpv6, type Ipv4Addr, type Ipv6Addr, type MacAddr } from './stack/wire/addr.ts';
import { LogLevels, type LogLevel } from './log.ts';
import { defaultRuntimeDir } from './runtime-dir.ts';
import type { Ipv4Range } from './nat/policy.ts';
import { resolveDropTarget, type DropTarget } from './privileges.ts';
import { readFileSync, statSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { FORWARD_USAGE, ForwardRuleError, parseForwardFlags, type ForwardRule } from './portfwd/rules.ts';
import { GuestForwardError, parseGuestfwdFlags, type GuestForwardRule } from './portfwd/guestfwd.ts';
import { DnsFlagError, DnsHostsTable, parseDnsHostFlag, parseDnsServerFlag, type DnsUpstream } from './dns/forwarder.ts';
import { FilterParseError, STDIN_SOURCE, parseFilter, type FilterRules } from './filter/rules.ts';
import { MODE_BOOLEAN_FLAGS, MODE_USAGE, MODE_VALUE_FLAGS, ModeFlagError, hostLayout, parseModeFlags, type ModeConfig, type ParsedMode } from './modes/mode.ts';

export type LinkConfig =
  | { kind: 'socket'; path: string; offload?: boolean }
  | { kind: 'fd'; fd: number; offload?: boolean }
  | { kind: 'stream'; path: string }
  | { kind: 'tap'; name: string; netnsPath?: string; netnsPid?: number }
  | { kind: 'spawn'; command: string[] };

/**
 * One network of guests, described once: its addresses and leases, MTU, DNS, and the policy
 * between its guests. Everything the switch, the stack, DHCP, DNS and the NAT policy are built
 * from. (Today vmnat runs one; the split is what lets several exist later.)
 */
export interface NetworkConfig {
  network: Ipv4Addr;
  prefixLen: number;
  netmask: Ipv4Addr;
  gateway: Ipv4Addr;
  dns: Ipv4Addr;
  firstLease: Ipv4Addr;
  lastLease: Ipv4Addr;
  mtu: number;
  dhcpLeaseTimeSec: number;
  dhcpStatic: Map<MacAddr, Ipv4Addr>;
  dnsSearch: string[];
  /** The DHCP domain, and where guests' names resolve (NAME.DOMAIN); host.DOMAIN is the host. */
  domain?: string;
  /** --host-alias: more names for the address that reaches the host (the gateway). */
  hostAliases: string[];
  dnsMode: 'forward' | 'host';
  /** Explicit upstreams (--dns-server); empty means the host's resolvers from resolv.conf. */
  dnsServers: DnsUpstream[];
  dnsHosts: DnsHostsTable;
  /** The gateway address reaches the host's 127.0.0.1 (default); --no-host-loopback refuses it. */
  hostLoopback: boolean;
  /** --isolate: no guest-to-guest traffic at all (ARP included). */
  isolate: boolean;
  /** --anti-spoof (default on): a port sends only from its MAC and its leased (or one claimed) address. */
  antiSpoof: boolean;
  /** Filter rules from --filter FILE (parsed; `new FilterSet(config.filter)` checks flows). */
  filter?: FilterRules;
  /** --deny ranges, plus link-local unless --allow-link-local: never reached through the NAT. */
  deny: Ipv4Range[];
  /** The IPv6 --deny ranges (plus fd00:ec2::254, cloud metadata, unless --allow-link-local). */
  deny6?: Ipv6Range[];
  /** IPv6 on the guests' network (on by default; --no-ipv6 turns it off): the /64 and vmnat's ::2, ::3 in it. */
  ipv6?: Ipv6Network;
  /** --dhcp-static MAC=IPV6 / DUID=IPV6: fixed DHCPv6 addresses. */
  dhcp6Static?: Dhcp6Static[];
}

/** An IPv6 range: the network's text (host bits clear) and its prefix length. */
export interface Ipv6Range {
  prefix: Ipv6Addr;
  prefixLen: number;
}

/** IPv6 instance metadata (AWS's IMDS over IPv6): denied with 169.254.0.0/16 unless --allow-link-local. */
export const METADATA6: Ipv6Range = { prefix: 'fd00:ec2::254', prefixLen: 128 };

/** `PREFIX/N` (N in 0..128, no host bits) → a range; a bare address means /128. */
function parseCidr6(flag: string, text: string): Ipv6Range {
  const m = /^([0-9A-Fa-f:.]+)(?:\/(\d{1,3}))?$/.exec(text);
  const bytes = m ? parseIpv6Bytes(m[1]!) : undefined;
  const len = m?.[2] === undefined ? 128 : Number(m[2]);
  if (!m || bytes === undefined || len > 128) throw new ConfigError(flag, `${JSON.stringify(text)} is not a CIDR such as 192.168.1.0/24 or fd12::/16`);
  const net = bytes.map((b, i) => b & ((0xff << (8 - Math.max(0, Math.min(8, len - i * 8)))) & 0xff));
  if (net.some((b, i) => b !== bytes[i])) throw new ConfigError(flag, `${text} has host bits set (did you mean ${readIpv6(net, 0)}/${len}?)`);
  return { prefix: readIpv6(net, 0), prefixLen: len };
}

/** The guests' IPv6 network: a /64 (`--ipv6-prefix`, default fd00:10:0:2::/64), gateway ::2 and DNS ::3 in it. */
export interface Ipv6Network {
  prefix: Ipv6Addr;
  gateway: Ipv6Addr;
  dns: Ipv6Addr;
}

/** The default IPv6 prefix: a ULA whose digits mirror 10.0.2.0/24. */
export const DEFAULT_IPV6_NETWORK = 'fd00:10:0:2::/64';

/** `--dhcp-static MAC=IPV6` and `DUID=IPV6` entries → fixed DHCPv6 addresses in the /64. */
function parseDhcp6Statics(pending: readonly { entry: string; key: string; ipText: string }[], net: Ipv6Network | undefined): Dhcp6Static[] {
  const out: Dhcp6Static[] = [];
  for (const { entry, key, ipText } of pending) {
    if (net === undefined) throw new ConfigError('--dhcp-static', `${JSON.stringify(entry)}: an IPv6 address needs IPv6 (not with --no-ipv6)`);
    const bytes = parseIpv6Bytes(ipText);
    if (bytes === undefined) throw new ConfigError('--dhcp-static', `${JSON.stringify(ipText)} is not an IPv6 address`);
    const ip = readIpv6(bytes, 0);
    const prefix = parseIpv6Bytes(net.prefix)!;
    if (!bytes.subarray(0, 8).every((b, i) => b === prefix[i])) throw new ConfigError('--dhcp-static', `${ipText} is not in ${net.prefix}/64`);
    if (ip === net.gateway || ip === net.dns || bytes.subarray(8).every((b) => b === 0)) throw new ConfigError('--dhcp-static', `${ipText} is reserved (gateway/DNS/subnet-router anycast)`);
    const mac = parseMac(key);
    const hex = key.replace(/[:-]/g, '').toLowerCase();
    if (mac === undefined && (!/^([0-9a-f]{2}){3,130}$/.test(hex))) throw new ConfigError('--dhcp-static', `${JSON.stringify(key)} is neither a MAC nor a DUID (hex bytes, e.g. 00:03:00:01:52:54:00:12:34:56)`);
    if (out.some((s) => s.ip === ip)) throw new ConfigError('--dhcp-static', `${ipText} given twice`);
    out.push(mac !== undefined ? { mac, ip } : { duid: hex, ip });
  }
  return out;
}

/** Parses `PREFIX/64` for --ipv6-prefix: a unicast /64 with its host bits clear. */
export function parseIpv6Network(flag: string, text: string): Ipv6Network {
  const m = /^([0-9A-Fa-f:.]+)\/(\d{1,3})$/.exec(text);
  const bytes = m ? parseIpv6Bytes(m[1]!) : undefined;
  if (!m || bytes === undefined) throw new ConfigError(flag, `${JSON.stringify(text)} is not an IPv6 prefix such as fd00:10:0:2::/64`);
  if (m[2] !== '64') throw new ConfigError(flag, `${text}: the prefix must be a /64 (SLAAC needs 64 bits of interface identifier)`);
  if (bytes.subarray(8).some((b) => b !== 0)) throw new ConfigError(flag, `${text} has host bits set (the network would be ${readIpv6(new Uint8Array([...bytes.subarray(0, 8), 0, 0, 0, 0, 0, 0, 0, 0]), 0)}/64)`);
  if (bytes[0] === 0xff || (bytes[0] === 0xfe && (bytes[1]! & 0xc0) === 0x80) || bytes.every((b) => b === 0)) {
    throw new ConfigError(flag, `${text} is not a unicast prefix (multicast, link-local and :: cannot hold the guests)`);
  }
  const host = (n: number) => {
    const b = new Uint8Array(bytes);
    b[15] = n;
    return readIpv6(b, 0);
  };
  return { prefix: readIpv6(bytes, 0), gateway: host(2), dns: host(3) };
}

/** The whole configuration: the network, and how vmnat runs (links, NAT limits, forwards, API, logs). */
export interface Config extends NetworkConfig {
  /** The guests' connections, in the order given: each is a port (or a source of ports) of the switch. */
  links: LinkConfig[];
  pcapFile?: string;
  logLevel: LogLevel;
  /** --no-tso: one MSS per TCP segment, checksummed by vmnat, even where the link could offload (for comparison). */
  noTso: boolean;
  udpTimeoutSec: number;
  /** Most flows the guests may open, all protocols together (default: from the descriptor limit). */
  maxFlows: number;
  /** --max-buffer-memory: bytes all TCP connections may buffer together (stack/tcp/budget.ts). */
  maxBufferBytes: number;
  /** Most connections port forwards may carry into the guests at once (a budget of their own). */
  maxForwardFlows: number;
  tcpIdleTimeoutSec: number;
  /** Seconds a guest's SYN waits for the host's connect before the guest gets host unreachable. */
  tcpConnectTimeoutSec: number;
  /** Seconds of silence before keepalive probes to the guest; 0 = off. */
  tcpKeepaliveSec: number;
  /** Per-flow TCP buffer (send buffer and receive window), bytes; 0 = by MTU. */
  tcpBufferBytes: number;
  /** Port forwards from --hostfwd and --natpf. */
  forwards: ForwardRule[];
  /** --guestfwd: guest-to-host forwards (portfwd/guestfwd.ts). */
  guestForwards?: GuestForwardRule[];
  /** --hostfwd-source: forwarded connections come from the gateway (default) or keep the client's address. */
  hostfwdSource?: 'gateway' | 'client';
  /** --tftp DIR: a read-only TFTP server at the gateway serving DIR (tftp/server.ts). */
  tftpDir?: string;
  /** --bootfile NAME and --tftp-server IP: what DHCP tells a booting guest (network boot). */
  bootFile?: string;
  tftpServer?: Ipv4Addr;
  apiSocket?: string;
  /** The default runtime directory holding the default socket (checked private before use). */
  runtimeDir?: string;
  /** Whom to become once links, engine and forwards are set up (root only; privileges.ts). */
  dropTo?: DropTarget;
  /** Things worth a log line at start that are not errors. */
  warnings: string[];
  /** --mode: what is behind the switch besides the guests (modes/mode.ts). */
  mode: ModeConfig;
  /** --mode disconnected: start with the cable pulled (the API connects it). */
  startDisconnected: boolean;
}

/** The network part of a configuration (a copy of the fields, sharing the tables). */
export function networkOf(c: Config): NetworkConfig {
  const n: NetworkConfig = {
    network: c.network, prefixLen: c.prefixLen, netmask: c.netmask, gateway: c.gateway, dns: c.dns,
    firstLease: c.firstLease, lastLease: c.lastLease, mtu: c.mtu, dhcpLeaseTimeSec: c.dhcpLeaseTimeSec,
    dhcpStatic: c.dhcpStatic, dnsSearch: c.dnsSearch, dnsMode: c.dnsMode, dnsServers: c.dnsServers,
    dnsHosts: c.dnsHosts, hostAliases: c.hostAliases, hostLoopback: c.hostLoopback, isolate: c.isolate, antiSpoof: c.antiSpoof,
    deny: c.deny,
  };
  if (c.deny6 !== undefined) n.deny6 = c.deny6;
  if (c.ipv6 !== undefined) n.ipv6 = c.ipv6;
  if (c.dhcp6Static !== undefined) n.dhcp6Static = c.dhcp6Static;
  if (c.domain !== undefined) n.domain = c.domain;
  if (c.filter !== undefined) n.filter = c.filter;
  return n;
}

/** A user error in the command line: `flag` names the culprit; the CLI prints one line, exits 2. */
export class ConfigError extends Error {
  readonly code = 'VMNAT_BAD_FLAG';
  constructor(
    readonly flag: string,
    detail: string,
  ) {
    super(`${flag}: ${detail}`);
  }
}

export type ParseOutcome = { action: 'run'; config: Config } | { action: 'help' } | { action: 'version' };

export const USAGE = `Usage: vmnat [TRANSPORT] [OPTIONS] [-- COMMAND [ARGS...]]
       vmnat ctl [--api-socket PATH] COMMAND   (vmnat ctl --help)

Userspace NAT networking for virtual machines (VirtualBox layout by default).
When ready, prints one JSON line on stdout; logs go to stderr.

Transports (each repeatable, in any mix: every guest is a port of vmnat's switch;
default: --socket $XDG_RUNTIME_DIR/vmnat/net.sock, or $TMPDIR/vmnat-$UID/net.sock
without XDG_RUNTIME_DIR; that directory must be ours, mode 0700, not a symlink):
  --socket PATH         unix datagram socket, one frame per datagram
                        (qemu -netdev dgram, vfkit, krunkit); the guest is learned
                        from its first datagram
    --offload           ... the VM offloads (krunkit offloading=on, vmnet-helper
                        --enable-tso --enable-checksum-offload): frames up to
                        64 KiB, its checksums left partial; applies to the
                        --socket or --fd just before it
  --fd N                inherited SOCK_DGRAM socketpair end (vmnet-helper --fd)
  --stream PATH         unix stream socket with qemu's framing (-netdev stream);
                        every connection is a guest of its own
  --tap NAME            TAP device (created if missing; Linux only)
    --netns PATH        ... opened inside this network namespace (/run/netns/NAME);
                        applies to the --tap just before it
    --netns-pid PID     ... or inside the network namespace of this process
  -- COMMAND [ARGS...]  make a socketpair, start COMMAND with the other end as fd 4
                        (qemu: -netdev dgram,id=n0,local.type=fd,local.str=4),
                        exit with its status

${MODE_USAGE}
Switch (several guests on one network):
  --isolate             no traffic between guests (ARP included): each sees only
                        the gateway, DNS and the outside
  --anti-spoof on|off   a guest sends only from its own MAC and from the address
                        DHCP leased it (or the one free address it took); forged
                        ARP for the gateway or another guest is dropped (default on)

Network:
  --net CIDR            guest network (default 10.0.2.0/24; gateway .2, DNS .3,
                        first lease .15)
  --mtu N               link MTU, 68..65520 (default 1500)
  --dhcp-lease-time S   DHCP lease time in seconds (default 86400)
  --dhcp-static MAC=IP  fixed lease for a MAC (repeatable); MAC=IPV6 or DUID=IPV6
                        fixes the DHCPv6 address (DUID as hex bytes)
  --domain NAME         DHCP domain name (option 15), and where guests' names
                        resolve: a guest that sends its hostname in DHCP is
                        NAME and NAME.DOMAIN at the DNS address
                        (default vmnat.internal)
  --dns-search DOMAIN   DHCP domain search list entry (option 119; repeatable)

DNS (the guest's resolver at .3):
  --dns-server IP[:PORT]  upstream resolver (repeatable; default: the host's
                        resolvers from /etc/resolv.conf, re-read when it changes)
  --dns-mode MODE       forward (default) or host: resolve through the host's own
                        resolver (getaddrinfo: /etc/hosts, VPN split DNS, nsswitch)
  --dns-host NAME=IP    answer NAME locally (A or AAAA; repeatable)
  --dns-hosts FILE      answer the names of a hosts-format file locally
  --tftp DIR            a read-only TFTP server at the gateway serving DIR (network
                        boot; blksize, tsize, timeout and windowsize options)
  --bootfile NAME       DHCP names NAME as the boot file (BOOTP file field, option 67)
    --tftp-server IP    ... on this TFTP server (siaddr, option 66; default the gateway)
  --host-alias NAME     another name for the host (the gateway's address), beside
                        host.DOMAIN (host.vmnat.internal); repeatable, e.g.
                        host.docker.internal, host.containers.internal

NAT:
  --no-host-loopback    the gateway address does not reach the host's 127.0.0.1 (nor ::2 the host's ::1)
  --ipv6-prefix P/64    the guests' IPv6 prefix (default fd00:10:0:2::/64: gateway ::2, DNS ::3)
  --no-ipv6             no IPv6 on the guests' network (no router advertisements)
                        (connections to it are refused)
  --deny CIDR           the guest may never reach CIDR through the NAT (ICMP
                        admin-prohibited; repeatable), e.g. the host's own LAN
                        addresses: --deny 192.168.1.0/24 (IPv6 too: --deny fd12::/16)
  --allow-link-local    let the guest reach 169.254.0.0/16 and fd00:ec2::254
                        (denied by default: cloud instance metadata and
                        credentials live there)
  --udp-timeout S       idle timeout of a UDP flow in seconds (default 60)
  --max-flows N         most flows the guests may have open, TCP, UDP and ICMP
                        together (default: 3/4 of the descriptors left after a
                        reserve of 256, at most 16384)
  --max-forward-flows N most connections port forwards carry at once, apart from
                        the guests' own (default: the rest of the descriptors, at
                        most 4096; also 128 half-open and 256 per client address)
  --tcp-idle-timeout S  reset a TCP flow silent for S seconds both ways
                        (default 7440, RFC 5382; 0 = never)
  --tcp-connect-timeout S  give up a host connect after S seconds and send the
                        guest ICMP host unreachable (default 10, as passt)
  --tcp-keepalive S     probe a guest connection after S idle seconds (0 = off)
  --tcp-buffer SIZE     per-flow TCP buffer each way, e.g. 256K or 4M
                        (default 1M, 4M above MTU 9000)
  --max-buffer-memory SIZE  what all TCP connections may buffer together
                        (default 256M): past it, out-of-order data is refused
                        first (the guest resends it), send buffers stop growing
                        and windows stop opening; --max-flows follows it too
  --no-tso              on --tap, send one MSS per frame with its checksum, instead
                        of 64 KiB GSO frames that the kernel cuts and checksums

${FORWARD_USAGE}
Guest-to-host forwards (qemu's guestfwd; repeatable):
  --guestfwd [tcp]:[SERVER]:PORT-unix:/PATH
  --guestfwd [tcp]:[SERVER]:PORT-tcp:HOST:HOSTPORT
                        the guest connects to SERVER:PORT inside its network and
                        vmnat connects that to the host socket given, e.g.
                        tcp:10.0.2.100:1234-unix:/run/svc.sock. SERVER (default
                        the network's .4) answers ARP and ping; the gateway may
                        be given (that one port then leaves the host loopback).

Privileges (vmnat as root, e.g. sudo vmnat --tap ...):
  --user NAME|UID       once the links are open (and forwards bound), become this
                        user for good (default: the user sudo names in SUDO_UID;
                        as root without either, vmnat stays root)

Policy:
  --filter FILE         filter rules, one per line, first match wins, no match
                        passes ("-" reads stdin); e.g.
                          block out proto tcp to 10.0.2.2 port 22
                          block local       # guest-to-guest and guest-to-host
                        grammar: pass|block [in|out] [proto tcp|udp|icmp]
                          [from ADDR[/N]|any|local [port N[:M]]]
                          [to ADDR[/N]|any|local [port N[:M]]]  (or all, local)

Diagnostics:
  --pcap FILE           write guest-side frames to FILE (pcap, tcpdump -r FILE)
  --log-level LEVEL     error|warn|info|debug (default info)
  --help, --version

Exit status: 0 after SIGINT/SIGTERM, 2 for a bad flag or a path vmnat refuses,
3 when its link fails while running (e.g. the TAP was deleted), 1 otherwise;
with -- COMMAND, the command's status.
`;

const booleanFlags = new Set(['--no-host-loopback', '--no-tso', '--isolate', '--allow-link-local', '--no-ipv6', ...MODE_BOOLEAN_FLAGS]);
const takesValue = new Set([
  '--hostfwd', '--natpf', '--guestfwd', '--hostfwd-source', '--api-socket', '--deny', '--udp-timeout', '--max-flows', '--max-forward-flows', '--max-buffer-memory', '--tcp-idle-timeout', '--tcp-connect-timeout', '--tcp-keepalive', '--tcp-buffer', '--dns-server', '--dns-host', '--dns-hosts', '--dns-mode', '--host-alias', '--tftp', '--bootfile', '--tftp-server',
  '--socket', '--fd', '--stream', '--tap', '--netns', '--netns-pid', '--net', '--mtu', '--anti-spoof',
  '--dhcp-lease-time', '--dhcp-static', '--dns-search', '--domain', '--pcap', '--log-level', '--filter', '--user',
  ...MODE_VALUE_FLAGS,
  '--ipv6-prefix',
]);

function parseIntStrict(flag: string, text: string, min: number, max: number): number {
  if (!/^\d+$/.test(text)) throw new ConfigError(flag, `${JSON.stringify(text)} is not a whole number`);
  const n = Number(text);
  if (n < min || n > max) throw new ConfigError(flag, `${text} is not in ${min}..${max}`);
  return n;
}

/** A byte size such as 262144, 256K or 4M, within 16 KiB..256 MiB; undefined → 0 (the default). */
function parseSize(flag: string, text: string | undefined): number {
  if (text === undefined) return 0;
  const m = /^(\d+)([KkMm]?)$/.exec(text);
  if (!m) throw new ConfigError(flag, `${JSON.stringify(text)} is not a size such as 262144, 256K or 4M`);
  const n = Number(m[1]) * (m[2] === '' ? 1 : /k/i.test(m[2]!) ? 1024 : 1 << 20);
  if (n < 16384 || n > 256 << 20) throw new ConfigError(flag, `${text} is not in 16K..256M`);
  return n;
}

/** RFC 1035 host name rules, loosened for underscores (seen in real search domains). */
function checkDomain(flag: string, text: string): string {
  const name = text.endsWith('.') ? text.slice(0, -1) : text;
  const labelOk = (l: string) => /^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/.test(l);
  if (name.length === 0 || name.length > 253 || !name.split('.').every(labelOk)) {
    throw new ConfigError(flag, `${JSON.stringify(text)} is not a valid domain name`);
  }
  return name;
}

/** Longest unix socket path in bytes (sun_path less its terminating NUL). */
export function maxUnixPathBytes(platform: NodeJS.Platform): number {
  return platform === 'linux' ? 107 : 103;
}

/** Flags that need Linux (TAP devices, network namespaces); refused elsewhere with one line. */
export const LINUX_ONLY_FLAGS = ['--tap', '--netns', '--netns-pid'] as const;

function platformName(platform: NodeJS.Platform): string {
  return platform === 'darwin' ? 'macOS (darwin)' : platform;
}

/** One transport flag (with its --netns/--netns-pid, for a --tap) → its link configuration. */
function parseTransport(t: { flag: string; value: string; netns?: string; netnsPid?: string; offload?: boolean }, platform: NodeJS.Platform): LinkConfig {
  switch (t.flag) {
    case '--socket':
    case '--stream': {
      const maxPath = maxUnixPathBytes(platform);
      if (t.value.length === 0 || Buffer.byteLength(t.value) > maxPath) throw new ConfigError(t.flag, `path must be 1..${maxPath} bytes (unix socket limit)`);
      if (t.flag === '--stream') return { kind: 'stream', path: path.resolve(t.value) };
      return { kind: 'socket', path: path.resolve(t.value), ...(t.offload ? { offload: true } : {}) };
    }
    case '--fd':
      return { kind: 'fd', fd: parseIntStrict('--fd', t.value, 3, 65535), ...(t.offload ? { offload: true } : {}) };
    default: {
      if (!/^[A-Za-z0-9_.:-]{1,15}$/.test(t.value)) throw new ConfigError('--tap', `${JSON.stringify(t.value)} is not a valid interface name (1..15 characters)`);
      const link: LinkConfig & { kind: 'tap' } = { kind: 'tap', name: t.value };
      if (t.netns !== undefined) {
        if (t.netns.length === 0) throw new ConfigError('--netns', 'needs a path such as /run/netns/NAME');
        link.netnsPath = t.netns.includes('/') ? t.netns : `/run/netns/${t.netns}`;
      }
      if (t.netnsPid !== undefined) link.netnsPid = parseIntStrict('--netns-pid', t.netnsPid, 1, 4194304);
      return link;
    }
  }
}

/** A memory size such as 268435456, 256M or 1G, within 1M..64G. */
function parseMemory(flag: string, text: string): number {
  const m = /^(\d+)([KkMmGg]?)$/.exec(text);
  if (!m) throw new ConfigError(flag, `${JSON.stringify(text)} is not a size such as 256M or 1G`);
  const unit = m[2]!.toLowerCase();
  const n = Number(m[1]) * (unit === '' ? 1 : unit === 'k' ? 1024 : unit === 'm' ? 1 << 20 : 1 << 30);
  if (n < 1 << 20 || n > 64 * 2 ** 30) throw new ConfigError(flag, `${text} is not in 1M..64G`);
  return n;
}

/** Descriptors kept for vmnat itself: DNS sockets, the API, listeners, links, the pcap file. */
const FD_RESERVE = 256;

/**
 * The process's open-file limit (soft; Node raises it to the hard limit at start): /proc on Linux,
 * the shell's `ulimit -n` elsewhere; undefined if neither answers.
 */
export function descriptorLimit(): number | undefined {
  try {
    const m = /^Max open files\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    if (m) return Number(m[1]);
  } catch {
    // not Linux
  }
  try {
    const out = execFileSync('/bin/sh', ['-c', 'ulimit -n'], { encoding: 'utf8', timeout: 2000 }).trim();
    return /^\d+$/.test(out) ? Number(out) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * --max-flows and --max-forward-flows, or their defaults from the descriptor limit: every flow
 * holds a host descriptor, and running out of them (EMFILE) would fail flows at random, so the
 * two budgets together stay below the limit minus FD_RESERVE. A larger value given by hand is
 * taken, with a warning.
 */
function flowBudgets(maxFlowsText: string | undefined, maxForwardText: string | undefined, bufferBytes: number, warnings: string[]): { maxFlows: number; maxForwardFlows: number } {
  const limit = descriptorLimit();
  const available = limit === undefined ? 20_480 : Math.max(128, limit - FD_RESERVE);
  // Each connection may always buffer 16 KiB (budget.ts): no more flows than the budget holds so.
  const byMemory = Math.floor(bufferBytes / (16 * 1024));
  const maxFlows = maxFlowsText !== undefined ? parseIntStrict('--max-flows', maxFlowsText, 1, 1_000_000) : Math.min(16_384, byMemory, Math.max(64, Math.floor(available * 0.75)));
  const maxForwardFlows = maxForwardText !== undefined ? parseIntStrict('--max-forward-flows', maxForwardText, 1, 1_000_000) : Math.min(4096, Math.max(16, available - maxFlows));
  if (limit !== undefined && maxFlows + maxForwardFlows > limit - FD_RESERVE) {
    warnings.push(`--max-flows ${maxFlows} + --max-forward-flows ${maxForwardFlows} exceed the ${limit} open files this process may have (less ${FD_RESERVE} for vmnat itself): flows beyond that are refused when descriptors run out (raise it with ulimit -n)`);
  }
  return { maxFlows, maxForwardFlows };
}

/** The default --socket: net.sock in the runtime directory (runtime-dir.ts). */
export function defaultSocketPath(env: NodeJS.ProcessEnv = process.env): string {
  return path.join(defaultRuntimeDir(env), 'net.sock');
}

/** 169.254.0.0/16: denied unless --allow-link-local (cloud metadata at 169.254.169.254). */
export const LINK_LOCAL: Ipv4Range = { network: 0xa9fe_0000, mask: 0xffff_0000 };

/** `A.B.C.D/N` (N in 0..32, no host bits) → a range; a bare address means /32. */
function parseCidr(flag: string, text: string): Ipv4Range {
  const m = /^(\d+\.\d+\.\d+\.\d+)(?:\/(\d{1,2}))?$/.exec(text);
  const base = m ? parseIpv4(m[1]!) : undefined;
  const len = m?.[2] === undefined ? 32 : Number(m[2]);
  if (!m || base === undefined || len > 32) throw new ConfigError(flag, `${JSON.stringify(text)} is not an IPv4 CIDR such as 192.168.1.0/24`);
  const mask = prefixMask(len);
  if ((base & ~mask) >>> 0 !== 0) throw new ConfigError(flag, `${text} has host bits set (did you mean ${formatIpv4((base & mask) >>> 0)}/${len}?)`);
  return { network: base, mask };
}

export function parseArgs(argv: readonly string[], platform: NodeJS.Platform = process.platform): ParseOutcome {
  const values = new Map<string, string[]>();
  /** Transport flags in command-line order (a --netns belongs to the --tap before it). */
  const ordered: { flag: string; value: string; netns?: string; netnsPid?: string; offload?: boolean }[] = [];
  let command: string[] | undefined;
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i]!;
    if (arg === '--') {
      command = argv.slice(i + 1);
      if (command.length === 0) throw new ConfigError('--', 'needs a COMMAND after it');
      break;
    }
    if (arg === '--help' || arg === '-h') return { action: 'help' };
    if (arg === '--version' || arg === '-V') return { action: 'version' };
    let inline: string | undefined;
    const eq = arg.indexOf('=');
    if (arg.startsWith('--') && eq > 0) {
      inline = arg.slice(eq + 1);
      arg = arg.slice(0, eq);
    }
    if (arg === '--offload' && inline === undefined) {
      const last = ordered[ordered.length - 1];
      if (last === undefined || (last.flag !== '--socket' && last.flag !== '--fd')) {
        throw new ConfigError(arg, 'only applies to --socket or --fd (give it after the one it is for)');
      }
      if (last.offload) throw new ConfigError(arg, `given twice for ${last.flag} ${last.value}`);
      last.offload = true;
      continue;
    }
    if (booleanFlags.has(arg) && inline === undefined) {
      values.set(arg, ['true']);
      continue;
    }
    if (!takesValue.has(arg)) {
      throw new ConfigError(arg, arg.startsWith('-') ? 'unknown flag (see vmnat --help)' : 'unexpected argument (see vmnat --help)');
    }
    if (platform !== 'linux' && (LINUX_ONLY_FLAGS as readonly string[]).includes(arg)) {
      throw new ConfigError(arg, `TAP devices and network namespaces are Linux-only; not available on ${platformName(platform)} (use --socket, --fd or --stream)`);
    }
    const value = inline ?? argv[++i];
    if (value === undefined) throw new ConfigError(arg, 'needs a value');
    if (arg === '--socket' || arg === '--fd' || arg === '--stream' || arg === '--tap') ordered.push({ flag: arg, value });
    else if (arg === '--netns' || arg === '--netns-pid') {
      const last = ordered[ordered.length - 1];
      if (last === undefined || last.flag !== '--tap') throw new ConfigError(arg, 'only applies to --tap (give it after the --tap it is for)');
      if (last.netns !== undefined || last.netnsPid !== undefined) throw new ConfigError(arg, `given twice for --tap ${last.value}`);
      if (arg === '--netns') last.netns = value;
      else last.netnsPid = value;
      continue;
    }
    const list = values.get(arg) ?? [];
    list.push(value);
    values.set(arg, list);
  }

  const single = (flag: string): string | undefined => {
    const list = values.get(flag);
    if (!list) return undefined;
    if (list.length > 1) throw new ConfigError(flag, 'given more than once');
    return list[0];
  };

  let parsedMode: ParsedMode;
  try {
    parsedMode = parseModeFlags(values, platform);
  } catch (err) {
    if (err instanceof ModeFlagError) throw new ConfigError(err.flag, err.detail);
    throw err;
  }
  const mode = parsedMode.mode;

  // Transports: every one given is a port (or a source of ports) of the switch.
  const links: LinkConfig[] = [];
  for (const t of ordered) links.push(parseTransport(t, platform));
  if (command) links.push({ kind: 'spawn', command });
  /** Set when the socket goes in the default runtime directory, which must then be private. */
  let runtimeDir: string | undefined;
  if (links.length === 0) {
    runtimeDir = defaultRuntimeDir();
    links.push({ kind: 'socket', path: path.join(runtimeDir, 'net.sock') });
  }
  const seen = new Set<string>();
  for (const l of links) {
    const key = l.kind === 'socket' || l.kind === 'stream' ? `path ${l.path}` : l.kind === 'fd' ? `fd ${l.fd}` : l.kind === 'tap' ? `tap ${l.name} ${l.netnsPath ?? ''} ${l.netnsPid ?? ''}` : 'spawn';
    if (seen.has(key)) throw new ConfigError(`--${l.kind}`, `${key.split(' ').slice(0, 2).join(' ')} given twice`);
    seen.add(key);
  }

  // Network layout.
  const netText = single('--net') ?? '10.0.2.0/24';
  const m = /^(\d+\.\d+\.\d+\.\d+)\/(\d{1,2})$/.exec(netText);
  const base = m ? parseIpv4(m[1]!) : undefined;
  if (!m || base === undefined || !Address4.isValid(netText)) throw new ConfigError('--net', `${JSON.stringify(netText)} is not an IPv4 CIDR such as 10.0.2.0/24`);
  let prefixLen = Number(m[2]);
  if (prefixLen < 8 || prefixLen > 27) throw new ConfigError('--net', `prefix /${prefixLen} is not in /8../27 (the layout needs .2, .3 and a pool from .15)`);
  let netmask = prefixMask(prefixLen);
  if ((base & ~netmask) >>> 0 !== 0) throw new ConfigError('--net', `${netText} has host bits set (did you mean ${formatIpv4((base & netmask) >>> 0)}/${prefixLen}?)`);
  let network = base;
  // Host mode: the network is the host's (--host-ip), vmnat's DHCP at .100, leases from .101; the
  // stack's one address (gateway = DNS in its terms) is the DHCP server's.
  let gateway = network + 2;
  let dns = network + 3;
  let firstLease = network + 15;
  if (mode.kind === 'host') {
    const layout = hostLayout(mode.hostIp, mode.prefixLen);
    if (typeof layout === 'string') throw new ConfigError('--host-ip', layout);
    prefixLen = mode.prefixLen;
    netmask = layout.netmask;
    network = layout.network;
    gateway = dns = layout.dhcpServer;
    firstLease = layout.firstLease;
  }
  const broadcast = (network | ~netmask) >>> 0;
  let lastLease = broadcast - 1;
  const endText = single('--end-address');
  if (endText !== undefined && mode.kind === 'host') {
    const end = parseIpv4(endText);
    if (end === undefined || (end & netmask) >>> 0 !== network || end < firstLease || end >= broadcast) {
      throw new ConfigError('--end-address', `${JSON.stringify(endText)} is not an address of ${formatIpv4(network)}/${prefixLen} from ${formatIpv4(firstLease)} on`);
    }
    lastLease = end;
  }

  const mtu = parseIntStrict('--mtu', single('--mtu') ?? '1500', 68, 65520);
  const dhcpLeaseTimeSec = parseIntStrict('--dhcp-lease-time', single('--dhcp-lease-time') ?? '86400', 60, 0x7fff_ffff);

  const dhcpStatic = new Map<MacAddr, Ipv4Addr>();
  const dhcp6Pending: { entry: string; key: string; ipText: string }[] = [];
  for (const entry of values.get('--dhcp-static') ?? []) {
    const [macText, ipText, extra] = entry.split('=');
    if (extra === undefined && macText !== undefined && ipText !== undefined && ipText.includes(':')) {
      // MAC=IPV6 or DUID=IPV6: a fixed DHCPv6 address (checked once the IPv6 prefix is known).
      dhcp6Pending.push({ entry, key: macText, ipText });
      continue;
    }
    const mac = macText === undefined ? undefined : parseMac(macText);
    const ip = ipText === undefined ? undefined : parseIpv4(ipText);
    if (extra !== undefined || mac === undefined || ip === undefined) {
      throw new ConfigError('--dhcp-static', `${JSON.stringify(entry)} is not MAC=IP or MAC|DUID=IPV6 (e.g. 52:54:00:12:34:56=10.0.2.20, 00:03:00:01:52:54:00:12:34:56=fd00:10:0:2::20)`);
    }
    if ((ip & netmask) >>> 0 !== network || ip === network || ip === broadcast) throw new ConfigError('--dhcp-static', `${ipText} is not a host address in ${netText}`);
    if (ip === gateway || ip === dns) throw new ConfigError('--dhcp-static', `${ipText} is reserved (${mode.kind === 'host' ? 'vmnat\'s DHCP server' : 'gateway/DNS'})`);
    if (mode.kind === 'host' && ip === mode.hostIp) throw new ConfigError('--dhcp-static', `${ipText} is the host's address (--host-ip)`);
    if (dhcpStatic.has(mac)) throw new ConfigError('--dhcp-static', `${macText} given twice`);
    if ([...dhcpStatic.values()].includes(ip)) throw new ConfigError('--dhcp-static', `${ipText} given to two MACs`);
    dhcpStatic.set(mac, ip);
  }

  const dnsSearch = (values.get('--dns-search') ?? []).map((d) => checkDomain('--dns-search', d));
  const hostAliases = (values.get('--host-alias') ?? []).map((d) => checkDomain('--host-alias', d).toLowerCase());
  const domainText = single('--domain');
  // Guests are also found by name under it (NAME.vmnat.internal), as lima's user-v2 network does.
  const domain = domainText === undefined ? 'vmnat.internal' : checkDomain('--domain', domainText);

  const tftpText = single('--tftp');
  let tftpDir: string | undefined;
  if (tftpText !== undefined) {
    tftpDir = path.resolve(tftpText);
    let isDir = false;
    try {
      isDir = statSync(tftpDir).isDirectory();
    } catch {
      // reported below
    }
    if (!isDir) throw new ConfigError('--tftp', `${tftpText} is not a directory`);
  }
  const pcapFile = single('--pcap');
  if (pcapFile !== undefined && pcapFile.length === 0) throw new ConfigError('--pcap', 'needs a file name');

  const dnsMode = single('--dns-mode') ?? 'forward';
  if (dnsMode !== 'forward' && dnsMode !== 'host') throw new ConfigError('--dns-mode', `${JSON.stringify(dnsMode)} is not one of forward|host`);
  const dnsHosts = new DnsHostsTable();
  const warnings: string[] = [];
  let dnsServers: DnsUpstream[];
  try {
    dnsServers = (values.get('--dns-server') ?? []).map(parseDnsServerFlag);
    for (const entry of values.get('--dns-host') ?? []) {
      const { name, ip } = parseDnsHostFlag(entry);
      dnsHosts.add(name, ip);
    }
  } catch (err) {
    if (err instanceof DnsFlagError) throw new ConfigError(err.message.split(':')[0]!, err.message.slice(err.message.indexOf(':') + 2));
    throw err;
  }
  for (const file of values.get('--dns-hosts') ?? []) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw new ConfigError('--dns-hosts', `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    }
    const parsed = DnsHostsTable.parseHostsFile(text);
    // Real hosts files carry lines we cannot use (scoped IPv6): skip them with a warning.
    for (const p of parsed.problems) warnings.push(`--dns-hosts: ${file}:${p.line}: ${p.reason}`);
    for (const e of parsed.entries) dnsHosts.add(e.name, e.ip);
  }

  let forwards: ForwardRule[];
  try {
    forwards = parseForwardFlags(values.get('--hostfwd') ?? [], values.get('--natpf') ?? [], { network, netmask, reserved: [gateway, dns] });
  } catch (err) {
    if (err instanceof ForwardRuleError) throw new ConfigError(err.flag ?? '--hostfwd', err.message);
    throw err;
  }
  let guestForwards: GuestForwardRule[];
  try {
    guestForwards = parseGuestfwdFlags(values.get('--guestfwd') ?? [], { network, netmask, dns });
  } catch (err) {
    if (err instanceof GuestForwardError) throw new ConfigError('--guestfwd', err.message);
    throw err;
  }
  const guestfwdHosts = new Set(guestForwards.map((g) => parseIpv4(g.addr)!).filter((ip) => ip !== gateway));
  for (const ip of dhcpStatic.values()) {
    if (guestfwdHosts.has(ip)) throw new ConfigError('--guestfwd', `${formatIpv4(ip)} is also a --dhcp-static address: a guest forward's address is vmnat's own`);
  }
  for (const f of forwards) {
    if (f.guestAddr !== undefined && guestfwdHosts.has(parseIpv4(f.guestAddr)!)) {
      throw new ConfigError('--hostfwd', `${JSON.stringify(f.name)}: guest address ${f.guestAddr} is a --guestfwd address (vmnat's own), not a guest`);
    }
  }
  const deny: Ipv4Range[] = [];
  if (!values.has('--allow-link-local')) deny.push({ network: LINK_LOCAL.network, mask: LINK_LOCAL.mask });
  const deny6: Ipv6Range[] = values.has('--allow-link-local') ? [] : [METADATA6];
  for (const text of values.get('--deny') ?? []) {
    if (text.includes(':')) deny6.push(parseCidr6('--deny', text));
    else deny.push(parseCidr('--deny', text));
  }
  const filterFile = single('--filter');
  const filter = filterFile === undefined ? undefined : readFilterFlag(filterFile);
  const apiSocket = single('--api-socket');
  const maxPath = maxUnixPathBytes(platform);
  if (apiSocket !== undefined && (apiSocket.length === 0 || Buffer.byteLength(apiSocket) > maxPath)) throw new ConfigError('--api-socket', `path must be 1..${maxPath} bytes (unix socket limit)`);

  // Root (sudo vmnat --tap …) becomes --user, or the user sudo names, once set up.
  const userFlag = single('--user');
  const euid = typeof process.geteuid === 'function' ? process.geteuid() : 0;
  let dropTo: DropTarget | undefined;
  if (euid === 0) {
    const t = resolveDropTarget(userFlag, process.env);
    if (typeof t === 'string') throw new ConfigError('--user', t);
    if (t !== undefined && t.uid !== 0) dropTo = t;
  } else if (userFlag !== undefined) {
    const t = resolveDropTarget(userFlag, {});
    if (typeof t === 'string') throw new ConfigError('--user', t);
    if (t !== undefined && t.uid !== euid) throw new ConfigError('--user', `only root can become another user (vmnat runs as uid ${euid})`);
  }
  const level = single('--log-level') ?? 'info';
  if (!(LogLevels as readonly string[]).includes(level)) throw new ConfigError('--log-level', `${JSON.stringify(level)} is not one of ${LogLevels.join('|')}`);

  const maxBufferBytes = parseMemory('--max-buffer-memory', single('--max-buffer-memory') ?? '256M');
  const flowBudget = flowBudgets(single('--max-flows'), single('--max-forward-flows'), maxBufferBytes, warnings);
  const antiSpoofText = single('--anti-spoof') ?? 'on';
  if (antiSpoofText !== 'on' && antiSpoofText !== 'off') throw new ConfigError('--anti-spoof', `${JSON.stringify(antiSpoofText)} is not one of on|off`);

  const config: Config = {
    links,
    isolate: values.has('--isolate') || parsedMode.isolate,
    antiSpoof: antiSpoofText === 'on',
    network,
    prefixLen,
    netmask,
    gateway,
    dns,
    firstLease,
    lastLease,
    mtu,
    dhcpLeaseTimeSec,
    dhcpStatic,
    dnsSearch,
    logLevel: level as LogLevel,
    hostLoopback: !values.has('--no-host-loopback'),
    deny,
    deny6,
    noTso: values.has('--no-tso'),
    udpTimeoutSec: parseIntStrict('--udp-timeout', single('--udp-timeout') ?? '60', 1, 86400),
    maxFlows: flowBudget.maxFlows,
    maxBufferBytes,
    maxForwardFlows: flowBudget.maxForwardFlows,
    tcpIdleTimeoutSec: parseIntStrict('--tcp-idle-timeout', single('--tcp-idle-timeout') ?? '7440', 0, 30 * 86400),
    tcpConnectTimeoutSec: parseIntStrict('--tcp-connect-timeout', single('--tcp-connect-timeout') ?? '10', 1, 600),
    tcpKeepaliveSec: parseIntStrict('--tcp-keepalive', single('--tcp-keepalive') ?? '0', 0, 86400),
    tcpBufferBytes: parseSize('--tcp-buffer', single('--tcp-buffer')),
    dnsMode,
    dnsServers,
    dnsHosts,
    hostAliases,
    forwards,
    warnings,
    mode,
    startDisconnected: parsedMode.startDisconnected,
  };
  if (apiSocket !== undefined) config.apiSocket = path.resolve(apiSocket);
  if (runtimeDir !== undefined) config.runtimeDir = runtimeDir;
  if (dropTo !== undefined) config.dropTo = dropTo;
  if (domain !== undefined) config.domain = domain;
  if (pcapFile !== undefined) config.pcapFile = path.resolve(pcapFile);
  if (tftpDir !== undefined) config.tftpDir = tftpDir;
  const bootFile = single('--bootfile');
  if (bootFile !== undefined) {
    if (!/^[\x21-\x7e]{1,127}$/.test(bootFile)) throw new ConfigError('--bootfile', `${JSON.stringify(bootFile)} is not 1..127 printable ASCII characters`);
    config.bootFile = bootFile;
  }
  const tftpServerText = single('--tftp-server');
  if (tftpServerText !== undefined) {
    const ip = parseIpv4(tftpServerText);
    if (ip === undefined) throw new ConfigError('--tftp-server', `${JSON.stringify(tftpServerText)} is not an IPv4 address`);
    if (bootFile === undefined) throw new ConfigError('--tftp-server', 'only applies with --bootfile');
    config.tftpServer = ip;
  }
  if (filter !== undefined) config.filter = filter;
  if (guestForwards.length > 0) config.guestForwards = guestForwards;
  const sourceText = single('--hostfwd-source');
  if (sourceText !== undefined) {
    if (sourceText !== 'gateway' && sourceText !== 'client') throw new ConfigError('--hostfwd-source', `${JSON.stringify(sourceText)} is not one of gateway|client`);
    config.hostfwdSource = sourceText;
  }
  const ipv6Prefix = single('--ipv6-prefix');
  if (values.has('--no-ipv6') || mode.kind !== 'nat') {
    // (Host-only, bridged and vmnet modes: IPv6 is the host's or the LAN's business, as IPv4
    // routing is; vmnat's router advertisements and IPv6 NAT serve nat mode only.)
    if (ipv6Prefix !== undefined) throw new ConfigError('--ipv6-prefix', mode.kind !== 'nat' ? `applies to nat mode only (this is ${mode.kind} mode)` : 'cannot be used with --no-ipv6');
  } else {
    config.ipv6 = parseIpv6Network('--ipv6-prefix', ipv6Prefix ?? DEFAULT_IPV6_NETWORK);
    if (mtu < 1280) {
      warnings.push(`IPv6 is off: it needs an MTU of at least 1280 (--mtu ${mtu})`);
      delete config.ipv6;
    }
  }
  config.dhcp6Static = parseDhcp6Statics(dhcp6Pending, config.ipv6);
  return { action: 'run', config };
}

/**
 * --filter FILE|-: read and parse the whole rule file now, so a typo stops vmnat before it opens
 * anything (`vmnat: --filter: filter.conf:3: unknown protocol "tcpp" (tcp, udp or icmp)`). The
 * file keeps the name the user gave, so the message points where they look.
 */
function readFilterFlag(file: string): FilterRules {
  if (file.length === 0) throw new ConfigError('--filter', 'needs a file name (or - for stdin)');
  const source = file === '-' ? STDIN_SOURCE : file;
  let text: string;
  try {
    text = readFileSync(file === '-' ? 0 : file, 'utf8');
  } catch (err) {
    throw new ConfigError('--filter', `cannot read ${source}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  try {
    return parseFilter(text, source);
  } catch (err) {
    if (err instanceof FilterParseError) throw new ConfigError('--filter', err.message);
    throw err;
  }
}
