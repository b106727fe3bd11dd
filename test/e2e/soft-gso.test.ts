/**
 * Software GSO (issue 13): with a transport that takes MTU-sized frames only — here a TAP with
 * vmnat `--no-tso` and the guest's offloads off, as a VM behind a datagram socket — vmnat's TCP
 * still builds 64 KiB segments and the addon cuts them into MTU-sized frames with complete
 * checksums (native/src/frame_port.cc, sendGso). What a user checks: downloads over IPv4 and IPv6
 * arrive whole (sha256), the guest's kernel saw only frames within the MTU and no checksum
 * errors, and vmnat's link counted the frames it cut.
 */
import { afterAll, beforeAll, expect, test } from 'vitest';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createNetns, leaseWithUdhcpc, type Netns } from '../helpers/netns.ts';
import { killAll, sleep, startVmnat, type VmnatProcess } from '../helpers/proc.ts';
import { blob, sha256 } from '../helpers/hostservers.ts';

const MB = 1 << 20;
const data = blob(24 * MB, 13);
const want = sha256(data);
let ns: Netns;
let vmnat: VmnatProcess;
const servers: http.Server[] = [];

async function serve(host: string): Promise<number> {
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-length': data.length });
    res.end(data);
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, host, r));
  return (server.address() as AddressInfo).port;
}

beforeAll(async () => {
  ns = await createNetns();
  vmnat = await startVmnat(['--tap', 'tap0', '--netns', ns.path, '--no-tso', '--dns-server', '127.0.0.1:9']);
  await ns.exec(['ip', 'link', 'set', 'tap0', 'up']);
  // The guest's TAP offloads off: it neither sends nor expects anything but whole, summed frames.
  await ns.exec(['ethtool', '-K', 'tap0', 'tso', 'off', 'gso', 'off', 'tx', 'off', 'sg', 'off']);
  await leaseWithUdhcpc(ns);
});
afterAll(async () => {
  await vmnat?.stop();
  await ns?.destroy();
  for (const s of servers) s.close();
  killAll();
});

type Stats = { links: { txGsoFrames?: number; txFrames: number }[] };

async function guestRx(): Promise<{ packets: number; bytes: number; csumErrors: number }> {
  const r = await ns.exec(['sh', '-c', 'cat /sys/class/net/tap0/statistics/rx_packets /sys/class/net/tap0/statistics/rx_bytes; nstat -az TcpInCsumErrors | tail -1']);
  const [packets, bytes, last] = r.stdout.trim().split('\n');
  return { packets: Number(packets), bytes: Number(bytes), csumErrors: Number(last!.trim().split(/\s+/)[1]) };
}

async function download(url: string, family: '-4' | '-6'): Promise<void> {
  const before = await guestRx();
  const gsoBefore = ((await vmnat.stats()) as unknown as Stats).links[0]!.txGsoFrames ?? 0;
  const r = await ns.exec(['sh', '-c', `curl -sS ${family} --max-time 60 ${url} | sha256sum`], { timeoutMs: 90_000 });
  expect(r.stdout.split(' ')[0], r.stderr).toBe(want);
  const after = await guestRx();
  const packets = after.packets - before.packets;
  // Every frame the guest received fits a 1,500-byte MTU (1,514 with the Ethernet header): the
  // average does, and there are at least as many frames as the bytes need.
  expect((after.bytes - before.bytes) / packets).toBeLessThanOrEqual(1514);
  expect(packets).toBeGreaterThan(data.length / 1500);
  expect(after.csumErrors).toBe(before.csumErrors);
  const gso = ((await vmnat.stats()) as unknown as Stats).links[0]!.txGsoFrames ?? 0;
  // Large segments were cut in C: far fewer of them than the frames the guest got.
  expect(gso - gsoBefore).toBeGreaterThan(100);
  expect(gso - gsoBefore).toBeLessThan(packets / 4);
}

test('an IPv4 download through --no-tso arrives whole in MTU-sized frames cut by the addon', async () => {
  const port = await serve('127.0.0.1');
  await download(`http://10.0.2.2:${port}/`, '-4');
});

test('an IPv6 download through --no-tso arrives whole in MTU-sized frames cut by the addon', async () => {
  const port = await serve('::1');
  // udhcpc's script flushed the interface's addresses, IPv6 ones too: restart IPv6 on it (a new
  // link-local address, a router solicitation), then wait for SLAAC's address to leave DAD.
  await ns.exec(['sysctl', '-qw', 'net.ipv6.conf.tap0.disable_ipv6=1']);
  await ns.exec(['sysctl', '-qw', 'net.ipv6.conf.tap0.disable_ipv6=0']);
  let ready = false;
  for (let i = 0; i < 50 && !ready; i++) {
    const r = await ns.exec(['ip', '-6', 'addr', 'show', 'dev', 'tap0', 'scope', 'global']);
    ready = r.stdout.includes('fd00:10:0:2:') && !r.stdout.includes('tentative');
    if (!ready) await sleep(200);
  }
  expect(ready).toBe(true);
  await download(`http://[fd00:10:0:2::2]:${port}/`, '-6');
});
