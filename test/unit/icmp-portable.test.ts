/**
 * The portable build's reading of ICMP datagrams, fed what macOS hands an unprivileged
 * SOCK_DGRAM/IPPROTO_ICMP socket: whole IPv4 packets (IP header first, as Apple's ping strips
 * it), every process's echo replies (the kernel neither assigns nor filters identifiers), and ICMP
 * errors in-band (no IP_RECVERR). On Linux a ping socket delivers bare ICMP messages, already
 * filtered: the same code must read both. Runs in the 'portable' vitest project (the normal Linux
 * build has no icmpClassify: its ping sockets are read by the Linux branch, icmp-native.test.ts).
 */
import { describe, expect, it } from 'vitest';
import { loadNative } from '../../src/link/native.ts';

const native = loadNative();
const classify = native.icmpClassify;

function sum16(b: Buffer): number {
  let s = 0;
  for (let i = 0; i + 1 < b.length; i += 2) s += b.readUInt16BE(i);
  if (b.length & 1) s += b[b.length - 1]! << 8;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

/** An IPv4 header (with `optionWords` 4-byte option words) carrying `payload` of protocol `proto`. */
function ipv4(src: string, dst: string, ttl: number, proto: number, payload: Buffer, optionWords = 0): Buffer {
  const hl = 20 + 4 * optionWords;
  const h = Buffer.alloc(hl);
  h[0] = 0x40 | (hl / 4);
  h.writeUInt16BE(hl + payload.length, 2);
  h[8] = ttl;
  h[9] = proto;
  for (const [i, a] of [src, dst].entries()) Buffer.from(a.split('.').map(Number)).copy(h, 12 + 4 * i);
  for (let i = 20; i < hl; i++) h[i] = 1; // NOP options
  h.writeUInt16BE(sum16(h), 10);
  return Buffer.concat([h, payload]);
}

function icmp(type: number, code: number, rest: number, data: Buffer): Buffer {
  const m = Buffer.alloc(8);
  m[0] = type;
  m[1] = code;
  m.writeUInt32BE(rest >>> 0, 4);
  const all = Buffer.concat([m, data]);
  all.writeUInt16BE(sum16(all), 2);
  return all;
}

const echo = (type: 0 | 8, id: number, seq: number, data: string): Buffer => icmp(type, 0, (id << 16) | seq, Buffer.from(data));
const IDENT = 0x4d2a;
const SRC_ARG = 0x0a000001; // what recvmsg's msg_name said (used when there is no IP header)

describe.skipIf(classify === undefined)('portable ICMP receive (the macOS format)', () => {
  const c = classify!;

  it('strips the IP header of an echo reply and takes source and TTL from it', () => {
    const reply = echo(0, IDENT, 7, 'abc');
    const r = c(ipv4('192.0.2.9', '10.0.0.2', 57, 1, reply), IDENT, SRC_ARG, -1);
    expect(r).toMatchObject({ kind: 'reply', offset: 20, length: reply.length, src: 0xc0000209, ttl: 57, type: 0 });
    const withOptions = c(ipv4('192.0.2.9', '10.0.0.2', 57, 1, reply, 2), IDENT, SRC_ARG, -1);
    expect(withOptions).toMatchObject({ kind: 'reply', offset: 28, length: reply.length });
  });

  it("ignores other processes' replies, echo requests, and what is not ICMP or is cut short", () => {
    expect(c(ipv4('192.0.2.9', '10.0.0.2', 57, 1, echo(0, IDENT + 1, 7, 'abc')), IDENT, SRC_ARG, -1).kind).toBe('ignore');
    expect(c(ipv4('127.0.0.1', '127.0.0.1', 64, 1, echo(8, IDENT, 1, 'x')), IDENT, SRC_ARG, -1).kind).toBe('ignore');
    expect(c(ipv4('192.0.2.9', '10.0.0.2', 57, 17, echo(0, IDENT, 7, 'abc')), IDENT, SRC_ARG, -1).kind).toBe('ignore');
    const truncated = ipv4('192.0.2.9', '10.0.0.2', 57, 1, echo(0, IDENT, 7, '')).subarray(0, 24);
    expect(c(truncated, IDENT, SRC_ARG, -1).kind).toBe('ignore');
    const badIhl = ipv4('192.0.2.9', '10.0.0.2', 57, 1, echo(0, IDENT, 7, 'abc'));
    badIhl[0] = 0x4f; // 60-byte header in a 31-byte packet
    expect(c(badIhl, IDENT, SRC_ARG, -1).kind).toBe('ignore');
  });

  it('reads a Linux ping socket\'s bare ICMP message the same way (source and TTL from recvmsg)', () => {
    const reply = echo(0, IDENT, 9, 'linux');
    expect(c(reply, IDENT, SRC_ARG, 63)).toMatchObject({ kind: 'reply', offset: 0, length: reply.length, src: SRC_ARG, ttl: 63 });
  });

  it('reports in-band errors that quote our request: type, code, next-hop MTU, offender, the quoted request', () => {
    const ours = echo(8, IDENT, 3, 'payload-beyond-eight-bytes');
    const quotedIp = ipv4('10.0.0.2', '198.51.100.7', 1, 1, ours).subarray(0, 28); // header + 8 bytes, as routers quote
    const fragNeeded = ipv4('192.0.2.1', '10.0.0.2', 250, 1, icmp(3, 4, 1400, quotedIp));
    expect(c(fragNeeded, IDENT, SRC_ARG, -1)).toMatchObject({ kind: 'error', type: 3, code: 4, info: 1400, src: 0xc0000201, offset: 20 + 8 + 20, length: 8 });
    const timeExceeded = ipv4('192.0.2.1', '10.0.0.2', 250, 1, icmp(11, 0, 0, quotedIp));
    expect(c(timeExceeded, IDENT, SRC_ARG, -1)).toMatchObject({ kind: 'error', type: 11, code: 0, info: 0 });
    const paramProblem = ipv4('192.0.2.1', '10.0.0.2', 250, 1, icmp(12, 0, 8 << 24, quotedIp));
    expect(c(paramProblem, IDENT, SRC_ARG, -1)).toMatchObject({ kind: 'error', type: 12, info: 8 });
    // Another process's request quoted, or a quote too short to hold an identifier: not ours.
    const theirs = ipv4('10.0.0.2', '198.51.100.7', 1, 1, echo(8, IDENT + 1, 3, 'x')).subarray(0, 28);
    expect(c(ipv4('192.0.2.1', '10.0.0.2', 250, 1, icmp(11, 0, 0, theirs)), IDENT, SRC_ARG, -1).kind).toBe('ignore');
    expect(c(ipv4('192.0.2.1', '10.0.0.2', 250, 1, icmp(11, 0, 0, quotedIp.subarray(0, 24))), IDENT, SRC_ARG, -1).kind).toBe('ignore');
  });
});

describe('which builds classify in-band', () => {
  it('the portable build exports icmpClassify; the Linux build reads its error queue instead', () => {
    expect(classify !== undefined).toBe(native.build.flavor === 'portable');
  });
});
