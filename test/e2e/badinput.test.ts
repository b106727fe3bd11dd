/**
 * Bad input: 120,000 random and mutated frames thrown at a running vmnat through its TAP (sent from
 * inside the guest namespace by an AF_PACKET socket). vmnat stays up, its memory stays bounded, its
 * counters show the drops, and a guest still leases afterwards.
 */
import { afterAll, expect, test } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { createNetns, parseKv, UDHCPC_SCRIPT, writeScript, type Netns } from '../helpers/netns.ts';
import { killAll, startVmnat, type VmnatProcess } from '../helpers/proc.ts';
import { hostileFrames } from '../helpers/fuzzframes.ts';

let ns: Netns | undefined;
let vmnat: VmnatProcess | undefined;
afterAll(async () => {
  await vmnat?.stop();
  await ns?.destroy();
  killAll();
});

const SENDER = `
import socket, struct, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[2], 0))
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
data = open(sys.argv[1], 'rb').read()
i = sent = failed = 0
while i < len(data):
    (n,) = struct.unpack_from('>H', data, i)
    i += 2
    try:
        s.send(data[i:i + n]); sent += 1
    except OSError:
        failed += 1
    i += n
    if (sent + failed) % 100 == 0:
        time.sleep(0.001)
print(sent, failed)
`;

function rssKb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

test('120,000 hostile frames: vmnat stays up, memory bounded, drops counted, a guest still leases', async () => {
  const SEED = 0x5eed_2026;
  const COUNT = 120_000;
  ns = await createNetns();
  // Anti-spoofing off: the frames come from random MACs and addresses, and this test is about
  // what the stack's parsers make of them (the switch's own drops are tested in switch.test.ts).
  vmnat = await startVmnat(['--tap', 'tap0', '--netns', ns.path, '--anti-spoof', 'off']);
  const pid = vmnat.child.pid!;
  await ns.exec(['ip', 'link', 'set', 'dev', 'tap0', 'up']);

  const chunks: Buffer[] = [];
  for (const f of hostileFrames(SEED, COUNT)) {
    const len = Buffer.alloc(2);
    len.writeUInt16BE(f.length);
    chunks.push(len, Buffer.from(f));
  }
  const file = path.join(ns.dir, 'frames.bin');
  fs.writeFileSync(file, Buffer.concat(chunks));
  const sender = writeScript(ns.dir, 'send.py', SENDER);

  const rssBefore = rssKb(pid);
  // Two rounds: the second must not grow memory (every table and buffer is bounded).
  let rssAfterFirst = 0;
  for (let round = 0; round < 2; round++) {
    const r = await ns.exec(['python3', sender, file, 'tap0'], { timeoutMs: 120_000 });
    expect(r.code, `seed ${SEED}: ${r.stderr}`).toBe(0);
    const [sent] = r.stdout.trim().split(' ').map(Number);
    expect(sent).toBeGreaterThan(COUNT * 0.95);
    if (round === 0) rssAfterFirst = rssKb(pid);
  }
  const rssAfter = rssKb(pid);
  console.log(`vmnat RSS: ${rssBefore} kB before, ${rssAfterFirst} kB after one round, ${rssAfter} kB after two`);
  expect(vmnat.child.exitCode).toBeNull();
  expect(rssAfter - rssBefore).toBeLessThan(150 * 1024);
  expect(rssAfter - rssAfterFirst).toBeLessThan(40 * 1024);

  const stats = (await vmnat.stats()) as Record<string, Record<string, number>> & { links: { rxFrames: number }[] };
  const rx = stats.links[0]!.rxFrames;
  console.log(`vmnat received ${rx} frames; counters: ${JSON.stringify({ eth: stats.eth, ipv4: stats.ipv4, udp: stats.udp, icmp: stats.icmp, reassembly: stats.reassembly, dhcp: stats.dhcp })}`);
  expect(rx).toBeGreaterThan(2 * COUNT * 0.9);
  const sum = (o: Record<string, number> | undefined, keys: string[]) => keys.reduce((a, k) => a + (o?.[k] ?? 0), 0);
  expect(sum(stats.ipv4, ['badChecksum', 'badTotalLength', 'badHeaderLength', 'badVersion', 'truncated'])).toBeGreaterThan(1000);
  expect(sum(stats.udp, ['badChecksum', 'badLength', 'truncated'])).toBeGreaterThan(100);
  expect(sum(stats.eth, ['unknownEtherType'])).toBeGreaterThan(1000);
  expect(stats.reassembly!['timeout']! + stats.reassembly!['evicted']! + stats.reassembly!['overlap']!).toBeGreaterThan(100);
  // IPv6: NDP with bad options, extension chains, fragments and DHCPv6 noise were all seen and counted.
  const six = stats.ipv6 as unknown as Record<string, Record<string, number>>;
  console.log(`IPv6 counters: ${JSON.stringify(six)} dhcp6: ${JSON.stringify(stats.dhcp6)}`);
  expect(six.ipv6!['rxPackets']!).toBeGreaterThan(20_000);
  expect(sum(six.ipv6, ['truncated', 'badVersion', 'badPayloadLength', 'badExtensions'])).toBeGreaterThan(1000);
  expect(six.icmpv6!['badNdp']!).toBeGreaterThan(100);
  expect(sum(six.icmpv6, ['badChecksum', 'truncated'])).toBeGreaterThan(100);
  expect(six.reassembly6!['fragments']!).toBeGreaterThan(1000);
  expect(six.reassembly6!['evicted']! + six.reassembly6!['overlap']! + six.reassembly6!['inconsistent']!).toBeGreaterThan(10);
  expect(stats.dhcp6!['rxMessages']!).toBeGreaterThan(100);

  // IPv6 still answers the namespace's own kernel (before udhcpc's script flushes its addresses).
  const ping6 = await ns.exec(['busybox', 'ping', '-6', '-c', '2', '-W', '2', 'fd00:10:0:2::2'], { timeoutMs: 15_000 });
  const addr6 = await ns.exec(['ip', '-6', 'addr', 'show', 'dev', 'tap0']);
  expect(ping6.stdout, ping6.stdout + ping6.stderr + addr6.stdout).toMatch(/2 packets received/);

  // A real guest still leases.
  await ns.exec(['ip', 'link', 'set', 'dev', 'tap0', 'address', '52:54:00:12:34:99']);
  const script = writeScript(ns.dir, 'udhcpc.sh', UDHCPC_SCRIPT);
  const r = await ns.exec(['busybox', 'udhcpc', '-f', '-q', '-n', '-t', '5', '-T', '1', '-i', 'tap0', '-s', script], { timeoutMs: 20_000 });
  const line = r.stdout.split('\n').find((l) => l.startsWith('LEASE'));
  expect(line, r.stdout + r.stderr).toBeDefined();
  const lease = parseKv(line!);
  expect(lease.router).toBe('10.0.2.2');
  expect(lease.ip).toMatch(/^10\.0\.2\.\d+$/);
  const ping = await ns.exec(['busybox', 'ping', '-c', '2', '-W', '2', '10.0.2.2'], { timeoutMs: 15_000 });
  expect(ping.stdout).toMatch(/2 packets received/);
});
