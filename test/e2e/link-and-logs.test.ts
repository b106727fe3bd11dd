/**
 * vmnat's own reports: a link that fails while running is logged and ends vmnat with status 3
 * (it used to sit there silently, passing nothing); DHCP renewals are not logged at the default
 * level, and a guest binding leases from many MACs cannot turn the log into a line per ACK.
 */
import { afterAll, afterEach, expect, test } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createNetns, leaseWithUdhcpc, type Netns } from '../helpers/netns.ts';
import { killAll, sleep, startVmnat, type VmnatProcess } from '../helpers/proc.ts';
import { CraftedGuest } from '../helpers/craftedguest.ts';
import { eth, ipv4, udp } from '../helpers/fuzzframes.ts';

let ns: Netns | undefined;
let vmnat: VmnatProcess | undefined;
const dirs: string[] = [];
afterEach(async () => {
  if (vmnat !== undefined && vmnat.child.exitCode === null && vmnat.child.signalCode === null) await vmnat.stop();
  vmnat = undefined;
  await ns?.destroy();
  ns = undefined;
});
afterAll(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  killAll();
});

const dhcpLines = (stderr: string, word: string) => stderr.split('\n').filter((l) => l.startsWith('vmnat: info: dhcp: ') && l.includes(word));

test('the TAP deleted under a running vmnat: one error line naming the link, exit status 3', async () => {
  ns = await createNetns();
  vmnat = await startVmnat(['--tap', 'tap0', '--netns', ns.path]);
  await leaseWithUdhcpc(ns);
  const del = await ns.exec(['ip', 'link', 'del', 'tap0']);
  expect(del.code, del.stderr).toBe(0);
  const exited = await Promise.race([vmnat.exited, sleep(10_000).then(() => undefined)]);
  expect(exited, `still running: ${vmnat.stderr()}`).toBeDefined();
  expect(exited!.code).toBe(3);
  const errors = vmnat.stderr().split('\n').filter((l) => l.startsWith('vmnat: error: '));
  expect(errors[0]).toMatch(/tap link .*tap0.* failed: /);
  expect(errors.at(-1)).toMatch(/no working link left: exiting with status 3/);
});

test('a renewal is not logged at the default level; the first lease is', async () => {
  ns = await createNetns();
  vmnat = await startVmnat(['--tap', 'tap0', '--netns', ns.path]);
  const first = await leaseWithUdhcpc(ns);
  const again = await leaseWithUdhcpc(ns); // the same MAC asks again: the same address is ACKed
  expect(again.ip).toBe(first.ip);
  await sleep(100);
  expect(dhcpLines(vmnat.stderr(), 'bound')).toHaveLength(1);
});

/** An INIT-REBOOT REQUEST (option 50, no server id) from `mac` for `ip`: ACKed if free. */
function request(mac: number[], ip: number[], xid: number): Uint8Array {
  const d = new Uint8Array(300);
  d.set([1, 1, 6, 0, xid >>> 24, (xid >>> 16) & 0xff, (xid >>> 8) & 0xff, xid & 0xff, 0, 0, 0x80, 0], 0);
  d.set(mac, 28);
  d.set([99, 130, 83, 99, 53, 1, 3, 50, 4, ...ip, 255], 236);
  return eth([255, 255, 255, 255, 255, 255], mac, 0x0800, ipv4(17, [0, 0, 0, 0], [255, 255, 255, 255], udp([0, 0, 0, 0], [255, 255, 255, 255], 68, 67, d)));
}

test('200 leases bound from 200 MACs in a burst: at most 20 lease lines at info level', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `vmnat-logs-${process.pid}-`));
  dirs.push(dir);
  const sock = path.join(dir, 'net.sock');
  vmnat = await startVmnat(['--socket', sock, '--anti-spoof', 'off', '--net', '10.0.0.0/16']);
  const guest = new CraftedGuest(dir, sock);
  try {
    for (let i = 0; i < 200; i++) guest.send(request([0x02, 0, 0, 0, i >> 8, i & 0xff], [10, 0, 1 + (i >> 8), i & 0xff], 0x1000 + i));
    await guest.waitFor((fs) => fs.filter((f) => f.proto === 17).length >= 200, '200 ACKs', 10_000);
  } finally {
    guest.close();
  }
  const stats = (await vmnat.stats()) as { dhcp: { ack: number } };
  expect(stats.dhcp.ack).toBe(200);
  expect(dhcpLines(vmnat.stderr(), 'bound').length).toBeLessThanOrEqual(20);
});
