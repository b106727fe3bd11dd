/**
 * Port-forward rules: text (qemu's `hostfwd`, VBoxManage's `natpf`) and JSON (the control API) →
 * one validated `ForwardRule`.
 *
 * Theory of operation: all three front ends feed the same field validators, so the same rule
 * written any way yields a deep-equal object (tests check this), and a bad rule costs the user one
 * line naming what is wrong (`ForwardRuleError.reason`). Nothing here opens a socket or knows the
 * guest network; `checkRuleForNetwork` adds that check once the layout is known.
 *
 * Syntax
 *   --hostfwd [tcp|udp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT      (qemu; proto defaults to tcp)
 *   --natpf   [NAME],tcp|udp,[HOSTIP],HOSTPORT,[GUESTIP],GUESTPORT     (VBoxManage)
 *   --hostfwd unix:/PATH-[GUESTADDR]:GUESTPORT                          (qemu ≥ 7.1 with libslirp 4.7)
 *   --natpf   [NAME],unix,/PATH,,[GUESTIP],GUESTPORT
 *   - HOSTADDR empty → 127.0.0.1. This is deliberately safer than VirtualBox (which listens on all
 *     interfaces): exposing a guest service to the network must be asked for (0.0.0.0 or [::]).
 *   - IPv6 listen addresses in brackets in hostfwd (`tcp:[::1]:8080-:80`); natpf takes `::1` or
 *     `[::1]`. An IPv6 listener is IPv6-only (ipv6Only), so `[::]` and `0.0.0.0` can coexist.
 *   - GUESTADDR empty → the guest's leased address, resolved per connection (follows the lease).
 *     A fixed GUESTADDR may be IPv6 (`tcp:[::1]:8080-[fd00:10:0:2::15]:80`, in brackets), in the
 *     guests' /64; vmnat then connects from the IPv6 gateway.
 *   - A TCP forward on 127.0.0.1 (the default) also listens on ::1 when it can (forwarder.ts), so
 *     a client whose `localhost` resolves to ::1 reaches it too.
 *   - Port ranges (neither qemu nor VirtualBox has them): `A..B` on both sides, same size, mapped
 *     one to one: `tcp::8000..8010-:9000..9010`. At most MAX_PORT_RANGE ports per rule (each is a
 *     listening socket). A `-` inside a port is rejected with a hint (the `-` separates the sides).
 *   - Names: natpf's NAME, else a stable generated `PROTO-HOSTADDR-HOSTPORT[..END]` (unique among
 *     live rules, since two rules cannot listen on the same address and port).
 *   - Host port 0: the kernel picks a free port when the forward is added (`tcp::0-:22`); the added
 *     rule (its generated name too) carries the bound port, and the ready line and the API report
 *     it. Binding port 0 is the only race-free way to get a free port.
 *   - A unix socket host side (`proto: 'unix'`): `hostAddr` is the absolute path of the socket file
 *     vmnat listens on (≤ 107 bytes), `hostPort` 0, one guest TCP port (no ranges). The path may
 *     hold `-`: the host side ends at the last `-` before `[GUESTADDR]:GUESTPORT`. qemu takes the
 *     first `-`, so any rule qemu reads means the same here. Generated name: `unix-PATH`.
 */
import { formatIpv4, ipv6Bytes, ipv6InPrefix, parseIpv4, parseIpv6 as parseIpv6Text, type Ipv4Addr } from '../stack/wire/addr.ts';
import { formatIpv6, parseIpv6 } from '../dns/hosts.ts';

/** `unix`: the host side is a socket file (`hostAddr` is its path); the guest side is TCP. */
export type ForwardProto = 'tcp' | 'udp' | 'unix';

/** A validated forward. Every key is always present (so rules compare with deep equality). */
export interface ForwardRule {
  name: string;
  proto: ForwardProto;
  /** Canonical IPv4 or IPv6 text, without brackets (`127.0.0.1`, `::1`, `0.0.0.0`, `::`); for `unix`, the socket's absolute path. */
  hostAddr: string;
  /** First host port (the only one unless `portCount` > 1). */
  hostPort: number;
  /** Dotted-quad IPv4 or canonical IPv6; undefined: the guest's current lease, looked up per connection/flow. */
  guestAddr: string | undefined;
  guestPort: number;
  /** ≥ 1: host ports hostPort..hostPort+portCount-1 map one to one onto guestPort… */
  portCount: number;
}

