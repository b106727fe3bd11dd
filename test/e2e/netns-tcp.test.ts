/**
 * TCP through the NAT with the Linux kernel's own TCP as the guest (a network namespace behind
 * vmnat's TAP): curl, iperf3 and Python clients in the guest reach servers on the host's loopback
 * through the gateway 10.0.2.2.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { createNetns, leaseWithUdhcpc, writeScript, type Netns } from '../helpers/netns.ts';
import { killAll, sleep, startVmnat, type VmnatProcess } from '../helpers/proc.ts';
import { blob, closedTcpPort, sha256, startBlobServer, startEchoServer, startIperfServer, type BlobServer } from '../helpers/hostservers.ts';

const MB = 1 << 20;
let ns: Netns;
let vmnat: VmnatProcess;
let http: BlobServer;
let data: Buffer;

beforeAll(async () => {
  data = blob(100 * MB, 7);
  http = await startBlobServer(data);
  ns = await createNetns();
  vmnat = await startVmnat(['--tap', 'tap0', '--netns', ns.path]);
  await leaseWithUdhcpc(ns);
});
afterAll(async () => {
  await vmnat?.stop();
  await ns?.destroy();
  await http?.close();
  killAll();
});

type Stats = Record<string, Record<string, number>>;

/**
 * Runs iperf3 for `bytes` through vmnat and checks the byte counts: the sender wrote exactly
 * `bytes`; what the receiver counted all crossed vmnat (vmnat's counter for that direction grew by
 * at least that much, and by no more than was sent plus iperf3's small control exchange). iperf3
 * ends the test when its control connection says "done" and closes the data socket with whatever
 * is still queued in socket buffers, so the receiver's count falls short of `bytes` by those few
 * MiB on any path; it must still be ≥ 90 %.
 */
async function iperf(n: Netns, v: VmnatProcess, bytes: number, reverse: boolean): Promise<number> {
  const counter = reverse ? 'bytesToGuest' : 'bytesFromGuest';
  const before = ((await v.stats()) as Stats).tcpNat![counter]!;
  const { port, child: server } = await startIperfServer();
  try {
    const r = await n.exec(['iperf3', '-c', '10.0.2.2', '-p', String(port), '-n', String(bytes), '-J', ...(reverse ? ['-R'] : [])], { timeoutMs: 90_000 });
    const j = JSON.parse(r.stdout) as { end: { sum_sent: { bytes: number }; sum_received: { bytes: number; bits_per_second: number } } };
    // iperf3 -n may overshoot by one write of its 128 KiB buffer (seen once in ~10 full runs).
    const sent = j.end.sum_sent.bytes;
    expect(sent).toBeGreaterThanOrEqual(bytes);
    expect(sent).toBeLessThanOrEqual(bytes + 128 * 1024);
    expect(j.end.sum_received.bytes).toBeGreaterThan(bytes * 0.9);
    await sleep(200);
    const carried = ((await v.stats()) as Stats).tcpNat![counter]! - before;
    expect(carried).toBeGreaterThanOrEqual(j.end.sum_received.bytes);
    expect(carried).toBeLessThanOrEqual(sent + 64 * 1024);
    return j.end.sum_received.bits_per_second / 1e9;
  } finally {
    server.kill('SIGKILL');
  }
}

/** What a plain connect() to 10.0.2.2:port raises in the guest ('ok' if it connects). */
async function connectError(n: Netns, port: number): Promise<string> {
  const r = await n.exec(['python3', '-c', `
import socket
try:
    socket.create_connection(('10.0.2.2', ${port}), timeout=5); print('ok')
except Exception as e:
    print(type(e).__name__ + ': ' + str(e))
`], { timeoutMs: 20_000 });
  return r.stdout.trim();
}
async function openFlows(): Promise<number> {
  const s = (await vmnat.stats()) as Stats;
  return s.tcpNat!.flowsOpened! - s.tcpNat!.flowsClosed!;
}

