/**
 * Filter rules: text in Anka's ipf.conf-like grammar → validated, immutable `FilterRule`s.
 *
 * Theory of operation: a rule file is read once (at start from `--filter FILE`, or whole from a
 * `PUT /filter` body) and parsed completely before anything uses it, so a typo never leaves half a
 * policy in force: the first error throws `FilterParseError`, whose one-line message names the
 * source, the line and the token (`filter.conf:3: unknown protocol "tcpp" (tcp, udp or icmp)`).
 * Matching lives in filter.ts; this module knows no network, no counters and no I/O.
 *
 * Grammar (one rule per line; `#` starts a comment; blank lines are ignored; keywords lowercase):
 *
 *   RULE  := ACTION [in|out] [proto tcp|udp|icmp] BODY
 *   ACTION:= pass | block
 *   BODY  := all | local | [from ADDR [port PORTS]] [to ADDR [port PORTS]]
 *   ADDR  := any | local | A.B.C.D | A.B.C.D/N
 *   PORTS := N | N:M                      (0..65535, inclusive range, N ≤ M)
 *
 * - `out` is what a guest sends; `in` is what reaches a guest (a port forward's connection, another
 *   guest's packet). No direction means both.
 * - An empty BODY means `all` (`block in proto udp` blocks every UDP flow towards guests).
 * - `local` as an ADDR is the guest network: the guest subnet (`--net`, 10.0.2.0/24 by default),
 *   which holds every guest, the gateway (.2, which is the host's loopback) and the DNS address
 *   (.3), plus the limited broadcast 255.255.255.255. A port forward's client is *not* local: an
 *   `in` flow carries the address the client connected from on the host (127.0.0.1, a LAN address).
 * - `local` as a BODY means "the guest's peer is local": the destination of an `out` flow, the
 *   source of an `in` flow. So `block local` stops guest-to-guest and guest-to-host traffic (the
 *   host is reached as the gateway) while port forwards, which the user asked for explicitly, and
 *   the outside keep working.
 * - `port` only with `proto tcp` or `proto udp` (other protocols have no ports), and only after an
 *   address (`to any port 53`), so it is always clear which side's port is meant.
 * - A CIDR with host bits set (`10.0.2.15/24`) is refused with a hint: it is nearly always a typo
 *   for the network or for one host, and silently masking it would widen the rule.
 * - Addresses are IPv4 (`10.0.0.0/8`) or IPv6 (`fd00::/8`, `2001:db8::1`); an IPv4 address never
 *   matches an IPv6 flow nor the reverse, while `any` and `local` match both families (`local`
 *   includes the guests' IPv6 prefix and link-local).
 */
import { Address4, Address6 } from 'ip-address';
import { formatIpv4, parseIpv4, parseIpv6Bytes, prefixMask, readIpv6, type Ipv4Addr, type Ipv6Addr } from '../stack/wire/addr.ts';

export type FilterAction = 'pass' | 'block';
/** `both` when the rule names no direction. */
export type FilterDirection = 'in' | 'out' | 'both';
/** `any` when the rule names no protocol. */
export type FilterRuleProto = 'tcp' | 'udp' | 'icmp' | 'any';

/** One side's address in a rule. */
export type AddrMatch =
  | { kind: 'any' }
  | { kind: 'local' }
  /** `addr` is the network (host bits zero); `mask` is `prefixMask(prefixLen)`. */
  | { kind: 'ipv4'; addr: Ipv4Addr; prefixLen: number; mask: Ipv4Addr }
  /** `addr` is the network in canonical text (host bits zero), `prefixLen` 0..128. */
  | { kind: 'ipv6'; addr: Ipv6Addr; prefixLen: number };

/** An inclusive port range; one port is `{lo: N, hi: N}`. */
export interface PortRange {
  lo: number;
  hi: number;
}

