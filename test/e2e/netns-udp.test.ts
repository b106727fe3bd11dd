/**
 * UDP through the NAT with the kernel as the guest: a UDP echo server on the host's loopback,
 * reached through the gateway 10.0.2.2 by a Python client inside the guest namespace.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import dgram from 'node:dgram';
import { createNetns, leaseWithUdhcpc, writeScript, type Netns } from '../helpers/netns.ts';
import { killAll, sleep, startVmnat, type VmnatProcess } from '../helpers/proc.ts';

let ns: Netns;
let vmnat: VmnatProcess;
let echo: dgram.Socket;
let echoPort = 0;

beforeAll(async () => {
  echo = dgram.createSocket('udp4');
  echo.on('message', (msg, rinfo) => echo.send(msg, rinfo.port, rinfo.address));
  await new Promise<void>((r) => echo.bind(0, '127.0.0.1', r));
  echoPort = echo.address().port;
  ns = await createNetns();
  vmnat = await startVmnat(['--tap', 'tap0', '--netns', ns.path, '--udp-timeout', '2']);
  await leaseWithUdhcpc(ns);
});
afterAll(async () => {
  await vmnat?.stop();
  await ns?.destroy();
  echo?.close();
  killAll();
});

const CLIENT = `
import hashlib, socket, sys, time
host, port, sizes, count, gap = sys.argv[1], int(sys.argv[2]), [int(x) for x in sys.argv[3].split(',')], int(sys.argv[4]), float(sys.argv[5])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.connect((host, port))
ok = bad = lost = 0
for i in range(count):
    n = sizes[i % len(sizes)]
    data = (hashlib.sha256(str(i).encode()).digest() * (n // 32 + 1))[:n]
    s.send(data)
    try:
        back = s.recv(70000)
        if back == data: ok += 1
        else: bad += 1
    except socket.timeout:
        lost += 1
    if gap: time.sleep(gap)
print(ok, bad, lost, s.getsockname()[1])
`;

describe.sequential('UDP through 10.0.2.2 to the host loopback', () => {
  test('1 B, 1,400 B and 8,000 B (fragmented both ways) datagrams come back intact', async () => {
    const client = writeScript(ns.dir, 'udp.py', CLIENT);
    const r = await ns.exec(['python3', client, '10.0.2.2', String(echoPort), '1,1400,8000,65000', '40', '0'], { timeoutMs: 60_000 });
    const [ok, bad, lost] = r.stdout.trim().split(' ').map(Number);
    expect({ ok, bad, lost }, r.stderr).toEqual({ ok: 40, bad: 0, lost: 0 });
    const stats = (await vmnat.stats()) as Record<string, Record<string, number>>;
    expect(stats.ipv4!.reassembled).toBeGreaterThanOrEqual(20);
    expect(stats.ipv4!.txFragments).toBeGreaterThanOrEqual(20);
  });

  test('10,000 datagrams at a modest rate lose none; the flow expires after its idle timeout', async () => {
    const client = writeScript(ns.dir, 'udp.py', CLIENT);
    const r = await ns.exec(['python3', client, '10.0.2.2', String(echoPort), '64,512,1400', '10000', '0'], { timeoutMs: 120_000 });
    const [ok, bad, lost] = r.stdout.trim().split(' ').map(Number);
    expect({ ok, bad, lost }, r.stderr).toEqual({ ok: 10000, bad: 0, lost: 0 });
    const before = (await vmnat.stats()) as Record<string, Record<string, number>>;
    expect(before.udpNat!.flowsOpened! - before.udpNat!.flowsClosed!).toBeGreaterThanOrEqual(1);
    await sleep(4000); // --udp-timeout 2, swept once a second
    const after = (await vmnat.stats()) as Record<string, Record<string, number>>;
    expect(after.udpNat!.flowsOpened! - after.udpNat!.flowsClosed!).toBe(0);
    expect(after.udpNat!.flowsExpired).toBeGreaterThanOrEqual(2);
  });

  test('a closed host port gives the guest "Connection refused" (ICMP port unreachable)', async () => {
    const closed = dgram.createSocket('udp4');
    await new Promise<void>((r) => closed.bind(0, '127.0.0.1', r));
    const port = closed.address().port;
    closed.close();
    const script = writeScript(ns.dir, 'refused.py', `
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.connect(('10.0.2.2', ${port}))
s.send(b'x')
try:
    s.recv(100); print('reply')
except ConnectionRefusedError:
    print('refused')
except socket.timeout:
    print('timeout')
`);
    const r = await ns.exec(['python3', script], { timeoutMs: 20_000 });
    expect(r.stdout.trim(), r.stderr).toBe('refused');
  });
});
