/**
 * The filter: decides, once per new flow, whether it passes or is blocked, and counts why.
 *
 * Theory of operation: `FilterSet` holds one parsed rule file (rules.ts) compiled into flat
 * records of numbers, checked top-down; the first rule that matches decides; with no match the
 * flow passes (`DEFAULT_PASS`). The engine calls `check()` when a flow is about to open, not per
 * packet, but it is still on the path of every SYN and every new UDP/ICMP conversation, so the
 * check allocates nothing: every verdict object is made once, when the set is loaded.
 *
 * The flow a caller describes (`FilterFlow`) uses the addresses as the guest's side knows them:
 * - `out` (a guest sends): src = the guest, dst = where it sent to, before NAT (10.0.2.2 for the
 *   host's loopback, not 127.0.0.1);
 * - `in` (something reaches a guest): dst = the guest; src = the true origin: another guest's
 *   address, or for a port forward the address its client connected from on the host (127.0.0.1,
 *   a LAN address), not the gateway the guest sees it come from. So `block in from 192.168.0.0/16`
 *   can fence a forward, and `block local` (guest-to-guest and guest-to-host) leaves forwards alone.
 * - A guest-to-guest flow is checked twice, `out` for the sender and `in` for the receiver; it
 *   opens only if both pass (each check counts its hit).
 * - vmnat's own services that a guest needs to join the network (DHCP) are not flows and are
 *   never checked. Whether DNS queries to the DNS address are checked is the caller's choice: the
 *   address is local, so `block local` and `block all` would cut name resolution if they are.
 *
 * `local` (see rules.ts) is the guest subnet of the `FilterNet` given per check, plus
 * 255.255.255.255; passing the network per check (rather than fixing it at load) keeps one rule set
 * usable by several networks later.
 *
 * Counters: each rule counts its hits; the set counts checks, blocks and unmatched (default pass)
 * checks. All belong to the rule set: `replace()` starts them at 0 with the new rules. `match()`
 * decides without counting (for re-checking open flows after a replace).
 *
 * Replacement is atomic: `replace(text)` parses all of `text` first; on a parse error it throws
 * and the old set, with its counters, stays in force. The swap is one reference assignment, so a
 * check sees either the old set or the new one, never a mix.
 */
import { formatIp, formatIpPort, ipv6Bytes, ipv6InPrefix, type IpAddr, type Ipv4Addr, type Ipv6Addr } from '../stack/wire/addr.ts';
import { formatRule, parseFilter, ruleToJson, type AddrMatch, type FilterAction, type FilterRule, type FilterRuleJson, type FilterRules } from './rules.ts';

/** A flow's protocol; `other` for anything but TCP, UDP and ICMP (only rules without `proto` match it). */
export type FlowProto = 'tcp' | 'udp' | 'icmp' | 'other';

/** A new flow, as the guest's side sees it (see the theory of operation for `in` sources). */
export interface FilterFlow {
  direction: 'in' | 'out';
  proto: FlowProto;
  /** Either family: IPv4 and IPv6 flows pass through the same rules (an IPv4 CIDR never matches IPv6). */
  src: IpAddr;
  /** 0 for protocols without ports. */
  srcPort: number;
  dst: IpAddr;
  dstPort: number;
}

/** The guest network a flow belongs to (`Config` fits): defines `local`. */
export interface FilterNet {
  network: Ipv4Addr;
  netmask: Ipv4Addr;
  /** The guests' IPv6 /64, if any: `local` covers it (and link-local) for IPv6 flows. */
  ipv6?: { prefix: Ipv6Addr } | undefined;
}

/** A decision. Verdicts are shared and frozen: compare, read, never keep for mutation. */
export interface FilterVerdict {
  readonly action: FilterAction;
  /** 0-based index of the deciding rule; undefined when no rule matched. */
  readonly ruleIndex: number | undefined;
  readonly rule: FilterRule | undefined;
}

/** No rule matched: the flow passes. */
export const DEFAULT_PASS: FilterVerdict = Object.freeze({ action: 'pass', ruleIndex: undefined, rule: undefined });

/** True if `ip` is on the guest network `net` (any guest, the gateway, DNS) or is 255.255.255.255. */
export function isLocal(ip: IpAddr, net: FilterNet): boolean {
  if (typeof ip === 'string') {
    const b = ipv6Bytes(ip);
    if (b[0] === 0xfe && (b[1]! & 0xc0) === 0x80) return true;
    return net.ipv6 !== undefined && ipv6InPrefix(b, ipv6Bytes(net.ipv6.prefix), 64);
  }
  return (ip & net.netmask) === (net.network | 0) || ip === 0xffff_ffff;
}

const DIR_BOTH = 0;
const DIR_IN = 1;
const DIR_OUT = 2;
const PROTO_ANY = 0;
const PROTO_ICMP = 1;
const PROTO_TCP = 6;
const PROTO_UDP = 17;
const PROTO_OTHER = -1;
const ADDR_ANY = 0;
const ADDR_LOCAL = 1;
const ADDR_IPV4 = 2;
const ADDR_IPV6 = 3;
const NO_NET6 = new Uint8Array(0);

