/**
 * The matcher, table-tested: which rule decides a flow (first match wins, no match passes), by
 * direction, protocol, `local`, CIDR edges and port ranges; hit counts; atomic replacement; the
 * block event the engine publishes.
 */
import { describe, expect, test } from 'vitest';
import { DEFAULT_PASS, FilterSet, blockEvent, isLocal, type FilterFlow, type FlowProto } from '../../src/filter/filter.ts';
import { FilterParseError, parseFilter } from '../../src/filter/rules.ts';
import { parseIpv4 } from '../../src/stack/wire/addr.ts';

const ip = (s: string): number => parseIpv4(s)!;
const NET = { network: ip('10.0.2.0'), netmask: ip('255.255.255.0') };
const GUEST = '10.0.2.15';

/** `out tcp 10.0.2.15:40000 > 10.0.2.2:22` → a flow. */
function flow(text: string): FilterFlow {
  const m = /^(in|out) (\w+) ([\d.]+)(?::(\d+))? > ([\d.]+)(?::(\d+))?$/.exec(text);
  if (!m) throw new Error(`bad flow in test: ${text}`);
  return { direction: m[1] as 'in' | 'out', proto: m[2] as FlowProto, src: ip(m[3]!), srcPort: Number(m[4] ?? 0), dst: ip(m[5]!), dstPort: Number(m[6] ?? 0) };
}

/** Which 1-based line decided each flow (`pass` = no rule matched). */
function decide(rules: string, flows: string[]): (number | 'pass')[] {
  const set = new FilterSet(parseFilter(rules, 'test'));
  return flows.map((f) => {
    const v = set.check(flow(f), NET);
    return v.rule === undefined ? 'pass' : v.rule.line;
  });
}

describe('first match wins, no match passes', () => {
  test('an empty set passes everything with no rule', () => {
    const set = new FilterSet();
    expect(set.check(flow(`out tcp ${GUEST}:40000 > 1.1.1.1:443`), NET)).toBe(DEFAULT_PASS);
    expect(DEFAULT_PASS).toEqual({ action: 'pass', ruleIndex: undefined, rule: undefined });
  });

  test('the first matching rule decides, later ones are not consulted', () => {
    const set = new FilterSet(parseFilter('pass out proto tcp to 1.1.1.1 port 443\nblock all\npass all\n', 't'));
    expect(set.check(flow(`out tcp ${GUEST}:40000 > 1.1.1.1:443`), NET)).toMatchObject({ action: 'pass', ruleIndex: 0 });
    expect(set.check(flow(`out tcp ${GUEST}:40000 > 1.1.1.1:80`), NET)).toMatchObject({ action: 'block', ruleIndex: 1 });
    expect(set.hits(2)).toBe(0);
  });

  test('no matching rule: pass by default, not by the last rule', () => {
    const set = new FilterSet(parseFilter('block out proto udp all\n', 't'));
    expect(set.check(flow(`out tcp ${GUEST}:1 > 1.1.1.1:2`), NET)).toBe(DEFAULT_PASS);
    expect(set.check(flow(`out udp ${GUEST}:1 > 1.1.1.1:2`), NET).action).toBe('block');
  });
});

