/**
 * Dial the host first, when the host cannot reach the destination: vmnat runs inside a network
 * namespace of this test's (so nothing ever leaves the machine), and the guest (another namespace
 * behind vmnat's TAP) must get the ICMP destination unreachable a router would send, not a hang and
 * not a RST:
 * - no route at all (198.51.100.0/24): net unreachable at once;
 * - a neighbour that never answers ARP (192.0.2.10 on a veth whose other end is silent): host
 *   unreachable when the host's neighbour resolution fails;
 * - a neighbour that swallows the SYN (192.0.2.9, a permanent ARP entry for a MAC nobody has):
 *   host unreachable when --tcp-connect-timeout runs out.
 */
import { afterAll, beforeAll, expect, test } from 'vitest';
import { createNetns, leaseWithUdhcpc, type Netns } from '../helpers/netns.ts';
import { killAll, startVmnat, type VmnatProcess } from '../helpers/proc.ts';

let host: Netns;
let guest: Netns;
let vmnat: VmnatProcess;

beforeAll(async () => {
  host = await createNetns();
  guest = await createNetns();
  // A veth pair inside vmnat's namespace: 192.0.2.1/24 on one end, nothing on the other, so
  // frames sent there are dropped. Neighbour resolution gives up after one probe of 300 ms.
  for (const cmd of [
    ['ip', 'link', 'add', 'far0', 'type', 'veth', 'peer', 'name', 'far1'],
    ['ip', 'addr', 'add', '192.0.2.1/24', 'dev', 'far0'],
    ['ip', 'link', 'set', 'far0', 'up'],
    ['ip', 'link', 'set', 'far1', 'up'],
    ['ip', 'neigh', 'add', '192.0.2.9', 'lladdr', '02:00:00:c0:00:09', 'dev', 'far0', 'nud', 'permanent'],
    ['sysctl', '-qw', 'net.ipv4.neigh.far0.mcast_solicit=1', 'net.ipv4.neigh.far0.retrans_time_ms=300'],
  ]) {
    const r = await host.exec(cmd);
    if (r.code !== 0) throw new Error(`${cmd.join(' ')}: ${r.stderr}`);
  }
  vmnat = await startVmnat(['--tap', 'tap0', '--netns', guest.path, '--tcp-connect-timeout', '2'], { prefix: ['ip', 'netns', 'exec', host.name] });
  await leaseWithUdhcpc(guest);
});
afterAll(async () => {
  await vmnat?.stop();
  await guest?.destroy();
  await host?.destroy();
  killAll();
});

/** Connects from the guest with its own 15 s timeout; returns what Python says and how long it took. */
async function guestConnect(ip: string): Promise<{ said: string; ms: number }> {
  const t0 = performance.now();
  const r = await guest.exec(['python3', '-c', `
import socket
try:
    socket.create_connection(('${ip}', 80), timeout=15); print('connected')
except Exception as e:
    print(type(e).__name__ + ': ' + str(e))
`], { timeoutMs: 30_000 });
  if (r.code !== 0) throw new Error(r.stderr);
  return { said: r.stdout.trim(), ms: performance.now() - t0 };
}

async function tcpStats(): Promise<Record<string, number>> {
  return ((await vmnat.stats()) as Record<string, Record<string, number>>).tcpNat!;
}

test('a TCP connect to a destination the host has no route to fails at once with "Network is unreachable"', async () => {
  const { said, ms } = await guestConnect('198.51.100.7');
  expect(said).toBe('OSError: [Errno 101] Network is unreachable');
  expect(ms).toBeLessThan(5000);
  const stats = (await vmnat.stats()) as Record<string, Record<string, number>>;
  expect(stats.tcpNat!.dialsUnreachable).toBe(1);
  expect(stats.tcpNat!.flowsOpened! - stats.tcpNat!.flowsClosed!).toBe(0);
});

test('a destination that never answers ARP fails with "No route to host" once the host gives up on it', async () => {
  const before = await tcpStats();
  const { said, ms } = await guestConnect('192.0.2.10');
  expect(said).toBe('OSError: [Errno 113] No route to host');
  expect(ms).toBeLessThan(1900); // the host's neighbour probe (300 ms), not the 2 s connect timeout
  const after = await tcpStats();
  expect(after.dialsUnreachable! - before.dialsUnreachable!).toBe(1);
  expect(after.dialTimeouts).toBe(before.dialTimeouts);
  expect(after.flowsOpened! - after.flowsClosed!).toBe(0);
});

test('a destination that swallows the SYN fails with "No route to host" after --tcp-connect-timeout (2 s)', async () => {
  const before = await tcpStats();
  const { said, ms } = await guestConnect('192.0.2.9');
  expect(said).toBe('OSError: [Errno 113] No route to host');
  expect(ms).toBeGreaterThanOrEqual(1900);
  expect(ms).toBeLessThan(6000);
  const after = await tcpStats();
  expect(after.dialTimeouts! - before.dialTimeouts!).toBe(1);
  expect(after.flowsOpened! - after.flowsClosed!).toBe(0);
});
