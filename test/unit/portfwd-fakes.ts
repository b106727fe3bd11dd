/**
 * Test doubles for port forwarding: a GuestDialer whose "guest" is loopback (guest port N →
 * 127.0.0.1:N), local echo servers, and small socket helpers. The real data path (the TCP NAT
 * into a netns/VM guest) is tested end to end elsewhere.
 */
import net from 'node:net';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { resetSocket, type ForwardTarget, type GuestDialer, type GuestUdpFlow, type HostUdpPeer } from '../../src/portfwd/forwarder.ts';

/** Dials 127.0.0.1:guestPort for each forwarded connection/flow; records every target. */
export class LoopbackDialer implements GuestDialer {
  readonly tcpTargets: ForwardTarget[] = [];
  readonly udpTargets: ForwardTarget[] = [];
  readonly udpClosed: ForwardTarget[] = [];
  /** Set to refuse UDP flows (no lease). */
  refuseUdp = false;
  throwOnDial = false;

  dialTcp(socket: net.Socket, target: ForwardTarget): void {
    if (this.throwOnDial) throw new Error('dialer bug');
    this.tcpTargets.push(target);
    const guest = net.connect({ host: '127.0.0.1', port: target.guestPort });
    guest.once('connect', () => {
      socket.pipe(guest);
      guest.pipe(socket);
      socket.resume();
    });
    guest.once('error', () => resetSocket(socket)); // refused by the "guest" → reset the client
    socket.once('error', () => guest.destroy());
    socket.once('close', () => guest.destroy());
  }

  openUdp(target: ForwardTarget, host: HostUdpPeer): GuestUdpFlow | undefined {
    if (this.refuseUdp) return undefined;
    this.udpTargets.push(target);
    const s = dgram.createSocket('udp4');
    s.connect(target.guestPort, '127.0.0.1');
    const ready = once(s, 'connect');
    s.on('message', (m) => host.send(m));
    s.on('error', () => undefined);
    return {
      send: (payload) => {
        const copy = Buffer.from(payload);
        void ready.then(() => s.send(copy));
      },
      close: () => {
        this.udpClosed.push(target);
        void ready.then(() => s.close(), () => undefined);
      },
    };
  }
}

/** A TCP echo server on 127.0.0.1; `port` once listening. */
export async function tcpEcho(): Promise<{ port: number; server: net.Server; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('error', () => undefined);
    s.on('close', () => sockets.delete(s));
    s.pipe(s);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as net.AddressInfo).port,
    server,
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** A UDP echo server on 127.0.0.1. */
export async function udpEcho(): Promise<{ port: number; close(): void; seen: dgram.RemoteInfo[] }> {
  const s = dgram.createSocket('udp4');
  const seen: dgram.RemoteInfo[] = [];
  s.on('message', (m, r) => {
    seen.push(r);
    s.send(m, r.port, r.address);
  });
  s.bind(0, '127.0.0.1');
  await once(s, 'listening');
  return { port: s.address().port, close: () => s.close(), seen };
}

/** A port that was free a moment ago (bound and released), on 127.0.0.1 for both TCP and UDP. */
export async function freePort(): Promise<number> {
  for (;;) {
    const srv = net.createServer();
    srv.listen(0, '127.0.0.1');
    await once(srv, 'listening');
    const port = (srv.address() as net.AddressInfo).port;
    await new Promise((r) => srv.close(r));
    const u = dgram.createSocket('udp4');
    const ok = await new Promise<boolean>((resolve) => {
      u.once('error', () => resolve(false));
      u.bind(port, '127.0.0.1', () => resolve(true));
    });
    u.close();
    if (ok) return port;
  }
}

/**
 * Adds a port-range rule made by `make(first)` on `count` consecutive ports that were free a
 * moment ago, trying another range if one was taken meanwhile (a range cannot bind port 0, so
 * it can only be retried, never chosen race-free). Returns the first port.
 */
export async function addRange(add: (first: number) => Promise<unknown>, count: number): Promise<number> {
  for (let attempt = 0; ; attempt++) {
    const first = await freePortRange(count);
    try {
      await add(first);
      return first;
    } catch (err) {
      if ((err as { code?: string }).code !== 'EADDRINUSE' || attempt >= 20) throw err;
    }
  }
}

/** `count` consecutive ports free a moment ago (see addRange: bound later, they may be taken). */
export async function freePortRange(count: number): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const first = await freePort();
    if (first + count > 65535) continue;
    const held: net.Server[] = [];
    let ok = true;
    for (let i = 1; i < count && ok; i++) {
      const s = net.createServer();
      ok = await new Promise<boolean>((resolve) => {
        s.once('error', () => resolve(false));
        s.listen(first + i, '127.0.0.1', () => resolve(true));
      });
      if (ok) held.push(s);
    }
    await Promise.all(held.map((s) => new Promise((r) => s.close(r))));
    if (ok) return first;
  }
  throw new Error('no free port range');
}

/** Connects and resolves with the socket, or rejects with the connect error (ECONNREFUSED…). */
export function connect(port: number, host = '127.0.0.1'): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host });
    s.once('connect', () => {
      s.off('error', reject);
      resolve(s);
    });
    s.once('error', reject);
  });
}

/** Writes `data` and reads until `data.length` bytes came back. */
export function roundTrip(s: net.Socket, data: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let got = 0;
    const onData = (c: Buffer): void => {
      chunks.push(c);
      got += c.length;
      if (got >= data.length) {
        s.off('data', onData);
        s.off('error', reject);
        resolve(Buffer.concat(chunks));
      }
    };
    s.on('data', onData);
    s.once('error', reject);
    s.write(data);
  });
}

/** Sends one datagram from `sock` and waits for one reply. */
export async function udpRoundTrip(sock: dgram.Socket, port: number, payload: Buffer, host = '127.0.0.1', timeoutMs = 2000): Promise<{ msg: Buffer; rinfo: dgram.RemoteInfo }> {
  const reply = new Promise<{ msg: Buffer; rinfo: dgram.RemoteInfo }>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('no UDP reply')), timeoutMs);
    sock.once('message', (msg, rinfo) => {
      clearTimeout(t);
      resolve({ msg, rinfo });
    });
  });
  sock.send(payload, port, host);
  return reply;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `cond` every 10 ms until true or `timeoutMs` passes. */
export async function waitFor(cond: () => boolean, timeoutMs = 3000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await sleep(10);
  }
}
