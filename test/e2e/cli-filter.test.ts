/**
 * `--filter FILE` as a user meets it: a bad rule file stops vmnat with one line naming the file,
 * the line and the token, and exit status 2; so does an unreadable one; a good one (from a file or
 * from stdin) lets vmnat start.
 */
import { afterAll, describe, expect, test } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { killAll, run, startVmnat, VMNAT_BIN } from '../helpers/proc.ts';

afterAll(() => killAll());
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vmnat-filter-cli-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const vmnat = (args: string[], input?: string) =>
  run([process.execPath, VMNAT_BIN, ...args], { timeoutMs: 20_000, ...(input !== undefined ? { input } : {}) });

function oneLine(r: { code: number | null; stdout: string; stderr: string }): string {
  expect(r.code).toBe(2);
  expect(r.stdout).toBe('');
  const lines = r.stderr.trimEnd().split('\n');
  expect(lines).toHaveLength(1);
  return lines[0]!;
}

describe('--filter', () => {
  test('a bad rule: one line naming file:line and the token, exit 2', async () => {
    const file = path.join(tmp, 'bad.conf');
    fs.writeFileSync(file, '# policy\nblock out proto tcp to 10.0.2.2 port 22\npass out proto tcpp all\n');
    const sock = path.join(tmp, 'never.sock');
    const line = oneLine(await vmnat(['--socket', sock, '--filter', file]));
    expect(line).toBe(`vmnat: --filter: ${file}:3: unknown protocol "tcpp" (tcp, udp or icmp)`);
    // checked before anything is opened
    expect(fs.existsSync(sock)).toBe(false);
  });

  test('the file name is reported as given (a relative path stays relative)', async () => {
    fs.writeFileSync(path.join(tmp, 'rel.conf'), 'block to 10.0.2.15/24\n');
    // run() has no cwd option: sh changes into tmp first
    const viaSh = await run(['sh', '-c', `cd "${tmp}" && exec "${process.execPath}" "${VMNAT_BIN}" --filter rel.conf`], { timeoutMs: 20_000 });
    expect(oneLine(viaSh)).toBe('vmnat: --filter: rel.conf:1: "10.0.2.15/24" has host bits set (did you mean 10.0.2.0/24, or 10.0.2.15 for one host?)');
  });

  test('a bad rule on stdin (-) is named <stdin>', async () => {
    const line = oneLine(await vmnat(['--filter', '-'], 'pass all\nblock proto icmp to any port 7\n'));
    expect(line).toBe('vmnat: --filter: <stdin>:2: "port" needs proto tcp or udp (proto icmp has no ports)');
  });

  test('a missing file: one line, exit 2', async () => {
    const line = oneLine(await vmnat(['--filter', path.join(tmp, 'nope.conf')]));
    expect(line).toBe(`vmnat: --filter: cannot read ${path.join(tmp, 'nope.conf')}: ENOENT`);
  });

  test('given twice: exit 2', async () => {
    const f = path.join(tmp, 'ok.conf');
    fs.writeFileSync(f, 'pass all\n');
    expect(oneLine(await vmnat(['--filter', f, '--filter', f]))).toBe('vmnat: --filter: given more than once');
  });

  test('a good file lets vmnat start and stop cleanly', async () => {
    const f = path.join(tmp, 'good.conf');
    fs.writeFileSync(f, '# CI policy\nblock out proto tcp to 10.0.2.2 port 22\nblock local\npass all\n');
    const a = await startVmnat(['--socket', path.join(tmp, 'good.sock'), '--filter', f]);
    expect(a.ready).toMatchObject({ link: 'socket', network: '10.0.2.0/24' });
    expect(await a.stop()).toBe(0);
  });

  test('--help documents --filter and its grammar', async () => {
    const r = await vmnat(['--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('--filter FILE');
    expect(r.stdout).toContain('pass|block [in|out] [proto tcp|udp|icmp]');
  });
});
