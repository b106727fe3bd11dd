/**
 * Properties of the filter over generated input: any text either parses or fails with one
 * `SOURCE:LINE: reason` line (never another exception); every rule's canonical text parses back
 * to the same rule; and the compiled matcher decides exactly as the rules read, checked against a
 * plain reading of each rule (a model written from the grammar, not from filter.ts).
 */
import { describe, expect } from 'vitest';
import { fc, test } from '@fast-check/vitest';
import { FilterSet, type FilterFlow } from '../../src/filter/filter.ts';
import { FilterParseError, formatRule, parseFilter, parseRule, type AddrMatch, type FilterRule, type FilterRules, type PortRange } from '../../src/filter/rules.ts';
import { prefixMask } from '../../src/stack/wire/addr.ts';

const NET = { network: 0x0a000200, netmask: 0xffffff00 }; // 10.0.2.0/24

// Addresses drawn near the interesting places: the guest net, its edges, 0, the top bit, broadcast.
const arbIp = fc.oneof(
  fc.integer({ min: 0x0a000200, max: 0x0a0002ff }),
  fc.constantFrom(0, 0x0a0001ff, 0x0a000300, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff),
  fc.integer({ min: 0, max: 0xffffffff }),
);
const arbAddr: fc.Arbitrary<AddrMatch> = fc.oneof(
  fc.constant<AddrMatch>({ kind: 'any' }),
  fc.constant<AddrMatch>({ kind: 'local' }),
  fc.tuple(arbIp, fc.integer({ min: 0, max: 32 })).map(([ip, prefixLen]): AddrMatch => {
    const mask = prefixMask(prefixLen);
    return { kind: 'ipv4', addr: (ip & mask) >>> 0, prefixLen, mask };
  }),
);
const arbPorts: fc.Arbitrary<PortRange> = fc.tuple(fc.integer({ min: 0, max: 65535 }), fc.integer({ min: 0, max: 65535 })).map(([a, b]) => ({ lo: Math.min(a, b), hi: Math.max(a, b) }));

const arbRule: fc.Arbitrary<FilterRule> = fc
  .record({
    action: fc.constantFrom('pass' as const, 'block' as const),
    direction: fc.constantFrom('in' as const, 'out' as const, 'both' as const),
    proto: fc.constantFrom('tcp' as const, 'udp' as const, 'icmp' as const, 'any' as const),
    peerLocal: fc.boolean(),
    from: arbAddr,
    fromPorts: fc.option(arbPorts, { nil: undefined }),
    to: arbAddr,
    toPorts: fc.option(arbPorts, { nil: undefined }),
  })
  .map((r): FilterRule => {
    const ports = r.proto === 'tcp' || r.proto === 'udp';
    // BODY `local` stands alone; ports only on tcp/udp: what the grammar can say.
    if (r.peerLocal) return { line: 1, ...r, from: { kind: 'any' }, fromPorts: undefined, to: { kind: 'any' }, toPorts: undefined };
    return { line: 1, ...r, fromPorts: ports ? r.fromPorts : undefined, toPorts: ports ? r.toPorts : undefined };
  });

const arbFlow: fc.Arbitrary<FilterFlow> = fc.record({
  direction: fc.constantFrom('in' as const, 'out' as const),
  proto: fc.constantFrom('tcp' as const, 'udp' as const, 'icmp' as const, 'other' as const),
  src: arbIp,
  srcPort: fc.oneof(fc.integer({ min: 0, max: 65535 }), fc.constantFrom(0, 22, 53, 65535)),
  dst: arbIp,
  dstPort: fc.oneof(fc.integer({ min: 0, max: 65535 }), fc.constantFrom(0, 22, 53, 65535)),
});

/** The rule as the grammar reads, with no compilation: the reference for the matcher. */
function modelMatches(r: FilterRule, f4: FilterFlow): boolean {
  const f = f4 as FilterFlow & { src: number; dst: number }; // arbIp: IPv4 only
  const inNet = (ip: number): boolean => Math.floor(ip / 256) === 0x0a0002 || ip === 0xffffffff;
  const addrOk = (a: AddrMatch, ip: number): boolean => {
    if (a.kind === 'any') return true;
    if (a.kind === 'local') return inNet(ip);
    if (a.kind === 'ipv6') return false; // an IPv6 rule never matches an IPv4 flow
    const size = 2 ** (32 - a.prefixLen);
    return ip >= a.addr && ip < a.addr + size;
  };
  const portOk = (p: PortRange | undefined, port: number): boolean => p === undefined || (port >= p.lo && port <= p.hi);
  if (r.direction !== 'both' && r.direction !== f.direction) return false;
  if (r.proto !== 'any' && r.proto !== f.proto) return false;
  if (r.peerLocal && !inNet(f.direction === 'out' ? f.dst : f.src)) return false;
  return addrOk(r.from, f.src) && addrOk(r.to, f.dst) && portOk(r.fromPorts, f.srcPort) && portOk(r.toPorts, f.dstPort);
}

describe('properties', () => {
  test.prop([fc.array(fc.oneof(fc.string(), fc.constantFrom('pass', 'block', 'in', 'out', 'proto', 'tcp', 'from', 'to', 'port', 'any', 'local', 'all', '#', '10.0.2.0/24', '1:2', '\n')), { maxLength: 30 })])(
    'any text parses or fails with one SOURCE:LINE: line',
    (words) => {
      const text = words.join(' ');
      try {
        parseFilter(text, 'p.conf');
      } catch (e) {
        expect(e).toBeInstanceOf(FilterParseError);
        const err = e as FilterParseError;
        expect(err.message).toMatch(/^p\.conf:\d+: \S/);
        expect(err.message).not.toMatch(/[\r\n]/);
        expect(err.line).toBeGreaterThanOrEqual(1);
        expect(err.line).toBeLessThanOrEqual(text.split('\n').length);
      }
    },
  );

  test.prop([arbRule])('canonical text parses back to the same rule', (r) => {
    expect(parseRule(formatRule(r))).toEqual(r);
  });

  test.prop([fc.array(arbRule, { maxLength: 8 }), fc.array(arbFlow, { minLength: 1, maxLength: 20 })])('the matcher picks the first rule the model says matches; none → pass', (rules, flows) => {
    const set = new FilterSet({ source: 'gen', text: '', rules } satisfies FilterRules);
    for (const f of flows) {
      const first = rules.findIndex((r) => modelMatches(r, f));
      const v = set.check(f, NET);
      expect(v.ruleIndex).toBe(first === -1 ? undefined : first);
      expect(v.action).toBe(first === -1 ? 'pass' : rules[first]!.action);
    }
    const hits = rules.map((_, i) => set.hits(i));
    const expected = rules.map((_, i) => flows.filter((f) => rules.findIndex((r) => modelMatches(r, f)) === i).length);
    expect(hits).toEqual(expected);
  });
});
