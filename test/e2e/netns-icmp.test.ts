/**
 * ICMP echo through the NAT with the kernel as the guest and real hosts to ping.
 *
 * Topology (every address lives in a namespace this test creates; X comes from the PID):
 *
 *   guest ns ──tap0── vmnat ─ ping sockets ─ "host" ns H ──veth── P (router) ──veth── Q
 *   10.0.2.15         (runs in H)            198.18.X.1/29        .2/29  .9/29        .10/29
 *
 * vmnat runs inside H rather than the machine's own namespace, for two reasons: the ping sockets it
 * needs are allowed by net.ipv4.ping_group_range, which is per namespace (the test sets it in H and
 * leaves the machine's alone), and whatever vmnat sends can only reach the test's namespaces (H has
 * no other route). P forwards between H and Q and has an `unreachable` route for 198.18.X.24/29.
 * 198.18.X.3 is in H's /29 but nobody holds it.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createNetns, leaseWithUdhcpc, writeScript, type Netns } from '../helpers/netns.ts';
import { killAll, run, startVmnat, type VmnatProcess } from '../helpers/proc.ts';

const X = (process.pid % 250) + 1;
const net = (host: number) => `198.18.${X}.${host}`;
const H_ADDR = net(1);
const P_ADDR = net(2);
const NOBODY = net(3);
const Q_ADDR = net(10);
const UNREACHABLE = net(25);

let guest: Netns;
let nsH: Netns;
let nsP: Netns;
let nsQ: Netns;
let vmnat: VmnatProcess | undefined;

async function sh(cmd: string[]): Promise<void> {
  const r = await run(cmd);
  if (r.code !== 0) throw new Error(`${cmd.join(' ')}: ${r.stderr}`);
}

async function startInH(): Promise<VmnatProcess> {
  return startVmnat(['--tap', 'tap0', '--netns', guest.path], { prefix: ['ip', 'netns', 'exec', nsH.name] });
}

beforeAll(async () => {
  nsH = await createNetns();
  nsP = await createNetns();
  nsQ = await createNetns();
  guest = await createNetns();
  await sh(['ip', 'netns', 'exec', nsH.name, 'sysctl', '-qw', 'net.ipv4.ping_group_range=0 2147483647']);
  await sh(['ip', '-n', nsH.name, 'link', 'add', 'h0', 'type', 'veth', 'peer', 'name', 'p0', 'netns', nsP.name]);
  await sh(['ip', '-n', nsP.name, 'link', 'add', 'p1', 'type', 'veth', 'peer', 'name', 'q0', 'netns', nsQ.name]);
  await sh(['ip', '-n', nsH.name, 'addr', 'add', `${H_ADDR}/29`, 'dev', 'h0']);
  await sh(['ip', '-n', nsP.name, 'addr', 'add', `${P_ADDR}/29`, 'dev', 'p0']);
  await sh(['ip', '-n', nsP.name, 'addr', 'add', `${net(9)}/29`, 'dev', 'p1']);
  await sh(['ip', '-n', nsQ.name, 'addr', 'add', `${Q_ADDR}/29`, 'dev', 'q0']);
  for (const [ns, dev] of [[nsH, 'h0'], [nsP, 'p0'], [nsP, 'p1'], [nsQ, 'q0']] as const) await sh(['ip', '-n', ns.name, 'link', 'set', dev, 'up']);
  await sh(['ip', 'netns', 'exec', nsP.name, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
  await sh(['ip', '-n', nsP.name, 'route', 'add', 'unreachable', `${net(24)}/29`]);
  await sh(['ip', '-n', nsH.name, 'route', 'add', `198.18.${X}.0/24`, 'via', P_ADDR]);
  await sh(['ip', '-n', nsQ.name, 'route', 'add', 'default', 'via', net(9)]);
  vmnat = await startInH();
  await leaseWithUdhcpc(guest);
}, 60_000);

afterAll(async () => {
  await vmnat?.stop();
  killAll();
  if (nsH) await run(['ip', '-n', nsH.name, 'link', 'del', 'h0']);
  if (nsP) await run(['ip', '-n', nsP.name, 'link', 'del', 'p1']);
  for (const ns of [guest, nsH, nsP, nsQ]) await ns?.destroy();
});

/**
 * A raw-socket ICMP client for the guest. `echo DST N`: N requests with identifier 0x1234 and
 * random data, then every ICMP message about them for 2 s. `trace DST MAX`: requests with TTL
 * 1..MAX (sequence = TTL); for each, who answered and how. Prints JSON.
 */
