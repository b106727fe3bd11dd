import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import net from 'node:net';
import dgram from 'node:dgram';
import os from 'node:os';
import fs from 'node:fs';
import path from 'node:path';
import { once } from 'node:events';
import { ForwardError, PortForwarder, type ForwardEvent, type GuestDialer, type HostUdpPeer } from '../../src/portfwd/forwarder.ts';
import { ForwardRuleError, parseHostfwd, parseNatpf } from '../../src/portfwd/rules.ts';
import { parseIpv4 } from '../../src/stack/wire/addr.ts';
import { LoopbackDialer, addRange, connect, freePort, freePortRange, roundTrip, sleep, tcpEcho, udpEcho, udpRoundTrip, waitFor } from './portfwd-fakes.ts';

let dialer: LoopbackDialer;
let fwd: PortForwarder;
const cleanups: (() => unknown)[] = [];

beforeEach(() => {
  dialer = new LoopbackDialer();
  fwd = new PortForwarder({ dialer });
});
afterEach(async () => {
  await fwd.close();
  for (const c of cleanups.splice(0)) await c();
});

async function echo() {
  const e = await tcpEcho();
  cleanups.push(() => e.close());
  return e;
}

function errorOf(p: Promise<unknown>): Promise<NodeJS.ErrnoException> {
  return p.then(
    () => {
      throw new Error('expected a failure');
    },
    (err: NodeJS.ErrnoException) => err,
  );
}

const hasIpv6Loopback = Object.values(os.networkInterfaces()).some((list) => list?.some((i) => i.address === '::1'));

