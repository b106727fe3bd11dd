/**
 * DNS flags, hosts table and resolv.conf parsing (src/dns/hosts.ts, src/dns/resolvconf.ts).
 */
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { fc, test as fcTest } from '@fast-check/vitest';
import {
  DnsFlagError,
  DnsHostsTable,
  formatIpv6,
  parseDnsHostFlag,
  parseDnsServerFlag,
  parseIpv6,
  reverseName,
} from '../../src/dns/hosts.ts';
import { parseResolvConf } from '../../src/dns/resolvconf.ts';

describe('parseDnsServerFlag', () => {
  it.each([
    ['1.1.1.1', { ip: '1.1.1.1', port: 53 }],
    ['192.168.1.1:5353', { ip: '192.168.1.1', port: 5353 }],
    ['::1', { ip: '::1', port: 53 }],
    ['2001:DB8:0:0:0:0:0:1', { ip: '2001:db8::1', port: 53 }],
    ['[2001:db8::1]:853', { ip: '2001:db8::1', port: 853 }],
    ['[fe80::1%eth0]', { ip: 'fe80::1%eth0', port: 53 }],
    ['fe80::1%eth0', { ip: 'fe80::1%eth0', port: 53 }],
  ])('%s', (text, want) => {
    expect(parseDnsServerFlag(text)).toEqual(want);
  });

  it.each([
    ['', 'expected IPv4 or IPv6'],
    ['dns.google', 'expected IPv4 or IPv6'],
    ['1.1.1', 'expected IPv4 or IPv6'],
    ['1.1.1.1:0', 'port must be 1..65535'],
    ['1.1.1.1:65536', 'port must be 1..65535'],
    ['1.1.1.1:', 'port must be 1..65535'],
    ['1.1.1.1:53x', 'port must be 1..65535'],
    ['[1.1.1.1]:53', 'brackets are only for IPv6'],
    ['[::1]:', 'port must be 1..65535'],
    ['2001:db8::1::2', 'expected IPv4 or IPv6'],
    ['fe80::1%', 'expected IPv4 or IPv6'],
  ])('rejects %j with a reason', (text, reason) => {
    let err: unknown;
    try {
      parseDnsServerFlag(text);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(DnsFlagError);
    expect((err as DnsFlagError).code).toBe('VMNAT_BAD_FLAG');
    expect((err as DnsFlagError).message).toContain('--dns-server');
    expect((err as DnsFlagError).message).toContain(reason);
  });
});

describe('parseDnsHostFlag', () => {
  it('parses NAME=IP, lower-casing the name and canonicalising IPv6', () => {
    expect(parseDnsHostFlag('Build-Box.LAN.=10.0.2.50')).toEqual({ name: 'build-box.lan', ip: '10.0.2.50' });
    expect(parseDnsHostFlag('v6host=2001:DB8::0:1')).toEqual({ name: 'v6host', ip: '2001:db8::1' });
  });
  it.each(['nohost', '=1.2.3.4', 'a..b=1.2.3.4', '-bad=1.2.3.4', 'x=1.2.3', 'x=', 'x=fe80::1%eth0', `${'a'.repeat(64)}=1.2.3.4`])(
    'rejects %j',
    (text) => {
      expect(() => parseDnsHostFlag(text)).toThrow(DnsFlagError);
      expect(() => parseDnsHostFlag(text)).toThrow(/--dns-host/);
    },
  );
});

describe('IPv6 text', () => {
  it('parses and formats per RFC 5952', () => {
    expect(formatIpv6(parseIpv6('2001:0db8:0000:0000:0001:0000:0000:0001')!)).toBe('2001:db8::1:0:0:1');
    expect(formatIpv6(parseIpv6('::ffff:10.0.2.15')!)).toBe('::ffff:a00:20f');
    expect(formatIpv6(parseIpv6('::')!)).toBe('::');
    expect(formatIpv6(parseIpv6('1:0:2:3:4:5:6:7')!)).toBe('1:0:2:3:4:5:6:7');
    expect(parseIpv6('1:2:3:4:5:6:7:8:9')).toBeUndefined();
    expect(parseIpv6('1:2:3:4:5:6:7::8')).toBeUndefined();
    expect(parseIpv6(':1::2')).toBeUndefined();
  });

  fcTest.prop([fc.ipV6()], { numRuns: 2000 })('agrees with Node and WHATWG on valid addresses', (text) => {
    const b = parseIpv6(text);
    expect(b, text).toBeDefined();
    // The URL parser serialises IPv6 per RFC 5952 as well (all-hex, first longest zero run).
    expect(formatIpv6(b!)).toBe(new URL(`http://[${text}]/`).hostname.slice(1, -1));
  });

  fcTest.prop([fc.string({ maxLength: 45, unit: fc.constantFrom(...'0123456789abcdefABCDEF:.'.split('')) })], { numRuns: 5000 })(
    'accepts exactly what net.isIPv6 accepts',
    (text) => {
      expect(parseIpv6(text) !== undefined, text).toBe(net.isIPv6(text));
    },
  );
});

describe('DnsHostsTable', () => {
  it('answers A and AAAA case-insensitively, [] for a missing family, undefined for unknown names', () => {
    const t = new DnsHostsTable();
    t.add('Box.Lan', '10.0.2.50');
    t.add('box.lan', '10.0.2.51');
    t.add('box.lan.', '10.0.2.50'); // repeat: ignored
    t.add('six.lan', '2001:db8::7');
    expect(t.size).toBe(2);
    expect(t.lookup('BOX.lan', 'A')).toEqual(['10.0.2.50', '10.0.2.51']);
    expect(t.lookup('box.lan.', 'AAAA')).toEqual([]);
    expect(t.lookup('six.lan', 'AAAA')).toEqual(['2001:db8::7']);
    expect(t.lookup('six.lan', 'A')).toEqual([]);
    expect(t.lookup('other.lan', 'A')).toBeUndefined();
    expect(t.lookupPtr('50.2.0.10.in-addr.arpa')).toEqual(['box.lan']);
    expect(t.lookupPtr(reverseName(parseIpv6('2001:db8::7')!))).toEqual(['six.lan']);
    expect(reverseName(parseIpv6('2001:db8::7')!)).toBe(`7.0.0.0.${'0.'.repeat(20)}8.b.d.0.1.0.0.2.ip6.arpa`);
  });

  it('throws a typed error for bad entries', () => {
    const t = new DnsHostsTable();
    expect(() => t.add('ok', 'nope')).toThrow(DnsFlagError);
    expect(() => t.add('not ok', '1.2.3.4')).toThrow(DnsFlagError);
  });

  it('parses hosts(5) text, skipping and reporting bad lines', () => {
    const text = [
      '# comment',
      '127.0.0.1\tlocalhost localhost.localdomain',
      '',
      '10.0.0.5  build  build.corp   # trailing comment',
      '2001:db8::5 build',
      'fe80::1%lo0 localhost',
      'garbage line',
      '10.0.0.6',
      '10.0.0.7 good bad_name! also-good',
    ].join('\r\n');
    const r = DnsHostsTable.parseHostsFile(text);
    expect(r.entries).toEqual([
      { name: 'localhost', ip: '127.0.0.1' },
      { name: 'localhost.localdomain', ip: '127.0.0.1' },
      { name: 'build', ip: '10.0.0.5' },
      { name: 'build.corp', ip: '10.0.0.5' },
      { name: 'build', ip: '2001:db8::5' },
      { name: 'good', ip: '10.0.0.7' },
      { name: 'also-good', ip: '10.0.0.7' },
    ]);
    expect(r.problems.map((p) => p.line)).toEqual([6, 7, 8, 9]);
    expect(r.problems[0]!.reason).toContain('scoped');
  });
});

describe('parseResolvConf', () => {
  it('takes nameserver lines (first three, like glibc), ignoring comments and options', () => {
    const r = parseResolvConf(
      [
        '# Generated by NetworkManager',
        'search corp.example',
        'options edns0 trust-ad',
        'nameserver 10.1.1.1',
        '; nameserver 10.9.9.9',
        'nameserver 2001:DB8::53 # with comment',
        'nameserver fe80::1%eth0',
        'nameserver 10.1.1.4',
        'nameserver bogus',
      ].join('\n'),
      5353,
    );
    expect(r.servers).toEqual([
      { ip: '10.1.1.1', port: 5353 },
      { ip: '2001:db8::53', port: 5353 },
      { ip: 'fe80::1%eth0', port: 5353 },
    ]);
    expect(r.invalid).toEqual(['bogus']);
  });
  it('yields nothing for an empty file', () => {
    expect(parseResolvConf('')).toEqual({ servers: [], invalid: [] });
  });
});
