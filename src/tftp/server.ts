/**
 * A read-only TFTP server at the gateway address (`--tftp DIR`), for network boot (RFC 1350, with
 * the option extension of RFC 2347 and the blksize, timeout, tsize and windowsize options of RFC
 * 2348, 2349 and 7440), as VirtualBox NAT and libslirp offer.
 *
 * Theory of operation: a read request (RRQ) arrives at port 69; each transfer then runs from a
 * port of its own (the server's transfer identifier, RFC 1350 §4), bound on the stack for the
 * transfer's life. The file is opened once and read block by block as the client acknowledges:
 * `windowsize` blocks are in flight, an ACK slides the window, and the last block is the first one
 * shorter than `blksize` (an empty one when the size is a multiple). Block numbers roll over past
 * 65,535 (what every common client does) so files of any size go through.
 *
 * Safety: paths never leave DIR — the name is taken relative to DIR (a leading `/` allowed, as
 * PXE clients send), `..` segments are refused, and the real path of the file (symlinks resolved)
 * must still lie inside DIR's real path; only regular files are served. Write requests get
 * "access violation"; netascii is refused (octet only, what boot firmware asks for). At most
 * MAX_SESSIONS transfers at once. A transfer that gets no ACK is resent after its timeout (the
 * client's `timeout` option, default 2 s), up to MAX_RETRIES times, then dropped. Every refusal
 * and drop is counted.
 *
 * Timers come in through `poll(now)` and `nextDeadline()` (a registered service).
 */
import fs from 'node:fs';
import path from 'node:path';
import { debuglog } from 'node:util';
import type { Stack, UdpDatagram } from '../stack/stack.ts';
import type { Ipv4Addr, MacAddr } from '../stack/wire/addr.ts';

const trace = debuglog('vmnat-tftp');

const OP = { RRQ: 1, WRQ: 2, DATA: 3, ACK: 4, ERROR: 5, OACK: 6 } as const;
const ERR = { undefined: 0, notFound: 1, accessViolation: 2, illegalOp: 4, unknownTid: 5, badOption: 8 } as const;
const MAX_SESSIONS = 64;
const MAX_RETRIES = 5;
const DEFAULT_TIMEOUT_MS = 2000;
const FIRST_PORT = 50_000;
const LAST_PORT = 59_999;

export function createTftpStats() {
  return { requests: 0, transfers: 0, completed: 0, bytesSent: 0, notFound: 0, refusedPath: 0, refusedWrite: 0, refusedMode: 0, sessionLimit: 0, retransmits: 0, timedOut: 0, malformed: 0 };
}

interface Session {
  port: number;
  clientIp: Ipv4Addr;
  clientPort: number;
  clientMac: MacAddr;
  fd: number;
  size: number;
  blksize: number;
  windowsize: number;
  timeoutMs: number;
  /** Blocks acknowledged so far (0 before the first). */
  acked: number;
  /** Blocks sent so far. */
  sent: number;
  /** Total blocks in the file, the last one shorter than blksize (possibly empty). */
  blocks: number;
  /** Waiting for the ACK of the OACK (block 0). */
  oackPending: boolean;
  oack: Uint8Array | undefined;
  deadline: number;
  retries: number;
}

export class TftpServer {
  readonly stats = createTftpStats();
  private readonly sessions = new Map<number, Session>();
  private readonly root: string;
  private nextPort = FIRST_PORT;
  private readonly block = Buffer.allocUnsafe(65_468);

  constructor(
    private readonly stack: Stack,
    private readonly serverIp: Ipv4Addr,
    dir: string,
    private readonly mtu: number,
    private readonly now: () => number,
  ) {
    this.root = fs.realpathSync(dir);
    stack.bindUdp(serverIp, 69, (d, now) => this.onRequest(d, now));
  }