/**
 * A rule flattened to numbers (one hidden class for all rules: the loop stays monomorphic).
 * Addresses and masks are kept as signed int32, the type `ip & mask` yields, so a compare never
 * leaves integer arithmetic (comparing against unsigned values cost ~8x: bench/filter-check.ts).
 */
class CompiledRule {
  readonly dir: number;
  readonly proto: number;
  readonly peerLocal: boolean;
  readonly fromKind: number;
  readonly fromAddr: number;
  readonly fromMask: number;
  readonly fromLo: number;
  readonly fromHi: number;
  readonly toKind: number;
  readonly toAddr: number;
  readonly toMask: number;
  readonly toLo: number;
  readonly toHi: number;
  /** IPv6 rules: the network's 16 bytes and prefix length (empty and 0 otherwise). */
  readonly fromNet6: Uint8Array;
  readonly fromLen6: number;
  readonly toNet6: Uint8Array;
  readonly toLen6: number;
  readonly verdict: FilterVerdict;
  hits = 0;

  constructor(
    readonly rule: FilterRule,
    index: number,
  ) {
    this.dir = rule.direction === 'in' ? DIR_IN : rule.direction === 'out' ? DIR_OUT : DIR_BOTH;
    this.proto = rule.proto === 'tcp' ? PROTO_TCP : rule.proto === 'udp' ? PROTO_UDP : rule.proto === 'icmp' ? PROTO_ICMP : PROTO_ANY;
    this.peerLocal = rule.peerLocal;
    [this.fromKind, this.fromAddr, this.fromMask] = addrFields(rule.from);
    [this.toKind, this.toAddr, this.toMask] = addrFields(rule.to);
    this.fromNet6 = rule.from.kind === 'ipv6' ? ipv6Bytes(rule.from.addr) : NO_NET6;
    this.fromLen6 = rule.from.kind === 'ipv6' ? rule.from.prefixLen : 0;
    this.toNet6 = rule.to.kind === 'ipv6' ? ipv6Bytes(rule.to.addr) : NO_NET6;
    this.toLen6 = rule.to.kind === 'ipv6' ? rule.to.prefixLen : 0;
    this.fromLo = rule.fromPorts?.lo ?? 0;
    this.fromHi = rule.fromPorts?.hi ?? 65535;
    this.toLo = rule.toPorts?.lo ?? 0;
    this.toHi = rule.toPorts?.hi ?? 65535;
    this.verdict = Object.freeze({ action: rule.action, ruleIndex: index, rule });
  }
}

function addrFields(a: AddrMatch): [number, number, number] {
  switch (a.kind) {
    case 'any':
      return [ADDR_ANY, 0, 0];
    case 'local':
      return [ADDR_LOCAL, 0, 0];
    case 'ipv4':
      // Signed 32-bit, as `ip & mask` yields: the compare stays in int32 arithmetic.
      return [ADDR_IPV4, a.addr | 0, a.mask | 0];
    case 'ipv6':
      return [ADDR_IPV6, 0, 0];
  }
}

function addrMatches(kind: number, addr: number, mask: number, ip: IpAddr, net: FilterNet, net6: Uint8Array, len6: number): boolean {
  if (kind === ADDR_ANY) return true;
  if (kind === ADDR_LOCAL) return isLocal(ip, net);
  if (kind === ADDR_IPV6) return typeof ip === 'string' && ipv6InPrefix(ipv6Bytes(ip), net6, len6);
  if (typeof ip === 'string') return false;
  return (ip & mask) === addr;
}

/** One loaded rule file and its counters; replaced whole. */
interface LoadedSet {
  readonly rules: FilterRules;
  readonly compiled: readonly CompiledRule[];
  checks: number;
  blocked: number;
  unmatched: number;
}

function load(rules: FilterRules): LoadedSet {
  return { rules, compiled: rules.rules.map((r, i) => new CompiledRule(r, i)), checks: 0, blocked: 0, unmatched: 0 };
}

/** `GET /filter`. Counters count since this rule set was loaded. */
export interface FilterJson {
  /** Where the rules came from (`filter.conf`, `<stdin>`, `filter` for an API body); null: none loaded. */
  source: string | null;
  /** The rule text as loaded (comments included). */
  text: string;
  /** 0 at start, +1 on each successful replace. */
  version: number;
  checks: number;
  blocked: number;
  /** Checks no rule matched (they passed by default). */
  unmatched: number;
  rules: FilterRuleJson[];
}

const EMPTY: FilterRules = Object.freeze({ source: '', text: '', rules: Object.freeze([]) as readonly FilterRule[] });

/**
 * The engine's rule set: `check()` per new flow, `replace()` from the API, `toJSON()` for
 * `GET /filter`. With no rules, every check passes.
 */
export class FilterSet {
  private state: LoadedSet;
  private loaded: boolean;
  private versionCount = 0;

  /** `rules` from `parseFilter` (e.g. `config.filter`); none = an empty set. */
  constructor(rules?: FilterRules) {
    this.state = load(rules ?? EMPTY);
    this.loaded = rules !== undefined;
  }

