import { describe, expect, test } from 'vitest';
import { fc, test as fcTest } from '@fast-check/vitest';
import {
  ForwardRuleError,
  checkRuleForNetwork,
  formatHostfwd,
  formatNatpf,
  parseHostfwd,
  parseForwardFlags,
  parseNatpf,
  ruleFromJson,
  ruleToJson,
  type ForwardRule,
} from '../../src/portfwd/rules.ts';
import { parseIpv4 } from '../../src/stack/wire/addr.ts';

const rule = (r: Partial<ForwardRule> & Pick<ForwardRule, 'name' | 'hostPort' | 'guestPort'>): ForwardRule => ({
  proto: 'tcp',
  hostAddr: '127.0.0.1',
  guestAddr: undefined,
  portCount: 1,
  ...r,
});

describe('the same rule in every syntax gives the same object', () => {
  // [hostfwd, natpf, JSON body, expected]
  const table: [string, string, Record<string, unknown>, ForwardRule][] = [
    ['tcp::8080-:80', 'tcp-127.0.0.1-8080,tcp,,8080,,80', { proto: 'tcp', host_port: 8080, guest_port: 80 }, rule({ name: 'tcp-127.0.0.1-8080', hostPort: 8080, guestPort: 80 })],
    [':127.0.0.1:2222-10.0.2.15:22', 'tcp-127.0.0.1-2222,tcp,127.0.0.1,2222,10.0.2.15,22', { proto: 'tcp', host_addr: '127.0.0.1', host_port: 2222, guest_addr: '10.0.2.15', guest_port: 22 }, rule({ name: 'tcp-127.0.0.1-2222', hostPort: 2222, guestAddr: '10.0.2.15', guestPort: 22 })],
    ['udp:0.0.0.0:5353-:53', 'udp-0.0.0.0-5353,udp,0.0.0.0,5353,,53', { proto: 'udp', host_addr: '0.0.0.0', host_port: 5353, guest_port: 53 }, rule({ name: 'udp-0.0.0.0-5353', proto: 'udp', hostAddr: '0.0.0.0', hostPort: 5353, guestPort: 53 })],
    ['tcp:[::1]:8443-:443', 'tcp-::1-8443,tcp,::1,8443,,443', { proto: 'tcp', host_addr: '::1', host_port: 8443, guest_port: 443 }, rule({ name: 'tcp-::1-8443', hostAddr: '::1', hostPort: 8443, guestPort: 443 })],
    ['tcp:[::]:80-:80', 'tcp-::-80,tcp,[::],80,,80', { proto: 'tcp', host_addr: '[::]', host_port: 80, guest_port: 80 }, rule({ name: 'tcp-::-80', hostAddr: '::', hostPort: 80, guestPort: 80 })],
    ['tcp::8000..8010-:9000..9010', 'tcp-127.0.0.1-8000..8010,tcp,,8000..8010,,9000..9010', { proto: 'tcp', host_port: 8000, guest_port: 9000, port_count: 11 }, rule({ name: 'tcp-127.0.0.1-8000..8010', hostPort: 8000, guestPort: 9000, portCount: 11 })],
    ['TCP:[0:0:0:0:0:0:0:1]:1-:65535', 'tcp-::1-1,Tcp,0::1,1,,65535', { proto: 'TCP', host_addr: '0::1', host_port: 1, guest_port: 65535 }, rule({ name: 'tcp-::1-1', hostAddr: '::1', hostPort: 1, guestPort: 65535 })],
  ];
  for (const [hostfwd, natpf, json, want] of table) {
    test(hostfwd, () => {
      expect(parseHostfwd(hostfwd)).toStrictEqual(want);
      expect(parseNatpf(natpf)).toStrictEqual(want);
      expect(ruleFromJson(json)).toStrictEqual(want);
      expect(ruleFromJson(ruleToJson(want))).toStrictEqual(want);
    });
  }

  test('a unix socket host side, in every syntax', () => {
    // The path may hold "-": the host side ends at the last "-" before the guest side.
    const want = rule({ name: 'unix-/run/user/1000/vm-1/docker.sock', proto: 'unix', hostAddr: '/run/user/1000/vm-1/docker.sock', hostPort: 0, guestPort: 2375 });
    expect(parseHostfwd('unix:/run/user/1000/vm-1/docker.sock-:2375')).toStrictEqual(want);
    expect(parseNatpf(',unix,/run/user/1000/vm-1/docker.sock,,,2375')).toStrictEqual(want);
    expect(ruleFromJson({ proto: 'unix', host_addr: '/run/user/1000/vm-1/docker.sock', guest_port: 2375 })).toStrictEqual(want);
    expect(ruleFromJson(ruleToJson(want))).toStrictEqual(want);
    expect(parseHostfwd(formatHostfwd(want))).toStrictEqual(want);
    expect(parseNatpf(formatNatpf(want))).toStrictEqual(want);
    expect(formatHostfwd(want)).toBe('unix:/run/user/1000/vm-1/docker.sock-:2375');
    expect(parseHostfwd('unix:/tmp/d.sock-10.0.2.15:22')).toMatchObject({ proto: 'unix', hostAddr: '/tmp/d.sock', guestAddr: '10.0.2.15', guestPort: 22 });
    expect(parseNatpf('docker,unix,/tmp/d.sock,,,2375')).toMatchObject({ name: 'docker', proto: 'unix', hostAddr: '/tmp/d.sock', hostPort: 0 });
  });

  test('natpf NAME names the rule; everything else equals the hostfwd form', () => {
    expect(parseNatpf('guestssh,tcp,,2222,,22')).toStrictEqual({ ...parseHostfwd('tcp::2222-:22'), name: 'guestssh' });
    expect(parseNatpf(',tcp,,2222,,22')).toStrictEqual(parseHostfwd('tcp::2222-:22'));
  });

  test('proto defaults to tcp in hostfwd, as in qemu', () => {
    expect(parseHostfwd('::8080-:80')).toStrictEqual(parseHostfwd('tcp::8080-:80'));
  });

  test('an empty host address is 127.0.0.1, not every interface', () => {
    expect(parseHostfwd('tcp::8080-:80').hostAddr).toBe('127.0.0.1');
    expect(parseNatpf('x,tcp,,8080,,80').hostAddr).toBe('127.0.0.1');
    expect(ruleFromJson({ proto: 'tcp', host_port: 8080, guest_port: 80 }).hostAddr).toBe('127.0.0.1');
  });

  test('an empty guest address follows the lease (undefined); JSON null too', () => {
    expect(parseHostfwd('tcp::8080-:80').guestAddr).toBeUndefined();
    expect(ruleFromJson({ proto: 'tcp', host_port: 8080, guest_addr: null, guest_port: 80 }).guestAddr).toBeUndefined();
    expect(ruleFromJson({ proto: 'tcp', host_port: 8080, guest_addr: '', guest_port: 80 }).guestAddr).toBeUndefined();
    expect(ruleToJson(parseHostfwd('tcp::8080-:80')).guest_addr).toBeNull();
  });
});