describe.sequential('TCP guest → host loopback via 10.0.2.2', () => {
  test('curl downloads 100 MB; the sha256 matches', async () => {
    const r = await ns.exec(['sh', '-c', `curl -sS --max-time 60 http://10.0.2.2:${http.port}/blob | sha256sum`], { timeoutMs: 90_000 });
    expect(r.stderr).toBe('');
    expect(r.stdout.split(' ')[0]).toBe(sha256(data));
  });

  test('curl uploads 100 MB; the server hashes what arrived', async () => {
    const file = path.join(ns.dir, 'up.bin');
    fs.writeFileSync(file, data);
    const r = await ns.exec(['curl', '-sS', '--max-time', '60', '-T', file, `http://10.0.2.2:${http.port}/up`], { timeoutMs: 90_000 });
    fs.rmSync(file);
    expect(r.stdout.trim()).toBe(`${data.length} ${sha256(data)}`);
  });

  test('a closed host port fails at once with "Connection refused"', async () => {
    const port = await closedTcpPort();
    const t0 = performance.now();
    const r = await ns.exec(['curl', '-sS', '--max-time', '10', `http://10.0.2.2:${port}/`], { timeoutMs: 20_000 });
    expect(r.code).toBe(7); // curl 7.88 words ECONNREFUSED as "Couldn't connect to server"
    expect(performance.now() - t0).toBeLessThan(3000);
    expect(await connectError(ns, port)).toBe('ConnectionRefusedError: [Errno 111] Connection refused');
  });

  test('half-close: the guest shuts its write side and still reads the whole reply', async () => {
    const echo = await startEchoServer();
    const script = writeScript(ns.dir, 'halfclose.py', `
import hashlib, socket
s = socket.create_connection(('10.0.2.2', ${echo.port}))
payload = bytes(range(256)) * 8192   # 2 MiB
s.sendall(payload)
s.shutdown(socket.SHUT_WR)
got = bytearray()
while True:
    b = s.recv(1 << 16)
    if not b: break
    got += b
print(len(got), hashlib.sha256(got).hexdigest() == hashlib.sha256(payload).hexdigest())
`);
    const r = await ns.exec(['python3', script], { timeoutMs: 30_000 });
    await echo.close();
    expect(r.stdout.trim(), r.stderr).toBe(`${2 * MB} True`);
  });

  test('1,000 concurrent connections to a host echo server all complete; the flow count returns to 0; again on reused host sockets', async () => {
    const echo = await startEchoServer();
    const script = writeScript(ns.dir, 'many.py', `
import selectors, socket, sys
N = 1000
sel = selectors.DefaultSelector()
done = ok = 0
for i in range(N):
    s = socket.socket()
    s.setblocking(False)
    s.connect_ex(('10.0.2.2', ${echo.port}))
    sel.register(s, selectors.EVENT_WRITE, [i, b'', False])
while done < N:
    events = sel.select(timeout=20)
    if not events: break
    for key, mask in events:
        s, st = key.fileobj, key.data
        if mask & selectors.EVENT_WRITE and not st[2]:
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err: done += 1; sel.unregister(s); s.close(); continue
            s.send(('conn %04d\\n' % st[0]).encode()); st[2] = True
            sel.modify(s, selectors.EVENT_READ, st)
        elif mask & selectors.EVENT_READ:
            b = s.recv(100)
            st[1] += b
            if st[1].endswith(b'\\n'):
                if st[1] == ('conn %04d\\n' % st[0]).encode(): ok += 1
                done += 1; sel.unregister(s); s.close()
print(ok)
`);
    const r = await ns.exec(['python3', script], { timeoutMs: 60_000 });
    expect(r.stdout.trim(), r.stderr).toBe('1000');
    expect(echo.accepted()).toBe(1000);
    let open = -1;
    for (let i = 0; i < 40 && open !== 0; i++) {
      await sleep(250);
      open = await openFlows();
    }
    expect(open).toBe(0);
    // Every host socket is closed again (the addon's, which carry dialed flows) ...
    const first = ((await vmnat.stats()) as Stats).tcpNat!;
    expect(first.nativeDials).toBeGreaterThanOrEqual(1000);
    expect(first.nativeSocketsOpen).toBe(0);
    // ... and a second round runs on the slots the first round freed: every connection must
    // still get exactly its own line back.
    const again = await ns.exec(['python3', script], { timeoutMs: 60_000 });
    expect(again.stdout.trim(), again.stderr).toBe('1000');
    expect(echo.accepted()).toBe(2000);
    open = -1;
    for (let i = 0; i < 40 && open !== 0; i++) {
      await sleep(250);
      open = await openFlows();
    }
    const second = ((await vmnat.stats()) as Stats).tcpNat!;
    expect(second.nativeDials! - first.nativeDials!).toBe(1000);
    expect(second.nativeSocketsOpen).toBe(0);
    await echo.close();
  });

  for (const reverse of [false, true]) {
    test(`iperf3 ${reverse ? 'host→guest (-R)' : 'guest→host'} at MTU 1500 moves the expected byte count`, async () => {
      const gbps = await iperf(ns, vmnat, 200 * MB, reverse);
      console.log(`iperf3 ${reverse ? '-R' : ''} MTU 1500: ${gbps.toFixed(2)} Gbit/s`);
    });
  }
});

