/**
 * The host side of a lab: the processes and servers it starts, and how it tears them down.
 *
 * Theory of operation: everything a lab creates registers an undo action in a `Cleanup` stack the
 * moment it exists (a child process by its PID, a server by its handle, a directory by its path);
 * the runner unwinds the stack in reverse order on success, on a failed check, on an exception and
 * on SIGINT/SIGTERM, so a lab never leaves a qemu, a vmnat or a listener behind. Nothing is killed
 * by name.
 *
 * The servers listen on 127.0.0.1 port 0 (the kernel picks a free port; no probing), which is
 * where a guest's 10.0.2.2 leads: a web server whose answer the lab can hold back (so the
 * connection is still open while the lab shows vmnat's flow table), and an authoritative DNS
 * server for the lab's own zone, which vmnat forwards the guest's 10.0.2.3 to (`--dns-server`),
 * so no lab query ever leaves the machine.
 */
import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import http from 'node:http';
import type net from 'node:net';
import dnsPacket from 'dns-packet';

export class Cleanup {
  private readonly actions: { what: string; undo: () => Promise<void> | void }[] = [];

  /** Registers an undo action; they run last-in first-out. */
  add(what: string, undo: () => Promise<void> | void): void {
    this.actions.push({ what, undo });
  }

  /** Runs every action once (errors are reported, not thrown: the rest must still run). */
  async run(report: (line: string) => void): Promise<void> {
    while (this.actions.length > 0) {
      const a = this.actions.pop()!;
      try {
        await a.undo();
      } catch (e) {
        report(`cleanup: ${a.what}: ${(e as Error).message}`);
      }
    }
  }
}

export interface CommandResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a host command to completion (SIGKILL after `timeoutMs`), collecting its output. */
export function runHost(argv: readonly string[], timeoutMs = 30_000): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`${argv[0]}: ${e.message}`));
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

// ── the web server ──────────────────────────────────────────────────────────────────────────

export interface HeldRequest {
  /** The client's port as the server saw it: vmnat's host socket for a guest's request. */
  remotePort: number;
  remoteAddress: string;
  url: string;
  /** Sends the answer. */
  release(): void;
}

export interface WebServer {
  port: number;
  /** Requests served (answered) so far. */
  served: number;
  /** Resolves with the next request, which then waits for `release()` before it is answered. */
  nextHeld(): Promise<HeldRequest>;
  close(): Promise<void>;
}

/**
 * An HTTP server on 127.0.0.1 (or `host`, e.g. ::1; port 0) serving `page` at `/`, 404 elsewhere. With `hold`, each
 * request waits for the lab's `release()`.
 */
export async function startWebServer(page: Buffer, hold: boolean, host = '127.0.0.1'): Promise<WebServer> {
  const waiting: ((r: HeldRequest) => void)[] = [];
  const pending: HeldRequest[] = [];
  const state = { served: 0 };
  const server = http.createServer((req, res) => {
    const answer = (): void => {
      state.served++;
      if (req.url !== '/' && req.url !== '/index.html') {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-length': page.length });
      res.end(page);
    };
    if (!hold) {
      answer();
      return;
    }
    const sock: net.Socket = req.socket;
    const held: HeldRequest = { remotePort: sock.remotePort ?? 0, remoteAddress: sock.remoteAddress ?? '', url: req.url ?? '', release: answer };
    const w = waiting.shift();
    if (w !== undefined) w(held);
    else pending.push(held);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => resolve());
  });
  const addr = server.address();
  if (addr === null || typeof addr === 'string') throw new Error('web server: no TCP address');
  return {
    port: addr.port,
    get served() {
      return state.served;
    },
    nextHeld: () => {
      const p = pending.shift();
      return p !== undefined ? Promise.resolve(p) : new Promise((resolve) => waiting.push(resolve));
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

// ── the DNS server ──────────────────────────────────────────────────────────────────────────

export interface DnsServer {
  port: number;
  /** Questions asked so far, as `name type`. */
  queries: string[];
  close(): Promise<void>;
}

/**
 * An authoritative UDP DNS server on 127.0.0.1 (port 0) for a fixed zone of A (and, for IPv6 addresses, AAAA) records; NXDOMAIN
 * for other names. Lab answers are small, so UDP alone suffices (vmnat retries over TCP only for a
 * truncated answer, which this server never sends).
 */
export async function startDnsServer(zone: Readonly<Record<string, string>>): Promise<DnsServer> {
  const queries: string[] = [];
  const sock = dgram.createSocket('udp4');
  sock.on('message', (msg, rinfo) => {
    let q: dnsPacket.Packet;
    try {
      q = dnsPacket.decode(msg);
    } catch {
      return;
    }
    const question = q.questions?.[0];
    if (question === undefined) return;
    queries.push(`${question.name} ${question.type}`);
    const ip = zone[question.name.toLowerCase()];
    // An IPv6 address in the zone is an AAAA record, an IPv4 one an A record.
    const type = ip?.includes(':') ? 'AAAA' : 'A';
    const answers: dnsPacket.Answer[] = ip !== undefined && question.type === type ? [{ type, name: question.name, ttl: 60, data: ip }] : [];
    const flags = dnsPacket.AUTHORITATIVE_ANSWER | (ip === undefined ? 3 : 0); // rcode 3: NXDOMAIN
    sock.send(dnsPacket.encode({ type: 'response', id: q.id ?? 0, flags, questions: [question], answers }), rinfo.port, rinfo.address);
  });
  await new Promise<void>((resolve, reject) => {
    sock.once('error', reject);
    sock.bind(0, '127.0.0.1', () => resolve());
  });
  return {
    port: sock.address().port,
    queries,
    close: () => new Promise<void>((resolve) => sock.close(() => resolve())),
  };
}
