import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import net from 'node:net';
import path from 'node:path';
import { once } from 'node:events';
import { ApiServer } from '../../src/api/server.ts';
import { PortForwarder } from '../../src/portfwd/forwarder.ts';
import { runCtl, CTL_USAGE, table, bytes } from '../../src/ctl.ts';
import { FakeBackend } from './api-fakes.ts';
import { LoopbackDialer, waitFor } from './portfwd-fakes.ts';

let dir: string;
let sock: string;
let fwd: PortForwarder;
let backend: FakeBackend;
let api: ApiServer;

beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vmnat-ctl-'));
  sock = path.join(dir, 'api.sock');
  fwd = new PortForwarder({ dialer: new LoopbackDialer() });
  backend = new FakeBackend(fwd);
  api = await ApiServer.listen({ path: sock, backend });
});
afterEach(async () => {
  await api.close();
  await fwd.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

interface Run {
  code: number;
  out: string;
  err: string;
}

async function ctl(args: string[], opts: { env?: Record<string, string>; signal?: AbortSignal; onOut?: (s: string) => void } = {}): Promise<Run> {
  let out = '';
  let err = '';
  const code = await runCtl(args, {
    stdout: {
      write: (s: string) => {
        out += s;
        opts.onOut?.(out);
      },
    },
    stderr: { write: (s: string) => (err += s) },
    env: opts.env ?? {},
    ...(opts.signal ? { signal: opts.signal } : {}),
  });
  return { code, out, err };
}

const S = () => ['--api-socket', sock];

describe('forward add / ls / rm', () => {
  test('add in qemu syntax, list as a table, remove by name', async () => {
    const add = await ctl([...S(), 'forward', 'add', 'tcp::0-:80']);
    const port = fwd.list()[0]!.rule.hostPort; // 0: the port the kernel picked
    expect(add).toEqual({ code: 0, out: `added tcp-127.0.0.1-${port}: tcp 127.0.0.1:${port} -> guest (lease):80\n`, err: '' });
    expect(fwd.get(`tcp-127.0.0.1-${port}`)).toBeDefined();

    const ls = await ctl([...S(), 'forward', 'ls']);
    expect(ls.code).toBe(0);
    const lines = ls.out.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^NAME\s+PROTO\s+HOST\s+GUEST\s+ACTIVE\s+TOTAL$/);
    expect(lines[1]).toMatch(new RegExp(`^tcp-127\\.0\\.0\\.1-${port}\\s+tcp\\s+127\\.0\\.0\\.1:${port}\\s+\\(lease\\):80\\s+0\\s+0$`));

    const rm = await ctl([...S(), 'forward', 'rm', `tcp-127.0.0.1-${port}`]);
    expect(rm).toEqual({ code: 0, out: `removed tcp-127.0.0.1-${port}\n`, err: '' });
    expect(fwd.list()).toEqual([]);
    expect((await ctl([...S(), 'forward', 'ls'])).out).toBe('no forwards\n');
  });

  test('add in VBoxManage syntax (flag or bare), and --name', async () => {
    expect((await ctl([...S(), 'forward', 'add', '--natpf', 'ssh,tcp,,0,10.0.2.15,22'])).code).toBe(0);
    expect((await ctl([...S(), 'forward', 'add', 'dns,udp,,0,,53'])).code).toBe(0);
    expect((await ctl([...S(), 'forward', 'add', '--name', 'web', '--hostfwd', 'tcp::0-:80'])).code).toBe(0);
    const [p1, p2, p3] = ['ssh', 'dns', 'web'].map((n) => fwd.get(n)!.hostPort);
    expect(fwd.list().map((e) => [e.rule.name, e.rule.proto, e.rule.guestAddr])).toEqual([
      ['ssh', 'tcp', '10.0.2.15'],
      ['dns', 'udp', undefined],
      ['web', 'tcp', undefined],
    ]);
  });

  test('--json prints the API objects', async () => {
    const add = await ctl([...S(), '--json', 'forward', 'add', 'udp:0.0.0.0:0-10.0.2.15:53']);
    const port = fwd.list()[0]!.rule.hostPort;
    expect(JSON.parse(add.out)).toEqual({ name: `udp-0.0.0.0-${port}`, proto: 'udp', host_addr: '0.0.0.0', host_port: port, guest_addr: '10.0.2.15', guest_port: 53, port_count: 1, tcp_accepted: 0, tcp_active: 0, udp_flows: 0 });
    const ls = await ctl(['forward', 'ls', '--json', ...S()]);
    expect(JSON.parse(ls.out)).toEqual([JSON.parse(add.out)]);
  });

  test('rm accepts the rule itself', async () => {
    await ctl([...S(), 'forward', 'add', 'tcp::0-:80']);
    const port = fwd.list()[0]!.rule.hostPort;
    expect((await ctl([...S(), 'forward', 'rm', `tcp::${port}-:80`])).code).toBe(0);
    expect(fwd.list()).toEqual([]);
  });

  test('a bad rule: one line naming the flag, exit 2, no request', async () => {
    const r = await ctl([...S(), 'forward', 'add', 'tcp::80x-:80']);
    expect(r).toEqual({ code: 2, out: '', err: 'vmnat: --hostfwd: "tcp::80x-:80": host port "80x" is not a number in 1..65535 or a range A..B\n' });
    const n = await ctl([...S(), 'forward', 'add', '--natpf', 'web,tcp,,8080,80']);
    expect(n.code).toBe(2);
    expect(n.err).toMatch(/^vmnat: --natpf: "web,tcp,,8080,80": expected NAME,PROTO,HOSTIP,HOSTPORT,GUESTIP,GUESTPORT .*\(6 fields, got 5\)\n$/);
    expect(api.stats.requests).toBe(0);
  });

  test('a taken port: exit 1 with the API reason', async () => {
    const taken = net.createServer();
    taken.listen(0, '127.0.0.1');
    await once(taken, 'listening');
    const port = (taken.address() as net.AddressInfo).port;
    try {
      const r = await ctl([...S(), 'forward', 'add', `tcp::${port}-:80`]);
      expect(r.code).toBe(1);
      expect(r.err).toBe(`vmnat: forward add: tcp 127.0.0.1:${port} is already in use (forward tcp-127.0.0.1-${port})\n`);
    } finally {
      taken.close();
    }
  });

  test('removing an unknown forward: exit 1', async () => {
    const r = await ctl([...S(), 'forward', 'rm', 'nope']);
    expect(r).toEqual({ code: 1, out: '', err: 'vmnat: forward rm: no forward named nope\n' });
  });
});

describe('reading', () => {
  test('leases as a table', async () => {
    const r = await ctl([...S(), 'leases']);
    expect(r.code).toBe(0);
    const lines = r.out.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^IP\s+MAC\s+HOSTNAME\s+STATE\s+EXPIRES$/);
    expect(lines[1]).toMatch(/^10\.0\.2\.15\s+52:54:00:12:34:56\s+vm1\s+bound\s+in 24h$/);
    expect(lines[2]).toMatch(/^10\.0\.2\.16\s+52:54:00:12:34:57\s+-\s+offered\s+in 50s$/);
  });

  test('flows as a table with readable byte counts', async () => {
    backend.flowList.push({ proto: 'udp', guest: '10.0.2.15:5353', remote: '10.0.2.2:40000', forward: 'dns', bytes_from_guest: 3 * 1024 * 1024, bytes_to_guest: 1536 });
    backend.flowList.push({ proto: 'tcp', guest: '10.0.2.15:40001', remote: '10.0.2.2:8080', host: '127.0.0.1:8080', host_local: '127.0.0.1:54321', state: 'established', bytes_from_guest: 80, bytes_to_guest: 0 });
    backend.flowList.push({ proto: 'tcp', guest: '10.0.2.15:22', remote: '10.0.2.2:61000', forward: 'ssh', host: '127.0.0.1:45000', host_local: '127.0.0.1:2222', state: 'established', bytes_from_guest: 0, bytes_to_guest: 0 });
    const r = await ctl([...S(), 'flows']);
    const lines = r.out.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^PROTO\s+GUEST\s+REMOTE\s+FORWARD\s+STATE\s+FROM GUEST\s+TO GUEST\s+HOST SOCKET$/);
    expect(lines[1]).toMatch(/^tcp\s+10\.0\.2\.15:40000\s+192\.0\.2\.1:443\s+-\s+established\s+100 B\s+2\.0 KiB\s+-$/);
    expect(lines[2]).toMatch(/^udp\s+10\.0\.2\.15:5353\s+10\.0\.2\.2:40000\s+dns\s+-\s+3\.0 MiB\s+1\.5 KiB\s+-$/);
    // netstat's view of vmnat: which host socket carries each guest connection, and which way.
    expect(lines[3]).toMatch(/\s127\.0\.0\.1:54321 -> 127\.0\.0\.1:8080$/);
    expect(lines[4]).toMatch(/\s127\.0\.0\.1:2222 <- 127\.0\.0\.1:45000$/);
    backend.flowList = [];
    expect((await ctl([...S(), 'flows'])).out).toBe('no open flows\n');
  });

  test('stats as dotted key/value lines; --json as JSON', async () => {
    const r = await ctl([...S(), 'stats']);
    expect(r.out).toMatch(/^nat\.refused\s+3$/m);
    expect(r.out).toMatch(/^portfwd\.tcpAccepted\s+0$/m);
    expect(r.out).toMatch(/^api\.requests\s+1$/m);
    const j = await ctl([...S(), 'stats', '--json']);
    expect(JSON.parse(j.out)).toMatchObject({ nat: { refused: 3 } });
  });

  test('config and health', async () => {
    expect((await ctl([...S(), 'config'])).out).toBe('network  10.0.2.0/24\n');
    expect((await ctl([...S(), 'health'])).out).toMatch(/^status\s+ok$/m);
  });

  test('the socket from $VMNAT_API_SOCKET', async () => {
    expect((await ctl(['health'], { env: { VMNAT_API_SOCKET: sock } })).code).toBe(0);
  });
});