/** The API's JSON form of a rule (snake_case; `guest_addr: null` follows the lease). */
export interface ForwardRuleJson {
  name: string;
  proto: ForwardProto;
  host_addr: string;
  host_port: number;
  guest_addr: string | null;
  guest_port: number;
  port_count: number;
}

export const DEFAULT_HOST_ADDR = '127.0.0.1';
/** Most ports one rule may span: each is a listening socket (a file descriptor). */
export const MAX_PORT_RANGE = 1024;

const HOSTFWD_FORM = 'expected [tcp|udp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT (e.g. tcp::8080-:80) or unix:/PATH-[GUESTADDR]:GUESTPORT';
const NATPF_FORM = 'expected NAME,PROTO,HOSTIP,HOSTPORT,GUESTIP,GUESTPORT (e.g. web,tcp,,8080,,80, or docker,unix,/PATH,,,2375)';
/** sun_path holds 108 bytes with its terminating NUL. */
const MAX_SOCKET_PATH_BYTES = 107;
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,63}$/;

/** A rule that cannot be accepted. `reason` is one line without the input; `message` quotes it. */
export class ForwardRuleError extends Error {
  override readonly name = 'ForwardRuleError';
  readonly code = 'VMNAT_BAD_RULE';
  /** The command-line flag the rule came from, when `parseForwardFlags` parsed it. */
  flag: '--hostfwd' | '--natpf' | undefined;
  constructor(
    readonly reason: string,
    readonly input?: string,
  ) {
    super(input === undefined ? reason : `${JSON.stringify(input)}: ${reason}`);
  }
}

function fail(reason: string): never {
  throw new ForwardRuleError(reason);
}

/** Adds the input text to a reason thrown by the field validators. */
function withInput<T>(input: string, f: () => T): T {
  try {
    return f();
  } catch (err) {
    if (err instanceof ForwardRuleError && err.input === undefined) throw new ForwardRuleError(err.reason, input);
    throw err;
  }
}

// ── field validators, shared by every syntax ────────────────────────────────────────────────

function checkProto(text: string): ForwardProto {
  const p = text.toLowerCase();
  if (p === 'tcp' || p === 'udp' || p === 'unix') return p;
  return fail(`unknown protocol ${JSON.stringify(text)} (tcp, udp or unix)`);
}

/** The socket file of a `unix` forward: an absolute path a socket address can hold. */
function checkSocketPath(text: string): string {
  if (text === '') fail('missing the socket path (e.g. unix:/run/user/1000/docker.sock-:2375)');
  if (!text.startsWith('/')) fail(`socket path ${JSON.stringify(text)} must be absolute (start with /)`);
  if (text.includes('\0')) fail('the socket path contains a NUL byte');
  if (Buffer.byteLength(text) > MAX_SOCKET_PATH_BYTES) fail(`socket path is ${Buffer.byteLength(text)} bytes long (a unix socket path holds at most ${MAX_SOCKET_PATH_BYTES})`);
  if (text.endsWith('/')) fail(`socket path ${JSON.stringify(text)} names a directory`);
  return text;
}

/** Host listen address: '' → 127.0.0.1; IPv4 or IPv6 (brackets optional) in canonical text. */
function checkHostAddr(text: string): string {
  if (text === '') return DEFAULT_HOST_ADDR;
  const inner = text.startsWith('[') && text.endsWith(']') ? text.slice(1, -1) : text;
  const v4 = parseIpv4(inner);
  if (v4 !== undefined && inner === text) return formatIpv4(v4);
  if (inner.includes('%')) fail(`host address ${JSON.stringify(text)}: scoped IPv6 addresses (%zone) are not supported`);
  const v6 = parseIpv6(inner);
  if (v6 !== undefined) return formatIpv6(v6);
  return fail(`host address ${JSON.stringify(text)} is not an IP address (e.g. 127.0.0.1, 0.0.0.0, [::1], [::])`);
}

