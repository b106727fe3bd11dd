/**
 * What vmnat does differently on macOS, checked on Linux: the flags it refuses there, its socket
 * path limit and default runtime directory, and the one start-up line about socket buffers. The
 * rules are pure functions of the platform; the buffer sizes they judge come from real sockets of
 * whichever addon this run loads (the 'portable' vitest project runs this file against the
 * portable build, whose buffer code is the macOS code).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError, defaultSocketPath, parseArgs } from '../../src/config.ts';
import { LARGEST_DATAGRAM, socketBufferAdvice } from '../../src/link/buffers.ts';
import { SocketLink } from '../../src/link/socket.ts';
import { FdLink } from '../../src/link/fd.ts';
import { Peer, diffFrames, frame, native, tempDir, waitFor } from './link-helpers.ts';

function configError(argv: string[], platform: NodeJS.Platform): ConfigError {
  try {
    parseArgs(argv, platform);
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error(`parseArgs(${argv.join(' ')}) on ${platform} did not fail`);
}

describe('flags on macOS', () => {
  it('refuses --tap, --netns and --netns-pid with one line naming the platform', () => {
    for (const argv of [['--tap', 'tap0'], ['--tap', 'tap0', '--netns', 'demo'], ['--netns-pid', '42'], ['--netns', '/run/netns/x']]) {
      const e = configError(argv, 'darwin');
      expect(['--tap', '--netns', '--netns-pid']).toContain(e.flag);
      expect(e.message).toMatch(/^--[a-z-]+: TAP devices and network namespaces are Linux-only; not available on macOS \(darwin\)/);
      expect(e.message).not.toContain('\n');
    }
  });

  it('accepts the same TAP flags on Linux, and the other transports on macOS', () => {
    const tap = parseArgs(['--tap', 'tap0', '--netns', 'demo'], 'linux');
    expect(tap.action === 'run' && tap.config.links).toEqual([{ kind: 'tap', name: 'tap0', netnsPath: '/run/netns/demo' }]);
    const sock = parseArgs(['--socket', '/tmp/vf/net.sock'], 'darwin');
    expect(sock.action === 'run' && sock.config.links).toEqual([{ kind: 'socket', path: '/tmp/vf/net.sock' }]);
    const fd = parseArgs(['--fd', '3'], 'darwin');
    expect(fd.action === 'run' && fd.config.links).toEqual([{ kind: 'fd', fd: 3 }]);
  });

  it('limits socket paths to 103 bytes on macOS (sun_path is 104 there) and 107 on Linux', () => {
    const p104 = '/' + 'a'.repeat(103);
    const p108 = '/' + 'a'.repeat(107);
    expect(configError(['--socket', p104], 'darwin').message).toBe('--socket: path must be 1..103 bytes (unix socket limit)');
    expect(parseArgs(['--socket', p104], 'linux').action).toBe('run');
    expect(configError(['--stream', p108], 'linux').message).toBe('--stream: path must be 1..107 bytes (unix socket limit)');
  });
});

describe('default runtime directory', () => {
  const saved = { TMPDIR: process.env['TMPDIR'], XDG_RUNTIME_DIR: process.env['XDG_RUNTIME_DIR'] };
  afterEach(() => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });

  it('is under $TMPDIR on macOS (no XDG_RUNTIME_DIR there; $TMPDIR is per user: /var/folders/…/T/), named by uid', () => {
    // macOS's environment: TMPDIR set per user, XDG_RUNTIME_DIR not at all.
    process.env['TMPDIR'] = '/var/folders/zz/abc123/T/';
    delete process.env['XDG_RUNTIME_DIR'];
    const want = `/var/folders/zz/abc123/T/vmnat-${process.getuid!()}/net.sock`;
    expect(defaultSocketPath()).toBe(want);
    const argv = parseArgs([], 'darwin');
    expect(argv.action === 'run' && argv.config.links).toEqual([{ kind: 'socket', path: want }]);
    delete process.env['TMPDIR'];
    expect(defaultSocketPath()).toBe(path.join(os.tmpdir(), `vmnat-${process.getuid!()}`, 'net.sock'));
  });
});

describe('socket buffer advice', () => {
  it('macOS: silent for 4 MiB buffers; one line naming the sysctls for the 2 KiB default', () => {
    expect(socketBufferAdvice('darwin', { snd: 4 << 20, rcv: 4 << 20 }, 1500)).toBeUndefined();
    const line = socketBufferAdvice('darwin', { snd: 2048, rcv: 4096 }, 1500);
    expect(line).toBeDefined();
    expect(line).not.toContain('\n');
    expect(line).toContain('2048/4096 bytes');
    expect(line).toContain(`1514/${2 * LARGEST_DATAGRAM}`);
    expect(line).toContain('sudo sysctl -w kern.ipc.maxsockbuf=8388608');
    expect(line).toContain('net.local.dgram.maxdgram=65536');
    expect(line).toContain('net.local.dgram.recvspace=');
    // A send buffer fine for 1,514-byte frames but a receive buffer too small for 64 KiB ones.
    expect(socketBufferAdvice('darwin', { snd: 1 << 20, rcv: 65536 }, 1500)).toContain('kern.ipc.maxsockbuf');
  });

  it('Linux: only the send side limits a datagram (half the reported size, less 32 bytes)', () => {
    expect(socketBufferAdvice('linux', { snd: 425984, rcv: 425984 }, 65520)).toBeUndefined();
    expect(socketBufferAdvice('linux', { snd: 4608, rcv: 4608 }, 1500)).toBeUndefined();
    expect(socketBufferAdvice('linux', { snd: 2048, rcv: 2048 }, 1500)).toMatch(/frames over 992 bytes cannot be sent .*net\.core\.wmem_max/);
  });

  it('the sockets this addon makes carry 1,514-byte frames out and 64 KiB frames in at the largest MTU', () => {
    const dir = tempDir('bufs');
    const link = SocketLink.open(path.join(dir, 'engine.sock'));
    const [a, b] = native.socketpairDgram();
    const fdLink = FdLink.adopt(a);
    try {
      for (const l of [link, fdLink]) {
        const got = l.socketBuffers();
        expect(got).toBeDefined();
        expect(socketBufferAdvice(process.platform, got!, 65520), JSON.stringify(got)).toBeUndefined();
      }
    } finally {
      void link.close();
      void fdLink.close();
      native.closeFd(b);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('a vfkit-style peer', () => {
  it('is learned from its VFKT hello alone, under vfkit\'s socket name, and gets frames before it sends one', async () => {
    const dir = tempDir('vfkit');
    const enginePath = path.join(dir, 'net.sock');
    // vfkit binds "vfkit-<pid hex>-<random hex>.sock" beside the path it was given, connects, and
    // sends the 4-byte magic; a guest may then wait for a frame from us (a DHCP offer) first.
    const vfkitPath = path.join(dir, `vfkit-${process.pid.toString(16)}-${(0xbeef).toString(16)}.sock`);
    const link = SocketLink.open(enginePath);
    link.start(() => {});
    const fd = native.unixDgramBind(vfkitPath);
    native.unixDgramConnect(fd, enginePath);
    const vfkit = new Peer(fd);
    try {
      vfkit.sendAll([new TextEncoder().encode('VFKT')]);
      await waitFor(() => link.peer === vfkitPath, 'the peer learned from the hello');
      expect(link.handshakes).toBe(1);
      expect(link.stats.rxErrors).toBe(0);
      const toGuest = [frame(342, 1), frame(1514, 2)];
      for (const f of toGuest) expect(link.send(f)).toBe(true);
      link.flush();
      await waitFor(() => vfkit.received.length === 2, 'frames at the vfkit socket');
      expect(diffFrames(vfkit.received, toGuest)).toBe('same');
    } finally {
      vfkit.close();
      await link.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