describe('events', () => {
  test('one readable line per event until interrupted', async () => {
    const ac = new AbortController();
    const running = ctl([...S(), 'events'], {
      signal: ac.signal,
      onOut: (out) => {
        if (out.split('\n').length > 4) ac.abort();
      },
    });
    await waitFor(() => backend.listeners.size === 1);
    backend.emit({ type: 'lease', event: 'released', ip: '10.0.2.15', mac: '52:54:00:12:34:56' });
    const port = (await fwd.add({ name: 'e', proto: 'tcp', hostAddr: '127.0.0.1', hostPort: 0, guestAddr: undefined, guestPort: 22, portCount: 1 })).hostPort;
    backend.emit({ type: 'flow', event: 'close', reason: 'fin', flow: { proto: 'tcp', guest: '10.0.2.15:22', remote: '10.0.2.2:50000', forward: 'e', bytes_from_guest: 2048, bytes_to_guest: 10 } });
    const r = await running;
    expect(r.code).toBe(0);
    const lines = r.out.trimEnd().split('\n').map((l) => l.replace(/^\d\d:\d\d:\d\d /, ''));
    expect(lines).toEqual([
      'lease bound 10.0.2.15 52:54:00:12:34:56 (vm1) [already bound]',
      'lease released 10.0.2.15 52:54:00:12:34:56',
      `forward added e: tcp 127.0.0.1:${port} -> guest (lease):22`,
      'flow close tcp 10.0.2.15:22 <-> 10.0.2.2:50000 [forward e] 2.0 KiB from guest, 10 B to guest (fin)',
    ]);
  });

  test('--json passes the NDJSON lines through; ends when vmnat closes', async () => {
    const running = ctl([...S(), 'events', '--json']);
    await waitFor(() => backend.listeners.size === 1);
    backend.emit({ type: 'lease', event: 'bound', ip: '10.0.2.20', mac: '52:54:00:00:00:20' });
    await waitFor(() => api.stats.eventsSent === 2);
    await api.close();
    const r = await running;
    expect(r.code).toBe(0);
    const events = r.out.trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(events.map((e) => e['ip'])).toEqual(['10.0.2.15', '10.0.2.20']);
  });
});