describe.sequential('MTU 65520 and --no-host-loopback', () => {
  test('iperf3 both ways at MTU 65520 moves the expected byte counts', async () => {
    const ns2 = await createNetns();
    const v = await startVmnat(['--tap', 'tap0', '--netns', ns2.path, '--mtu', '65520']);
    try {
      const lease = await leaseWithUdhcpc(ns2);
      expect(lease.mtu).toBe('65520');
      for (const reverse of [false, true]) {
        const gbps = await iperf(ns2, v, 500 * MB, reverse);
        console.log(`iperf3 ${reverse ? '-R' : ''} MTU 65520: ${gbps.toFixed(2)} Gbit/s`);
      }
    } finally {
      await v.stop();
      await ns2.destroy();
    }
  });

  test('--tcp-idle-timeout resets a silent flow both ways', async () => {
    const ns4 = await createNetns();
    const v = await startVmnat(['--tap', 'tap0', '--netns', ns4.path, '--tcp-idle-timeout', '2']);
    const echo = await startEchoServer();
    try {
      await leaseWithUdhcpc(ns4);
      const r = await ns4.exec(['python3', '-c', `
import socket, time
s = socket.create_connection(('10.0.2.2', ${echo.port}))
s.sendall(b'hi'); assert s.recv(10) == b'hi'
time.sleep(4)
try:
    s.sendall(b'again'); print('reply', s.recv(10))
except Exception as e:
    print(type(e).__name__)
`], { timeoutMs: 30_000 });
      expect(r.stdout.trim(), r.stderr).toMatch(/^(ConnectionResetError|BrokenPipeError)$/);
      const stats = (await v.stats()) as Stats;
      expect(stats.tcpNat!.idleTimeouts).toBe(1);
    } finally {
      await echo.close();
      await v.stop();
      await ns4.destroy();
    }
  });

  test('--no-host-loopback refuses 10.0.2.2', async () => {
    const ns3 = await createNetns();
    const v = await startVmnat(['--tap', 'tap0', '--netns', ns3.path, '--no-host-loopback']);
    try {
      await leaseWithUdhcpc(ns3);
      const r = await ns3.exec(['curl', '-sS', '--max-time', '10', `http://10.0.2.2:${http.port}/blob`], { timeoutMs: 20_000 });
      expect(r.code).toBe(7);
      expect(await connectError(ns3, http.port)).toBe('ConnectionRefusedError: [Errno 111] Connection refused');
    } finally {
      await v.stop();
      await ns3.destroy();
    }
  });
});

