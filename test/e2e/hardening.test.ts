/**
 * Hardening: frames a hostile (or merely unlucky) guest can send that used to kill vmnat, sent by a
 * crafted guest over `--socket`. Each test fails on the code before its fix (vmnat exited) and
 * asserts what the guest sees instead, and that everything else still works.
 */
import { afterAll, expect, test } from 'vitest';
import dgram from 'node:dgram';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { createNetns, type Netns } from '../helpers/netns.ts';
import { killAll, startVmnat, type VmnatProcess } from '../helpers/proc.ts';
import { CraftedGuest, GW_IP, tcpFields } from '../helpers/craftedguest.ts';

const cleanups: (() => Promise<unknown> | void)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
  killAll();
});

function tempDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `vmnat-harden-${process.pid}-`));
  cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function vmnatWithGuest(args: string[], prefix?: string[]): Promise<{ vmnat: VmnatProcess; guest: CraftedGuest }> {
  const dir = tempDir();
  const sock = path.join(dir, 'net.sock');
  const vmnat = await startVmnat(['--socket', sock, ...args], prefix ? { prefix } : {});
  cleanups.push(() => vmnat.stop().catch(() => undefined));
  const guest = new CraftedGuest(dir, sock);
  cleanups.push(() => guest.close());
  return { vmnat, guest };
}

const isIcmpUnreach = (code: number) => (f: { proto?: number; l4?: Uint8Array }) => f.proto === 1 && f.l4?.[0] === 3 && f.l4[1] === code;

test('UDP to port 0 gets ICMP port unreachable, and vmnat still carries the next flow', async () => {
  const echo = dgram.createSocket('udp4');
  echo.on('message', (msg, rinfo) => echo.send(msg, rinfo.port, rinfo.address));
  await new Promise<void>((r) => echo.bind(0, '127.0.0.1', r));
  cleanups.push(() => {
    echo.close();
  });
  const { vmnat, guest } = await vmnatWithGuest([]);

  guest.send(CraftedGuest.udp(GW_IP, 40000, 0, new TextEncoder().encode('zero')));
  await guest.waitFor((fs) => fs.some(isIcmpUnreach(3)), 'ICMP port unreachable for port 0');
  // The quote names the guest's datagram: UDP 40000 → 0.
  const icmp = guest.frames().find(isIcmpUnreach(3))!.l4!;
  expect((icmp[8 + 20]! << 8) | icmp[8 + 21]!).toBe(40000);
  expect((icmp[8 + 22]! << 8) | icmp[8 + 23]!).toBe(0);

  const port = (echo.address() as { port: number }).port;
  guest.send(CraftedGuest.udp(GW_IP, 40001, port, new TextEncoder().encode('still here')));
  await guest.waitFor((fs) => fs.some((f) => f.proto === 17 && Buffer.from(f.l4!.subarray(8)).toString() === 'still here'), 'the echo through 10.0.2.2');
  expect(vmnat.child.exitCode).toBeNull();
  const stats = (await vmnat.stats()) as { udpNat: { badPort: number }; engine: { internalErrors: number } };
  expect(stats.udpNat.badPort).toBe(1);
  expect(stats.engine.internalErrors).toBe(0);
});

test('UDP whose host connect() fails (a directed broadcast) gets ICMP admin-prohibited; vmnat stays up', async () => {
  // vmnat runs in a namespace of the test's own whose only network is 198.18.77.1/24 on lo: the
  // guest aims at that subnet's broadcast address, which a UDP socket without SO_BROADCAST may
  // not connect() to (EACCES). Nothing leaves the namespace.
  const ns: Netns = await createNetns();
  cleanups.push(() => ns.destroy());
  for (const cmd of [['ip', 'addr', 'add', '198.18.77.1/24', 'brd', '+', 'dev', 'lo']]) {
    const r = await ns.exec(cmd);
    expect(r.code, `${cmd.join(' ')}: ${r.stderr}`).toBe(0);
  }
  const { vmnat, guest } = await vmnatWithGuest([], ['ip', 'netns', 'exec', ns.name]);
  const bcast = [198, 18, 77, 255];
  guest.send(CraftedGuest.udp(bcast, 40000, 9, new TextEncoder().encode('one')));
  await guest.waitFor((fs) => fs.some(isIcmpUnreach(13)), 'ICMP administratively prohibited');
  // The flow was closed: the next datagram tries again, and is answered the same way.
  guest.clear();
  guest.send(CraftedGuest.udp(bcast, 40000, 9, new TextEncoder().encode('two')));
  await guest.waitFor((fs) => fs.some(isIcmpUnreach(13)), 'a second ICMP error');
  expect(vmnat.child.exitCode).toBeNull();
  const stats = (await vmnat.stats()) as { udpNat: { connectFailed: number; sendErrors: number }; engine: { internalErrors: number } };
  expect(stats.udpNat.connectFailed).toBe(2);
  expect(stats.engine.internalErrors).toBe(0);
});