const PROBE = `
import json, os, select, socket, struct, sys, time
def csum(b):
    if len(b) % 2: b += b'\\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
def echo(ident, seq, data):
    h = struct.pack('!BBHHH', 8, 0, 0, ident, seq)
    return struct.pack('!BBHHH', 8, 0, csum(h + data), ident, seq) + data
IDENT = 0x1234
mode, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
def parse(pkt):
    ihl = (pkt[0] & 15) * 4
    src = socket.inet_ntoa(pkt[12:16])
    t, c, ck, a, b = struct.unpack('!BBHHH', pkt[ihl:ihl + 8])
    ok = csum(pkt[ihl:]) == 0
    if t == 0:
        return {'src': src, 'type': t, 'id': a, 'seq': b, 'data': pkt[ihl + 8:].hex(), 'ttl': pkt[8], 'csum': ok}
    if t in (3, 11, 12):
        q = pkt[ihl + 8:]
        qihl = (q[0] & 15) * 4
        qt, qc, qck, qa, qb = struct.unpack('!BBHHH', q[qihl:qihl + 8])
        return {'src': src, 'type': t, 'code': c, 'qdst': socket.inet_ntoa(q[16:20]), 'qtype': qt, 'id': qa, 'seq': qb, 'csum': ok}
    return None
def collect(until, want):
    out = []
    while time.time() < until:
        r, _, _ = select.select([s], [], [], max(0, until - time.time()))
        if not r: break
        m = parse(s.recv(70000))
        # Errors about requests to other destinations (a late one from an earlier probe) are not ours.
        if m and m['id'] == IDENT and m['src'] != '10.0.2.15' and m.get('qdst', dst) == dst:
            out.append(m)
            if want and want(m): break
    return out
if mode == 'echo':
    sent = {}
    for seq in range(1, n + 1):
        data = os.urandom(48)
        sent[seq] = data.hex()
        s.sendto(echo(IDENT, seq, data), (dst, 0))
        time.sleep(0.05)
    got = collect(time.time() + 2, None)
    for m in got:
        if 'data' in m: m['dataOk'] = m['data'] == sent.get(m['seq']); del m['data']
    print(json.dumps(got))
else:
    hops = []
    for ttl in range(1, n + 1):
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
        t0 = time.time()
        s.sendto(echo(IDENT, ttl, b'trace'), (dst, 0))
        got = collect(time.time() + 2, lambda m, ttl=ttl: m['seq'] == ttl)
        m = next((m for m in got if m['seq'] == ttl), None)
        hops.append(None if m is None else {'src': m['src'], 'type': m['type'], 'ms': round((time.time() - t0) * 1000, 2)})
        if m and m['type'] == 0: break
    print(json.dumps(hops))
`;

interface Probe {
  src: string;
  type: number;
  code?: number;
  id: number;
  seq: number;
  qdst?: string;
  qtype?: number;
  dataOk?: boolean;
  ttl?: number;
  csum: boolean;
}

