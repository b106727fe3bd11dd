/**
 * The TAP link against the Linux kernel as the guest: a network namespace this test creates
 * (vmnat-lt<PID>), deleted in afterAll. Needs root and /dev/net/tun; skipped otherwise.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TapLink } from '../../src/link/tap.ts';
import { openLink } from '../../src/link/index.ts';
import type { LinkError } from '../../src/link/errors.ts';
import { waitFor } from './link-helpers.ts';
import { UdpView } from '../../src/stack/wire/udp.ts';
import { TcpView } from '../../src/stack/wire/tcp.ts';

const ipv4 = (b: number[]): number => ((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0;

const NS = `vmnat-lt${process.pid}`;
const canRun = process.getuid?.() === 0 && fs.existsSync('/dev/net/tun');

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}
function ipOk(...args: string[]): boolean {
  try {
    ip(...args);
    return true;
  } catch {
    return false;
  }
}
function rxPackets(dev: string): number {
  const out = ip('-n', NS, '-s', '-j', 'link', 'show', 'dev', dev);
  const parsed = JSON.parse(out) as { stats64?: { rx?: { packets?: number } } }[];
  return parsed[0]?.stats64?.rx?.packets ?? -1;
}
function macOf(dev: string): number[] {
  const parsed = JSON.parse(ip('-n', NS, '-j', 'link', 'show', 'dev', dev)) as { address: string }[];
  return (parsed[0]?.address ?? '').split(':').map((h) => parseInt(h, 16));
}
/** Sends one UDP datagram from inside the namespace: the kernel has to ARP for the target first. */
function udpFromNetns(target: string): void {
  execFileSync('ip', ['netns', 'exec', NS, process.execPath, '-e',
    `const s=require('dgram').createSocket('udp4');s.send('x',9,${JSON.stringify(target)},()=>s.close())`]);
}

const isArpRequestFor = (f: Uint8Array, ip4: number[]): boolean =>
  f.length >= 42 && f[12] === 0x08 && f[13] === 0x06 && f[21] === 1 && f[38] === ip4[0] && f[39] === ip4[1] && f[40] === ip4[2] && f[41] === ip4[3];