/** A validated rule. Every key is always present, so rules compare with deep equality. */
export interface FilterRule {
  /** 1-based line of the source it came from. */
  line: number;
  action: FilterAction;
  direction: FilterDirection;
  proto: FilterRuleProto;
  /** BODY `local`: the guest's peer (dst of `out`, src of `in`) must be local. */
  peerLocal: boolean;
  from: AddrMatch;
  fromPorts: PortRange | undefined;
  to: AddrMatch;
  toPorts: PortRange | undefined;
}

/** A parsed rule file. */
export interface FilterRules {
  /** Where the text came from, for messages (`filter.conf`, `<stdin>`, `filter`). */
  source: string;
  /** The text as given (so `GET /filter` can hand back exactly what was loaded). */
  text: string;
  rules: readonly FilterRule[];
}

/** A rule file that does not parse. `message` is one line: `SOURCE:LINE: REASON`. */
export class FilterParseError extends Error {
  override readonly name = 'FilterParseError';
  readonly code = 'VMNAT_BAD_FILTER';
  constructor(
    readonly source: string,
    readonly line: number,
    /** The offending token; undefined when the line ended too early. */
    readonly token: string | undefined,
    readonly reason: string,
  ) {
    super(`${source}:${line}: ${reason}`);
  }
}

/** Stdin's name in messages (`--filter -`). */
export const STDIN_SOURCE = '<stdin>';

const q = (s: string): string => JSON.stringify(s);

const PROTOS: Readonly<Record<string, FilterRuleProto>> = { tcp: 'tcp', udp: 'udp', icmp: 'icmp' };

/** Parses a whole rule file; throws `FilterParseError` at the first bad line. */
export function parseFilter(text: string, source: string): FilterRules {
  const rules: FilterRule[] = [];
  const lines = text.split(/\r?\n/);
  for (let n = 0; n < lines.length; n++) {
    const raw = lines[n]!;
    const hash = raw.indexOf('#');
    const tokens = (hash >= 0 ? raw.slice(0, hash) : raw).split(/\s+/).filter((t) => t !== '');
    if (tokens.length === 0) continue;
    rules.push(parseRuleTokens(tokens, source, n + 1));
  }
  return { source, text, rules };
}

/** Parses one rule (no comment, no newline); `line` is only for messages. */
export function parseRule(text: string, source = 'rule', line = 1): FilterRule {
  const tokens = text.split(/\s+/).filter((t) => t !== '');
  if (tokens.length === 0) throw new FilterParseError(source, line, undefined, 'empty rule (expected pass or block)');
  return parseRuleTokens(tokens, source, line);
}