describe('the table', () => {
  const cases: [string, string, (number | 'pass')[], string[]][] = [
    ['direction: out is what a guest sends, in what reaches it', 'block out all', ['pass', 1], [`in tcp 127.0.0.1:5000 > ${GUEST}:22`, `out tcp ${GUEST}:40000 > 1.1.1.1:80`]],
    ['direction: in', 'block in all', [1, 'pass'], [`in tcp 127.0.0.1:5000 > ${GUEST}:22`, `out tcp ${GUEST}:40000 > 1.1.1.1:80`]],
    ['no direction means both', 'block all', [1, 1], [`in udp 127.0.0.1:5000 > ${GUEST}:53`, `out icmp ${GUEST} > 1.1.1.1`]],
    [
      'proto: each protocol matches only itself; no proto matches any, including other',
      'block proto tcp\nblock proto udp\nblock proto icmp\nblock all',
      [1, 2, 3, 4],
      [`out tcp ${GUEST}:1 > 1.1.1.1:2`, `out udp ${GUEST}:1 > 1.1.1.1:2`, `out icmp ${GUEST} > 1.1.1.1`, `out other ${GUEST} > 1.1.1.1`],
    ],
    [
      'the issue\'s example: one service on the host refused, nothing else',
      'block out proto tcp to 10.0.2.2 port 8080',
      [1, 'pass', 'pass', 'pass', 'pass'],
      [`out tcp ${GUEST}:40000 > 10.0.2.2:8080`, `out tcp ${GUEST}:40000 > 10.0.2.2:8081`, `out udp ${GUEST}:40000 > 10.0.2.2:8080`, `out tcp ${GUEST}:40000 > 10.0.2.3:8080`, `in tcp 10.0.2.2:40000 > ${GUEST}:8080`],
    ],
    [
      'block local: guest-to-guest and guest-to-host, both ways; the outside and port forwards pass',
      'block local',
      [1, 1, 1, 1, 'pass', 'pass', 'pass'],
      [
        `out tcp ${GUEST}:40000 > 10.0.2.16:80`, // to another guest
        `in tcp 10.0.2.16:40000 > ${GUEST}:80`, // from another guest
        `out tcp ${GUEST}:40000 > 10.0.2.2:22`, // to the host (gateway)
        `out udp ${GUEST}:68 > 255.255.255.255:67`, // a broadcast stays on the guest network
        `out tcp ${GUEST}:40000 > 93.184.216.34:443`, // the outside
        `in tcp 127.0.0.1:50000 > ${GUEST}:22`, // a port forward's client on the host
        `in tcp 192.168.1.5:50000 > ${GUEST}:22`, // one from the LAN
      ],
    ],
    ['out local looks at the destination only', 'block out local', ['pass', 1], [`in tcp 10.0.2.16:1 > ${GUEST}:2`, `out tcp ${GUEST}:1 > 10.0.2.16:2`]],
    ['to local is the guest subnet', 'block to local', [1, 1, 1, 'pass', 'pass'], [`out tcp ${GUEST}:1 > 10.0.2.0:2`, `out tcp ${GUEST}:1 > 10.0.2.255:2`, `out tcp ${GUEST}:1 > 255.255.255.255:2`, `out tcp ${GUEST}:1 > 10.0.3.0:2`, `out tcp ${GUEST}:1 > 10.0.1.255:2`]],
    ['from local: every out flow (its source is a guest)', 'block from local', [1, 'pass'], [`out tcp ${GUEST}:1 > 1.1.1.1:2`, `in tcp 127.0.0.1:1 > ${GUEST}:2`]],
    [
      'CIDR edges: first and last address in, one outside each end out',
      'block to 192.168.4.0/22',
      ['pass', 1, 1, 'pass'],
      [`out tcp ${GUEST}:1 > 192.168.3.255:2`, `out tcp ${GUEST}:1 > 192.168.4.0:2`, `out tcp ${GUEST}:1 > 192.168.7.255:2`, `out tcp ${GUEST}:1 > 192.168.8.0:2`],
    ],
    ['a /32 is one host', 'block to 1.1.1.1', [1, 'pass', 'pass'], [`out tcp ${GUEST}:1 > 1.1.1.1:2`, `out tcp ${GUEST}:1 > 1.1.1.0:2`, `out tcp ${GUEST}:1 > 1.1.1.2:2`]],
    ['/0 is every address, the top bit included', 'block to 0.0.0.0/0', [1, 1], [`out tcp ${GUEST}:1 > 0.0.0.1:2`, `out tcp ${GUEST}:1 > 255.255.255.254:2`]],
    ['a /1 with the top bit set (unsigned compare)', 'block to 128.0.0.0/1', ['pass', 1, 1], [`out tcp ${GUEST}:1 > 127.255.255.255:2`, `out tcp ${GUEST}:1 > 128.0.0.0:2`, `out tcp ${GUEST}:1 > 255.255.255.255:2`]],
    [
      'port ranges are inclusive at both ends',
      'block out proto udp to any port 1000:2000',
      ['pass', 1, 1, 'pass'],
      [`out udp ${GUEST}:5 > 1.1.1.1:999`, `out udp ${GUEST}:5 > 1.1.1.1:1000`, `out udp ${GUEST}:5 > 1.1.1.1:2000`, `out udp ${GUEST}:5 > 1.1.1.1:2001`],
    ],
    ['a source port is the source\'s', 'block proto tcp from any port 22', [1, 'pass'], [`in tcp 127.0.0.1:22 > ${GUEST}:5000`, `in tcp 127.0.0.1:5000 > ${GUEST}:22`]],
    [
      'from and to together must both match',
      'block in proto tcp from 192.168.0.0/16 to any port 22',
      [1, 'pass', 'pass', 'pass'],
      [`in tcp 192.168.1.5:50000 > ${GUEST}:22`, `in tcp 127.0.0.1:50000 > ${GUEST}:22`, `in tcp 192.168.1.5:50000 > ${GUEST}:80`, `out tcp ${GUEST}:50000 > 192.168.1.5:22`],
    ],
    [
      'an allow-list: pass what is needed, block the rest',
      'pass out proto tcp to any port 443\npass out proto udp to any port 53\nblock out all',
      [1, 2, 3, 3, 'pass'],
      [`out tcp ${GUEST}:1 > 1.1.1.1:443`, `out udp ${GUEST}:1 > 1.1.1.1:53`, `out tcp ${GUEST}:1 > 1.1.1.1:80`, `out icmp ${GUEST} > 1.1.1.1`, `in tcp 127.0.0.1:1 > ${GUEST}:22`],
    ],
    [
      "the README's example does what its comments say",
      'pass out proto tcp to 10.0.2.2 port 3128\nblock local\nblock in proto tcp from 192.168.0.0/16 to any port 22',
      [1, 2, 2, 2, 'pass', 3, 'pass'],
      [
        `out tcp ${GUEST}:1 > 10.0.2.2:3128`, // the host's proxy
        `out tcp ${GUEST}:1 > 10.0.2.2:22`, // any other host service
        `out udp ${GUEST}:1 > 10.0.2.16:5000`, // another guest
        `in tcp 10.0.2.16:1 > ${GUEST}:80`, // from another guest
        `out tcp ${GUEST}:1 > 93.184.216.34:443`, // the outside
        `in tcp 192.168.1.5:50000 > ${GUEST}:22`, // the ssh forward from the LAN
        `in tcp 127.0.0.1:50000 > ${GUEST}:22`, // ... and from this machine
      ],
    ],
  ];
  for (const [name, rules, want, flows] of cases) {
    test(name, () => {
      expect(decide(rules, flows)).toEqual(want);
    });
  }

  test('local follows the network given per check', () => {
    const set = new FilterSet(parseFilter('block local', 't'));
    const other = { network: ip('192.168.100.0'), netmask: ip('255.255.255.0') };
    const f = flow('out tcp 192.168.100.15:1 > 192.168.100.2:22');
    expect(set.check(f, other).action).toBe('block');
    expect(set.check(f, NET).action).toBe('pass');
    expect(isLocal(ip('10.0.2.2'), NET)).toBe(true);
    expect(isLocal(ip('127.0.0.1'), NET)).toBe(false);
  });
});