/** Guest address: '' → undefined (the lease); else dotted-quad IPv4 or IPv6 (brackets optional), canonical. */
function checkGuestAddr(text: string): string | undefined {
  if (text === '') return undefined;
  const v4 = parseIpv4(text);
  if (v4 !== undefined) return formatIpv4(v4);
  const inner = text.startsWith('[') && text.endsWith(']') ? text.slice(1, -1) : text;
  if (inner.includes(':')) {
    if (inner.includes('%')) fail(`guest address ${JSON.stringify(text)}: scoped IPv6 addresses (%zone) are not supported`);
    const v6 = parseIpv6(inner);
    if (v6 !== undefined) return formatIpv6(v6);
    fail(`guest address ${JSON.stringify(text)} is not an IPv6 address (e.g. [fd00:10:0:2::15])`);
  }
  return fail(`guest address ${JSON.stringify(text)} is not an IP address (e.g. 10.0.2.15 or [fd00:10:0:2::15]; empty: the guest's lease)`);
}

function checkPort(side: 'host' | 'guest', n: number, shown: string): number {
  // Host port 0: any free port, chosen by the kernel when the listener binds (single ports only).
  if (side === 'host' && n === 0) return 0;
  if (!Number.isInteger(n) || n < 1 || n > 65535) fail(`${side} port ${shown} is not in ${side === 'host' ? '0' : '1'}..65535`);
  return n;
}

/** `P` or `A..B` → first port and count. */
function checkPortText(side: 'host' | 'guest', text: string): { port: number; count: number } {
  if (text === '') fail(`missing ${side} port`);
  if (text.includes('-')) fail(`${side} port ${JSON.stringify(text)}: write a port range as A..B (e.g. tcp::8000..8010-:8000..8010)`);
  const m = /^(\d+)(?:\.\.(\d+))?$/.exec(text);
  if (!m) fail(`${side} port ${JSON.stringify(text)} is not a number in 1..65535 or a range A..B`);
  const first = checkPort(side, Number(m[1]), m[1]!);
  if (m[2] === undefined) return { port: first, count: 1 };
  const last = checkPort(side, Number(m[2]), m[2]);
  if (first === 0) fail(`${side} port range ${text}: port 0 (any free port) cannot start a range`);
  if (last < first) fail(`${side} port range ${text} is reversed`);
  const count = last - first + 1;
  if (count > MAX_PORT_RANGE) fail(`${side} port range ${text} has ${count} ports (at most ${MAX_PORT_RANGE})`);
  return { port: first, count };
}

function formatPorts(port: number, count: number): string {
  return count === 1 ? String(port) : `${port}..${port + count - 1}`;
}

function checkName(text: string): string {
  if (!NAME_RE.test(text)) fail(`name ${JSON.stringify(text)} may only use letters, digits and . _ : @ + - (1..64 characters, starting with a letter or digit)`);
  return text;
}

/** The generated name of a rule without one: stable, and unique among rules that can coexist. */
export function defaultRuleName(proto: ForwardProto, hostAddr: string, hostPort: number, portCount = 1): string {
  if (proto === 'unix') return `unix-${hostAddr}`;
  return `${proto}-${hostAddr}-${formatPorts(hostPort, portCount)}`;
}

function build(
  name: string | undefined,
  proto: ForwardProto,
  hostAddr: string,
  host: { port: number; count: number },
  guestAddr: string | undefined,
  guest: { port: number; count: number },
): ForwardRule {
  if (proto === 'unix' && guest.count > 1) fail('a unix socket forward reaches one guest port (no ranges)');
  if (host.count !== guest.count) {
    if (guest.count === 1) fail(`host port range ${formatPorts(host.port, host.count)} needs a guest port range of the same size (e.g. ${formatPorts(host.port, host.count)}-:${formatPorts(guest.port, host.count)})`);
    fail(`host port range ${formatPorts(host.port, host.count)} has ${host.count} ports but guest port range ${formatPorts(guest.port, guest.count)} has ${guest.count}`);
  }
  if (guest.port + guest.count - 1 > 65535) fail(`guest port range ${formatPorts(guest.port, guest.count)} goes past 65535`);
  return {
    name: name ?? defaultRuleName(proto, hostAddr, host.port, host.count),
    proto,
    hostAddr,
    hostPort: host.port,
    guestAddr,
    guestPort: guest.port,
    portCount: host.count,
  };
}

