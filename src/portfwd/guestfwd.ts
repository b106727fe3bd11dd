/**
 * Guest-to-host forwards (qemu's `guestfwd`): the guest connects to a virtual address and port
 * inside its network, and vmnat connects that connection to a socket on the host.
 *
 * Theory of operation: each rule adds a virtual host to the stack (stack.ts: it answers ARP with
 * its own MAC, 52:55 + its address, and ping) unless the address is the gateway, and an entry to
 * the NAT policy's table (policy.ts: `guestfwd` targets, looked up before every other rule, so a
 * guestfwd on the gateway takes that one port from the host-loopback mapping). A guest SYN to the
 * address and port is then handled as any NAT flow (nat/tcp.ts: dial the host first; refused or
 * missing socket → RST; unreachable or timed out → ICMP unreachable), except that the host side
 * dials the rule's target — a unix socket path or a TCP address — instead of the destination.
 * Other ports of a virtual host are refused (RST, ICMP port unreachable for UDP). The table is
 * fixed at start (command line); the service exists for its counters under `guestfwd` in /stats.
 *
 * Syntax (qemu's `guestfwd=[tcp]:[SERVER]:PORT-DEV`, DEV one of the chardev forms below):
 *   --guestfwd [tcp]:[SERVER]:PORT-unix:/PATH          a unix socket on the host
 *   --guestfwd [tcp]:[SERVER]:PORT-tcp:HOST:HOSTPORT   a TCP address (IPv4, [IPv6] or a name)
 *   - SERVER empty → the network's .4 (libslirp's default, 10.0.2.4). SERVER must be a host address
 *     of the guest network other than the DNS address; the gateway is allowed (see above).
 *   - qemu's other chardevs and `cmd:COMMAND` (a program per connection) are refused with a line
 *     saying so; so are chardev options (`,server`, `,nowait`): vmnat is always the client.
 */
import type { Ipv4Addr } from '../stack/wire/addr.ts';
import { formatIpv4, parseIpv4 } from '../stack/wire/addr.ts';

/** Where a guestfwd's connections go on the host. */
export type GuestForwardTarget = { kind: 'unix'; path: string } | { kind: 'tcp'; host: string; port: number };

export interface GuestForwardRule {
  /** The virtual address the guest connects to (dotted quad). */
  addr: string;
  port: number;
  target: GuestForwardTarget;
}

/** What the NAT needs per (address, port): how to dial, and how to show it. */
export interface GuestForwardEntry {
  rule: GuestForwardRule;
  /** `unix:/PATH` or `tcp:HOST:PORT`, for listings and logs. */
  label: string;
  /** Options for `net.Socket.connect`. */
  connect: { path: string } | { host: string; port: number };
}

/** A --guestfwd that cannot be accepted; `message` is one line, quoting the rule. */
export class GuestForwardError extends Error {
  override readonly name = 'GuestForwardError';
  readonly code = 'VMNAT_BAD_GUESTFWD';
}

const FORM = 'expected [tcp]:[SERVER]:PORT-unix:/PATH or [tcp]:[SERVER]:PORT-tcp:HOST:PORT (e.g. tcp:10.0.2.100:1234-unix:/run/svc.sock)';

function fail(text: string, reason: string): never {
  throw new GuestForwardError(`${JSON.stringify(text)}: ${reason}`);
}

function checkPort(text: string, what: string, whole: string): number {
  if (!/^\d{1,5}$/.test(text) || Number(text) < 1 || Number(text) > 65535) fail(whole, `${what} ${JSON.stringify(text)} is not a port in 1..65535`);
  return Number(text);
}

/** The guest network, to default and check SERVER. */
export interface GuestForwardNetwork {
  network: Ipv4Addr;
  netmask: Ipv4Addr;
  dns: Ipv4Addr;
}

/** Parses one `--guestfwd`. Throws GuestForwardError. */
export function parseGuestfwd(text: string, net: GuestForwardNetwork): GuestForwardRule {
  const m = /^([A-Za-z]*):([^:-]*):([^-]*)-(.*)$/.exec(text);
  if (m === null) fail(text, FORM);
  const [, proto, server, portText, dev] = m as unknown as [string, string, string, string, string];
  if (proto !== '' && proto.toLowerCase() !== 'tcp') fail(text, `protocol ${JSON.stringify(proto)}: guest forwards are TCP (as in qemu)`);
  const port = checkPort(portText, 'port', text);
  let ip: Ipv4Addr;
  if (server === '') {
    ip = (net.network | (0x0204 & ~net.netmask)) >>> 0; // libslirp's default: x.x.2.4 within the network
  } else {
    const parsed = parseIpv4(server);
    if (parsed === undefined) fail(text, `server ${JSON.stringify(server)} is not an IPv4 address`);
    ip = parsed;
  }
  const cidr = `${formatIpv4(net.network)}/${Math.clz32(~net.netmask >>> 0)}`;
  const broadcast = (net.network | ~net.netmask) >>> 0;
  if ((ip & net.netmask) >>> 0 !== net.network) fail(text, `server ${formatIpv4(ip)} is outside the guest network ${cidr}`);
  if (ip === net.network || ip === broadcast) fail(text, `server ${formatIpv4(ip)} is not a host address of ${cidr}`);
  if (ip === net.dns) fail(text, `server ${formatIpv4(ip)} is the DNS address`);
  return { addr: formatIpv4(ip), port, target: parseDev(dev, text) };
}

