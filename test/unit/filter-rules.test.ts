/**
 * The filter grammar as a user writes it: every construct parses to the rule it says, the
 * canonical text reads back the same, and every mistake is one line naming file, line and token.
 */
import { describe, expect, test } from 'vitest';
import fs from 'node:fs';
import { FilterParseError, formatRule, parseFilter, parseRule, ruleToJson, type FilterRule } from '../../src/filter/rules.ts';
import { parseIpv4 } from '../../src/stack/wire/addr.ts';

const ip = (s: string): number => parseIpv4(s)!;
const ANY = { kind: 'any' } as const;

/** The rule with defaults for every key the case does not set. */
function rule(over: Partial<FilterRule>): FilterRule {
  return { line: 1, action: 'pass', direction: 'both', proto: 'any', peerLocal: false, from: ANY, fromPorts: undefined, to: ANY, toPorts: undefined, ...over };
}

describe('constructs', () => {
  const cases: [string, Partial<FilterRule>, string][] = [
    ['pass all', { action: 'pass' }, 'pass all'],
    ['block all', { action: 'block' }, 'block all'],
    ['block', { action: 'block' }, 'block all'],
    ['block in all', { action: 'block', direction: 'in' }, 'block in all'],
    ['block out', { action: 'block', direction: 'out' }, 'block out all'],
    ['block local', { action: 'block', peerLocal: true }, 'block local'],
    ['block out local', { action: 'block', direction: 'out', peerLocal: true }, 'block out local'],
    ['block in proto tcp local', { action: 'block', direction: 'in', proto: 'tcp', peerLocal: true }, 'block in proto tcp local'],
    ['block proto icmp', { action: 'block', proto: 'icmp' }, 'block proto icmp all'],
    ['pass out proto udp all', { direction: 'out', proto: 'udp' }, 'pass out proto udp all'],
    [
      'block out proto tcp to 10.0.2.2 port 22',
      { action: 'block', direction: 'out', proto: 'tcp', to: { kind: 'ipv4', addr: ip('10.0.2.2'), prefixLen: 32, mask: 0xffff_ffff }, toPorts: { lo: 22, hi: 22 } },
      'block out proto tcp from any to 10.0.2.2 port 22',
    ],
    [
      'pass in proto udp from 192.168.0.0/16 port 1024:65535 to local port 53',
      { direction: 'in', proto: 'udp', from: { kind: 'ipv4', addr: ip('192.168.0.0'), prefixLen: 16, mask: 0xffff_0000 }, fromPorts: { lo: 1024, hi: 65535 }, to: { kind: 'local' }, toPorts: { lo: 53, hi: 53 } },
      'pass in proto udp from 192.168.0.0/16 port 1024:65535 to local port 53',
    ],
    ['block from local', { action: 'block', from: { kind: 'local' } }, 'block from local'],
    ['block from any to any', { action: 'block' }, 'block all'],
    ['block to 0.0.0.0/0', { action: 'block', to: { kind: 'ipv4', addr: 0, prefixLen: 0, mask: 0 } }, 'block from any to 0.0.0.0/0'],
    ['block proto tcp to any port 0:65535', { action: 'block', proto: 'tcp', toPorts: { lo: 0, hi: 65535 } }, 'block proto tcp from any to any port 0:65535'],
    ['block\tout   proto tcp\tto 10.1.2.3/32', { action: 'block', direction: 'out', proto: 'tcp', to: { kind: 'ipv4', addr: ip('10.1.2.3'), prefixLen: 32, mask: 0xffff_ffff } }, 'block out proto tcp from any to 10.1.2.3'],
  ];
  for (const [text, want, canonical] of cases) {
    test(text.replace(/\s+/g, ' '), () => {
      const r = parseRule(text);
      expect(r).toEqual(rule(want));
      expect(formatRule(r)).toBe(canonical);
      // the canonical text means the same rule
      expect(parseRule(canonical)).toEqual(r);
    });
  }
});

describe('files', () => {
  test('comments, blank lines and CRLF are ignored; rules keep their line numbers and order', () => {
    const text = '# policy for CI\r\n\r\nblock out proto tcp to 10.0.2.2 port 22   # no ssh to the host\r\n   \r\npass all\r\n#block all\r\n';
    const f = parseFilter(text, 'ci.conf');
    expect(f.source).toBe('ci.conf');
    expect(f.text).toBe(text);
    expect(f.rules.map((r) => [r.line, formatRule(r)])).toEqual([
      [3, 'block out proto tcp from any to 10.0.2.2 port 22'],
      [5, 'pass all'],
    ]);
  });

  test('an empty file, or one of comments only, has no rules', () => {
    expect(parseFilter('', 'a').rules).toEqual([]);
    expect(parseFilter('# nothing\n\n   # still nothing\n', 'a').rules).toEqual([]);
  });

  test("the README's example parses to the rules it describes", () => {
    const readme = fs.readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
    const m = /cat > ci\.conf <<'RULES'\n([\s\S]*?)\nRULES\n/.exec(readme);
    expect(m).not.toBeNull();
    const rules = parseFilter(m![1]!, 'ci.conf').rules.map(formatRule);
    expect(rules).toEqual(['pass out proto tcp from any to 10.0.2.2 port 3128', 'block local', 'block in proto tcp from 192.168.0.0/16 to any port 22']);
  });

  test('the JSON form names every field', () => {
    const r = parseFilter('\nblock in proto tcp from 10.0.0.0/8 port 1:1023 to local port 80:90\nblock local\n', 'x').rules;
    expect(ruleToJson(r[0]!, 0, 7)).toEqual({
      index: 0, line: 2, text: 'block in proto tcp from 10.0.0.0/8 port 1:1023 to local port 80:90', action: 'block', direction: 'in', proto: 'tcp',
      peer: 'any', from: '10.0.0.0/8', from_port: [1, 1023], to: 'local', to_port: [80, 90], hits: 7,
    });
    expect(ruleToJson(r[1]!, 1, 0)).toMatchObject({ index: 1, line: 3, text: 'block local', direction: 'both', proto: 'any', peer: 'local', from: 'any', from_port: null, to: 'any', to_port: null });
  });
});

