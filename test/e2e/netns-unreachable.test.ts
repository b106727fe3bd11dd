/**
 * Dial the host first, when the host cannot reach the destination: vmnat runs inside a network
 * namespace of this test's with no route to 198.51.100.0/24 (so nothing ever leaves the machine),
 * and the guest (another namespace behind vmnat's TAP) must get ICMP destination unreachable for its
 * SYN at once — the error a router with no route would send — not a hang and not a RST.
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
  vmnat = await startVmnat(['--tap', 'tap0', '--netns', guest.path], { prefix: ['ip', 'netns', 'exec', host.name] });
  await leaseWithUdhcpc(guest);
});
afterAll(async () => {
  await vmnat?.stop();
  await guest?.destroy();
  await host?.destroy();
  killAll();
});

test('a TCP connect to a destination the host has no route to fails at once with "Network is unreachable"', async () => {
  const t0 = performance.now();
  const r = await guest.exec(['python3', '-c', `
import socket
try:
    socket.create_connection(('198.51.100.7', 80), timeout=10); print('connected')
except Exception as e:
    print(type(e).__name__ + ': ' + str(e))
`], { timeoutMs: 20_000 });
  expect(r.stdout.trim(), r.stderr).toBe('OSError: [Errno 101] Network is unreachable');
  expect(performance.now() - t0).toBeLessThan(5000);
  const stats = (await vmnat.stats()) as Record<string, Record<string, number>>;
  expect(stats.tcpNat!.dialsUnreachable).toBe(1);
  expect(stats.tcpNat!.flowsOpened! - stats.tcpNat!.flowsClosed!).toBe(0);
});