function parseDev(dev: string, text: string): GuestForwardTarget {
  if (dev.includes(',')) fail(text, `chardev options (${JSON.stringify(dev.slice(dev.indexOf(',')))}) are not supported: vmnat connects to the socket as a client`);
  if (dev.startsWith('cmd:')) fail(text, 'cmd: (a program per connection) is not supported; give unix:/PATH or tcp:HOST:PORT');
  if (dev.startsWith('unix:')) {
    const path = dev.slice(5);
    if (!path.startsWith('/')) fail(text, `socket path ${JSON.stringify(path)} must be absolute`);
    if (path.includes('\0') || Buffer.byteLength(path) > 107) fail(text, 'socket path must be at most 107 bytes, without NUL');
    return { kind: 'unix', path };
  }
  if (dev.startsWith('tcp:')) {
    const rest = dev.slice(4);
    let host: string;
    let portText: string;
    if (rest.startsWith('[')) {
      const close = rest.indexOf(']');
      if (close < 0 || rest[close + 1] !== ':') fail(text, `target ${JSON.stringify(rest)} is not [IPV6]:PORT`);
      host = rest.slice(1, close);
      portText = rest.slice(close + 2);
    } else {
      const c = rest.lastIndexOf(':');
      if (c <= 0) fail(text, `target ${JSON.stringify(rest)} is not HOST:PORT`);
      host = rest.slice(0, c);
      portText = rest.slice(c + 1);
      if (host.includes(':')) fail(text, `put an IPv6 target in brackets (tcp:[::1]:${portText})`);
    }
    if (!/^[A-Za-z0-9.:_-]{1,253}$/.test(host)) fail(text, `target host ${JSON.stringify(host)} is not an address or a name`);
    return { kind: 'tcp', host, port: checkPort(portText, 'target port', text) };
  }
  return fail(text, `${JSON.stringify(dev.split(':')[0])} is not a device vmnat can connect to; ${FORM}`);
}

export function guestForwardLabel(t: GuestForwardTarget): string {
  return t.kind === 'unix' ? `unix:${t.path}` : `tcp:${t.host.includes(':') ? `[${t.host}]` : t.host}:${t.port}`;
}

/** qemu's syntax back (`tcp:10.0.2.100:1234-unix:/run/svc.sock`). */
export function formatGuestfwd(r: GuestForwardRule): string {
  return `tcp:${r.addr}:${r.port}-${guestForwardLabel(r.target)}`;
}

/** All --guestfwd flags, with no (address, port) twice. Throws GuestForwardError. */
export function parseGuestfwdFlags(texts: readonly string[], net: GuestForwardNetwork): GuestForwardRule[] {
  const seen = new Set<string>();
  return texts.map((t) => {
    const r = parseGuestfwd(t, net);
    const key = `${r.addr}:${r.port}`;
    if (seen.has(key)) fail(t, `${key} is given twice`);
    seen.add(key);
    return r;
  });
}

export function createGuestfwdStats() {
  return { connections: 0, refused: 0, failed: 0 };
}

/**
 * The table the NAT policy reads: (address, port) → entry, plus the virtual hosts it adds. The
 * counters are kept by the TCP NAT's dial outcome (`counted`).
 */
export class GuestForwards {
  readonly stats = createGuestfwdStats();
  /** Key: address * 65536 + port. */
  readonly byKey = new Map<number, GuestForwardEntry>();
  /** Addresses that are not the gateway: each a virtual host of its own (ARP, ping). */
  readonly hosts = new Set<Ipv4Addr>();

  constructor(
    readonly rules: readonly GuestForwardRule[],
    gateway: Ipv4Addr,
  ) {
    for (const rule of rules) {
      const ip = parseIpv4(rule.addr)!;
      const connect = rule.target.kind === 'unix' ? { path: rule.target.path } : { host: rule.target.host, port: rule.target.port };
      this.byKey.set(ip * 65536 + rule.port, { rule, label: guestForwardLabel(rule.target), connect });
      if (ip !== gateway) this.hosts.add(ip);
    }
  }

  get size(): number {
    return this.byKey.size;
  }
}
