/**
 * --hostfwd-source (issue 14): whom the guest sees as the peer of a forwarded connection.
 *
 * Topology, all in namespaces this test creates (nothing touches the host's own namespace):
 *   client netns (192.168.77.2) ──veth── "host" netns (192.168.77.1, vmnat runs here)
 *                                               └── vmnat ──TAP── guest netns (10.0.2.15, leased)
 * The guest's servers (the kernel's TCP and UDP) answer each peer with the address they see. With
 * `client`, a client from the other namespace is seen as 192.168.77.2 with its own port, and the
 * replies come back through vmnat (the guest's default route is the gateway); a loopback client in
 * the host namespace is still seen as the gateway. With the default (`gateway`), everyone is.
 */
import { afterAll, describe, expect, test } from 'vitest';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { createNetns, leaseWithUdhcpc, writeScript, type Netns } from '../helpers/netns.ts';
import { killAll, startVmnat, type VmnatProcess } from '../helpers/proc.ts';

const PEER_SERVERS = `import socket, sys, threading
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); t.bind(('0.0.0.0', 8000)); t.listen(64)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(('0.0.0.0', 9000))
def tcp():
    while True:
        c, a = t.accept(); c.sendall(('%s:%d\\n' % a).encode()); c.close()
def udp():
    while True:
        d, a = u.recvfrom(2048); u.sendto(('%s:%d' % a).encode(), a)
threading.Thread(target=tcp, daemon=True).start()
threading.Thread(target=udp, daemon=True).start()
print('ready', flush=True)
threading.Event().wait()
`;

/** Connects (TCP) or sends one datagram (UDP) to ADDR:PORT; prints "<own addr>:<own port> <what the guest saw>". */
const CLIENT = `import socket, sys
addr, port, proto = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if proto == 'tcp':
    s = socket.create_connection((addr, port), timeout=10)
    seen = s.recv(100).decode().strip()
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(10); s.connect((addr, port))
    s.send(b'who am i'); seen = s.recv(100).decode().strip()
print('%s:%d %s' % (s.getsockname()[0], s.getsockname()[1], seen))
`;

interface Topology {
  host: Netns;
  client: Netns;
  guest: Netns;
  vmnat: VmnatProcess;
  servers: ChildProcess;
  tcpPort: number;
  udpPort: number;
  clientScript: string;
}
const live: Topology[] = [];

async function topology(extra: string[]): Promise<Topology> {
  const host = await createNetns();
  const client = await createNetns();
  const guest = await createNetns();
  const t: Partial<Topology> = { host, client, guest };
  live.push(t as Topology);
  const ok = async (n: Netns, cmd: string[]) => {
    const r = await n.exec(cmd);
    if (r.code !== 0) throw new Error(`${cmd.join(' ')}: ${r.stderr}`);
  };
  await ok(host, ['ip', 'link', 'add', 'veth-h', 'type', 'veth', 'peer', 'name', 'veth-c', 'netns', client.name]);
  await ok(host, ['ip', 'addr', 'add', '192.168.77.1/24', 'dev', 'veth-h']);
  await ok(host, ['ip', 'link', 'set', 'veth-h', 'up']);
  await ok(client, ['ip', 'addr', 'add', '192.168.77.2/24', 'dev', 'veth-c']);
  await ok(client, ['ip', 'link', 'set', 'veth-c', 'up']);
  const vmnat = await startVmnat(['--tap', 'tap0', '--netns', guest.path, '--dns-server', '127.0.0.1:9', '--hostfwd', 'tcp:0.0.0.0:0-:8000', '--hostfwd', 'udp:0.0.0.0:0-:9000', ...extra], {
    prefix: ['ip', 'netns', 'exec', host.name],
  });
  t.vmnat = vmnat;
  const forwards = vmnat.ready['forwards'] as unknown as { proto: string; host_port: number }[];
  t.tcpPort = forwards.find((f) => f.proto === 'tcp')!.host_port;
  t.udpPort = forwards.find((f) => f.proto === 'udp')!.host_port;
  await ok(guest, ['ip', 'link', 'set', 'tap0', 'up']);
  await leaseWithUdhcpc(guest);
  const serverScript = writeScript(guest.dir, 'peers.py', PEER_SERVERS);
  t.clientScript = writeScript(client.dir, 'client.py', CLIENT);
  const servers = spawn('ip', ['netns', 'exec', guest.name, 'python3', serverScript], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.servers = servers;
  await new Promise<void>((resolve, reject) => {
    servers.stdout!.once('data', () => resolve());
    servers.once('exit', (c) => reject(new Error(`guest servers exited ${c}`)));
  });
  return t as Topology;
}

/** Runs the client in `n`; returns [own address:port, what the guest saw]. */
async function ask(t: Topology, n: Netns, addr: string, port: number, proto: 'tcp' | 'udp'): Promise<[string, string]> {
  const r = await n.exec(['python3', path.join(t.clientScript), addr, String(port), proto], { timeoutMs: 20_000 });
  if (r.code !== 0) throw new Error(`client: ${r.stderr}`);
  const [own, seen] = r.stdout.trim().split(' ');
  return [own!, seen!];
}

afterAll(async () => {
  for (const t of live) {
    t.servers?.kill('SIGKILL');
    await t.vmnat?.stop();
    for (const n of [t.guest, t.client, t.host]) await n?.destroy();
  }
  killAll();
});

describe.sequential('--hostfwd-source', () => {
  test('client: a client beyond the host is seen with its own address and port (TCP and UDP); loopback clients as the gateway', async () => {
    const t = await topology(['--hostfwd-source', 'client']);
    for (let i = 0; i < 3; i++) {
      const [own, seen] = await ask(t, t.client, '192.168.77.1', t.tcpPort, 'tcp');
      expect(own).toMatch(/^192\.168\.77\.2:\d+$/);
      expect(seen).toBe(own); // the same address and the same port
    }
    const [ownUdp, seenUdp] = await ask(t, t.client, '192.168.77.1', t.udpPort, 'udp');
    expect(seenUdp).toBe(ownUdp);
    const [, seenLocal] = await ask(t, t.host, '127.0.0.1', t.tcpPort, 'tcp');
    expect(seenLocal).toMatch(/^10\.0\.2\.2:\d+$/);
    const [, seenLocalUdp] = await ask(t, t.host, '127.0.0.1', t.udpPort, 'udp');
    expect(seenLocalUdp).toMatch(/^10\.0\.2\.2:\d+$/);
    // A client on the host's own veth address is not loopback, so it keeps its address too.
    const [ownH, seenH] = await ask(t, t.host, '192.168.77.1', t.tcpPort, 'tcp');
    expect(seenH).toBe(ownH);
    const stats = (await t.vmnat.stats()) as { engine: { internalErrors: number }; tcpNat: { forwardsOpened: number; forwardFailed: number } };
    expect(stats.engine.internalErrors).toBe(0);
    expect(stats.tcpNat.forwardFailed).toBe(0);
  });

  test('gateway (the default): the same client is seen as the gateway', async () => {
    const t = await topology([]);
    const [own, seen] = await ask(t, t.client, '192.168.77.1', t.tcpPort, 'tcp');
    expect(own).toMatch(/^192\.168\.77\.2:/);
    expect(seen).toMatch(/^10\.0\.2\.2:\d+$/);
    const [, seenUdp] = await ask(t, t.client, '192.168.77.1', t.udpPort, 'udp');
    expect(seenUdp).toMatch(/^10\.0\.2\.2:\d+$/);
  });
});
