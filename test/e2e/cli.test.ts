/**
 * The command line as a user meets it: bad flags get one line naming the flag and exit 2; a socket
 * path a live vmnat serves is refused; SIGTERM exits 0 and removes the socket file.
 */
import { afterAll, describe, expect, test } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { killAll, run, startVmnat, VMNAT_BIN } from '../helpers/proc.ts';

afterAll(() => killAll());
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vmnat-cli-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const vmnat = (args: string[]) => run([process.execPath, VMNAT_BIN, ...args], { timeoutMs: 20_000 });

describe('bad flags', () => {
  const cases: [string[], RegExp][] = [
    [['--mtu', '70000'], /^vmnat: --mtu: 70000 is not in 68\.\.65520$/],
    [['--mtu', 'big'], /^vmnat: --mtu: "big" is not a whole number$/],
    [['--net', '10.0.2.0/33'], /^vmnat: --net: /],
    [['--net', '10.0.2.1/24'], /^vmnat: --net: 10\.0\.2\.1\/24 has host bits set/],
    [['--dhcp-static', 'nonsense'], /^vmnat: --dhcp-static: "nonsense" is not MAC=IP/],
    [['--dhcp-static', '52:54:00:12:34:56=192.168.1.5'], /^vmnat: --dhcp-static: 192\.168\.1\.5 is not a host address in 10\.0\.2\.0\/24$/],
    [['--dhcp-lease-time', '-5'], /^vmnat: --dhcp-lease-time: /],
    [['--log-level', 'loud'], /^vmnat: --log-level: "loud" is not one of error\|warn\|info\|debug$/],
    [['--frobnicate'], /^vmnat: --frobnicate: unknown flag/],
    [['--socket', '/tmp/a', '--socket', '/tmp/a'], /^vmnat: --socket: path \/tmp\/a given twice$/],
    [['--netns', '/run/netns/x'], /^vmnat: --netns: only applies to --tap \(give it after the --tap it is for\)$/],
    [['--tap', 't0', '--netns', '/run/netns/x', '--netns-pid', '1'], /^vmnat: --netns-pid: given twice for --tap t0$/],
    [['--anti-spoof', 'maybe'], /^vmnat: --anti-spoof: "maybe" is not one of on\|off$/],
    [['--tap', 'this-name-is-too-long'], /^vmnat: --tap: /],
    [['--domain', 'bad..name'], /^vmnat: --domain: /],
    [['--fd', '99'], /^vmnat: --fd: /],
    [['--socket'], /^vmnat: --socket: needs a value$/],
    [['--', 'no-such-command-vmnat'], /^vmnat: --: no-such-command-vmnat: command not found$/],
    [['--tcp-buffer', '12'], /^vmnat: --tcp-buffer: 12 is not in 16K\.\.256M$/],
    [['--tcp-buffer', 'lots'], /^vmnat: --tcp-buffer: "lots" is not a size/],
    [['--tcp-keepalive', '1.5'], /^vmnat: --tcp-keepalive: /],
    [['--tcp-connect-timeout', '0'], /^vmnat: --tcp-connect-timeout: 0 is not in 1\.\.600$/],
    [['--udp-timeout', '0'], /^vmnat: --udp-timeout: 0 is not in 1\.\.86400$/],
    [['--max-flows', '0'], /^vmnat: --max-flows: /],
    [['--dns-server', 'not-an-ip'], /^vmnat: --dns-server: /],
    [['--dns-host', 'nameonly'], /^vmnat: --dns-host: /],
    [['--dns-hosts', '/nonexistent/hosts'], /^vmnat: --dns-hosts: cannot read \/nonexistent\/hosts: ENOENT$/],
    [['--dns-mode', 'magic'], /^vmnat: --dns-mode: "magic" is not one of forward\|host$/],
    [['--deny', '10.0.0.0/33'], /^vmnat: --deny: "10\.0\.0\.0\/33" is not an IPv4 CIDR/],
    [['--deny', 'example.com'], /^vmnat: --deny: "example\.com" is not an IPv4 CIDR/],
    [['--deny', '192.168.1.1/24'], /^vmnat: --deny: 192\.168\.1\.1\/24 has host bits set \(did you mean 192\.168\.1\.0\/24\?\)$/],
    [['--allow-link-local=yes'], /^vmnat: --allow-link-local: /],
  ];
  for (const [args, want] of cases) {
    test(args.join(' '), async () => {
      const r = await vmnat(args);
      expect(r.code).toBe(2);
      expect(r.stdout).toBe('');
      const lines = r.stderr.trimEnd().split('\n');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(want);
    });
  }
});