describe('usage', () => {
  test('no socket: exit 2 with the way to give one', async () => {
    expect(await ctl(['leases'])).toEqual({ code: 2, out: '', err: 'vmnat: needs --api-socket PATH (or VMNAT_API_SOCKET) (see vmnat ctl --help)\n' });
  });

  test('nobody at the socket: exit 1 with a hint', async () => {
    const r = await ctl(['--api-socket', path.join(dir, 'none.sock'), 'leases']);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^vmnat: cannot reach the API at .*none\.sock: ENOENT \(is vmnat running with --api-socket at this path\?\)\n$/);
  });

  test.each([
    [['frobnicate'], /unknown command "frobnicate"/],
    [['forward', 'zap'], /forward: unknown subcommand "zap"/],
    [['forward', 'add'], /forward add: needs a rule/],
    [['forward', 'add', 'tcp::1-:1', 'tcp::2-:2'], /forward add: takes one rule/],
    [['forward', 'rm'], /forward rm: needs a forward NAME/],
    [['leases', 'extra'], /unexpected argument "extra"/],
    [['--natpf', 'x,tcp,,1,,1', 'leases'], /only apply to "forward add"/],
    [['--bogus', 'leases'], /--bogus: unknown option/],
    [['leases', '--api-socket'], /--api-socket: needs a value/],
  ])('%j → exit 2', async (args, want) => {
    const r = await ctl(args[0] === 'leases' && args[1] === '--api-socket' ? args : [...S(), ...args]);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(want);
    expect(r.err.split('\n')).toHaveLength(2);
  });

  test('--help', async () => {
    expect(await ctl(['--help'])).toEqual({ code: 0, out: CTL_USAGE, err: '' });
    expect(CTL_USAGE).toMatch(/listens on 127\.0\.0\.1 only/);
  });
});

test('table and bytes helpers', () => {
  expect(table(['A', 'NUM'], [['x', 5], ['long', 100]])).toBe('A     NUM\nx       5\nlong  100');
  expect([bytes(0), bytes(1023), bytes(1024), bytes(10 * 1024 * 1024), bytes(5 * 1024 ** 4)]).toEqual(['0 B', '1023 B', '1.0 KiB', '10 MiB', '5.0 TiB']);
});