// ── front ends ───────────────────────────────────────────────────────────────────────────────

/** Parses qemu's `[tcp|udp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT`. Throws ForwardRuleError. */
export function parseHostfwd(text: string): ForwardRule {
  return withInput(text, () => {
    if (text.trim() === '') fail(`empty rule; ${HOSTFWD_FORM}`);
    const c1 = text.indexOf(':');
    if (c1 < 0) fail(HOSTFWD_FORM);
    const protoText = text.slice(0, c1);
    if (!/^[A-Za-z]*$/.test(protoText)) fail(HOSTFWD_FORM);
    const proto = protoText === '' ? 'tcp' : checkProto(protoText);
    if (proto === 'unix') return parseUnixHostfwd(text.slice(c1 + 1));
    let rest = text.slice(c1 + 1);
    let hostAddrText: string;
    if (rest.startsWith('[')) {
      const close = rest.indexOf(']');
      if (close < 0) fail('missing "]" after the IPv6 host address');
      hostAddrText = rest.slice(0, close + 1);
      rest = rest.slice(close + 1);
      if (!rest.startsWith(':')) fail(`expected ":" and the host port after ${hostAddrText}`);
      rest = rest.slice(1);
    } else {
      const c2 = rest.indexOf(':');
      if (c2 < 0) fail(HOSTFWD_FORM);
      hostAddrText = rest.slice(0, c2);
      rest = rest.slice(c2 + 1);
    }
    const dash = rest.indexOf('-');
    if (dash < 0) fail(`missing "-" between the host and guest sides; ${HOSTFWD_FORM}`);
    const hostPortText = rest.slice(0, dash);
    const guestSide = rest.slice(dash + 1);
    if (hostPortText.includes(':')) fail(`host port ${JSON.stringify(hostPortText)}: put an IPv6 host address in brackets (tcp:[::1]:8080-:80)`);
    const hostAddr = checkHostAddr(hostAddrText);
    const host = checkPortText('host', hostPortText);
    if (/^\d+(\.\.\d+)?-/.test(guestSide)) fail(`host port ${JSON.stringify(`${hostPortText}-${guestSide.split('-')[0]!}`)}: write a port range as A..B (e.g. tcp::8000..8010-:8000..8010)`);
    const c3 = guestSide.lastIndexOf(':');
    if (c3 < 0) fail(`guest side ${JSON.stringify(guestSide)} is not [GUESTADDR]:GUESTPORT`);
    const guestAddr = checkGuestAddr(guestSide.slice(0, c3));
    const guest = checkPortText('guest', guestSide.slice(c3 + 1));
    return build(undefined, proto, hostAddr, host, guestAddr, guest);
  });
}

/** `/PATH-[GUESTADDR]:GUESTPORT`, after `unix:`. The path ends at the last `-` before the guest side. */
function parseUnixHostfwd(rest: string): ForwardRule {
  const m = /^(.*)-((?:[0-9.]*)?:[^:-]*)$/.exec(rest);
  if (m === null) fail(`missing "-" between the socket path and the guest side; ${HOSTFWD_FORM}`);
  const hostPath = checkSocketPath(m[1]!);
  const guestSide = m[2]!;
  const c = guestSide.lastIndexOf(':');
  const guestAddr = checkGuestAddr(guestSide.slice(0, c));
  const guest = checkPortText('guest', guestSide.slice(c + 1));
  return build(undefined, 'unix', hostPath, { port: 0, count: 1 }, guestAddr, guest);
}