async function probe(mode: 'echo' | 'trace', dst: string, n: number): Promise<unknown> {
  const file = writeScript(guest.dir, 'icmp-probe.py', PROBE);
  const r = await guest.exec(['python3', file, mode, dst, String(n)], { timeoutMs: 30_000 });
  if (r.code !== 0) throw new Error(`probe failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim()) as unknown;
}

/** busybox ping; returns received count and the average RTT (ms). */
async function busyboxPing(ns: Netns, args: string[]): Promise<{ received: number; avgMs: number | undefined; out: string }> {
  const r = await ns.exec(['busybox', 'ping', ...args], { timeoutMs: 30_000 });
  const out = r.stdout + r.stderr;
  const m = /(\d+) packets received/.exec(out);
  const rtt = /min\/avg\/max = [\d.]+\/([\d.]+)\//.exec(out);
  return { received: m ? Number(m[1]) : -1, avgMs: rtt ? Number(rtt[1]) : undefined, out };
}

type Stats = Record<string, Record<string, number> & { dropped: Record<string, number> }>;

describe.sequential('ICMP echo through ping sockets', () => {
  test('busybox ping to a host behind the host gets 3 replies; vs direct RTT', async () => {
    const r = await busyboxPing(guest, ['-c', '3', '-i', '0.2', '-W', '3', P_ADDR]);
    expect(r.received, r.out).toBe(3);
    // The same host pinged from H directly, for the RTT comparison.
    const direct = await busyboxPing(nsH, ['-c', '20', '-i', '0.05', P_ADDR]);
    const via = await busyboxPing(guest, ['-c', '20', '-i', '0.05', P_ADDR]);
    // The gateway, answered inside vmnat: the cost of the TAP and the event loop alone.
    const gateway = await busyboxPing(guest, ['-c', '20', '-i', '0.05', '10.0.2.2']);
    expect(direct.received).toBe(20);
    expect(via.received).toBe(20);
    console.log(`ICMP RTT avg: direct ${direct.avgMs} ms, through vmnat ${via.avgMs} ms, vmnat's own gateway ${gateway.avgMs} ms`);
    const stats = (await vmnat!.stats()) as Stats;
    expect(stats.icmpNat!.repliesToGuest).toBeGreaterThanOrEqual(23);
  });

  test('replies keep the guest identifier, sequence and data, come from the address pinged, and are not made up', async () => {
    const got = (await probe('echo', Q_ADDR, 3)) as Probe[];
    expect(got.map((m) => [m.src, m.type, m.id, m.seq, m.dataOk, m.csum])).toEqual([
      [Q_ADDR, 0, 0x1234, 1, true, true],
      [Q_ADDR, 0, 0x1234, 2, true, true],
      [Q_ADDR, 0, 0x1234, 3, true, true],
    ]);
    // Q is two routers away (P, then vmnat), and vmnat counts as a hop: 64 - 2.
    expect(got[0]!.ttl).toBe(62);
  });

  test('8,000-byte pings (fragmented on both sides of vmnat) come back whole', async () => {
    const r = await busyboxPing(guest, ['-c', '2', '-i', '0.2', '-W', '3', '-s', '8000', Q_ADDR]);
    expect(r.received, r.out).toBe(2);
    expect(r.out).toMatch(/8008 bytes from/);
  });

  test('an address nobody holds gets no reply (the host reports it unreachable, as it would to its own ping)', async () => {
    const r = await busyboxPing(guest, ['-c', '2', '-W', '2', NOBODY]);
    expect(r.received, r.out).toBe(0);
    const got = (await probe('echo', NOBODY, 1)) as Probe[];
    expect(got.filter((m) => m.type === 0)).toEqual([]);
  }, 30_000);

  test('a router without a route answers "host unreachable"; the guest gets it from that router', async () => {
    const got = (await probe('echo', UNREACHABLE, 2)) as Probe[];
    expect(got.map((m) => [m.src, m.type, m.code, m.qdst, m.qtype, m.seq, m.csum])).toEqual([
      [P_ADDR, 3, 1, UNREACHABLE, 8, 1, true],
      [P_ADDR, 3, 1, UNREACHABLE, 8, 2, true],
    ]);
  });

  test('TTL 1 gets "time exceeded" from 10.0.2.2, and traceroute sees every hop past vmnat', async () => {
    const bb = await busyboxPing(guest, ['-c', '1', '-t', '1', '-W', '2', P_ADDR]);
    expect(bb.received).toBe(0); // busybox ping does not print the error: the probe below checks it
    const hops = (await probe('trace', Q_ADDR, 5)) as ({ src: string; type: number; ms: number } | null)[];
    console.log(`traceroute through vmnat: ${JSON.stringify(hops)}`);
    expect(hops.map((h) => h && [h.src, h.type])).toEqual([
      ['10.0.2.2', 11],
      [P_ADDR, 11],
      [Q_ADDR, 0],
    ]);
    const stats = (await vmnat!.stats()) as Stats;
    expect(stats.nat!.ttlExceeded).toBeGreaterThanOrEqual(2);
    expect(stats.icmpNat!.errorsToGuest).toBeGreaterThanOrEqual(3);
  }, 30_000);

  test('where ping sockets are not permitted: one clear line at start, pings dropped and counted, the gateway still answers', async () => {
    await vmnat!.stop();
    vmnat = undefined;
    await sh(['ip', 'netns', 'exec', nsH.name, 'sysctl', '-qw', 'net.ipv4.ping_group_range=1 0']);
    vmnat = await startInH();
    await leaseWithUdhcpc(guest);
    const r = await busyboxPing(guest, ['-c', '2', '-W', '2', P_ADDR]);
    expect(r.received, r.out).toBe(0);
    const gw = await busyboxPing(guest, ['-c', '1', '-W', '2', '10.0.2.2']);
    expect(gw.received).toBe(1);
    const lines = vmnat.stderr().split('\n').filter((l) => /ICMP echo|ping socket/i.test(l));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/ping sockets are not permitted \(EACCES\).*net\.ipv4\.ping_group_range/);
    const stats = (await vmnat.stats()) as Stats;
    expect(stats.icmpNat!.dropped.notPermitted).toBe(2);
  }, 30_000);
});