describe('bad rules give one clear reason', () => {
  const reason = (f: () => unknown): string => {
    try {
      f();
    } catch (err) {
      expect(err).toBeInstanceOf(ForwardRuleError);
      const e = err as ForwardRuleError;
      expect(e.reason).not.toContain('\n');
      return e.reason;
    }
    throw new Error('no error');
  };

  const hostfwd: [string, RegExp][] = [
    ['', /empty rule/],
    ['8080-:80', /expected \[tcp\|udp\]:\[HOSTADDR\]:HOSTPORT-/],
    ['tcp:8080-:80', /expected \[tcp\|udp\]/],
    ['sctp::8080-:80', /unknown protocol "sctp" \(tcp, udp or unix\)/],
    ['unix:relative.sock-:2375', /socket path "relative\.sock" must be absolute/],
    ['unix:-:2375', /missing the socket path/],
    ['unix:/tmp/d.sock', /missing "-" between the socket path and the guest side/],
    ['unix:/tmp/d.sock-:', /missing guest port/],
    ['unix:/tmp/d.sock-:2375..2376', /a unix socket forward reaches one guest port/],
    [`unix:/${'x'.repeat(107)}-:2375`, /socket path is 108 bytes long \(a unix socket path holds at most 107\)/],
    ['unix:/tmp/-:2375', /names a directory/],
    ['tcp::8080:80', /missing "-" between the host and guest sides/],
    ['tcp::8080-80', /guest side "80" is not \[GUESTADDR\]:GUESTPORT/],
    ['tcp::-:80', /missing host port/],
    ['tcp::8080-:', /missing guest port/],
    ['tcp::0..2-:80..82', /host port range 0\.\.2: port 0 \(any free port\) cannot start a range/],
    ['tcp::65536-:80', /host port 65536 is not in 0\.\.65535/],
    ['tcp::8080-:0', /guest port 0 is not in 1\.\.65535/],
    ['tcp::80x-:80', /host port "80x" is not a number in 1\.\.65535 or a range A\.\.B/],
    ['tcp::8080-:http', /guest port "http" is not a number/],
    ['tcp:localhost:8080-:80', /host address "localhost" is not an IP address/],
    ['tcp:1.2.3:8080-:80', /host address "1\.2\.3" is not an IP address/],
    ['tcp:010.0.0.1:8080-:80', /host address "010\.0\.0\.1" is not an IP address/],
    ['tcp:::1:8080-:80', /put an IPv6 host address in brackets/],
    ['tcp:[::1:8080-:80', /missing "\]" after the IPv6 host address/],
    ['tcp:[::1]8080-:80', /expected ":" and the host port after \[::1\]/],
    ['tcp:[fe80::1%eth0]:8080-:80', /scoped IPv6 addresses/],
    ['tcp:[1.2.3.4]:8080-:80', /host address "\[1\.2\.3\.4\]" is not an IP address/],
    ['tcp::8080-10.0.2:80', /guest address "10\.0\.2" is not an IP address/],
    ['tcp::8080-[::1::2]:80', /guest address "\[::1::2\]" is not an IPv6 address/],
    ['tcp::8000-8010-:80', /write a port range as A\.\.B/],
    ['tcp::8000..8010-:80', /host port range 8000\.\.8010 needs a guest port range of the same size/],
    ['tcp::8000..8010-:80..81', /host port range 8000\.\.8010 has 11 ports but guest port range 80\.\.81 has 2/],
    ['tcp::8010..8000-:80..90', /host port range 8010\.\.8000 is reversed/],
    ['tcp::1..2000-:1..2000', /host port range 1\.\.2000 has 2000 ports \(at most 1024\)/],
    ['tcp::8000..8001-:65535..65536', /guest port 65536 is not in 1\.\.65535/],
  ];
  for (const [text, want] of hostfwd) {
    test(`--hostfwd ${JSON.stringify(text)}`, () => {
      expect(reason(() => parseHostfwd(text))).toMatch(want);
    });
  }

  const natpf: [string, RegExp][] = [
    ['', /empty rule/],
    ['web,tcp,,8080,80', /6 fields, got 5/],
    ['web,tcp,,8080,,80,x', /6 fields, got 7/],
    ['web,,,8080,,80', /missing protocol/],
    ['web,icmp,,8080,,80', /unknown protocol "icmp"/],
    ['a b,tcp,,8080,,80', /name "a b" may only use letters, digits/],
    ['-x,tcp,,8080,,80', /name "-x"/],
    [`${'n'.repeat(65)},tcp,,8080,,80`, /1\.\.64 characters/],
    ['web,tcp,host,8080,,80', /host address "host" is not an IP address/],
    ['web,tcp,,,,80', /missing host port/],
    ['web,tcp,,8080,,99999', /guest port 99999 is not in 1\.\.65535/],
    ['web,tcp,,8080,10.0.2.300,80', /guest address "10\.0\.2\.300" is not an IP address/],
    ['d,unix,/tmp/d.sock,2375,,2375', /a unix socket forward has no host port/],
    ['d,unix,,,,2375', /missing the socket path/],
  ];
  for (const [text, want] of natpf) {
    test(`--natpf ${JSON.stringify(text)}`, () => {
      expect(reason(() => parseNatpf(text))).toMatch(want);
    });
  }

  const json: [unknown, RegExp][] = [
    [null, /must be a JSON object/],
    [[1], /must be a JSON object/],
    ['tcp::8080-:80', /must be a JSON object/],
    [{ host_port: 8080, guest_port: 80 }, /missing field "proto"/],
    [{ proto: 'tcp', guest_port: 80 }, /missing field "host_port"/],
    [{ proto: 'tcp', host_port: 8080 }, /missing field "guest_port"/],
    [{ proto: 'tcp', host_port: '8080', guest_port: 80 }, /field "host_port" must be a whole number/],
    [{ proto: 'tcp', host_port: 80.5, guest_port: 80 }, /field "host_port" must be a whole number/],
    [{ proto: 7, host_port: 8080, guest_port: 80 }, /field "proto" must be a string/],
    [{ proto: 'tcp', hostport: 8080, guest_port: 80 }, /unknown field "hostport"/],
    [{ proto: 'tcp', host_port: 8080, guest_port: 80, port_count: 0 }, /port_count 0 is not in 1\.\.1024/],
    [{ proto: 'tcp', host_port: 65535, guest_port: 80, port_count: 2 }, /host port range 65535\.\.65536 goes past 65535/],
    [{ proto: 'tcp', host_port: 80, guest_port: 65535, port_count: 2 }, /guest port range 65535\.\.65536 goes past 65535/],
    [{ name: '', proto: 'tcp', host_port: 8080, guest_port: 80 }, /name ""/],
    [{ name: 'x/y', proto: 'tcp', host_port: 8080, guest_port: 80 }, /name "x\/y"/],
    [{ proto: 'unix', guest_port: 2375 }, /missing field "host_addr"/],
    [{ proto: 'unix', host_addr: '/tmp/d.sock', host_port: 2375, guest_port: 2375 }, /a unix socket forward has no host port/],
    [{ proto: 'unix', host_addr: '/tmp/d.sock', guest_port: 2375, port_count: 2 }, /one guest port \(port_count 1\)/],
  ];
  for (const [body, want] of json) {
    test(`JSON ${JSON.stringify(body)}`, () => {
      expect(reason(() => ruleFromJson(body))).toMatch(want);
    });
  }

  test('the message quotes the input for the CLI line; the reason does not', () => {
    try {
      parseHostfwd('tcp::80x-:80');
      expect.unreachable();
    } catch (err) {
      const e = err as ForwardRuleError;
      expect(e.message).toBe('"tcp::80x-:80": host port "80x" is not a number in 1..65535 or a range A..B');
      expect(e.reason).toBe('host port "80x" is not a number in 1..65535 or a range A..B');
      expect(e.code).toBe('VMNAT_BAD_RULE');
    }
  });
});