describe('TCP forwards', () => {
  test('a host connection reaches the guest service and data flows both ways', async () => {
    const guest = await echo();
    const port = (await fwd.add(parseHostfwd(`tcp::0-:${guest.port}`))).hostPort;
    const s = await connect(port);
    const data = Buffer.alloc(256 * 1024, 7);
    data.write('hello');
    expect((await roundTrip(s, data)).equals(data)).toBe(true);
    s.destroy();

    expect(dialer.tcpTargets).toHaveLength(1);
    expect(dialer.tcpTargets[0]).toMatchObject({ rule: `tcp-127.0.0.1-${port}`, proto: 'tcp', guestIp: undefined, guestPort: guest.port, clientAddr: '127.0.0.1', hostPort: port });
    expect(fwd.list()).toEqual([expect.objectContaining({ rule: parseHostfwd(`tcp::${port}-:${guest.port}`), tcpAccepted: 1 })]);
    await waitFor(() => fwd.list()[0]!.tcpActive === 0);
  });

  test('100 host clients in parallel all get their own bytes back', async () => {
    const guest = await echo();
    const port = (await fwd.add(parseHostfwd(`tcp::0-:${guest.port}`))).hostPort;
    const results = await Promise.all(
      Array.from({ length: 100 }, async (_, i) => {
        const s = await connect(port);
        const data = Buffer.alloc(16 * 1024, i);
        const back = await roundTrip(s, data);
        s.destroy();
        return back.equals(data);
      }),
    );
    expect(results.every(Boolean)).toBe(true);
    expect(fwd.list()[0]!.tcpAccepted).toBe(100);
  });

  test('a fixed guest address reaches the dialer as a number', async () => {
    const guest = await echo();
    const port = (await fwd.add(parseHostfwd(`tcp::0-10.0.2.15:${guest.port}`))).hostPort;
    const s = await connect(port);
    await roundTrip(s, Buffer.from('x'));
    s.destroy();
    expect(dialer.tcpTargets[0]!.guestIp).toBe(parseIpv4('10.0.2.15'));
  });

  test('the empty host address listens on 127.0.0.1 only; 0.0.0.0 listens everywhere', async () => {
    const guest = await echo();
    const p1 = (await fwd.add(parseHostfwd(`tcp::0-:${guest.port}`))).hostPort;
    const p2 = (await fwd.add(parseHostfwd(`tcp:0.0.0.0:0-:${guest.port}`))).hostPort;
    // 127.0.0.2 is another local address (all of 127/8 is loopback on Linux).
    expect((await errorOf(connect(p1, '127.0.0.2'))).code).toBe('ECONNREFUSED');
    const s = await connect(p2, '127.0.0.2');
    expect((await roundTrip(s, Buffer.from('all'))).toString()).toBe('all');
    s.destroy();
  });

  test('a taken port rejects with EADDRINUSE naming the rule, and nothing is added', async () => {
    const taken = net.createServer();
    taken.listen(0, '127.0.0.1');
    await once(taken, 'listening');
    cleanups.push(() => new Promise((r) => taken.close(r)));
    const port = (taken.address() as net.AddressInfo).port;
    const err = await errorOf(fwd.add(parseNatpf(`web,tcp,,${port},,80`)));
    expect(err).toBeInstanceOf(ForwardError);
    expect(err.code).toBe('EADDRINUSE');
    expect((err as ForwardError).rule).toBe('web');
    expect(err.message).toBe(`tcp 127.0.0.1:${port} is already in use (forward web)`);
    expect(fwd.list()).toEqual([]);
    expect(fwd.stats.addFailed).toBe(1);
  });

  test('a range with a taken port in the middle closes the ports it had opened', async () => {
    // The blocker holds the third port for the whole test; should another process take one of the
    // first two meanwhile (they were only free a moment ago), the test takes another range.
    for (let attempt = 0; ; attempt++) {
      const first = await freePortRange(3);
      const blocker = net.createServer();
      const listening = await new Promise<boolean>((resolve) => {
        blocker.once('error', () => resolve(false));
        blocker.listen(first + 2, '127.0.0.1', () => resolve(true));
      });
      if (!listening) continue;
      cleanups.push(() => new Promise((r) => blocker.close(r)));
      const err = await errorOf(fwd.add(parseHostfwd(`tcp::${first}..${first + 2}-:80..82`)));
      expect(err.code).toBe('EADDRINUSE');
      if (!err.message.includes(`127.0.0.1:${first + 2} is already in use`) && attempt < 20) continue;
      expect(err.message).toContain(`127.0.0.1:${first + 2} is already in use`);
      for (const p of [first, first + 1]) expect((await errorOf(connect(p))).code).toBe('ECONNREFUSED');
      break;
    }
  });

  test('a port range maps each host port to its guest port', async () => {
    const guests = [await echo(), await echo(), await echo()];
    // Guest ports are consecutive only in the rule; the fake maps guest port N to 127.0.0.1:N,
    // so check the mapping through the targets the dialer saw.
    const first = await addRange((f) => fwd.add(parseHostfwd(`tcp::${f}..${f + 2}-:40000..40002`)), 3);
    for (let i = 0; i < 3; i++) {
      const s = new net.Socket();
      s.on('error', () => undefined);
      s.connect(first + i, '127.0.0.1');
      await once(s, 'connect');
      await waitFor(() => dialer.tcpTargets.length === i + 1);
      s.destroy();
    }
    expect(dialer.tcpTargets.map((t) => [t.hostPort, t.guestPort])).toEqual([
      [first, 40000],
      [first + 1, 40001],
      [first + 2, 40002],
    ]);
    expect(guests).toHaveLength(3);
  });

  test('remove closes the listener (ECONNREFUSED) while an open connection still finishes', async () => {
    const guest = await echo();
    const rule = await fwd.add(parseHostfwd(`tcp::0-:${guest.port}`));
    const port = rule.hostPort;
    const open = await connect(port);
    expect((await roundTrip(open, Buffer.from('before'))).toString()).toBe('before');

    expect(await fwd.remove(rule.name)).toBe(true);
    expect(fwd.list()).toEqual([]);
    expect((await errorOf(connect(port))).code).toBe('ECONNREFUSED');

    const big = Buffer.alloc(1 << 20, 3);
    expect((await roundTrip(open, big)).length).toBe(big.length);
    open.end();
    await once(open, 'close');
    expect(await fwd.remove(rule.name)).toBe(false);
  });

  test('the guest refusing resets the host client', async () => {
    const closedGuestPort = await freePort();
    const port = (await fwd.add(parseHostfwd(`tcp::0-:${closedGuestPort}`))).hostPort;
    const s = net.connect(port, '127.0.0.1');
    const [err] = (await once(s, 'error')) as [NodeJS.ErrnoException];
    expect(err.code).toBe('ECONNRESET');
  });

  test('a dialer that throws is counted; the client is reset and the forwarder keeps going', async () => {
    const guest = await echo();
    const port = (await fwd.add(parseHostfwd(`tcp::0-:${guest.port}`))).hostPort;
    dialer.throwOnDial = true;
    // The reset may come before or after the client saw its connect complete.
    const s = net.connect(port, '127.0.0.1');
    const [err] = (await once(s, 'error')) as [NodeJS.ErrnoException];
    expect(err.code).toBe('ECONNRESET');
    expect(fwd.stats.dialerThrew).toBe(1);
    dialer.throwOnDial = false;
    const s2 = await connect(port);
    expect((await roundTrip(s2, Buffer.from('ok'))).toString()).toBe('ok');
    s2.destroy();
  });

  test('host port 0: the kernel picks a free port; the rule as added (and its generated name) carries it', async () => {
    const guest = await echo();
    const a = await fwd.add(parseHostfwd(`tcp::0-:${guest.port}`));
    const b = await fwd.add(parseHostfwd(`tcp::0-:${guest.port}`));
    expect(a.hostPort).toBeGreaterThan(0);
    expect(b.hostPort).not.toBe(a.hostPort);
    expect(a.name).toBe(`tcp-127.0.0.1-${a.hostPort}`);
    expect(fwd.list().map((e) => e.rule.hostPort)).toEqual([a.hostPort, b.hostPort]);
    const s = await connect(b.hostPort);
    expect((await roundTrip(s, Buffer.from('via port 0'))).toString()).toBe('via port 0');
    s.destroy();
    expect(dialer.tcpTargets[0]!.hostPort).toBe(b.hostPort);
    expect(() => parseHostfwd('tcp::0..3-:80..83')).toThrow(/port 0/);
  });

  test('a second rule with the same name is refused with EEXIST', async () => {
    await fwd.add(parseNatpf('web,tcp,,0,,80'));
    const err = await errorOf(fwd.add(parseNatpf('web,tcp,,0,,80')));
    expect(err.code).toBe('EEXIST');
    // and the loser never opened a listener
    expect(fwd.list()).toHaveLength(1);
    expect(fwd.stats.addFailed).toBe(1);
  });

  test('concurrent adds of one name: exactly one wins', async () => {
    const results = await Promise.allSettled([fwd.add(parseNatpf('x,tcp,,0,,80')), fwd.add(parseNatpf('x,tcp,,0,,80'))]);
    expect(results.map((r) => r.status).sort()).toEqual(['fulfilled', 'rejected']);
    expect(fwd.list()).toHaveLength(1);
  });

  test('a guest address outside the guest network is a bad rule', async () => {
    const f = new PortForwarder({ dialer, guestNetwork: { network: parseIpv4('10.0.2.0')!, netmask: parseIpv4('255.255.255.0')!, reserved: [parseIpv4('10.0.2.2')!] } });
    await expect(f.add(parseHostfwd('tcp::0-10.9.9.9:80'))).rejects.toThrow(ForwardRuleError);
    await f.close();
  });

  test('a host address that is not ours: EADDRNOTAVAIL', async () => {
    const err = await errorOf(fwd.add(parseHostfwd('tcp:192.0.2.77:8080-:80')));
    expect(err.code).toBe('EADDRNOTAVAIL');
    expect(err.message).toMatch(/192\.0\.2\.77 is not an address of this host/);
  });

  test.skipIf(!hasIpv6Loopback)('an IPv6 listener on [::1]', async () => {
    const guest = await echo();
    const port = (await fwd.add(parseHostfwd(`tcp:[::1]:0-:${guest.port}`))).hostPort;
    const s = await connect(port, '::1');
    expect((await roundTrip(s, Buffer.from('v6'))).toString()).toBe('v6');
    s.destroy();
    expect(dialer.tcpTargets[0]!.clientAddr).toBe('::1');
    // IPv6-only: the same port on 127.0.0.1 is not ours
    expect((await errorOf(connect(port))).code).toBe('ECONNREFUSED');
  });

  test('events: added and removed, with the rule', async () => {
    const events: ForwardEvent[] = [];
    const unsubscribe = fwd.subscribe((e) => events.push(e));
    const port = (await fwd.add(parseNatpf(`ev,udp,,0,10.0.2.15,53`))).hostPort;
    await fwd.remove('ev');
    unsubscribe();
    await fwd.add(parseNatpf(`ev2,udp,,${port},,53`));
    const rule = { name: 'ev', proto: 'udp', host_addr: '127.0.0.1', host_port: port, guest_addr: '10.0.2.15', guest_port: 53, port_count: 1 };
    expect(events).toEqual([
      { type: 'forward', event: 'added', rule },
      { type: 'forward', event: 'removed', rule },
    ]);
  });
});