/** Parses VBoxManage's `[NAME],tcp|udp,[HOSTIP],HOSTPORT,[GUESTIP],GUESTPORT`. Throws ForwardRuleError. */
export function parseNatpf(text: string): ForwardRule {
  return withInput(text, () => {
    if (text.trim() === '') fail(`empty rule; ${NATPF_FORM}`);
    const f = text.split(',');
    if (f.length !== 6) fail(`${NATPF_FORM} (6 fields, got ${f.length})`);
    const [nameText, protoText, hostIp, hostPort, guestIp, guestPort] = f as [string, string, string, string, string, string];
    const name = nameText === '' ? undefined : checkName(nameText);
    if (protoText === '') fail('missing protocol (tcp or udp)');
    const proto = checkProto(protoText);
    if (proto === 'unix') {
      if (hostPort !== '' && hostPort !== '0') fail('a unix socket forward has no host port (leave HOSTPORT empty: docker,unix,/PATH,,,2375)');
      return build(name, proto, checkSocketPath(hostIp), { port: 0, count: 1 }, checkGuestAddr(guestIp), checkPortText('guest', guestPort));
    }
    const hostAddr = checkHostAddr(hostIp);
    const host = checkPortText('host', hostPort);
    const guestAddr = checkGuestAddr(guestIp);
    const guest = checkPortText('guest', guestPort);
    return build(name, proto, hostAddr, host, guestAddr, guest);
  });
}

const JSON_KEYS = new Set(['name', 'proto', 'host_addr', 'host_port', 'guest_addr', 'guest_port', 'port_count']);

/**
 * The API's `POST /forwards` body: `{name?, proto, host_addr?, host_port, guest_addr?, guest_port,
 * port_count?}`. Unknown keys are refused (a typo such as `hostport` should not pass silently).
 */
export function ruleFromJson(value: unknown): ForwardRule {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail('the body must be a JSON object');
  const o = value as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!JSON_KEYS.has(k)) fail(`unknown field ${JSON.stringify(k)} (known: ${[...JSON_KEYS].join(', ')})`);
  const str = (key: string, optional: boolean): string | undefined => {
    const v = o[key];
    if (v === undefined || (v === null && optional)) {
      if (!optional) fail(`missing field "${key}"`);
      return undefined;
    }
    if (typeof v !== 'string') fail(`field "${key}" must be a string`);
    return v;
  };
  const int = (key: string, optional: boolean): number | undefined => {
    const v = o[key];
    if (v === undefined) {
      if (!optional) fail(`missing field "${key}"`);
      return undefined;
    }
    if (typeof v !== 'number' || !Number.isInteger(v)) fail(`field "${key}" must be a whole number`);
    return v;
  };
  const nameText = str('name', true);
  const protoText = str('proto', false)!;
  // A unix rule's generated name (`unix-/PATH`) holds "/", which a given NAME may not: it comes back
  // in listings, so it is taken as "generate it".
  const unixName = protoText.toLowerCase() === 'unix' && nameText === defaultRuleName('unix', String(o['host_addr']), 0);
  const name = nameText === undefined || unixName ? undefined : checkName(nameText);
  const proto = checkProto(protoText);
  if (proto === 'unix') {
    const count = int('port_count', true) ?? 1;
    if (count !== 1) fail('a unix socket forward reaches one guest port (port_count 1)');
    const hostPort = int('host_port', true) ?? 0;
    if (hostPort !== 0) fail('a unix socket forward has no host port (give host_addr: the socket path)');
    const path = str('host_addr', false)!;
    const guestAddr = checkGuestAddr(str('guest_addr', true) ?? '');
    const guestPort = checkPort('guest', int('guest_port', false)!, String(o['guest_port']));
    return build(name, proto, checkSocketPath(path), { port: 0, count: 1 }, guestAddr, { port: guestPort, count: 1 });
  }
  const hostAddr = checkHostAddr(str('host_addr', true) ?? '');
  const count = int('port_count', true) ?? 1;
  if (count < 1 || count > MAX_PORT_RANGE) fail(`port_count ${count} is not in 1..${MAX_PORT_RANGE}`);
  const hostPort = checkPort('host', int('host_port', false)!, String(o['host_port']));
  const guestAddr = checkGuestAddr(str('guest_addr', true) ?? '');
  const guestPort = checkPort('guest', int('guest_port', false)!, String(o['guest_port']));
  if (hostPort + count - 1 > 65535) fail(`host port range ${formatPorts(hostPort, count)} goes past 65535`);
  if (hostPort === 0 && count > 1) fail('host port 0 (any free port) cannot start a range');
  return build(name, proto, hostAddr, { port: hostPort, count }, guestAddr, { port: guestPort, count });
}