describe.skipIf(!canRun)('tap link in a network namespace', () => {
  const sleepers: ChildProcess[] = [];
  beforeAll(() => {
    ip('netns', 'add', NS);
  });
  afterAll(() => {
    for (const s of sleepers) s.kill();
    ipOk('netns', 'del', NS);
  });

  it('opens the TAP inside the namespace only, up, and receives the kernel\'s frames', async () => {
    const link = TapLink.open({ name: 'vmt0', netnsPath: `/run/netns/${NS}` });
    try {
      expect(link.kind).toBe('tap');
      expect(link.describe()).toEqual({ tap: 'vmt0', netns: `/run/netns/${NS}` });
      expect(ipOk('link', 'show', 'dev', 'vmt0')).toBe(false); // our own namespace is untouched
      expect(ip('-n', NS, 'link', 'show', 'dev', 'vmt0')).toMatch(/[<,]UP[,>]/);

      const got: Uint8Array[] = [];
      link.start((frames) => {
        for (const f of frames) got.push(f.slice());
      });
      ip('-n', NS, 'addr', 'add', '192.0.2.1/24', 'dev', 'vmt0');
      udpFromNetns('192.0.2.2');
      await waitFor(() => got.some((f) => isArpRequestFor(f, [192, 0, 2, 2])), 'an ARP request for 192.0.2.2');
      const arp = got.find((f) => isArpRequestFor(f, [192, 0, 2, 2])) as Uint8Array;
      expect(arp.length).toBe(42); // no FCS, no padding
      const tapMac = macOf('vmt0');
      expect([...arp.subarray(0, 6)]).toEqual([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
      expect([...arp.subarray(6, 12)]).toEqual(tapMac);
      expect(link.stats.rxFrames).toBe(got.length);

      // Answer it: an ARP reply 192.0.2.2 is-at 02:00:00:00:00:02. The kernel counts it and
      // learns the neighbour only if every byte is right.
      const guestMac = [0x02, 0, 0, 0, 0, 0x02];
      const reply = new Uint8Array([
        ...tapMac, ...guestMac, 0x08, 0x06,
        0, 1, 0x08, 0, 6, 4, 0, 2,
        ...guestMac, 192, 0, 2, 2,
        ...tapMac, 192, 0, 2, 1,
      ]);
      const before = rxPackets('vmt0');
      expect(link.send(reply)).toBe(true);
      link.flush();
      await waitFor(() => rxPackets('vmt0') === before + 1, 'the kernel counting our frame');
      await waitFor(() => /02:00:00:00:00:02/.test(ip('-n', NS, 'neigh', 'show', '192.0.2.2')), 'the neighbour learned');
      expect(link.stats).toMatchObject({ txFrames: 1, txBytes: 42, txDropped: 0 });
    } finally {
      await link.close();
    }
    // A device we created goes away with us.
    await waitFor(() => !ipOk('-n', NS, 'link', 'show', 'dev', 'vmt0'), 'the TAP removed on close');
  });

  it('opens a TAP in the namespace of a process (netnsPid)', async () => {
    const sleeper = spawn('ip', ['netns', 'exec', NS, 'sleep', '60'], { stdio: 'ignore' });
    sleepers.push(sleeper);
    const pid = sleeper.pid as number; // ip netns exec execs sleep: same pid
    const nsIno = fs.statSync(`/run/netns/${NS}`).ino;
    await waitFor(() => {
      try {
        return fs.statSync(`/proc/${pid}/ns/net`).ino === nsIno;
      } catch {
        return false;
      }
    }, 'the sleeper inside the namespace');
    const link = await openLink({ kind: 'tap', name: 'vmt1', netnsPid: pid });
    try {
      expect(link.describe()).toEqual({ tap: 'vmt1', netns: pid });
      expect(ip('-n', NS, 'link', 'show', 'dev', 'vmt1')).toMatch(/[<,]UP[,>]/);
      expect(ipOk('link', 'show', 'dev', 'vmt1')).toBe(false);
    } finally {
      await link.close();
    }
  });

  it('marks the kernel\'s UDP and TCP frames as checksum-vouched, with their partial checksums completed', async () => {
    const link = TapLink.open({ name: 'vmt4', netnsPath: `/run/netns/${NS}` });
    try {
      const got: { frame: Uint8Array; ok: boolean }[] = [];
      link.start((frames, ok) => {
        frames.forEach((f, i) => got.push({ frame: f.slice(), ok: ok?.[i] === 1 }));
      });
      ip('-n', NS, 'addr', 'add', '192.0.2.1/24', 'dev', 'vmt4');
      ip('-n', NS, 'neigh', 'add', '192.0.2.2', 'lladdr', '02:00:00:00:00:02', 'dev', 'vmt4', 'nud', 'permanent');
      udpFromNetns('192.0.2.2');
      execFileSync('ip', ['netns', 'exec', NS, process.execPath, '-e',
        `require('net').connect(9,'192.0.2.2').on('error',()=>{}); setTimeout(()=>process.exit(0),300)`]);
      const isIpv4 = (f: Uint8Array, proto: number): boolean => f.length > 34 && f[12] === 0x08 && f[13] === 0 && f[23] === proto;
      await waitFor(() => got.some((g) => isIpv4(g.frame, 17)) && got.some((g) => isIpv4(g.frame, 6)), 'a UDP datagram and a TCP SYN');
      for (const proto of [17, 6]) {
        const g = got.find((x) => isIpv4(x.frame, proto))!;
        expect(g.ok, `proto ${proto} vouched`).toBe(true);
        const src = [192, 0, 2, 1];
        const dst = [192, 0, 2, 2];
        const l4 = g.frame.subarray(34);
        const view = proto === 17
          ? UdpView.checked(l4, 0, l4.length, ipv4(src), ipv4(dst))
          : TcpView.checked(l4, 0, l4.length, ipv4(src), ipv4(dst));
        expect(typeof view, `proto ${proto} checksum complete`).not.toBe('string');
      }
    } finally {
      await link.close();
    }
  });

  it('reports a deleted device once through onError', async () => {
    const errors: LinkError[] = [];
    const link = TapLink.open({ name: 'vmt2', netnsPath: `/run/netns/${NS}` }, { onError: (e) => errors.push(e) });
    try {
      link.start(() => {});
      ip('-n', NS, 'link', 'del', 'dev', 'vmt2');
      await waitFor(() => errors.length > 0, 'onError');
      await new Promise((r) => setTimeout(r, 50));
      expect(errors).toHaveLength(1);
      expect(errors[0]?.code).toBe('ELINK_FAILED');
    } finally {
      await link.close();
    }
  });

  it('fails clearly for a namespace that does not exist', () => {
    expect(() => TapLink.open({ name: 'vmt3', netnsPath: `/run/netns/${NS}-missing` })).toThrow(
      expect.objectContaining({ code: 'ESYSTEM', errno: 'ENOENT' }),
    );
  });
});
