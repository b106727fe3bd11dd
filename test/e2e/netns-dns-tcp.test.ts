/**
 * DNS over TCP at 10.0.2.3 with the kernel as the guest, while another flow of the same guest
 * pushes bulk data to the host: a query split across segments must reach the upstream intact (the
 * endpoint used to keep a view into a write slab that the bulk flow's bytes then overwrote, so
 * another flow's data reached the resolver and the answers). The upstream is a DNS server this
 * test runs on the host's loopback; the bulk flow goes to a sink on loopback.
 */
import { afterAll, beforeAll, expect, test } from 'vitest';
import net from 'node:net';
import { createNetns, leaseWithUdhcpc, writeScript, type Netns } from '../helpers/netns.ts';
import { killAll, startVmnat, type VmnatProcess } from '../helpers/proc.ts';
import { startTestDns, type TestDns } from '../helpers/dnsserver.ts';

const QUERIES = 20;
let dns: TestDns;
let ns: Netns | undefined;
let vmnat: VmnatProcess | undefined;
let sink: net.Server | undefined;
let sinkPort = 0;
let sunk = 0;

beforeAll(async () => {
  const zone: Parameters<typeof startTestDns>[0] = {};
  for (let i = 0; i < QUERIES; i++) zone[`q${i}.leak.vmnat.test`] = [{ type: 'A', name: `q${i}.leak.vmnat.test`, ttl: 60, data: `192.0.2.${i + 1}` }];
  dns = await startTestDns(zone);
  sink = net.createServer((s) => {
    s.on('data', (d: Buffer) => (sunk += d.length));
    s.on('error', () => undefined);
  });
  await new Promise<void>((r) => sink!.listen(0, '127.0.0.1', r));
  sinkPort = (sink.address() as net.AddressInfo).port;
});
afterAll(async () => {
  await vmnat?.stop();
  await ns?.destroy();
  await dns?.close();
  await new Promise((r) => sink?.close(r));
  killAll();
});

// Each query goes out in two segments; between them the bulk flow fills vmnat's write slabs.
const GUEST = `
import socket, struct, sys, time
n, port = int(sys.argv[1]), int(sys.argv[2])
def query(i):
    q = struct.pack('>HHHHHH', 0x4000 + i, 0x0100, 1, 0, 0, 0)
    for label in ('q%d' % i, 'leak', 'vmnat', 'test'):
        q += bytes([len(label)]) + label.encode()
    return q + b'\\x00' + struct.pack('>HH', 1, 1)
d = socket.create_connection(('10.0.2.3', 53), timeout=10)
d.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
b = socket.create_connection(('10.0.2.2', port), timeout=10)
for i in range(n):
    m = query(i)
    m = struct.pack('>H', len(m)) + m
    d.sendall(m[:9])
    time.sleep(0.02)
    b.sendall(b'\\xee' * 262144)
    time.sleep(0.02)
    d.sendall(m[9:])
good = 0
buf = b''
d.settimeout(5)
try:
    while good < n:
        chunk = d.recv(65536)
        if not chunk:
            break
        buf += chunk
        while len(buf) >= 2 and len(buf) >= 2 + struct.unpack('>H', buf[:2])[0]:
            (l,) = struct.unpack('>H', buf[:2])
            a, buf = buf[2:2 + l], buf[2 + l:]
            i = struct.unpack('>H', a[:2])[0] - 0x4000
            if 0 <= i < n and ('q%d' % i).encode() in a and a[-4:] == bytes([192, 0, 2, i + 1]):
                good += 1
except socket.timeout:
    pass
print('GOOD', good)
`;

test('queries split across segments reach the upstream intact while another flow moves bulk data', async () => {
  ns = await createNetns();
  vmnat = await startVmnat(['--tap', 'tap0', '--netns', ns.path, '--dns-server', `127.0.0.1:${dns.port}`]);
  await leaseWithUdhcpc(ns);
  const script = writeScript(ns.dir, 'guest.py', GUEST);
  const r = await ns.exec(['python3', script, String(QUERIES), String(sinkPort)], { timeoutMs: 60_000 });
  expect(r.code, r.stderr).toBe(0);
  const names = dns.queries.filter((q) => q.transport === 'tcp').map((q) => q.name);
  expect(names).toEqual(Array.from({ length: QUERIES }, (_, i) => `q${i}.leak.vmnat.test`));
  expect(r.stdout).toContain(`GOOD ${QUERIES}`);
  expect(sunk).toBeGreaterThan(0);
});