export function ruleToJson(rule: ForwardRule): ForwardRuleJson {
  return {
    name: rule.name,
    proto: rule.proto,
    host_addr: rule.hostAddr,
    host_port: rule.hostPort,
    guest_addr: rule.guestAddr ?? null,
    guest_port: rule.guestPort,
    port_count: rule.portCount,
  };
}

/** The host side as people write it: `127.0.0.1:8080`, `[::1]:8000..8010`. */
export function formatHostSide(rule: ForwardRule): string {
  if (rule.proto === 'unix') return `unix:${rule.hostAddr}`;
  const addr = rule.hostAddr.includes(':') ? `[${rule.hostAddr}]` : rule.hostAddr;
  return `${addr}:${formatPorts(rule.hostPort, rule.portCount)}`;
}

/** The guest side: `10.0.2.15:80`, or `:80` when it follows the lease. */
export function formatGuestSide(rule: ForwardRule): string {
  const g = rule.guestAddr === undefined ? '' : rule.guestAddr.includes(':') ? `[${rule.guestAddr}]` : rule.guestAddr;
  return `${g}:${formatPorts(rule.guestPort, rule.portCount)}`;
}

/** Canonical qemu syntax; `parseHostfwd(formatHostfwd(r))` equals `r` up to the name. */
export function formatHostfwd(rule: ForwardRule): string {
  if (rule.proto === 'unix') return `${formatHostSide(rule)}-${formatGuestSide(rule)}`;
  return `${rule.proto}:${formatHostSide(rule)}-${formatGuestSide(rule)}`;
}

/** VBoxManage syntax; `parseNatpf(formatNatpf(r))` equals `r`. */
export function formatNatpf(rule: ForwardRule): string {
  // A unix rule's generated name holds the path's "/", which NAME may not: leave it to be generated again.
  const name = rule.proto === 'unix' && rule.name === defaultRuleName('unix', rule.hostAddr, 0) ? '' : rule.name;
  return [name, rule.proto, rule.hostAddr, rule.proto === 'unix' ? '' : formatPorts(rule.hostPort, rule.portCount), rule.guestAddr ?? '', formatPorts(rule.guestPort, rule.portCount)].join(',');
}

/** The guest network, for `checkRuleForNetwork`. */
export interface GuestNetwork {
  network: Ipv4Addr;
  netmask: Ipv4Addr;
  /** vmnat's own addresses there (gateway, DNS): not guests. */
  reserved: readonly Ipv4Addr[];
  /** The IPv6 /64 and vmnat's addresses in it, when the network has IPv6. */
  ipv6?: { prefix: string; gateway: string; dns: string } | undefined;
}

/** Throws ForwardRuleError if a fixed guest address is not a guest host address of `net`. */
export function checkRuleForNetwork(rule: ForwardRule, net: GuestNetwork): void {
  if (rule.guestAddr === undefined) return;
  if (rule.guestAddr.includes(':')) {
    const v6 = parseIpv6Text(rule.guestAddr)!;
    if (net.ipv6 === undefined) throw new ForwardRuleError(`guest address ${rule.guestAddr} is IPv6, but the guest network has no IPv6 (--no-ipv6)`);
    if (!ipv6InPrefix(ipv6Bytes(v6), ipv6Bytes(net.ipv6.prefix), 64)) throw new ForwardRuleError(`guest address ${rule.guestAddr} is outside the guest network ${net.ipv6.prefix}/64`);
    if (v6 === net.ipv6.gateway || v6 === net.ipv6.dns) throw new ForwardRuleError(`guest address ${rule.guestAddr} is vmnat's own address (gateway/DNS), not a guest`);
    return;
  }
  const ip = parseIpv4(rule.guestAddr)!;
  const cidr = `${formatIpv4(net.network)}/${Math.clz32(~net.netmask >>> 0)}`;
  const broadcast = (net.network | ~net.netmask) >>> 0;
  if ((ip & net.netmask) >>> 0 !== net.network) throw new ForwardRuleError(`guest address ${rule.guestAddr} is outside the guest network ${cidr}`);
  if (ip === net.network || ip === broadcast) throw new ForwardRuleError(`guest address ${rule.guestAddr} is not a host address of ${cidr}`);
  if (net.reserved.includes(ip)) throw new ForwardRuleError(`guest address ${rule.guestAddr} is vmnat's own address (gateway/DNS), not a guest`);
}

