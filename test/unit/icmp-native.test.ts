/**
 * The native PingSocket against the real kernel. Each case runs a small Node script in a fresh,
 * anonymous network namespace (`unshare --net`: it has only loopback, sends nothing anywhere else,
 * and vanishes with the process), with net.ipv4.ping_group_range set for that namespace only.
 */
import { describe, expect, test } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { run } from '../helpers/proc.ts';
import { nativeAddonPath } from '../../src/link/native.ts';

const ADDON = nativeAddonPath();

async function inFreshNetns(pingGroupRange: string, script: string): Promise<Record<string, unknown>> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `vmnat-icmp-${process.pid}-`));
  try {
    const file = path.join(dir, 't.cjs');
    fs.writeFileSync(file, `const addon = require(${JSON.stringify(ADDON)});\n${script}`);
    const sh = `ip link set lo up && sysctl -qw net.ipv4.ping_group_range="${pingGroupRange}" && exec "${process.execPath}" "${file}"`;
    const r = await run(['unshare', '--net', 'sh', '-c', sh], { timeoutMs: 20_000 });
    const line = r.stdout.trim().split('\n').pop() ?? '';
    if (r.code !== 0 || !line.startsWith('{')) throw new Error(`script failed (${r.code}): ${r.stdout}\n${r.stderr}`);
    return JSON.parse(line) as Record<string, unknown>;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const ECHO = `
function echo(id, seq, data) {
  const b = Buffer.alloc(8 + data.length);
  b[0] = 8; b.writeUInt16BE(id, 4); b.writeUInt16BE(seq, 6); data.copy(b, 8);
  return b;
}
`;

describe('PingSocket', () => {
  test('where ping_group_range excludes us, the constructor throws EACCES (root included)', async () => {
    const r = await inFreshNetns('1 0', `
try { new addon.PingSocket('127.0.0.1', { onMessage() {}, onError() {} }); console.log(JSON.stringify({ opened: true })); }
catch (e) { console.log(JSON.stringify({ code: e.code, syscall: e.syscall })); }
`);
    expect(r).toEqual({ code: 'EACCES', syscall: 'socket' });
  });

  test('echo to loopback: the kernel picks the identifier; sequence and data come back intact', async () => {
    const r = await inFreshNetns('0 2147483647', `${ECHO}
const got = [];
const s = new addon.PingSocket('127.0.0.1', {
  onMessage: (m, src, ttl) => got.push({ type: m[0], id: m.readUInt16BE(4), seq: m.readUInt16BE(6), data: m.subarray(8).toString(), src, ttl }),
  onError: () => got.push('error'),
});
const sent = [s.send(echo(0x1234, 1, Buffer.from('one')), 64), s.send(echo(0x1234, 2, Buffer.from('two')), 3)];
setTimeout(() => { const ident = s.ident; const stats = s.stats(); s.close(); s.close(); console.log(JSON.stringify({ ident, sent, got, stats })); }, 300);
`);
    const ident = r.ident as number;
    expect(ident).toBeGreaterThan(0);
    expect(r.sent).toEqual([null, null]);
    expect(r.got).toEqual([
      { type: 0, id: ident, seq: 1, data: 'one', src: 0x7f000001, ttl: 64 },
      { type: 0, id: ident, seq: 2, data: 'two', src: 0x7f000001, ttl: 64 },
    ]);
    expect(r.stats).toMatchObject({ txMessages: 2, rxMessages: 2, txErrors: 0 });
  });

  test('no route: send reports ENETUNREACH, nothing arrives; bad arguments throw TypeError', async () => {
    const r = await inFreshNetns('0 2147483647', `${ECHO}
const got = [];
const s = new addon.PingSocket('198.18.0.1', { onMessage: () => got.push('message'), onError: () => got.push('error') });
const sent = s.send(echo(1, 1, Buffer.alloc(0)), 64);
const errors = [];
for (const f of [() => s.send('x', 64), () => s.send(echo(1, 1, Buffer.alloc(0)), 0), () => new addon.PingSocket('nope', { onMessage() {}, onError() {} }), () => new addon.PingSocket('127.0.0.1', {})]) {
  try { f(); errors.push('none'); } catch (e) { errors.push(e.constructor.name); }
}
setTimeout(() => { s.close(); console.log(JSON.stringify({ sent, got, errors, afterClose: s.send(echo(1, 2, Buffer.alloc(0)), 64) })); }, 200);
`);
    expect(r).toEqual({ sent: 'ENETUNREACH', got: [], errors: ['TypeError', 'TypeError', 'TypeError', 'TypeError'], afterClose: 'EBADF' });
  });
});
