import fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { nativeAddonPath } from '../../src/link/native.ts';
import { FdLink } from '../../src/link/fd.ts';
import { openLink, spawnWithSocketpair, LinkError } from '../../src/link/index.ts';
import type { LinkError as LinkErrorType } from '../../src/link/errors.ts';
import { Peer, diffFrames, frame, native, waitFor } from './link-helpers.ts';

const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const addonPath = nativeAddonPath();

describe('fd link', () => {
  it('adopts one end of a socketpair and moves frames both ways byte-exact', async () => {
    const [a, b] = native.socketpairDgram();
    const link = await openLink({ kind: 'fd', fd: a });
    cleanups.push(() => link.close());
    const peer = new Peer(b);
    cleanups.push(() => peer.close());
    expect(link.kind).toBe('fd');
    expect(link.describe()).toEqual({ fd: a });
    const got: Uint8Array[] = [];
    link.start((frames) => {
      for (const f of frames) got.push(f.slice());
    });

    const toLink = Array.from({ length: 300 }, (_, i) => frame(i % 3 === 0 ? 65535 : 60 + i * 5, i));
    peer.sendAll(toLink);
    await waitFor(() => got.length === toLink.length, 'frames at the link');
    expect(diffFrames(got, toLink)).toBe('same');
    expect(link.stats.rxFrames).toBe(300);

    const toPeer = [frame(42, 1), frame(1514, 2), frame(65535, 3)];
    for (const f of toPeer) link.send(f);
    link.flush();
    await waitFor(() => peer.received.length === 3, 'frames at the peer');
    expect(diffFrames(peer.received, toPeer)).toBe('same');
    expect(link.stats).toMatchObject({ txFrames: 3, txBytes: 42 + 1514 + 65535, txDropped: 0, rxErrors: 0 });
  });

  it('refuses an fd that is not a datagram socket', () => {
    const fd = fs.openSync('/dev/null', 'r');
    cleanups.push(() => fs.closeSync(fd));
    expect(() => FdLink.adopt(fd)).toThrow(expect.objectContaining({ code: 'EFD_TYPE' }));
    let err: unknown;
    try {
      FdLink.adopt(fd);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(LinkError);
    expect((err as LinkErrorType).message).toMatch(/not a socket/);
  });

  it('reports a bad fd number as a system error', () => {
    expect(() => FdLink.adopt(987654)).toThrow(expect.objectContaining({ code: 'ESYSTEM', errno: 'EBADF' }));
  });

  it('reports once, through onError, that the peer has gone', async () => {
    const [a, b] = native.socketpairDgram();
    const errors: LinkErrorType[] = [];
    const link = FdLink.adopt(a, { onError: (e) => errors.push(e) });
    cleanups.push(() => link.close());
    link.start(() => {});
    native.closeFd(b);
    link.send(frame(60, 1));
    link.flush();
    link.send(frame(60, 2));
    link.flush();
    await waitFor(() => errors.length > 0, 'onError');
    expect(errors).toHaveLength(1);
    expect(errors[0]?.code).toBe('ELINK_FAILED');
    expect(errors[0]?.errno).toBe('ECONNREFUSED');
    expect(link.send(frame(60, 3))).toBe(false);
  });
});

describe('spawnWithSocketpair', () => {
  it('runs COMMAND with the other end as fd 4 (blocking) and exits with its status', async () => {
    // The child echoes every frame back through fd 4 (using the addon), and exits 7 on a frame
    // starting with 0xff. It also reports whether fd 4 was handed to it in blocking mode.
    const script = `
      const fs = require('fs');
      const a = require(${JSON.stringify(addonPath)});
      const nb = (fs.readFileSync('/proc/self/fdinfo/4', 'utf8').match(/flags:\\s*(\\d+)/) || [])[1];
      const blocking = (parseInt(nb, 8) & 0o4000) === 0;
      const p = new a.FramePort(4, { kind: 'dgram', onFrames(slab, off, n) {
        for (let i = 0; i < n; i++) {
          const f = slab.subarray(off[2*i], off[2*i] + off[2*i+1]);
          if (f[0] === 0xff) process.exit(7);
          p.send(f);
        }
        p.flush();
      }});
      p.start();
      const hello = new Uint8Array(20); hello[0] = blocking ? 1 : 2; p.send(hello); p.flush();
    `;
    const { link, child } = await spawnWithSocketpair([process.execPath, '-e', script]);
    cleanups.push(() => link.close());
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    expect(link.kind).toBe('fd');
    const got: Uint8Array[] = [];
    link.start((frames) => {
      for (const f of frames) got.push(f.slice());
    });
    await waitFor(() => got.length === 1, 'hello from the child', 10000);
    expect(got[0]?.[0]).toBe(1); // the child's end was blocking
    const frames = [frame(60, 1), frame(1514, 2), frame(65535, 3)];
    for (const f of frames) link.send(f);
    link.flush();
    await waitFor(() => got.length === 4, 'echoes', 10000);
    expect(diffFrames(got.slice(1), frames)).toBe('same');
    const bye = new Uint8Array(60).fill(0xff);
    link.send(bye);
    link.flush();
    expect(await exited).toBe(7);
  });

  it('rejects with a clear error when COMMAND cannot start, leaking no fd', async () => {
    const before = fs.readdirSync('/proc/self/fd').length;
    const err = await spawnWithSocketpair(['/nonexistent/vmnat-test-binary']).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(LinkError);
    expect((err as LinkErrorType).errno).toBe('ENOENT');
    expect((err as LinkErrorType).message).toContain('/nonexistent/vmnat-test-binary');
    expect(fs.readdirSync('/proc/self/fd').length).toBe(before);
  });
});