/** Host port → the guest port it maps to (within a range rule). */
export function guestPortFor(rule: ForwardRule, hostPort: number): number {
  return rule.guestPort + (hostPort - rule.hostPort);
}

/** Help text for the flags, for `vmnat --help`. */
export const FORWARD_USAGE = `Port forwarding (host → guest; repeatable):
  --hostfwd [tcp|udp]:[HOSTADDR]:HOSTPORT-[GUESTADDR]:GUESTPORT
                        qemu's syntax, e.g. tcp::2222-:22 or udp:0.0.0.0:5353-:53
  --natpf [NAME],tcp|udp,[HOSTIP],HOSTPORT,[GUESTIP],GUESTPORT
                        VBoxManage's syntax, e.g. ssh,tcp,,2222,,22
                        An empty host address listens on 127.0.0.1 only (VirtualBox
                        would listen on all interfaces: give 0.0.0.0 or [::] for that).
                        IPv6: tcp:[::1]:8080-:80. An empty guest address is the
                        guest's lease (and follows it). Port ranges: 8000..8010 on
                        both sides, same size. Host port 0: any free port, named
                        in the ready line's "forwards" (and by the API).
  --hostfwd unix:/PATH-[GUESTADDR]:GUESTPORT
  --natpf [NAME],unix,/PATH,,[GUESTIP],GUESTPORT
                        listen on a unix socket file (mode 0600; a stale file is
                        replaced, a live one refused) and carry each connection to
                        the guest's TCP port, e.g. unix:/tmp/vm/docker.sock-:2375
  --hostfwd-source gateway|client
                        where forwarded connections come from as the guest sees
                        them: the gateway (default, as VirtualBox and qemu), or
                        the host client's own address and port (as gvproxy) for
                        clients beyond this host; loopback clients keep the gateway
  --api-socket PATH     control API (HTTP+JSON on a unix socket, mode 0600):
                        curl --unix-socket PATH http://vmnat/forwards; vmnat ctl --help
`;

/**
 * All forwards given on the command line, checked before any socket opens: each rule, a fixed
 * guest address against the network (when given), no name twice, no host port twice on the same
 * address. Throws ForwardRuleError with `flag` set.
 */
export function parseForwardFlags(hostfwd: readonly string[], natpf: readonly string[], net?: GuestNetwork): ForwardRule[] {
  const rules: ForwardRule[] = [];
  const seen = new Map<string, ForwardRule>();
  const entries = [...hostfwd.map((t) => ['--hostfwd', t] as const), ...natpf.map((t) => ['--natpf', t] as const)];
  for (const [flag, text] of entries) {
    try {
      const rule = withInput(text, () => {
        const r = flag === '--hostfwd' ? parseHostfwd(text) : parseNatpf(text);
        if (net !== undefined) checkRuleForNetwork(r, net);
        for (const o of seen.values()) if (r.proto === 'unix' && o.proto === 'unix' && o.hostAddr === r.hostAddr) fail(`socket ${r.hostAddr} is given twice (forward ${o.name})`);
        if (seen.has(r.name)) fail(`the forward name ${r.name} is given twice`);
        for (const o of seen.values()) {
          if (r.proto !== 'unix' && o.proto === r.proto && o.hostAddr === r.hostAddr && o.hostPort <= r.hostPort + r.portCount - 1 && r.hostPort <= o.hostPort + o.portCount - 1) {
            fail(`${r.proto} ${formatHostSide(r)} overlaps forward ${o.name} (${formatHostSide(o)})`);
          }
        }
        return r;
      });
      seen.set(rule.name, rule);
      rules.push(rule);
    } catch (err) {
      if (err instanceof ForwardRuleError) err.flag = flag;
      throw err;
    }
  }
  return rules;
}