describe('counters', () => {
  test('each rule counts its hits; the set counts checks, blocks and unmatched', () => {
    const set = new FilterSet(parseFilter('pass out proto tcp to any port 443\nblock out proto tcp all\n', 'c.conf'));
    const ok = flow(`out tcp ${GUEST}:1 > 1.1.1.1:443`);
    const bad = flow(`out tcp ${GUEST}:1 > 1.1.1.1:80`);
    const other = flow(`out udp ${GUEST}:1 > 1.1.1.1:53`);
    for (const f of [ok, ok, bad, ok, other, bad, bad]) set.check(f, NET);
    expect([set.hits(0), set.hits(1)]).toEqual([3, 3]);
    const j = set.toJSON();
    expect({ checks: j.checks, blocked: j.blocked, unmatched: j.unmatched }).toEqual({ checks: 7, blocked: 3, unmatched: 1 });
    expect(j.rules.map((r) => [r.index, r.line, r.text, r.hits])).toEqual([
      [0, 1, 'pass out proto tcp from any to any port 443', 3],
      [1, 2, 'block out proto tcp all', 3],
    ]);
    expect(j.source).toBe('c.conf');
    expect(j.text).toBe('pass out proto tcp to any port 443\nblock out proto tcp all\n');
  });

  test('match() decides the same but counts nothing', () => {
    const set = new FilterSet(parseFilter('block out proto tcp all\n', 't'));
    expect(set.match(flow(`out tcp ${GUEST}:1 > 1.1.1.1:80`), NET)).toMatchObject({ action: 'block', ruleIndex: 0 });
    expect(set.match(flow(`out udp ${GUEST}:1 > 1.1.1.1:80`), NET)).toBe(DEFAULT_PASS);
    expect(set.toJSON()).toMatchObject({ checks: 0, blocked: 0, unmatched: 0, rules: [{ hits: 0 }] });
  });

  test('the same verdict object comes back for the same rule (no allocation per check)', () => {
    const set = new FilterSet(parseFilter('block out all\n', 't'));
    const a = set.check(flow(`out tcp ${GUEST}:1 > 1.1.1.1:80`), NET);
    const b = set.check(flow(`out udp ${GUEST}:1 > 8.8.8.8:53`), NET);
    expect(a).toBe(b);
    expect(Object.isFrozen(a)).toBe(true);
  });
});

