import fs from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { SocketLink } from '../../src/link/socket.ts';
import { openLink, LinkError } from '../../src/link/index.ts';
import { Peer, diffFrames, frame, native, tempDir, waitFor } from './link-helpers.ts';

const dir = tempDir('ls');
const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

let n = 0;
function paths(): { link: string; peer: string } {
  n++;
  return { link: path.join(dir, `link${n}.sock`), peer: path.join(dir, `peer${n}.sock`) };
}

function openSocket(p: string): { link: SocketLink; got: Uint8Array[] } {
  const link = SocketLink.open(p);
  cleanups.push(() => link.close());
  const got: Uint8Array[] = [];
  link.start((frames) => {
    for (const f of frames) got.push(f.slice());
  });
  return { link, got };
}

function bindPeer(peerPath: string, linkPath: string): Peer {
  const fd = native.unixDgramBind(peerPath);
  native.unixDgramConnect(fd, linkPath);
  const peer = new Peer(fd);
  cleanups.push(() => peer.close());
  return peer;
}

describe('socket link', () => {
  it('moves frames both ways byte-exact and learns the guest from its first datagram', async () => {
    const p = paths();
    const { link, got } = openSocket(p.link);
    expect(link.describe()).toEqual({ path: p.link });
    expect(fs.lstatSync(p.link).isSocket()).toBe(true);

    // Nobody to send to yet: dropped and counted.
    expect(link.send(frame(60, 0))).toBe(true); // queued…
    link.flush(); // …and dropped when the kernel says there is no peer
    expect(link.stats.txDropped).toBe(1);

    const peer = bindPeer(p.peer, p.link);
    const toLink = [frame(14, 1), frame(60, 2), frame(1514, 3), frame(9014, 4), frame(65535, 5)];
    peer.sendAll(toLink);
    await waitFor(() => got.length === toLink.length, 'frames at the link');
    expect(diffFrames(got, toLink)).toBe('same');
    expect(link.peer).toBe(p.peer);
    expect(link.stats).toMatchObject({ rxFrames: 5, rxBytes: 14 + 60 + 1514 + 9014 + 65535, rxErrors: 0 });

    const toPeer = [frame(42, 6), frame(1514, 7), frame(65535, 8)];
    for (const f of toPeer) expect(link.send(f)).toBe(true);
    link.flush();
    await waitFor(() => peer.received.length === toPeer.length, 'frames at the peer');
    expect(diffFrames(peer.received, toPeer)).toBe('same');
    expect(link.stats).toMatchObject({ txFrames: 3, txBytes: 42 + 1514 + 65535 });
  });

  it("consumes vfkit's VFKT handshake and counts other short datagrams as errors", async () => {
    const p = paths();
    const { link, got } = openSocket(p.link);
    const peer = bindPeer(p.peer, p.link);
    const vfkt = new TextEncoder().encode('VFKT');
    peer.sendAll([vfkt, frame(60, 1), frame(13, 2), frame(4, 3), frame(60, 4)]);
    await waitFor(() => got.length === 2 && link.stats.rxErrors === 2, 'two frames and two errors');
    expect(got).toEqual([frame(60, 1), frame(60, 4)]);
    expect(link.handshakes).toBe(1);
    expect(link.stats.rxFrames).toBe(2);
  });

  it('replaces a stale socket file nobody serves', async () => {
    const p = paths();
    native.closeFd(native.unixDgramBind(p.link)); // a dead process's leftover
    expect(fs.lstatSync(p.link).isSocket()).toBe(true);
    expect(native.unixDgramProbe(p.link)).toBe(false);
    const { got } = openSocket(p.link);
    const peer = bindPeer(p.peer, p.link);
    peer.sendAll([frame(100, 9)]);
    await waitFor(() => got.length === 1, 'a frame through the replaced socket');
    expect(got[0]).toEqual(frame(100, 9));
  });

  it('refuses a path a live process serves, and leaves it alone', async () => {
    const p = paths();
    const live = native.unixDgramBind(p.link);
    cleanups.push(() => native.closeFd(live));
    const ino = fs.lstatSync(p.link).ino;
    const err = await openLink({ kind: 'socket', path: p.link }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(LinkError);
    expect((err as LinkError).code).toBe('EADDRINUSE_LIVE');
    expect((err as LinkError).message).toContain(p.link);
    expect(fs.lstatSync(p.link).ino).toBe(ino);
    expect(native.unixDgramProbe(p.link)).toBe(true);
  });

  it('never deletes a path that is not a socket', () => {
    const p = paths();
    fs.writeFileSync(p.link, 'precious');
    expect(() => SocketLink.open(p.link)).toThrow(expect.objectContaining({ code: 'EPATH_NOT_SOCKET' }));
    expect(fs.readFileSync(p.link, 'utf8')).toBe('precious');
  });

  it('removes its socket file on close (and close is idempotent)', async () => {
    const p = paths();
    const link = SocketLink.open(p.link);
    expect(fs.existsSync(p.link)).toBe(true);
    await link.close();
    expect(fs.existsSync(p.link)).toBe(false);
    await link.close();
    expect(link.send(frame(60, 0))).toBe(false);
  });

  /** A restarting guest: connect() is refused (EPERM) while the link is still tied to the dead one. */
  async function bindPeerRetrying(peerPath: string, linkPath: string): Promise<Peer> {
    const fd = native.unixDgramBind(peerPath);
    const deadline = Date.now() + 3000;
    for (;;) {
      try {
        native.unixDgramConnect(fd, linkPath);
        break;
      } catch (err) {
        if ((err as { code?: string }).code !== 'EPERM' || Date.now() > deadline) throw err;
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    const peer = new Peer(fd);
    cleanups.push(() => peer.close());
    return peer;
  }

  for (const how of ['re-binds the same path', 'crashes and restarts on a new path'] as const) {
    it(`relearns a guest that ${how}`, async () => {
      const p = paths();
      const { link, got } = openSocket(p.link);
      const first = bindPeer(p.peer, p.link);
      first.sendAll([frame(60, 1)]);
      await waitFor(() => got.length === 1, 'first guest frame');
      first.close(); // crash: its socket file stays behind
      let secondPath = p.peer + '.new';
      if (how === 're-binds the same path') {
        fs.unlinkSync(p.peer);
        secondPath = p.peer;
      }
      const t0 = Date.now();
      const second = await bindPeerRetrying(secondPath, p.link);
      expect(Date.now() - t0).toBeLessThan(1000); // the link noticed within its check period
      second.sendAll([frame(60, 2)]);
      await waitFor(() => got.length === 2, 'second guest frame');
      expect(got[1]).toEqual(frame(60, 2));
      expect(link.peer).toBe(secondPath);
      link.send(frame(70, 3));
      link.flush();
      await waitFor(() => second.received.length === 1, 'reply at the new guest');
      expect(second.received[0]).toEqual(frame(70, 3));
    });
  }

  it('relearns at once when a send finds the old guest gone', async () => {
    const p = paths();
    const { link, got } = openSocket(p.link);
    const first = bindPeer(p.peer, p.link);
    first.sendAll([frame(60, 1)]);
    await waitFor(() => got.length === 1, 'first guest frame');
    first.close();
    fs.unlinkSync(p.peer);
    link.send(frame(60, 9));
    link.flush(); // ECONNREFUSED: the association is dropped
    const dropped = link.stats.txDropped;
    expect(dropped).toBe(1);
    const second = bindPeer(path.join(dir, `other${n}.sock`), p.link);
    second.sendAll([frame(60, 2)]);
    await waitFor(() => got.length === 2, 'second guest frame');
    expect(link.peer).toBe(path.join(dir, `other${n}.sock`));
  });
});
