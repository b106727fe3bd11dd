/**
 * Servers on the host's loopback that guests reach through the gateway 10.0.2.2: an HTTP server
 * that serves a fixed blob and hashes uploads, an echo server, and a half-close server.
 */
import crypto from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import { spawn, type ChildProcess } from 'node:child_process';

export function sha256(data: Uint8Array): string {
  return crypto.createHash('sha256').update(data).digest('hex');
}

/** Deterministic pseudo-random bytes (fast; seeded), so a failure replays. */
export function blob(size: number, seed = 1): Buffer {
  const out = Buffer.allocUnsafe(size);
  let block = crypto.createHash('sha256').update(`vmnat-${seed}`).digest();
  const big = Buffer.allocUnsafe(1 << 20);
  for (let i = 0; i < big.length; i += 32) {
    block = crypto.createHash('sha256').update(block).digest();
    block.copy(big, i);
  }
  for (let off = 0; off < size; off += big.length) big.copy(out, off, 0, Math.min(big.length, size - off));
  // Make every MiB different so misplaced blocks cannot go unnoticed.
  for (let off = 0; off < size; off += 1 << 20) out.writeUInt32BE((off >>> 20) ^ seed, off);
  return out;
}

export interface BlobServer {
  port: number;
  /** sha256 of each upload received, in order. */
  uploads: { bytes: number; sha256: string }[];
  close(): Promise<void>;
}

/** GET /blob → `data`; PUT or POST anything → 200 with "<bytes> <sha256>" of the body. */
export async function startBlobServer(data: Buffer): Promise<BlobServer> {
  const uploads: BlobServer['uploads'] = [];
  const server = http.createServer((req, res) => {
    if (req.method === 'GET') {
      res.writeHead(200, { 'content-length': data.length, 'content-type': 'application/octet-stream' });
      res.end(data);
      return;
    }
    const hash = crypto.createHash('sha256');
    let bytes = 0;
    req.on('data', (c: Buffer) => {
      bytes += c.length;
      hash.update(c);
    });
    req.on('end', () => {
      const entry = { bytes, sha256: hash.digest('hex') };
      uploads.push(entry);
      res.end(`${entry.bytes} ${entry.sha256}\n`);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    uploads,
    close: () => new Promise((r) => server.close(() => r())),
  };
}

/** Echoes every byte; ends its side when the client ends. */
export async function startEchoServer(): Promise<{ port: number; accepted: () => number; close(): Promise<void> }> {
  let accepted = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    accepted++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    s.pipe(s);
  });
  server.maxConnections = 5000;
  await new Promise<void>((r) => server.listen({ port: 0, host: '127.0.0.1', backlog: 4096 }, r));
  return {
    port: (server.address() as net.AddressInfo).port,
    accepted: () => accepted,
    close: () =>
      new Promise((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

/** A loopback TCP port with nobody listening. */
export async function closedTcpPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/**
 * `iperf3 -s -1` on 127.0.0.1. iperf3 cannot bind port 0 and report it, so the port is one that
 * was free a moment ago — and if another test took it meanwhile (iperf3 exits: address in use),
 * another is tried, until iperf3 says it is listening. Never a sleep-and-hope.
 */
export async function startIperfServer(): Promise<{ port: number; child: ChildProcess }> {
  for (let attempt = 0; ; attempt++) {
    const port = await closedTcpPort();
    // --forceflush: piped, iperf3 would hold "Server listening" in its stdio buffer.
    const child = spawn('iperf3', ['-s', '-1', '--forceflush', '-B', '127.0.0.1', '-p', String(port)], { stdio: ['ignore', 'pipe', 'pipe'] });
    const listening = await new Promise<boolean>((resolve) => {
      let out = '';
      const onData = (d: Buffer) => {
        out += d.toString();
        if (/Server listening on/.test(out)) resolve(true);
      };
      child.stdout!.on('data', onData);
      child.stderr!.on('data', onData);
      child.once('exit', () => resolve(false));
    });
    if (listening) {
      child.stdout!.resume();
      child.stderr!.resume();
      return { port, child };
    }
    if (attempt >= 20) throw new Error('iperf3 -s could not listen on any port');
  }
}
