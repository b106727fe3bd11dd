/**
 * Helpers for the link tests (test/unit/link-*.test.ts): temp dirs, recognisable frames, a
 * peer datagram socket driven by the addon, and polling until a condition holds.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { RX_LENGTH_MASK, loadNative, type NativeFramePort } from '../../src/link/native.ts';

export const native = loadNative();

export function tempDir(tag: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `vmnat-${tag}-${process.pid}-`));
}

/** A frame of `len` bytes whose content depends on `seed` (so a swapped or damaged frame shows). */
export function frame(len: number, seed: number): Uint8Array {
  const f = new Uint8Array(len);
  for (let i = 0; i < len; i++) f[i] = (i * 31 + seed * 7 + (i >> 8)) & 0xff;
  return f;
}

export async function waitFor(cond: () => boolean, what: string, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** The other end of a link: a FramePort on `fd` that keeps copies of what it receives. */
export class Peer {
  readonly received: Uint8Array[] = [];
  readonly errors: string[] = [];
  readonly port: NativeFramePort;

  constructor(readonly fd: number, opts: { learnPeer?: boolean; maxFrame?: number } = {}) {
    this.port = new native.FramePort(fd, {
      kind: 'dgram',
      ...opts,
      onFrames: (slab, offsets, count) => {
        for (let i = 0; i < count; i++) {
          const off = offsets[2 * i] ?? 0;
          const len = (offsets[2 * i + 1] ?? 0) & RX_LENGTH_MASK;
          const copy = new Uint8Array(len);
          copy.set(slab.subarray(off, off + len));
          this.received.push(copy);
        }
      },
      onError: (code) => this.errors.push(code),
    });
    this.port.start();
  }

  sendAll(frames: readonly Uint8Array[]): void {
    for (const f of frames) this.port.send(f);
    this.port.flush();
  }

  close(): void {
    this.port.close();
  }
}

/**
 * Byte-exact comparison of frame lists. (vitest's deep equality walks 64 KiB arrays element by
 * element: seconds per test.) Returns a description of the first difference, or 'same'.
 */
export function diffFrames(got: readonly Uint8Array[], want: readonly Uint8Array[]): string {
  if (got.length !== want.length) return `got ${got.length} frames, want ${want.length}`;
  for (let i = 0; i < want.length; i++) {
    const g = got[i] as Uint8Array;
    const w = want[i] as Uint8Array;
    if (g.length !== w.length) return `frame ${i}: got ${g.length} bytes, want ${w.length}`;
    if (!Buffer.from(g.buffer, g.byteOffset, g.length).equals(Buffer.from(w.buffer, w.byteOffset, w.length))) {
      return `frame ${i}: content differs`;
    }
  }
  return 'same';
}