describe('checkRuleForNetwork', () => {
  const net = { network: parseIpv4('10.0.2.0')!, netmask: parseIpv4('255.255.255.0')!, reserved: [parseIpv4('10.0.2.2')!, parseIpv4('10.0.2.3')!] };
  test.each([
    ['tcp::8080-:80', undefined],
    ['tcp::8080-10.0.2.15:80', undefined],
    ['tcp::8080-10.0.2.254:80', undefined],
    ['tcp::8080-10.0.3.15:80', /outside the guest network 10\.0\.2\.0\/24/],
    ['tcp::8080-10.0.2.0:80', /not a host address of 10\.0\.2\.0\/24/],
    ['tcp::8080-10.0.2.255:80', /not a host address/],
    ['tcp::8080-10.0.2.2:80', /vmnat's own address/],
    ['tcp:[::1]:8080-[fd00:10:0:2::15]:80', undefined],
    ['tcp:[::]:8080-[FD00:10:0:2:0::abcd]:80', undefined],
    ['tcp::8080-[fd00:10:0:3::15]:80', /outside the guest network fd00:10:0:2::\/64/],
    ['tcp::8080-[fd00:10:0:2::2]:80', /vmnat's own address/],
  ])('%s', (text, want) => {
    const net6 = { ...net, ipv6: { prefix: 'fd00:10:0:2::', gateway: 'fd00:10:0:2::2', dns: 'fd00:10:0:2::3' } };
    const f = () => checkRuleForNetwork(parseHostfwd(text), net6);
    if (want === undefined) expect(f).not.toThrow();
    else expect(f).toThrow(want);
  });
});

test('an IPv6 guest address is canonical and printed in brackets', () => {
  const r = parseHostfwd('tcp:[::1]:8080-[FD00:10:0:2:0:0:0:15]:80');
  expect(r.guestAddr).toBe('fd00:10:0:2::15');
  expect(formatHostfwd(r)).toBe('tcp:[::1]:8080-[fd00:10:0:2::15]:80');
  expect(() => checkRuleForNetwork(r, { network: 0x0a000200, netmask: 0xffffff00, reserved: [] })).toThrow(/no IPv6/);
});

describe('properties', () => {
  const arbRule = fc
    .record({
      proto: fc.constantFrom('tcp' as const, 'udp' as const),
      hostAddr: fc.oneof(fc.ipV4().filter((a) => !/(^|\.)0\d/.test(a)), fc.constantFrom('::1', '::', 'fe80::1', '2001:db8::5')),
      hostPort: fc.integer({ min: 1, max: 60000 }),
      guestAddr: fc.option(fc.ipV4(), { nil: undefined }),
      guestPort: fc.integer({ min: 1, max: 60000 }),
      portCount: fc.integer({ min: 1, max: 1024 }),
    })
    .map((r) => ({ ...r, name: `${r.proto}-${r.hostAddr}-${r.portCount === 1 ? r.hostPort : `${r.hostPort}..${r.hostPort + r.portCount - 1}`}` }));

  fcTest.prop([arbRule])('format∘parse = identity in both syntaxes and JSON', (r) => {
    const want: ForwardRule = { name: r.name, proto: r.proto, hostAddr: r.hostAddr, hostPort: r.hostPort, guestAddr: r.guestAddr, guestPort: r.guestPort, portCount: r.portCount };
    expect(parseHostfwd(formatHostfwd(want))).toStrictEqual(want);
    expect(parseNatpf(formatNatpf(want))).toStrictEqual(want);
    expect(ruleFromJson(JSON.parse(JSON.stringify(ruleToJson(want))))).toStrictEqual(want);
  });

  fcTest.prop([fc.string({ maxLength: 60 })])('arbitrary text never throws anything but ForwardRuleError', (text) => {
    for (const parse of [parseHostfwd, parseNatpf]) {
      try {
        parse(text);
      } catch (err) {
        expect(err).toBeInstanceOf(ForwardRuleError);
      }
    }
  });

  fcTest.prop([fc.jsonValue()])('arbitrary JSON never throws anything but ForwardRuleError', (v) => {
    try {
      ruleFromJson(v);
    } catch (err) {
      expect(err).toBeInstanceOf(ForwardRuleError);
    }
  });
});

describe('parseForwardFlags (the command line)', () => {
  const net = { network: parseIpv4('10.0.2.0')!, netmask: parseIpv4('255.255.255.0')!, reserved: [parseIpv4('10.0.2.2')!] };
  const flagError = (f: () => unknown): ForwardRuleError => {
    try {
      f();
    } catch (err) {
      expect(err).toBeInstanceOf(ForwardRuleError);
      return err as ForwardRuleError;
    }
    throw new Error('no error');
  };

  test('both flags, in order', () => {
    expect(parseForwardFlags(['tcp::2222-:22', 'udp::5353-:53'], ['web,tcp,,8080,10.0.2.15,80'], net).map((r) => r.name)).toEqual(['tcp-127.0.0.1-2222', 'udp-127.0.0.1-5353', 'web']);
    expect(parseForwardFlags([], [])).toEqual([]);
  });

  test('a bad rule names its flag and quotes the rule', () => {
    const e = flagError(() => parseForwardFlags(['tcp::8080-:80'], ['web,tcp,,x,,80']));
    expect(e.flag).toBe('--natpf');
    expect(`vmnat: ${e.flag}: ${e.message}`).toBe('vmnat: --natpf: "web,tcp,,x,,80": host port "x" is not a number in 1..65535 or a range A..B');
  });

  test('a guest address outside the network', () => {
    const e = flagError(() => parseForwardFlags(['tcp::8080-192.168.1.5:80'], [], net));
    expect([e.flag, e.reason]).toEqual(['--hostfwd', 'guest address 192.168.1.5 is outside the guest network 10.0.2.0/24']);
  });

  test('the same name twice; the same host port twice', () => {
    expect(flagError(() => parseForwardFlags([], ['a,tcp,,1000,,80', 'a,tcp,,1001,,80'])).reason).toBe('the forward name a is given twice');
    expect(flagError(() => parseForwardFlags(['tcp::8005-:80'], ['b,tcp,,8000..8010,,8000..8010'])).reason).toBe('tcp 127.0.0.1:8000..8010 overlaps forward tcp-127.0.0.1-8005 (127.0.0.1:8005)');
    expect(flagError(() => parseForwardFlags(['unix:/tmp/a.sock-:1', 'unix:/tmp/a.sock-:2'], [])).reason).toBe('socket /tmp/a.sock is given twice (forward unix-/tmp/a.sock)');
    // different protocol or address: no overlap
    expect(parseForwardFlags(['tcp::8005-:80', 'udp::8005-:80', 'tcp:127.0.0.2:8005-:80'], [])).toHaveLength(3);
  });
});