describe('replace', () => {
  test('a good set replaces the old one whole; counters start again', () => {
    const set = new FilterSet(parseFilter('block out proto tcp all\n', 'start.conf'));
    const f = flow(`out tcp ${GUEST}:1 > 1.1.1.1:80`);
    set.check(f, NET);
    expect(set.version).toBe(0);
    set.replace('pass out proto tcp to any port 80\nblock all\n');
    expect(set.version).toBe(1);
    expect(set.check(f, NET)).toMatchObject({ action: 'pass', ruleIndex: 0 });
    expect(set.toJSON()).toMatchObject({ source: 'filter', version: 1, checks: 1, blocked: 0, rules: [{ hits: 1 }, { hits: 0 }] });
  });

  test('a bad set throws and the old rules, with their hits, stay in force', () => {
    const set = new FilterSet(parseFilter('block out proto tcp all\n', 'start.conf'));
    const f = flow(`out tcp ${GUEST}:1 > 1.1.1.1:80`);
    set.check(f, NET);
    const before = set.toJSON();
    // line 1 is good and would pass the flow: it must not take effect alone
    expect(() => set.replace('pass all\nblock out proto tcpp all\n', 'new.conf')).toThrow(FilterParseError);
    expect(() => set.replace('pass all\nblock out proto tcpp all\n', 'new.conf')).toThrow('new.conf:2: unknown protocol "tcpp"');
    expect(set.toJSON()).toEqual(before);
    expect(set.check(f, NET).action).toBe('block');
    expect(set.hits(0)).toBe(2);
  });

  test('an empty text clears the rules: everything passes', () => {
    const set = new FilterSet(parseFilter('block all\n', 't'));
    set.replace('');
    expect(set.size).toBe(0);
    expect(set.check(flow(`out tcp ${GUEST}:1 > 1.1.1.1:80`), NET)).toBe(DEFAULT_PASS);
  });

  test('a set made without rules reports no source until one is loaded', () => {
    const set = new FilterSet();
    expect(set.toJSON()).toEqual({ source: null, text: '', version: 0, checks: 0, blocked: 0, unmatched: 0, rules: [] });
    set.replace('block all\n', 'later.conf');
    expect(set.toJSON()).toMatchObject({ source: 'later.conf', version: 1, rules: [{ text: 'block all' }] });
  });
});