  private onRequest(d: UdpDatagram, now: number): void {
    const msg = d.buf.subarray(d.off, d.off + d.len);
    if (msg.length < 4) {
      this.stats.malformed++;
      return;
    }
    const op = (msg[0]! << 8) | msg[1]!;
    const reply = (code: number, text: string) => this.sendError(this.serverIp, 69, d.srcIp, d.srcPort, d.srcMac, code, text);
    if (op === OP.WRQ) {
      this.stats.refusedWrite++;
      reply(ERR.accessViolation, 'read-only server');
      return;
    }
    if (op !== OP.RRQ) {
      this.stats.malformed++;
      return;
    }
    this.stats.requests++;
    const fields = Buffer.from(msg.subarray(2)).toString('latin1').split('\0');
    const [name, mode] = fields;
    if (name === undefined || mode === undefined || name === '') {
      this.stats.malformed++;
      reply(ERR.illegalOp, 'malformed request');
      return;
    }
    if (mode.toLowerCase() !== 'octet') {
      this.stats.refusedMode++;
      reply(ERR.undefined, `mode ${mode} not supported (octet only)`);
      return;
    }
    if (this.sessions.size >= MAX_SESSIONS) {
      this.stats.sessionLimit++;
      reply(ERR.undefined, 'too many transfers');
      return;
    }
    const file = this.resolve(name);
    if (typeof file === 'string') {
      if (file === 'notFound') this.stats.notFound++;
      else this.stats.refusedPath++;
      reply(file === 'notFound' ? ERR.notFound : ERR.accessViolation, file === 'notFound' ? 'file not found' : 'access violation');
      return;
    }
    // Options (RFC 2347): name/value pairs after the mode.
    const opts = new Map<string, string>();
    for (let i = 2; i + 1 < fields.length; i += 2) if (fields[i] !== '') opts.set(fields[i]!.toLowerCase(), fields[i + 1]!);
    const maxBlk = Math.max(8, this.mtu - 20 - 8 - 4);
    let blksize = 512;
    let windowsize = 1;
    let timeoutMs = DEFAULT_TIMEOUT_MS;
    const acked: string[] = [];
    const b = Number(opts.get('blksize'));
    if (opts.has('blksize') && Number.isInteger(b) && b >= 8) {
      blksize = Math.min(b, maxBlk, 65_464);
      acked.push('blksize', String(blksize));
    }
    const t = Number(opts.get('timeout'));
    if (opts.has('timeout') && Number.isInteger(t) && t >= 1 && t <= 255) {
      timeoutMs = t * 1000;
      acked.push('timeout', String(t));
    }
    if (opts.has('tsize')) acked.push('tsize', String(file.size));
    const w = Number(opts.get('windowsize'));
    if (opts.has('windowsize') && Number.isInteger(w) && w >= 1) {
      windowsize = Math.min(w, 64);
      acked.push('windowsize', String(windowsize));
    }
    const port = this.freePort();
    if (port === undefined) {
      fs.closeSync(file.fd);
      this.stats.sessionLimit++;
      reply(ERR.undefined, 'no free transfer port');
      return;
    }
    const s: Session = {
      port, clientIp: d.srcIp, clientPort: d.srcPort, clientMac: d.srcMac, fd: file.fd, size: file.size,
      blksize, windowsize, timeoutMs, acked: 0, sent: 0, blocks: Math.floor(file.size / blksize) + 1,
      oackPending: acked.length > 0, oack: undefined, deadline: now + timeoutMs, retries: 0,
    };
    this.sessions.set(port, s);
    this.stats.transfers++;
    this.stack.bindUdp(this.serverIp, port, (dd, n) => this.onAck(s, dd, n));
    trace('RRQ %s (%d bytes) blksize %d windowsize %d', name, file.size, blksize, windowsize);
    if (s.oackPending) {
      const parts = [Buffer.of(0, OP.OACK), ...acked.flatMap((x) => [Buffer.from(x, 'latin1'), Buffer.of(0)])];
      s.oack = Buffer.concat(parts);
      this.stack.sendUdp(this.serverIp, port, s.clientIp, s.clientPort, s.oack, s.clientMac);
    } else {
      this.sendWindow(s, now);
    }
  }

