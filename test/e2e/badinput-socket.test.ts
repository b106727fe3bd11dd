/**
 * Bad input through the unix datagram socket (--socket): the transport vfkit and krunkit use, and
 * the one the macOS build runs. 120,000 random and mutated frames, twice, from a peer socket bound
 * beside vmnat's (what a VM's socket is), paced by the kernel: vmnat connects back to the peer, so
 * a full receive queue makes our sends wait (EAGAIN) rather than drop. vmnat stays up, its memory
 * stays bounded, its counters show the drops, and then a real VM (qemu over --socket) still leases
 * and pings the gateway. The 'portable' vitest project runs this against the portable addon too.
 * (badinput.test.ts does the same through a TAP, Linux only.)
 */
import { afterAll, expect, test } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { killAll, startVmnat, type VmnatProcess } from '../helpers/proc.ts';
import { hostileFrames } from '../helpers/fuzzframes.ts';
import { describeRun, runVm } from '../helpers/vm.ts';
import { loadNative, type NativeFramePort } from '../../src/link/native.ts';

const native = loadNative();
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vmnat-badsock-'));
let vmnat: VmnatProcess | undefined;
afterAll(async () => {
  await vmnat?.stop();
  killAll();
  fs.rmSync(dir, { recursive: true, force: true });
});

function rssKb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

/** Sends every frame through `port`, waiting 1 ms whenever the port's queue is full. */
async function blast(port: NativeFramePort, frames: readonly Uint8Array[]): Promise<number> {
  let sent = 0;
  for (const f of frames) {
    while (!port.send(f)) {
      port.flush();
      await new Promise((r) => setTimeout(r, 1));
    }
    sent++;
    if (sent % 256 === 0) port.flush();
  }
  port.flush();
  while (port.stats().txQueued > 0) await new Promise((r) => setTimeout(r, 5));
  return sent;
}

test('120,000 hostile frames over --socket: vmnat stays up, memory bounded, drops counted, a VM still leases', async () => {
  const SEED = 0x5eed_2027;
  const COUNT = 120_000;
  const enginePath = path.join(dir, 'engine.sock');
  // Anti-spoofing off: the frames come from random MACs and addresses, and this test is about what
  // the link and the stack's parsers make of them (the switch's own drops: switch.test.ts).
  vmnat = await startVmnat(['--socket', enginePath, '--anti-spoof', 'off']);
  const pid = vmnat.child.pid!;
  const frames = [...hostileFrames(SEED, COUNT)];

  const fd = native.unixDgramBind(path.join(dir, 'fuzz.sock'));
  native.unixDgramConnect(fd, enginePath);
  let replies = 0;
  const port = new native.FramePort(fd, { kind: 'dgram', onFrames: (_s, _o, n) => (replies += n) });
  port.start();
  const rssBefore = rssKb(pid);
  let rssAfterFirst = 0;
  try {
    // Two rounds: the second must not grow memory (every table and buffer is bounded).
    for (let round = 0; round < 2; round++) {
      expect(await blast(port, frames)).toBe(COUNT);
      if (round === 0) rssAfterFirst = rssKb(pid);
    }
    const stats = (await vmnat.stats()) as Record<string, Record<string, number>> & { links: { rxFrames: number }[] };
    const rssAfter = rssKb(pid);
    console.log(`vmnat RSS: ${rssBefore} kB before, ${rssAfterFirst} kB after one round, ${rssAfter} kB after two; ${replies} frames came back; our drops ${port.stats().txDropped}`);
    expect(vmnat.child.exitCode).toBeNull();
    expect(rssAfter - rssBefore).toBeLessThan(150 * 1024);
    expect(rssAfter - rssAfterFirst).toBeLessThan(40 * 1024);
    // Datagrams shorter than an Ethernet header are counted by the link, not delivered.
    expect(stats.links[0]!.rxFrames).toBeGreaterThan(2 * COUNT * 0.9);
    const sum = (o: Record<string, number> | undefined, keys: string[]) => keys.reduce((a, k) => a + (o?.[k] ?? 0), 0);
    expect(sum(stats.ipv4, ['badChecksum', 'badTotalLength', 'badHeaderLength', 'badVersion', 'truncated'])).toBeGreaterThan(1000);
    expect(sum(stats.udp, ['badChecksum', 'badLength', 'truncated'])).toBeGreaterThan(100);
    expect(sum(stats.eth, ['unknownEtherType'])).toBeGreaterThan(1000);
  } finally {
    port.close(); // our socket file stays; vmnat finds its peer dead and learns the next sender
    fs.rmSync(path.join(dir, 'fuzz.sock'), { force: true });
  }

  // A real guest, over the same socket, still leases and reaches the gateway.
  const r = await runVm({
    netdev: `dgram,id=n0,local.type=unix,local.path=${dir}/qemu.sock,remote.type=unix,remote.path=${enginePath}`,
    script: 'vmnat_lease && vmnat_ping 10.0.2.2 2',
    timeoutMs: 90_000,
  });
  expect(r.timedOut, describeRun(r)).toBe(false);
  expect(r.results, describeRun(r)).toMatchObject({ lease: 'ok', router: '10.0.2.2', ping: 'ok', done: '0' });
}, 240_000);