test('MTU 65520: full-sized segments with two SACK blocks fit the MTU (options come out of the payload)', async () => {
  const TOTAL = 600_000;
  const data = Buffer.alloc(TOTAL);
  for (let i = 0; i < TOTAL; i++) data[i] = (i * 7 + (i >> 9)) & 0xff;
  // The server answers the guest's first byte: by then the guest's two out-of-order segments (sent
  // in the same batch) are held, so every segment vmnat sends carries two SACK blocks.
  const server = net.createServer((s) => {
    s.on('error', () => undefined);
    s.once('data', () => s.end(data));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
  const port = (server.address() as net.AddressInfo).port;
  const { vmnat, guest } = await vmnatWithGuest(['--mtu', '65520']);

  const ISS = 1000;
  // MSS 65480, NOP + window scale 7, SACK permitted + 2 NOPs.
  const synOpts = [2, 4, 0xff, 0xc8, 1, 3, 3, 7, 4, 2, 1, 1];
  guest.send(CraftedGuest.tcp(GW_IP, 40000, port, ISS, 0, 0x02, 65535, synOpts));
  await guest.waitFor((fs) => fs.some((f) => f.proto === 6 && (f.l4![13]! & 0x12) === 0x12), 'SYN-ACK');
  const synAck = tcpFields(guest.frames().find((f) => f.proto === 6 && (f.l4![13]! & 0x12) === 0x12)!.l4!);
  const hostIss = synAck.seq;
  // Complete the handshake, then leave two holes: two SACK blocks on every ACK vmnat sends.
  const rcvNext = ISS + 2;
  guest.send(
    CraftedGuest.tcp(GW_IP, 40000, port, ISS + 1, hostIss + 1, 0x10, 65535),
    CraftedGuest.tcp(GW_IP, 40000, port, rcvNext + 1000, hostIss + 1, 0x18, 65535, [], new Uint8Array(10)),
    CraftedGuest.tcp(GW_IP, 40000, port, rcvNext + 3000, hostIss + 1, 0x18, 65535, [], new Uint8Array(10)),
    CraftedGuest.tcp(GW_IP, 40000, port, ISS + 1, hostIss + 1, 0x18, 65535, [], new Uint8Array([0x47])),
  );
  // Collect the host's bytes in order, ACKing as they come (the holes stay open: SACK stays on).
  const got = new Map<number, Uint8Array>();
  let acked = hostIss + 1;
  const deadline = Date.now() + 20_000;
  let withSack = 0;
  let biggest = 0;

  while (acked - (hostIss + 1) < TOTAL && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 20));
    for (const f of guest.frames()) {
      if (f.proto !== 6) continue;
      biggest = Math.max(biggest, f.ipTotalLen!);
      const t = tcpFields(f.l4!);
      if (t.payloadLen === 0) continue;
      if (t.options.some((b, i) => b === 5 && t.options[i + 1] === 18)) withSack++;
      got.set(t.seq, f.l4!.subarray(t.dataOff));
    }
    guest.clear();
    while (got.has(acked)) acked += got.get(acked)!.length;
    guest.send(CraftedGuest.tcp(GW_IP, 40000, port, rcvNext, acked, 0x10, 65535));
  }
  expect(vmnat.child.exitCode).toBeNull();
  expect(biggest).toBeLessThanOrEqual(65520);
  expect(withSack).toBeGreaterThan(0);
  const received: Buffer[] = [];
  for (let seq = hostIss + 1; got.has(seq); seq += got.get(seq)!.length) received.push(Buffer.from(got.get(seq)!));
  const all = Buffer.concat(received);
  expect(all.length).toBe(TOTAL);
  expect(createHash('sha256').update(all).digest('hex')).toBe(createHash('sha256').update(data).digest('hex'));
  const stats = (await vmnat.stats()) as { engine: { internalErrors: number } };
  expect(stats.engine.internalErrors).toBe(0);
  guest.send(CraftedGuest.tcp(GW_IP, 40000, port, rcvNext, acked, 0x04, 0));
});