describe('block events', () => {
  test('name the rule, the line, the direction and both ends', () => {
    const set = new FilterSet(parseFilter('# no ssh to the host\nblock out proto tcp to 10.0.2.2 port 22\nblock proto icmp\n', 'f'));
    const f = flow(`out tcp ${GUEST}:40000 > 10.0.2.2:22`);
    expect(blockEvent(f, set.check(f, NET))).toEqual({
      type: 'filter', event: 'block', direction: 'out', proto: 'tcp', src: '10.0.2.15:40000', dst: '10.0.2.2:22',
      rule: 'block out proto tcp from any to 10.0.2.2 port 22', rule_index: 0, line: 2,
    });
    const p = flow(`in icmp 10.0.2.16 > ${GUEST}`);
    expect(blockEvent(p, set.check(p, NET))).toMatchObject({ direction: 'in', proto: 'icmp', src: '10.0.2.16', dst: '10.0.2.15', rule: 'block proto icmp all', rule_index: 1, line: 3 });
  });
});

describe('IPv6 flows', () => {
  const NET6 = { ...NET, ipv6: { prefix: 'fd00:10:0:2::' } };
  const f6 = (direction: 'in' | 'out', proto: FlowProto, src: string, srcPort: number, dst: string, dstPort: number): FilterFlow => ({ direction, proto, src, srcPort, dst, dstPort });
  const G6 = 'fd00:10:0:2::100';
  test('IPv6 CIDRs match IPv6 flows only; IPv4 CIDRs IPv4 only; any and local both', () => {
    const set = new FilterSet(parseFilter('block out proto tcp to 2001:db8::/32 port 443\nblock out to 10.0.0.0/8\nblock out proto udp local\npass all\n', 't'));
    const line = (f: FilterFlow) => set.check(f, NET6).rule?.line;
    expect(line(f6('out', 'tcp', G6, 40000, '2001:db8::5', 443))).toBe(1);
    expect(line(f6('out', 'tcp', G6, 40000, '2001:db9::5', 443))).toBe(4);
    expect(line(f6('out', 'tcp', G6, 40000, '::ffff:a00:1', 80))).toBe(4); // not 10.0.0.0/8
    expect(line(f6('out', 'udp', G6, 40000, 'fd00:10:0:2::2', 53))).toBe(3); // local: the prefix
    expect(line(f6('out', 'udp', G6, 40000, 'fe80::2', 547))).toBe(3); // local: link-local
    expect(line(flow(`out tcp ${GUEST}:40000 > 10.1.1.1:443`))).toBe(2);
  });
  test('a /128 is one host and prints without its length; the JSON form has it', () => {
    const rules = parseFilter('block from fd00:10:0:2::100 to 2001:db8::/32\n', 't');
    expect(rules.rules[0]!.from).toEqual({ kind: 'ipv6', addr: G6, prefixLen: 128 });
    const set = new FilterSet(rules);
    expect(set.toJSON().rules[0]).toMatchObject({ text: 'block from fd00:10:0:2::100 to 2001:db8::/32', from: 'fd00:10:0:2::100/128', to: '2001:db8::/32' });
    const v = set.check(f6('out', 'tcp', G6, 1, '2001:db8::1', 2), NET6);
    expect(blockEvent(f6('out', 'tcp', G6, 1, '2001:db8::1', 2), v)).toMatchObject({ src: '[fd00:10:0:2::100]:1', dst: '[2001:db8::1]:2' });
  });
  test('isLocal for IPv6: the prefix and link-local, nothing else', () => {
    expect(isLocal('fd00:10:0:2::15', NET6)).toBe(true);
    expect(isLocal('fe80::1', NET6)).toBe(true);
    expect(isLocal('fd00:10:0:3::15', NET6)).toBe(false);
    expect(isLocal('fd00:10:0:2::15', NET)).toBe(false);
  });
});