describe('help and version', () => {
  test('--help documents every transport and exits 0', async () => {
    const r = await vmnat(['--help']);
    expect(r.code).toBe(0);
    for (const flag of ['--socket', '--fd', '--stream', '--tap', '--netns', '--net', '--mtu', '--dhcp-static', '--pcap']) expect(r.stdout).toContain(flag);
  });
  test('--version prints the package version', async () => {
    const r = await vmnat(['--version']);
    const pkg = JSON.parse(fs.readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
    expect(r.stdout.trim()).toBe(`vmnat ${pkg.version}`);
  });
});

describe('--socket lifecycle', () => {
  test('ready line, live path refused with exit 2, SIGTERM exits 0 and removes the socket', async () => {
    const sock = path.join(tmp, 'sub', 'net.sock');
    const a = await startVmnat(['--socket', sock]);
    expect(a.ready).toEqual({
      link: 'socket',
      path: sock,
      network: '10.0.2.0/24',
      gateway: '10.0.2.2',
      dns: '10.0.2.3',
      guest_ip: '10.0.2.15',
      netmask: '255.255.255.0',
      mtu: 1500,
      gateway_mac: '52:55:0a:00:02:02',
      mode: 'nat',
      ipv6_prefix: 'fd00:10:0:2::/64',
      gateway6: 'fd00:10:0:2::2',
      dns6: 'fd00:10:0:2::3',
    });
    expect(fs.statSync(sock).isSocket()).toBe(true);
    const b = await vmnat(['--socket', sock]);
    expect(b.code).toBe(2);
    expect(b.stderr.trim().split('\n')).toHaveLength(1);
    expect(b.stderr).toMatch(/^vmnat: --socket: .*in use/);
    expect(await a.stop()).toBe(0);
    expect(fs.existsSync(sock)).toBe(false);
  });

  test('a stale socket file left by a dead process is replaced', async () => {
    const sock = path.join(tmp, 'stale.sock');
    const a = await startVmnat(['--socket', sock]);
    a.child.kill('SIGKILL');
    await a.exited;
    expect(fs.existsSync(sock)).toBe(true);
    const b = await startVmnat(['--socket', sock]);
    expect(b.ready.path).toBe(sock);
    expect(await b.stop()).toBe(0);
  });

  test('SIGINT exits 0 and removes the socket too', async () => {
    const sock = path.join(tmp, 'int.sock');
    const a = await startVmnat(['--socket', sock]);
    a.child.kill('SIGINT');
    expect((await a.exited).code).toBe(0);
    expect(fs.existsSync(sock)).toBe(false);
  });

  test('spawn mode: the command gets the socketpair as fd 4, its output passes through, vmnat exits with its status', async () => {
    const r = await vmnat(['--', 'sh', '-c', 'test -S /proc/self/fd/4 && echo child-sees-fd4; exit 3']);
    expect(r.stdout).toContain('child-sees-fd4');
    expect(r.stdout.split('\n')[0]).toMatch(/^\{"link":"spawn"/);
    expect(r.code).toBe(3);
  });

  test('--net changes the whole layout', async () => {
    const sock = path.join(tmp, 'net2.sock');
    const a = await startVmnat(['--socket', sock, '--net', '192.168.77.0/24', '--mtu', '9000']);
    expect(a.ready).toMatchObject({ network: '192.168.77.0/24', gateway: '192.168.77.2', dns: '192.168.77.3', guest_ip: '192.168.77.15', mtu: 9000, gateway_mac: '52:55:c0:a8:4d:02' });
    expect(await a.stop()).toBe(0);
  });
});