describe('errors: one line naming file, line and token', () => {
  const cases: [string, string, string | undefined][] = [
    ['pass out proto tcpp', 'unknown protocol "tcpp" (tcp, udp or icmp)', 'tcpp'],
    ['allow all', 'a rule starts with pass or block, not "allow"', 'allow'],
    ['Block all', 'a rule starts with pass or block, not "Block"', 'Block'],
    ['block out proto', '"proto" needs tcp, udp or icmp', undefined],
    ['block out proto constructor', 'unknown protocol "constructor" (tcp, udp or icmp)', 'constructor'],
    ['block sideways', 'unexpected "sideways" (expected in, out, proto, all, local, from, to or end of line)', 'sideways'],
    ['block in out', 'unexpected "out" (expected proto, all, local, from, to or end of line)', 'out'],
    ['block proto tcp in', 'unexpected "in" (expected all, local, from, to or end of line)', 'in'],
    ['block all now', 'unexpected "now" (expected end of line)', 'now'],
    ['block local from 10.0.0.1', 'unexpected "from" (expected end of line)', 'from'],
    ['block to 10.0.0.1 from 10.0.0.2', 'unexpected "from" (expected port or end of line)', 'from'],
    ['block proto tcp from any port 1 port 2', '"port" given twice (one port N or range N:M per address)', 'port'],
    ['block from', '"from" needs an address (ADDR[/N], any or local)', undefined],
    ['block to', '"to" needs an address (ADDR[/N], any or local)', undefined],
    ['block to 10.0.2.300', 'bad address "10.0.2.300" (expected ADDR[/N], any or local)', '10.0.2.300'],
    ['block to example.com', 'bad address "example.com" (expected ADDR[/N], any or local)', 'example.com'],
    ['block to 010.0.2.2', 'bad address "010.0.2.2" (expected ADDR[/N], any or local)', '010.0.2.2'],
    ['block to 10.0.0.0/33', 'bad prefix length in "10.0.0.0/33" (0..32)', '10.0.0.0/33'],
    ['block to 10.0.0.0/', 'bad address "10.0.0.0/" (expected ADDR[/N], any or local)', '10.0.0.0/'],
    ['block to 10.0.2.15/24', '"10.0.2.15/24" has host bits set (did you mean 10.0.2.0/24, or 10.0.2.15 for one host?)', '10.0.2.15/24'],
    ['block to fd00::1/8', '"fd00::1/8" has host bits set (did you mean fd00::/8, or fd00::1 for one host?)', 'fd00::1/8'],
    ['block to fd00::/129', 'bad prefix length in "fd00::/129" (0..128)', 'fd00::/129'],
    ['block to fd00:::1', 'bad address "fd00:::1" (expected ADDR[/N], any or local)', 'fd00:::1'],
    ['block to any port 22', '"port" needs proto tcp or udp (this rule names no protocol)', 'port'],
    ['block proto icmp to any port 22', '"port" needs proto tcp or udp (proto icmp has no ports)', 'port'],
    ['block proto tcp to any port', '"port" needs a port N or a range N:M', undefined],
    ['block proto tcp to any port ssh', 'bad port "ssh" (expected N or N:M, 0..65535)', 'ssh'],
    ['block proto tcp to any port 70000', 'port "70000" is not in 0..65535', '70000'],
    ['block proto tcp to any port 1:65536', 'port "1:65536" is not in 0..65535', '1:65536'],
    ['block proto tcp to any port 90:80', 'port range "90:80" runs backwards (N:M needs N ≤ M)', '90:80'],
    ['block proto tcp to any port 80-90', 'bad port "80-90" (expected N or N:M, 0..65535)', '80-90'],
    ['block proto tcp port 22', '"port" must follow an address (from ADDR port N, to ADDR port N)', 'port'],
  ];
  for (const [line, reason, token] of cases) {
    test(line, () => {
      // a good line first, so the error must name line 3, not line 1
      const text = `pass all\n# comment\n${line}\nblock all\n`;
      let err: unknown;
      try {
        parseFilter(text, 'filter.conf');
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(FilterParseError);
      const e = err as FilterParseError;
      expect(e.message).toBe(`filter.conf:3: ${reason}`);
      expect(e.message).not.toContain('\n');
      expect({ source: e.source, line: e.line, token: e.token, code: e.code }).toEqual({ source: 'filter.conf', line: 3, token, code: 'VMNAT_BAD_FILTER' });
    });
  }

  test('the first bad line is the one reported', () => {
    expect(() => parseFilter('block to x\nblock to y\n', 'f')).toThrow('f:1: bad address "x"');
  });
});
