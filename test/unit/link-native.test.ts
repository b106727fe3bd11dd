/** The addon's FramePort itself: batching, limits, backpressure, peers, exceptions. */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { nativeAddonPath } from '../../src/link/native.ts';
import { Peer, diffFrames, frame, native, tempDir, waitFor } from './link-helpers.ts';

const addonPath = nativeAddonPath();
const dir = tempDir('ln');
const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0).reverse()) c();
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function pair(): [number, number] {
  const [a, b] = native.socketpairDgram();
  return [a, b];
}

describe('native FramePort', () => {
  it('hands batches as page-aligned slots of one reused slab and Int32Array', async () => {
    const [a, b] = pair();
    const seen: { slab: Buffer; offsets: Int32Array; count: number; offs: number[] }[] = [];
    const port = new native.FramePort(a, {
      kind: 'dgram',
      onFrames: (slab, offsets, count) => {
        const offs: number[] = [];
        for (let i = 0; i < count; i++) offs.push(offsets[2 * i] ?? -1);
        seen.push({ slab, offsets, count, offs });
      },
    });
    cleanups.push(() => port.close());
    port.start();
    const peer = new Peer(b);
    cleanups.push(() => peer.close());
    peer.sendAll(Array.from({ length: 50 }, (_, i) => frame(100 + i, i)));
    await waitFor(() => seen.reduce((t, s) => t + s.count, 0) === 50, '50 frames');
    peer.sendAll([frame(60, 99)]);
    await waitFor(() => seen.reduce((t, s) => t + s.count, 0) === 51, 'one more');
    const first = seen[0];
    const last = seen[seen.length - 1];
    expect(first && last).toBeTruthy();
    expect(last?.slab).toBe(first?.slab);
    expect(last?.offsets).toBe(first?.offsets);
    for (const s of seen) for (const o of s.offs) expect(o % 4096).toBe(0);
    expect(port.stats()).toMatchObject({ rxFrames: 51, rxErrors: 0 });
    expect(port.stats().rxBatches).toBeLessThan(51); // batched, not one call per frame
  });

  it('counts datagrams above maxFrame as errors and delivers the rest', async () => {
    const [a, b] = pair();
    const got: number[] = [];
    const port = new native.FramePort(a, {
      kind: 'dgram',
      maxFrame: 1000,
      onFrames: (_slab, offsets, count) => {
        for (let i = 0; i < count; i++) got.push(offsets[2 * i + 1] ?? -1);
      },
    });
    cleanups.push(() => port.close());
    port.start();
    const peer = new Peer(b);
    cleanups.push(() => peer.close());
    peer.sendAll([frame(1000, 1), frame(1001, 2), frame(5000, 3), frame(4096, 4), frame(5, 5)]);
    await waitFor(() => port.stats().rxErrors === 3 && got.length === 2, 'two frames, three errors');
    expect(got).toEqual([1000, 5]);
  });

  it('queues on EAGAIN, drains when writable, and drops beyond its bound', async () => {
    const [a, b] = pair();
    const sender = new native.FramePort(a, { kind: 'dgram', onFrames: () => {} });
    cleanups.push(() => sender.close());
    const big = frame(65535, 1);
    let accepted = 0;
    const total = 400;
    for (let i = 0; i < total; i++) {
      big[20] = i & 0xff;
      if (sender.send(big)) accepted++;
      sender.flush();
    }
    const s = sender.stats();
    expect(s.txQueued).toBeGreaterThan(0); // the kernel buffer filled: frames wait in our queue
    expect(s.txDropped).toBe(total - accepted);
    expect(s.txDropped).toBeGreaterThan(0); // and the queue is bounded
    // Now the receiver reads: the queue drains through POLLOUT, with no further flush() calls.
    const peer = new Peer(b);
    cleanups.push(() => peer.close());
    await waitFor(() => peer.received.length === accepted, 'all accepted frames delivered', 10000);
    expect(sender.stats()).toMatchObject({ txQueued: 0, txFrames: accepted, txDropped: total - accepted });
    // In order: byte 20 counts up.
    const seq = peer.received.map((f) => f[20]);
    for (let i = 1; i < seq.length; i++) expect(seq[i]).toBe((seq[i - 1]! + 1) & 0xff);
  });

  it('learnPeer: connects back to a named sender; reports an unbound one as peer \'\'', async () => {
    const p = path.join(dir, 'learn.sock');
    const fd = native.unixDgramBind(p);
    const peers: string[] = [];
    const got: number[] = [];
    const port = new native.FramePort(fd, {
      kind: 'dgram',
      learnPeer: true,
      onFrames: (_s, offsets, count) => {
        for (let i = 0; i < count; i++) got.push(offsets[2 * i + 1] ?? -1);
      },
      onPeer: (x) => peers.push(x),
    });
    cleanups.push(() => port.close());
    port.start();

    // An unbound sender (no address to answer): a plain sendto from a fresh socket.
    const py = spawnSync('/usr/bin/python3', ['-c',
      `import socket; s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.sendto(bytes(61), ${JSON.stringify(p)})`]);
    if (py.error === undefined) {
      expect(py.status).toBe(0);
      await waitFor(() => peers.length === 1 && got.length === 1, "peer ''");
      expect(peers).toEqual(['']);
      expect(port.send(frame(60, 0))).toBe(true);
      port.flush();
      expect(port.stats().txDropped).toBe(1); // nobody to answer
    }

    const namedPath = path.join(dir, 'named.sock');
    const named = native.unixDgramBind(namedPath);
    native.unixDgramConnect(named, p);
    const np = new Peer(named);
    cleanups.push(() => np.close());
    np.sendAll([frame(60, 1), frame(62, 2)]);
    await waitFor(() => peers.at(-1) === namedPath && got.includes(62), 'onPeer for the named sender');
    expect(peers.filter((x) => x === namedPath)).toHaveLength(1); // once, not per datagram
    port.send(frame(70, 3));
    port.flush();
    await waitFor(() => np.received.length === 1, 'reply through the connect-back');
    expect(diffFrames(np.received, [frame(70, 3)])).toBe('same');
  });

  it('sends an exception thrown by onFrames to uncaughtException, and keeps running', () => {
    const script = `
      const a = require(${JSON.stringify(addonPath)});
      const [x, y] = a.socketpairDgram();
      let batches = 0;
      const caught = [];
      process.on('uncaughtException', (e) => caught.push(e.message));
      const px = new a.FramePort(x, { kind: 'dgram', onFrames(slab, off, n) {
        batches++;
        if (batches === 1) throw new Error('boom in handler');
      }});
      px.start();
      const py = new a.FramePort(y, { kind: 'dgram', onFrames() {} });
      py.send(new Uint8Array(60)); py.flush();
      setTimeout(() => { py.send(new Uint8Array(60)); py.flush(); }, 30);
      setTimeout(() => {
        process.stdout.write(JSON.stringify({ batches, caught, rx: px.stats().rxFrames }));
        px.close(); py.close();
      }, 100);
    `;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 10000 });
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ batches: 2, caught: ['boom in handler'], rx: 2 });
  });

  it('without an uncaughtException listener, a throwing handler ends the process loudly', () => {
    const script = `
      const a = require(${JSON.stringify(addonPath)});
      const [x, y] = a.socketpairDgram();
      const px = new a.FramePort(x, { kind: 'dgram', onFrames() { throw new Error('unhandled boom'); } });
      px.start();
      const py = new a.FramePort(y, { kind: 'dgram', onFrames() {} });
      py.send(new Uint8Array(60)); py.flush();
      setTimeout(() => process.stdout.write('survived'), 500);
    `;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 10000 });
    expect(r.status).not.toBe(0);
    expect(r.stdout).not.toContain('survived');
    expect(r.stderr).toContain('unhandled boom');
  });

  it('survives close() from inside its own callback', async () => {
    const [a, b] = pair();
    let calls = 0;
    const port = new native.FramePort(a, {
      kind: 'dgram',
      onFrames: () => {
        calls++;
        port.close();
      },
    });
    port.start();
    const peer = new Peer(b);
    cleanups.push(() => peer.close());
    peer.sendAll(Array.from({ length: 10 }, (_, i) => frame(60, i)));
    await waitFor(() => calls === 1, 'first batch');
    peer.sendAll([frame(60, 11)]);
    await new Promise((r) => setTimeout(r, 30));
    expect(calls).toBe(1);
    expect(port.send(frame(60, 1))).toBe(false);
  });

  it('socket helpers: probe, fdSocketType, cloexec, errno errors', () => {
    const p = path.join(dir, 'probe.sock');
    expect(native.unixDgramProbe(p)).toBe(false); // ENOENT
    const fd = native.unixDgramBind(p);
    expect(native.unixDgramProbe(p)).toBe(true);
    expect(native.fdSocketType(fd)).toBe('dgram');
    expect(() => native.unixDgramBind(p)).toThrow(expect.objectContaining({ code: 'EADDRINUSE', syscall: 'bind', path: p }));
    const fdinfo = (): { nonblock: boolean; cloexec: boolean } => {
      const m = /flags:\s*([0-7]+)/.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
      const flags = parseInt(m?.[1] ?? '0', 8);
      return { nonblock: (flags & 0o4000) !== 0, cloexec: (flags & 0o2000000) !== 0 };
    };
    expect(fdinfo()).toEqual({ nonblock: true, cloexec: true });
    native.setCloexec(fd, false);
    native.setNonblocking(fd, false);
    expect(fdinfo()).toEqual({ nonblock: false, cloexec: false });
    native.setCloexec(fd, true);
    native.setNonblocking(fd);
    expect(fdinfo()).toEqual({ nonblock: true, cloexec: true });
    native.closeFd(fd);
    expect(native.unixDgramProbe(p)).toBe(false); // ECONNREFUSED: stale
    expect(() => native.closeFd(fd)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    expect(() => native.unixDgramBind('x'.repeat(200))).toThrow(expect.objectContaining({ code: 'ENAMETOOLONG' }));
  });
});