function parseRuleTokens(tokens: readonly string[], source: string, line: number): FilterRule {
  let i = 0;
  const fail = (token: string | undefined, reason: string): never => {
    throw new FilterParseError(source, line, token, reason);
  };
  const first = tokens[i++]!;
  if (first !== 'pass' && first !== 'block') fail(first, `a rule starts with pass or block, not ${q(first)}`);
  const rule: FilterRule = {
    line,
    action: first as FilterAction,
    direction: 'both',
    proto: 'any',
    peerLocal: false,
    from: { kind: 'any' },
    fromPorts: undefined,
    to: { kind: 'any' },
    toPorts: undefined,
  };
  let t = tokens[i];
  if (t === 'in' || t === 'out') {
    rule.direction = t;
    t = tokens[++i];
  }
  if (t === 'proto') {
    const p = tokens[++i];
    if (p === undefined) fail(undefined, '"proto" needs tcp, udp or icmp');
    const proto = Object.hasOwn(PROTOS, p!) ? PROTOS[p!] : undefined;
    if (proto === undefined) fail(p, `unknown protocol ${q(p!)} (tcp, udp or icmp)`);
    rule.proto = proto!;
    t = tokens[++i];
  }
  // What may still come, for the "unexpected token" hint.
  let expected: string[] = ['in', 'out', 'proto', 'all', 'local', 'from', 'to'].filter((k) => {
    if (k === 'in' || k === 'out') return rule.direction === 'both' && rule.proto === 'any';
    if (k === 'proto') return rule.proto === 'any';
    return true;
  });
  if (t === 'all' || t === 'local') {
    rule.peerLocal = t === 'local';
    i++;
    expected = [];
  } else {
    const side = (kw: 'from' | 'to'): void => {
      if (tokens[i] !== kw) return;
      const a = tokens[++i];
      if (a === undefined) fail(undefined, `${q(kw)} needs an address (ADDR[/N], any or local)`);
      const addr = parseAddr(a!, (reason) => fail(a, reason));
      i++;
      let ports: PortRange | undefined;
      if (tokens[i] === 'port') {
        const p = tokens[++i];
        if (rule.proto !== 'tcp' && rule.proto !== 'udp') {
          fail('port', `"port" needs proto tcp or udp (${rule.proto === 'any' ? 'this rule names no protocol' : `proto ${rule.proto} has no ports`})`);
        }
        if (p === undefined) fail(undefined, '"port" needs a port N or a range N:M');
        ports = parsePorts(p!, (reason) => fail(p, reason));
        i++;
      }
      if (kw === 'from') {
        rule.from = addr;
        rule.fromPorts = ports;
      } else {
        rule.to = addr;
        rule.toPorts = ports;
      }
    };
    if (tokens[i] === 'from') {
      side('from');
      expected = ['port', 'to'].filter((k) => k !== 'port' || rule.fromPorts === undefined);
    }
    if (tokens[i] === 'to') {
      side('to');
      expected = rule.toPorts === undefined ? ['port'] : [];
    }
  }
  if (i < tokens.length) {
    const extra = tokens[i]!;
    if (extra === 'port') {
      if (tokens[i - 2] === 'port') fail(extra, '"port" given twice (one port N or range N:M per address)');
      fail(extra, '"port" must follow an address (from ADDR port N, to ADDR port N)');
    }
    const what = expected.length === 0 ? 'end of line' : `${expected.join(', ')} or end of line`;
    fail(extra, `unexpected ${q(extra)} (expected ${what})`);
  }
  return rule;
}

function parseAddr(text: string, fail: (reason: string) => never): AddrMatch {
  if (text === 'any') return { kind: 'any' };
  if (text === 'local') return { kind: 'local' };
  const slash = text.indexOf('/');
  const ipText = slash >= 0 ? text.slice(0, slash) : text;
  const lenText = slash >= 0 ? text.slice(slash + 1) : '32';
  if (ipText.includes(':')) {
    const len6 = slash >= 0 ? lenText : '128';
    const bytes = parseIpv6Bytes(ipText);
    if (bytes === undefined || !Address6.isValid(`${ipText}/${len6}`)) {
      if (bytes !== undefined && /^\d+$/.test(len6)) fail(`bad prefix length in ${q(text)} (0..128)`);
      fail(`bad address ${q(text)} (expected ADDR[/N], any or local)`);
    }
    const prefixLen = Number(len6);
    if (!/^\d{1,3}$/.test(len6) || prefixLen > 128) fail(`bad prefix length in ${q(text)} (0..128)`);
    const net = new Uint8Array(16);
    for (let i = 0; i < 16; i++) {
      const bits = Math.max(0, Math.min(8, prefixLen - i * 8));
      net[i] = bytes![i]! & ((0xff << (8 - bits)) & 0xff);
    }
    const addr = readIpv6(net, 0);
    if (net.some((b, i) => b !== bytes![i])) {
      fail(`${q(text)} has host bits set (did you mean ${addr}/${prefixLen}, or ${ipText} for one host?)`);
    }
    return { kind: 'ipv6', addr, prefixLen };
  }
  const ip = parseIpv4(ipText);
  if (ip === undefined || !/^\d{1,2}$/.test(lenText) || !Address4.isValid(`${ipText}/${lenText}`)) {
    if (ip !== undefined && /^\d+$/.test(lenText)) fail(`bad prefix length in ${q(text)} (0..32)`);
    fail(`bad address ${q(text)} (expected ADDR[/N], any or local)`);
  }
  const prefixLen = Number(lenText);
  if (prefixLen > 32) fail(`bad prefix length in ${q(text)} (0..32)`);
  const mask = prefixMask(prefixLen);
  const addr = (ip! & mask) >>> 0;
  if (addr !== ip) {
    fail(`${q(text)} has host bits set (did you mean ${formatIpv4(addr)}/${prefixLen}, or ${ipText} for one host?)`);
  }
  return { kind: 'ipv4', addr, prefixLen, mask };
}

