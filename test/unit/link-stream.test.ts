import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { StreamLink } from '../../src/link/stream.ts';
import type { Link } from '../../src/link/types.ts';
import { openLink, LinkError } from '../../src/link/index.ts';
import { QemuFrameDecoder, writeQemuHeader } from '../../src/link/qemu-framing.ts';
import { diffFrames, frame, native, tempDir, waitFor } from './link-helpers.ts';

const dir = tempDir('lst');
const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

let n = 0;
const nextPath = (): string => path.join(dir, `s${++n}.sock`);

function encode(frames: readonly Uint8Array[]): Buffer {
  const out = Buffer.alloc(frames.reduce((t, f) => t + 4 + f.length, 0));
  let off = 0;
  for (const f of frames) {
    writeQemuHeader(out, off, f.length);
    out.set(f, off + 4);
    off += 4 + f.length;
  }
  return out;
}

/** A qemu-like guest: a net client speaking the length-prefixed framing. */
class Guest {
  readonly received: Uint8Array[] = [];
  closed = false;
  private readonly decoder = new QemuFrameDecoder();
  constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      const out: Uint8Array[] = [];
      this.decoder.decode(chunk, out);
      for (const f of out) this.received.push(f.slice());
    });
    socket.on('close', () => (this.closed = true));
    socket.on('error', () => {});
  }
  static connect(p: string): Promise<Guest> {
    return new Promise((resolve, reject) => {
      const s = net.connect(p, () => resolve(new Guest(s)));
      s.once('error', reject);
      cleanups.push(() => void s.destroy());
    });
  }
  /** Writes `bytes` in pieces cut at `cuts`, waiting a moment between pieces (separate chunks). */
  async writeCut(bytes: Buffer, cuts: readonly number[]): Promise<void> {
    let prev = 0;
    for (const c of [...cuts, bytes.length]) {
      this.socket.write(bytes.subarray(prev, c));
      prev = c;
      await new Promise((r) => setTimeout(r, 2));
    }
  }
}

async function openStream(p: string): Promise<{ link: StreamLink; got: Uint8Array[] }> {
  const link = await StreamLink.open(p);
  cleanups.push(() => link.close());
  const got: Uint8Array[] = [];
  link.start((frames) => {
    for (const f of frames) got.push(f.slice());
  });
  return { link, got };
}