describe('unix socket forwards (the host side is a socket file)', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vmnat-unixfwd-'));
    cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
  });
  const connectUnix = (p: string): Promise<net.Socket> =>
    new Promise((resolve, reject) => {
      const s = net.connect(p);
      s.once('connect', () => {
        s.off('error', reject);
        resolve(s);
      });
      s.once('error', reject);
    });

  test('listens on the path with mode 0600; bytes reach the guest port both ways; remove deletes the file', async () => {
    const guest = await echo();
    const sock = path.join(dir, 'docker-1.sock');
    const rule = await fwd.add(parseHostfwd(`unix:${sock}-:${guest.port}`));
    expect(rule).toMatchObject({ name: `unix-${sock}`, proto: 'unix', hostAddr: sock, hostPort: 0 });
    const st = fs.lstatSync(sock);
    expect(st.isSocket()).toBe(true);
    expect(st.mode & 0o777).toBe(0o600);

    const s = await connectUnix(sock);
    const data = Buffer.alloc(512 * 1024, 9);
    expect((await roundTrip(s, data)).equals(data)).toBe(true);
    s.destroy();
    expect(dialer.tcpTargets[0]).toMatchObject({ rule: rule.name, proto: 'unix', guestPort: guest.port, clientAddr: `unix:${sock}` });

    expect(await fwd.remove(rule.name)).toBe(true);
    expect(fs.existsSync(sock)).toBe(false);
    expect((await errorOf(connectUnix(sock))).code).toBe('ENOENT');
  });

  test('a stale socket file (nobody accepts on it) is replaced', async () => {
    const guest = await echo();
    const sock = path.join(dir, 'stale.sock');
    // A socket file left behind: bound, then its server closed without unlinking.
    const old = net.createServer();
    await new Promise<void>((r) => old.listen(sock, r));
    const fd = (old as unknown as { _handle: { fd: number } })._handle.fd;
    expect(fd).toBeGreaterThan(0);
    fs.linkSync(sock, `${sock}.keep`); // libuv unlinks on close: keep the inode under another name
    await new Promise((r) => old.close(r));
    fs.renameSync(`${sock}.keep`, sock);
    expect(fs.lstatSync(sock).isSocket()).toBe(true);

    await fwd.add(parseHostfwd(`unix:${sock}-:${guest.port}`));
    const s = await connectUnix(sock);
    expect((await roundTrip(s, Buffer.from('fresh'))).toString()).toBe('fresh');
    s.destroy();
  });

  test('a live socket (another process accepts on it) is refused with EADDRINUSE and left alone', async () => {
    const sock = path.join(dir, 'live.sock');
    const other = net.createServer((c) => {
      c.on('error', () => undefined); // vmnat's liveness probe hangs up at once
      c.end('theirs');
    });
    await new Promise<void>((r) => other.listen(sock, r));
    cleanups.push(() => new Promise((r) => other.close(r)));
    const err = (await errorOf(fwd.add(parseHostfwd(`unix:${sock}-:2375`)))) as unknown as ForwardError;
    expect(err).toBeInstanceOf(ForwardError);
    expect(err.code).toBe('EADDRINUSE');
    expect(err.message).toBe(`${sock} is in use by a running process (give another path, or stop it) (forward unix-${sock})`);
    expect(fwd.list()).toEqual([]);
    const s = await connectUnix(sock);
    const [reply] = (await once(s, 'data')) as [Buffer];
    expect(reply.toString()).toBe('theirs');
  });

  test('a path that is not a socket is never deleted (EPATH)', async () => {
    const file = path.join(dir, 'notes.txt');
    fs.writeFileSync(file, 'keep me');
    const err = (await errorOf(fwd.add(parseHostfwd(`unix:${file}-:2375`)))) as unknown as ForwardError;
    expect([err.code, err.message]).toEqual(['EPATH', `${file} exists and is not a socket; refusing to replace it (forward unix-${file})`]);
    expect(fs.readFileSync(file, 'utf8')).toBe('keep me');
  });

  test('a directory others may write is refused (EPATH)', async () => {
    const open = path.join(dir, 'open');
    fs.mkdirSync(open);
    fs.chmodSync(open, 0o777);
    const err = (await errorOf(fwd.add(parseHostfwd(`unix:${open}/d.sock-:2375`)))) as unknown as ForwardError;
    expect(err.code).toBe('EPATH');
    expect(err.message).toMatch(/has mode 0777: others could replace the socket; refusing to use it/);
  });

  test('the same path twice is refused while the first is in place', async () => {
    const sock = path.join(dir, 'twice.sock');
    await fwd.add(parseNatpf(`a,unix,${sock},,,2375`));
    const err = (await errorOf(fwd.add(parseNatpf(`b,unix,${sock},,,2376`)))) as unknown as ForwardError;
    expect([err.code, err.message]).toEqual(['EADDRINUSE', `${sock} is already a forward of this vmnat`]);
    expect(fwd.list().map((e) => e.rule.name)).toEqual(['a']);
  });

  test('the guest refusing closes the unix client (no RST exists for it)', async () => {
    const sock = path.join(dir, 'refused.sock');
    await fwd.add(parseHostfwd(`unix:${sock}-:${await freePort()}`));
    const s = await connectUnix(sock);
    s.on('error', () => undefined);
    await once(s, 'close');
    expect(fwd.list()[0]!.tcpAccepted).toBe(1);
  });
});