  /** The rules in force. */
  get rules(): FilterRules {
    return this.state.rules;
  }

  get size(): number {
    return this.state.compiled.length;
  }

  /** Successful replacements so far. */
  get version(): number {
    return this.versionCount;
  }

  /**
   * Decides a new flow and counts it (the deciding rule's hit, or an unmatched check). Call once
   * per flow (per side for guest-to-guest); on `block`, refuse the flow and publish
   * `blockEvent(flow, verdict)`. Allocates nothing; does not keep `flow`.
   */
  check(flow: FilterFlow, net: FilterNet): FilterVerdict {
    const s = this.state;
    s.checks++;
    const r = this.find(s.compiled, flow, net);
    if (r === undefined) {
      s.unmatched++;
      return DEFAULT_PASS;
    }
    r.hits++;
    if (r.verdict.action === 'block') s.blocked++;
    return r.verdict;
  }

  /** Decides like `check()` but counts nothing: for re-checking open flows after `replace()`. */
  match(flow: FilterFlow, net: FilterNet): FilterVerdict {
    return this.find(this.state.compiled, flow, net)?.verdict ?? DEFAULT_PASS;
  }

  /**
   * Parses `text` completely, then swaps it in (counters start at 0). On a parse error throws
   * `FilterParseError` and the rules in force stay, counters and all. Returns the new rules.
   */
  replace(text: string, source = 'filter'): FilterRules {
    const rules = parseFilter(text, source);
    this.load(rules);
    return rules;
  }

  /** Swaps in rules parsed elsewhere (counters start at 0). */
  load(rules: FilterRules): void {
    this.state = load(rules);
    this.loaded = true;
    this.versionCount++;
  }

  /** Hits of the rule at `index` (0-based) since the set was loaded. */
  hits(index: number): number {
    return this.state.compiled[index]?.hits ?? 0;
  }

  toJSON(): FilterJson {
    const s = this.state;
    return {
      source: this.loaded ? s.rules.source : null,
      text: s.rules.text,
      version: this.versionCount,
      checks: s.checks,
      blocked: s.blocked,
      unmatched: s.unmatched,
      rules: s.compiled.map((c, i) => ruleToJson(c.rule, i, c.hits)),
    };
  }

  private find(compiled: readonly CompiledRule[], flow: FilterFlow, net: FilterNet): CompiledRule | undefined {
    const dir = flow.direction === 'in' ? DIR_IN : DIR_OUT;
    const p = flow.proto;
    const proto = p === 'tcp' ? PROTO_TCP : p === 'udp' ? PROTO_UDP : p === 'icmp' ? PROTO_ICMP : PROTO_OTHER;
    const { src, srcPort, dst, dstPort } = flow;
    for (let i = 0; i < compiled.length; i++) {
      const r = compiled[i]!;
      if (r.dir !== DIR_BOTH && r.dir !== dir) continue;
      if (r.proto !== PROTO_ANY && r.proto !== proto) continue;
      if (r.peerLocal && !isLocal(dir === DIR_OUT ? dst : src, net)) continue;
      if (!addrMatches(r.fromKind, r.fromAddr, r.fromMask, src, net, r.fromNet6, r.fromLen6)) continue;
      if (!addrMatches(r.toKind, r.toAddr, r.toMask, dst, net, r.toNet6, r.toLen6)) continue;
      // Port ranges exist only on tcp/udp rules (the parser insists), so ICMP never reaches them
      // with a constraint; an unconstrained side spans 0..65535.
      if (srcPort < r.fromLo || srcPort > r.fromHi) continue;
      if (dstPort < r.toLo || dstPort > r.toHi) continue;
      return r;
    }
    return undefined;
  }
}

// ── events ──────────────────────────────────────────────────────────────────────────────────

/** A blocked flow, for `/events` (the engine publishes it; the API adds `time`). */
export interface FilterEvent {
  type: 'filter';
  event: 'block';
  direction: 'in' | 'out';
  proto: FlowProto;
  /** `ip:port` for tcp/udp, `ip` otherwise. */
  src: string;
  dst: string;
  /** The deciding rule's canonical text. */
  rule: string;
  rule_index: number;
  /** Its line in the source. */
  line: number;
}

function endpoint(proto: FlowProto, ip: IpAddr, port: number): string {
  return proto === 'tcp' || proto === 'udp' ? formatIpPort(ip, port) : formatIp(ip);
}

/** The `/events` record of a block (allocates: call only for blocks). */
export function blockEvent(flow: FilterFlow, verdict: FilterVerdict): FilterEvent {
  const rule = verdict.rule;
  return {
    type: 'filter',
    event: 'block',
    direction: flow.direction,
    proto: flow.proto,
    src: endpoint(flow.proto, flow.src, flow.srcPort),
    dst: endpoint(flow.proto, flow.dst, flow.dstPort),
    rule: rule === undefined ? '(no rule)' : formatRule(rule),
    rule_index: verdict.ruleIndex ?? -1,
    line: rule?.line ?? 0,
  };
}