test('memory budget: 100 connections stuffed with out-of-order data stay within --max-buffer-memory; the data still arrives once the holes fill', async () => {
  const LIMIT = 16 << 20;
  const got = new Map<number, Buffer[]>();
  const server = net.createServer((s) => {
    const chunks: Buffer[] = [];
    got.set(s.remotePort ?? 0, chunks);
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('error', () => undefined);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
  const port = (server.address() as net.AddressInfo).port;
  const { vmnat, guest } = await vmnatWithGuest(['--max-buffer-memory', '16M']);
  const rss = () => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${vmnat.child.pid}/status`, 'utf8'))![1]) * 1024;
  const rssBefore = rss();

  const CONNS = 100;
  const SEG = 1400;
  const HOLE = SEG; // the first segment's bytes are withheld: everything after it is out of order
  const isn = (i: number) => 100_000 + i * 10_000_000;
  const synOpts = [2, 4, 0x05, 0xb4, 1, 3, 3, 7, 4, 2, 1, 1]; // MSS 1460, wscale 7, SACK ok
  for (let i = 0; i < CONNS; i++) guest.send(CraftedGuest.tcp(GW_IP, 20000 + i, port, isn(i), 0, 0x02, 65535, synOpts));
  await guest.waitFor((fs) => fs.filter((f) => f.proto === 6 && (f.l4![13]! & 0x12) === 0x12).length >= CONNS, 'every SYN-ACK', 15_000);
  const hostIss = new Map<number, number>();
  for (const f of guest.frames()) {
    if (f.proto !== 6 || (f.l4![13]! & 0x12) !== 0x12) continue;
    const t = tcpFields(f.l4!);
    hostIss.set(t.dport, t.seq);
  }
  // Up to 1 MiB (the window) of out-of-order data on every connection: first one segment each, so
  // that vmnat's ACK opens the window past the SYN-ACK's unscaled 64 KiB, then the rest.
  const payload = (i: number, k: number) => Buffer.alloc(SEG, (i * 31 + k) & 0xff);
  for (let i = 0; i < CONNS; i++) {
    const ack = hostIss.get(20000 + i)! + 1;
    guest.send(CraftedGuest.tcp(GW_IP, 20000 + i, port, isn(i) + 1, ack, 0x10, 65535), CraftedGuest.tcp(GW_IP, 20000 + i, port, isn(i) + 1 + SEG, ack, 0x10, 65535, [], payload(i, 1)));
  }
  await new Promise((r) => setTimeout(r, 300));
  guest.clear();
  for (let i = 0; i < CONNS; i++) {
    const ack = hostIss.get(20000 + i)! + 1;
    const frames: Uint8Array[] = [];
    for (let k = 2; k * SEG < (1 << 20) - SEG; k++) frames.push(CraftedGuest.tcp(GW_IP, 20000 + i, port, isn(i) + 1 + k * SEG, ack, 0x10, 65535, [], payload(i, k)));
    guest.send(...frames);
    guest.clear();
    await new Promise((r) => setTimeout(r, 5));
  }
  await new Promise((r) => setTimeout(r, 500));
  const mid = (await vmnat.stats()) as { memory: { used: number; peak: number; budget: number; oooRefused: number }; engine: { internalErrors: number } };
  expect(mid.memory.budget).toBe(LIMIT);
  expect(mid.memory.peak).toBeLessThanOrEqual(LIMIT);
  expect(mid.memory.oooRefused).toBeGreaterThan(0);
  expect(rss() - rssBefore).toBeLessThan(80 << 20);

  // Fill the hole of connection 0: what vmnat kept is delivered in order, then the guest resends
  // the rest (as its TCP would) and the host gets every byte.
  const ack0 = hostIss.get(20000)! + 1;
  const frames = [CraftedGuest.tcp(GW_IP, 20000, port, isn(0) + 1, ack0, 0x18, 65535, [], payload(0, 0))];
  for (let k = 1; k < 20; k++) frames.push(CraftedGuest.tcp(GW_IP, 20000, port, isn(0) + 1 + k * SEG, ack0, 0x18, 65535, [], payload(0, k)));
  guest.send(...frames);
  await new Promise((r) => setTimeout(r, 500));
  const want = Buffer.concat(Array.from({ length: 20 }, (_, k) => payload(0, k)));
  const conn0 = [...got.values()].find((c) => c.length > 0 && c[0]![0] === payload(0, 0)[0] && Buffer.concat(c).length >= want.length);
  expect(conn0, 'connection 0 delivered').toBeDefined();
  expect(createHash('sha256').update(Buffer.concat(conn0!).subarray(0, want.length)).digest('hex')).toBe(createHash('sha256').update(want).digest('hex'));
  const end = (await vmnat.stats()) as { engine: { internalErrors: number } };
  expect(end.engine.internalErrors).toBe(0);
  expect(vmnat.child.exitCode).toBeNull();
});