describe('UDP forwards', () => {
  async function client(): Promise<dgram.Socket> {
    const s = dgram.createSocket('udp4');
    s.bind(0, '127.0.0.1');
    await once(s, 'listening');
    cleanups.push(() => s.close());
    return s;
  }

  test('one flow per host client; replies come from the forwarded port', async () => {
    const guest = await udpEcho();
    cleanups.push(() => guest.close());
    const port = (await fwd.add(parseHostfwd(`udp::0-:${guest.port}`))).hostPort;
    const [a, b] = [await client(), await client()];
    for (let i = 0; i < 3; i++) {
      const r = await udpRoundTrip(a, port, Buffer.from(`a${i}`));
      expect(r.msg.toString()).toBe(`a${i}`);
      expect(r.rinfo).toMatchObject({ address: '127.0.0.1', port });
    }
    expect((await udpRoundTrip(b, port, Buffer.from('b'))).msg.toString()).toBe('b');
    expect(dialer.udpTargets.map((t) => t.clientPort)).toEqual([a.address().port, b.address().port]);
    expect(fwd.list()[0]!.udpFlows).toBe(2);
    expect(fwd.stats).toMatchObject({ udpFlowsOpened: 2, datagramsFromHost: 4, datagramsToHost: 4 });
  });

  test('an idle flow ends after the timeout; the next datagram opens a new one', async () => {
    const f = new PortForwarder({ dialer, udpIdleTimeoutMs: 150 });
    cleanups.push(() => f.close());
    const guest = await udpEcho();
    cleanups.push(() => guest.close());
    const port = (await f.add(parseHostfwd(`udp::0-:${guest.port}`))).hostPort;
    const a = await client();
    await udpRoundTrip(a, port, Buffer.from('1'));
    // traffic keeps it alive
    for (let i = 0; i < 4; i++) {
      await sleep(60);
      await udpRoundTrip(a, port, Buffer.from('k'));
    }
    expect(f.stats.udpFlowsExpired).toBe(0);
    await waitFor(() => f.stats.udpFlowsExpired === 1, 2000);
    expect(dialer.udpClosed).toHaveLength(1);
    expect(f.list()[0]!.udpFlows).toBe(0);
    await udpRoundTrip(a, port, Buffer.from('2'));
    expect(f.stats.udpFlowsOpened).toBe(2);
  });

  test('beyond maxUdpFlows the least recently active flow is evicted', async () => {
    const f = new PortForwarder({ dialer, maxUdpFlows: 2 });
    cleanups.push(() => f.close());
    const guest = await udpEcho();
    cleanups.push(() => guest.close());
    const port = (await f.add(parseHostfwd(`udp::0-:${guest.port}`))).hostPort;
    const [a, b, c] = [await client(), await client(), await client()];
    await udpRoundTrip(a, port, Buffer.from('a'));
    await udpRoundTrip(b, port, Buffer.from('b'));
    await udpRoundTrip(a, port, Buffer.from('a again')); // b is now the oldest
    await udpRoundTrip(c, port, Buffer.from('c'));
    expect(f.stats.udpFlowsEvicted).toBe(1);
    expect(dialer.udpClosed.map((t) => t.clientPort)).toEqual([b.address().port]);
  });

  test('a refused flow (no lease) drops the datagram and counts it', async () => {
    dialer.refuseUdp = true;
    const port = (await fwd.add(parseHostfwd(`udp::0-:53`))).hostPort;
    const a = await client();
    await expect(udpRoundTrip(a, port, Buffer.from('q'), '127.0.0.1', 200)).rejects.toThrow('no UDP reply');
    expect(fwd.stats.udpRefused).toBe(1);
  });

  test('remove ends the flows and frees the port', async () => {
    const guest = await udpEcho();
    cleanups.push(() => guest.close());
    const rule = await fwd.add(parseHostfwd(`udp::0-:${guest.port}`));
    const port = rule.hostPort;
    const a = await client();
    await udpRoundTrip(a, port, Buffer.from('x'));
    await fwd.remove(rule.name);
    expect(dialer.udpClosed).toHaveLength(1);
    const again = dgram.createSocket('udp4');
    await new Promise<void>((resolve, reject) => {
      again.once('error', reject);
      again.bind(port, '127.0.0.1', () => resolve());
    });
    again.close();
  });

  test('a reply from the guest is copied before the send: the link reusing its buffer does not change it', async () => {
    // The dialer hands over a view into the link's receive buffer, which the next batch overwrites;
    // dgram.send reads it later (after the address lookup, or from libuv's queue).
    let peer: HostUdpPeer | undefined;
    const capturing: GuestDialer = {
      dialTcp: () => undefined,
      openUdp: (_t, host) => {
        peer = host;
        return { send: () => undefined, close: () => undefined };
      },
    };
    const f = new PortForwarder({ dialer: capturing });
    cleanups.push(() => f.close());
    const port = (await f.add(parseHostfwd(`udp::0-:53`))).hostPort;
    const a = await client();
    a.send(Buffer.from('open'), port, '127.0.0.1');
    await waitFor(() => peer !== undefined);
    const got = once(a, 'message');
    const linkBuffer = Buffer.from('the guest answer');
    peer!.send(linkBuffer.subarray(4));
    linkBuffer.fill(0x78); // the next batch of frames lands here
    const [msg] = (await got) as [Buffer];
    expect(msg.toString()).toBe('guest answer');
  });

  test('a taken UDP port rejects with EADDRINUSE', async () => {
    const taken = dgram.createSocket('udp4');
    taken.bind(0, '127.0.0.1');
    await once(taken, 'listening');
    cleanups.push(() => taken.close());
    const err = await errorOf(fwd.add(parseHostfwd(`udp::${taken.address().port}-:53`)));
    expect(err.code).toBe('EADDRINUSE');
  });
});

test('close() closes every listener', async () => {
  const p1 = (await fwd.add(parseHostfwd('tcp::0-:80'))).hostPort;
  const p2 = (await fwd.add(parseHostfwd('tcp::0-:80'))).hostPort;
  await fwd.close();
  for (const p of [p1, p2]) expect((await errorOf(connect(p))).code).toBe('ECONNREFUSED');
  await expect(fwd.add(parseHostfwd(`tcp::${p1}-:80`))).rejects.toMatchObject({ code: 'ECLOSED' });
});