function parsePorts(text: string, fail: (reason: string) => never): PortRange {
  const m = /^(\d{1,5})(?::(\d{1,5}))?$/.exec(text);
  if (!m) fail(`bad port ${q(text)} (expected N or N:M, 0..65535)`);
  const lo = Number(m![1]);
  const hi = m![2] === undefined ? lo : Number(m![2]);
  if (lo > 65535 || hi > 65535) fail(`port ${q(text)} is not in 0..65535`);
  if (lo > hi) fail(`port range ${q(text)} runs backwards (N:M needs N ≤ M)`);
  return { lo, hi };
}

// ── text and JSON forms ─────────────────────────────────────────────────────────────────────

/** `any`, `local`, `10.0.2.2` (a /32) or `10.0.0.0/8`. */
export function formatAddr(a: AddrMatch): string {
  switch (a.kind) {
    case 'any':
    case 'local':
      return a.kind;
    case 'ipv4':
      return a.prefixLen === 32 ? formatIpv4(a.addr) : `${formatIpv4(a.addr)}/${a.prefixLen}`;
    case 'ipv6':
      return a.prefixLen === 128 ? a.addr : `${a.addr}/${a.prefixLen}`;
  }
}

export function formatPorts(p: PortRange): string {
  return p.lo === p.hi ? String(p.lo) : `${p.lo}:${p.hi}`;
}

/**
 * The canonical text of a rule: parses back to a deep-equal rule (line aside). An unconstrained
 * body prints as `all`; `from any` stays when `to` is constrained, as ipf writes it.
 */
export function formatRule(r: FilterRule): string {
  const words: string[] = [r.action];
  if (r.direction !== 'both') words.push(r.direction);
  if (r.proto !== 'any') words.push('proto', r.proto);
  const open = (a: AddrMatch, p: PortRange | undefined): boolean => a.kind === 'any' && p === undefined;
  if (r.peerLocal) words.push('local');
  else if (open(r.from, r.fromPorts) && open(r.to, r.toPorts)) words.push('all');
  else {
    words.push('from', formatAddr(r.from));
    if (r.fromPorts !== undefined) words.push('port', formatPorts(r.fromPorts));
    if (!open(r.to, r.toPorts)) {
      words.push('to', formatAddr(r.to));
      if (r.toPorts !== undefined) words.push('port', formatPorts(r.toPorts));
    }
  }
  return words.join(' ');
}

/** A rule as the API shows it (snake_case; addresses as CIDR text; ports as [lo, hi]). */
export interface FilterRuleJson {
  /** 0-based position: rules are checked in this order. */
  index: number;
  line: number;
  /** Canonical text (`formatRule`). */
  text: string;
  action: FilterAction;
  direction: FilterDirection;
  proto: FilterRuleProto;
  /** `local` for BODY `local` (the guest's peer must be local), else `any`. */
  peer: 'local' | 'any';
  from: string;
  from_port: [number, number] | null;
  to: string;
  to_port: [number, number] | null;
  hits: number;
}

function addrJson(a: AddrMatch): string {
  return a.kind === 'ipv4' ? `${formatIpv4(a.addr)}/${a.prefixLen}` : a.kind === 'ipv6' ? `${a.addr}/${a.prefixLen}` : a.kind;
}

export function ruleToJson(r: FilterRule, index: number, hits: number): FilterRuleJson {
  return {
    index,
    line: r.line,
    text: formatRule(r),
    action: r.action,
    direction: r.direction,
    proto: r.proto,
    peer: r.peerLocal ? 'local' : 'any',
    from: addrJson(r.from),
    from_port: r.fromPorts === undefined ? null : [r.fromPorts.lo, r.fromPorts.hi],
    to: addrJson(r.to),
    to_port: r.toPorts === undefined ? null : [r.toPorts.lo, r.toPorts.hi],
    hits,
  };
}