describe('stream link (qemu framing)', () => {
  it('acceptPorts: each connection is a port; the link\'s counters add up what its ports sent and received', async () => {
    const p = nextPath();
    const link = await StreamLink.open(p);
    cleanups.push(() => link.close());
    const ports: Link[] = [];
    const got: Uint8Array[] = [];
    link.acceptPorts(
      (port) => {
        ports.push(port);
        port.start((frames) => {
          for (const f of frames) got.push(f.slice());
        });
      },
      () => {},
    );
    const a = await Guest.connect(p);
    const b = await Guest.connect(p);
    await waitFor(() => ports.length === 2, 'two ports');
    await a.writeCut(encode([frame(60, 1)]), []);
    await b.writeCut(encode([frame(70, 2)]), []);
    await waitFor(() => got.length === 2, 'a frame from each');
    for (const [i, port] of ports.entries()) {
      expect(port.send(frame(100 + i, 3))).toBe(true);
      port.flush();
    }
    await waitFor(() => a.received.length + b.received.length === 2, 'a frame to each');
    expect(ports[0]!.stats).toMatchObject({ txFrames: 1, txBytes: 100 });
    expect(link.stats).toMatchObject({ rxFrames: 2, rxBytes: 130, txFrames: 2, txBytes: 201, txDropped: 0 });
  });

  it('moves frames both ways byte-exact, with frames split across and merged within chunks', async () => {
    const p = nextPath();
    const { link, got } = await openStream(p);
    expect(link.describe()).toEqual({ path: p });
    const guest = await Guest.connect(p);

    const frames = [frame(60, 1), frame(1514, 2), frame(14, 3), frame(65535, 4), frame(42, 5), frame(9000, 6)];
    const bytes = encode(frames);
    // Cuts inside a length prefix, inside frames, and several whole frames per piece.
    await guest.writeCut(bytes, [2, 3, 70, 700, 1600, 1700, 30000, bytes.length - 9001]);
    await waitFor(() => got.length === frames.length, 'frames at the link');
    expect(diffFrames(got, frames)).toBe('same');
    expect(link.stats).toMatchObject({ rxFrames: 6, rxErrors: 0 });

    // One write holding everything: many frames per chunk.
    await guest.writeCut(encode(frames), []);
    await waitFor(() => got.length === 2 * frames.length, 'merged frames');
    expect(diffFrames(got.slice(frames.length), frames)).toBe('same');

    const toGuest = [frame(42, 7), frame(1514, 8), frame(65535, 9)];
    for (const f of toGuest) expect(link.send(f)).toBe(true);
    link.flush();
    await waitFor(() => guest.received.length === 3, 'frames at the guest');
    expect(diffFrames(guest.received, toGuest)).toBe('same');
    expect(link.stats).toMatchObject({ txFrames: 3, txBytes: 42 + 1514 + 65535, txDropped: 0 });
  });

  it('the addon carries each connection; a guest that stops reading gets whole frames, in order, never a torn one', async () => {
    const p = nextPath();
    const { link } = await openStream(p);
    const guest = await Guest.connect(p);
    await waitFor(() => link.connectionsAccepted === 1, 'the connection');
    // Where the addon loads (both test projects build it), it reads and writes the connection.
    expect(link.connectionsInAddon).toBe(1);
    guest.socket.pause();
    // ~12 MB: more than the socket buffers and the addon's 4 MiB queue hold while the guest does
    // not read, so the kernel takes part of a frame at some point and the queue must keep the rest.
    const sent: Uint8Array[] = [];
    let refused = 0;
    for (let i = 0; i < 8000; i++) {
      const f = frame(1000 + (i % 600), i);
      if (link.send(f)) sent.push(f);
      else refused++;
      if (i % 100 === 99) link.flush();
    }
    link.flush();
    guest.socket.resume();
    await waitFor(() => guest.received.length >= sent.length - link.stats.txDropped + refused && guest.received.length > 0, 'frames at the guest', 20_000);
    await new Promise((r) => setTimeout(r, 200));
    // What arrived is a prefix of what was accepted (the rest dropped whole, and counted).
    expect(refused).toBeGreaterThan(0);
    expect(link.stats.txDropped).toBeGreaterThanOrEqual(refused);
    expect(guest.received.length).toBeLessThanOrEqual(sent.length);
    expect(diffFrames(guest.received, sent.slice(0, guest.received.length))).toBe('same');
    expect(guest.received.length + link.stats.txDropped - refused).toBe(sent.length);
  });

  it('counts frames shorter than 14 bytes as errors and delivers the rest', async () => {
    const p = nextPath();
    const { link, got } = await openStream(p);
    const guest = await Guest.connect(p);
    await guest.writeCut(encode([frame(13, 1), frame(60, 2), frame(1, 3)]), []);
    await waitFor(() => got.length === 1 && link.stats.rxErrors === 2, 'one frame, two errors');
    expect(diffFrames(got, [frame(60, 2)])).toBe('same');
    expect(guest.closed).toBe(false);
  });

  it('accepts a guest that reconnects; the new connection replaces the old', async () => {
    const p = nextPath();
    const { link, got } = await openStream(p);
    const first = await Guest.connect(p);
    await first.writeCut(encode([frame(60, 1)]), []);
    await waitFor(() => got.length === 1, 'first connection frame');
    const second = await Guest.connect(p);
    await waitFor(() => first.closed, 'old connection closed');
    await second.writeCut(encode([frame(60, 2)]), []);
    await waitFor(() => got.length === 2, 'second connection frame');
    expect(diffFrames(got, [frame(60, 1), frame(60, 2)])).toBe('same');
    link.send(frame(80, 3));
    link.flush();
    await waitFor(() => second.received.length === 1, 'reply on the new connection');
    expect(diffFrames(second.received, [frame(80, 3)])).toBe('same');
    expect(link.connectionsAccepted).toBe(2);

    // Guest gone entirely: sends are dropped and counted; a third connection works again.
    second.socket.destroy();
    await waitFor(() => link.send(frame(60, 4)) === false, 'sends dropped without a guest');
    expect(link.stats.txDropped).toBeGreaterThanOrEqual(1);
    const third = await Guest.connect(p);
    await third.writeCut(encode([frame(60, 5)]), []);
    await waitFor(() => got.length === 3, 'third connection frame');
  });

  it('closes a connection that sends an absurd length, and counts it', async () => {
    const p = nextPath();
    const { link, got } = await openStream(p);
    const guest = await Guest.connect(p);
    const bad = Buffer.alloc(8);
    writeQemuHeader(bad, 0, 0x0100_0000);
    await guest.writeCut(Buffer.concat([encode([frame(60, 1)]), bad]), []);
    await waitFor(() => guest.closed, 'connection closed');
    expect(diffFrames(got, [frame(60, 1)])).toBe('same');
    expect(link.stats.rxErrors).toBe(1);
    const zero = await Guest.connect(p);
    await zero.writeCut(Buffer.alloc(4), []);
    await waitFor(() => zero.closed, 'zero-length prefix closes too');
    expect(link.stats.rxErrors).toBe(2);
  });

  it('holds connections accepted before start() until start()', async () => {
    const p = nextPath();
    const link = await StreamLink.open(p);
    cleanups.push(() => link.close());
    const guest = await Guest.connect(p);
    await guest.writeCut(encode([frame(60, 1), frame(61, 2)]), []);
    await new Promise((r) => setTimeout(r, 30));
    const got: Uint8Array[] = [];
    link.start((frames) => {
      for (const f of frames) got.push(f.slice());
    });
    await waitFor(() => got.length === 2, 'frames after start');
    expect(diffFrames(got, [frame(60, 1), frame(61, 2)])).toBe('same');
  });

  it('replaces a stale socket file, refuses a live one, never deletes a non-socket', async () => {
    const stale = nextPath();
    native.closeFd(native.unixDgramBind(stale)); // any socket nobody serves
    const { got } = await openStream(stale);
    const g = await Guest.connect(stale);
    await g.writeCut(encode([frame(60, 1)]), []);
    await waitFor(() => got.length === 1, 'frame via replaced socket');

    const live = nextPath();
    const server = net.createServer();
    await new Promise<void>((r) => server.listen(live, r));
    cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
    const err = await openLink({ kind: 'stream', path: live }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(LinkError);
    expect((err as LinkError).code).toBe('EADDRINUSE_LIVE');
    expect(fs.lstatSync(live).isSocket()).toBe(true);

    const file = nextPath();
    fs.writeFileSync(file, 'keep');
    await expect(StreamLink.open(file)).rejects.toMatchObject({ code: 'EPATH_NOT_SOCKET' });
    expect(fs.readFileSync(file, 'utf8')).toBe('keep');
  });

  it('removes its socket file on close and closes its connections', async () => {
    const p = nextPath();
    const link = await StreamLink.open(p);
    link.start(() => {});
    const guest = await Guest.connect(p);
    await waitFor(() => link.connectionsAccepted === 1, 'accept');
    await link.close();
    expect(fs.existsSync(p)).toBe(false);
    await waitFor(() => guest.closed, 'guest connection closed');
    await link.close();
  });
});