  /** The file `name` names inside the root, opened; or why not. */
  private resolve(name: string): { fd: number; size: number } | 'notFound' | 'refused' {
    const rel = name.replace(/\\/g, '/').replace(/^\/+/, '');
    if (rel.split('/').some((seg) => seg === '..')) return 'refused';
    const full = path.join(this.root, rel);
    let real: string;
    try {
      real = fs.realpathSync(full);
    } catch {
      return 'notFound';
    }
    if (real !== this.root && !real.startsWith(this.root + path.sep)) return 'refused';
    let fd: number;
    try {
      fd = fs.openSync(real, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    } catch {
      return 'notFound';
    }
    const st = fs.fstatSync(fd);
    if (!st.isFile()) {
      fs.closeSync(fd);
      return 'notFound';
    }
    return { fd, size: st.size };
  }

  private onAck(s: Session, d: UdpDatagram, now: number): void {
    if (d.srcIp !== s.clientIp || d.srcPort !== s.clientPort) {
      this.sendError(this.serverIp, s.port, d.srcIp, d.srcPort, d.srcMac, ERR.unknownTid, 'unknown transfer id');
      return;
    }
    const msg = d.buf.subarray(d.off, d.off + d.len);
    if (msg.length < 4) return;
    const op = (msg[0]! << 8) | msg[1]!;
    if (op === OP.ERROR) {
      this.end(s, false);
      return;
    }
    if (op !== OP.ACK) return;
    const block = (msg[2]! << 8) | msg[3]!;
    if (s.oackPending) {
      if (block !== 0) return;
      s.oackPending = false;
      s.retries = 0;
      this.sendWindow(s, now);
      return;
    }
    // Map the 16-bit block number onto the sent range (rollover).
    const acked = s.sent - ((s.sent - block) & 0xffff);
    if (acked <= s.acked || acked > s.sent) return; // old or duplicate ACK
    s.acked = acked;
    s.retries = 0;
    if (s.acked >= s.blocks) {
      this.stats.completed++;
      this.end(s, true);
      return;
    }
    this.sendWindow(s, now);
  }

  /** Sends blocks acked+1 … acked+windowsize that are not sent yet (or all of them on a resend). */
  private sendWindow(s: Session, now: number, resend = false): void {
    const from = resend ? s.acked + 1 : s.sent + 1;
    const to = Math.min(s.blocks, s.acked + s.windowsize);
    for (let n = from; n <= to; n++) {
      const off = (n - 1) * s.blksize;
      const len = Math.max(0, Math.min(s.blksize, s.size - off));
      const pkt = this.block.subarray(0, 4 + len);
      pkt[0] = 0;
      pkt[1] = OP.DATA;
      pkt[2] = (n >>> 8) & 0xff;
      pkt[3] = n & 0xff;
      if (len > 0) fs.readSync(s.fd, pkt, 4, len, off);
      this.stack.sendUdp(this.serverIp, s.port, s.clientIp, s.clientPort, pkt, s.clientMac);
      this.stats.bytesSent += len;
      if (n > s.sent) s.sent = n;
    }
    s.deadline = now + s.timeoutMs;
  }

  poll(now: number): void {
    for (const s of [...this.sessions.values()]) {
      if (now < s.deadline) continue;
      if (++s.retries > MAX_RETRIES) {
        this.stats.timedOut++;
        this.end(s, false);
        continue;
      }
      this.stats.retransmits++;
      if (s.oackPending && s.oack !== undefined) {
        this.stack.sendUdp(this.serverIp, s.port, s.clientIp, s.clientPort, s.oack, s.clientMac);
        s.deadline = now + s.timeoutMs;
      } else {
        this.sendWindow(s, now, true);
      }
    }
  }

  nextDeadline(): number | undefined {
    let at: number | undefined;
    for (const s of this.sessions.values()) if (at === undefined || s.deadline < at) at = s.deadline;
    return at;
  }

  close(): void {
    for (const s of [...this.sessions.values()]) this.end(s, false);
    this.stack.unbindUdp(this.serverIp, 69);
  }

  private end(s: Session, ok: boolean): void {
    if (!this.sessions.delete(s.port)) return;
    this.stack.unbindUdp(this.serverIp, s.port);
    fs.closeSync(s.fd);
    trace('transfer on port %d %s', s.port, ok ? 'done' : 'ended');
  }

  private freePort(): number | undefined {
    for (let i = 0; i <= LAST_PORT - FIRST_PORT; i++) {
      const p = this.nextPort;
      this.nextPort = p >= LAST_PORT ? FIRST_PORT : p + 1;
      if (!this.sessions.has(p) && !this.stack.isUdpBound(this.serverIp, p)) return p;
    }
    return undefined;
  }

  private sendError(src: Ipv4Addr, srcPort: number, dst: Ipv4Addr, dstPort: number, mac: MacAddr, code: number, text: string): void {
    const msg = Buffer.concat([Buffer.of(0, OP.ERROR, 0, code), Buffer.from(text, 'latin1'), Buffer.of(0)]);
    this.stack.sendUdp(src, srcPort, dst, dstPort, msg, mac);
  }
}
