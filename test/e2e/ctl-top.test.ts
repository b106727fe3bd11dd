/**
 * `vmnat ctl top` against a running vmnat with traffic: a netns guest echoes what a host client
 * sends through a --hostfwd forward, paced at a known rate (24 KiB every 10 ms, ≈ 2.4 MB/s at
 * most), so the port, the forward and the flow all carry bytes both ways while top samples them.
 *  - over a pipe: one snapshot, no escape codes, the rates in the expected range;
 *  - on a terminal (util-linux `script` gives it a pty): the alternate screen, redrawn, and `q`
 *    quits with status 0 and the terminal restored.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNetns, leaseWithUdhcpc, type Netns } from '../helpers/netns.ts';
import { ROOT, VMNAT_BIN, killAll, run, startVmnat, type VmnatProcess } from '../helpers/proc.ts';

let ns: Netns;
let vmnat: VmnatProcess;
let guestServers: ChildProcess;
let api: string;
let fwdPort: number;
let client: net.Socket | undefined;
let pacer: NodeJS.Timeout | undefined;
let echoed = 0;

const CHUNK = 24 * 1024;
const EVERY_MS = 10;
/** The most the pacer can send per second (timers only ever run late). */
const MAX_RATE = (CHUNK * 1000) / EVERY_MS;

/** Parses a rate cell ("1.2 MB/s") to bytes per second. */
function rate(cell: string): number {
  const m = /^([\d.]+) (B|kB|MB|GB)\/s$/.exec(cell.trim());
  if (!m) throw new Error(`not a rate: ${JSON.stringify(cell)}`);
  return Number(m[1]) * { B: 1, kB: 1e3, MB: 1e6, GB: 1e9 }[m[2] as 'B' | 'kB' | 'MB' | 'GB'];
}

/** The rows of one section of the snapshot, split on runs of 2+ spaces. */
function section(text: string, title: string): string[][] {
  const lines = text.split('\n');
  const start = lines.findIndex((l) => l.startsWith(title));
  expect(start, text).toBeGreaterThanOrEqual(0);
  const rows: string[][] = [];
  for (const l of lines.slice(start + 2)) {
    if (!l.startsWith('  ')) break;
    rows.push(l.trim().split(/ {2,}/));
  }
  return rows;
}

beforeAll(async () => {
  ns = await createNetns();
  api = path.join(ns.dir, 'api.sock');
  vmnat = await startVmnat(['--tap', 'tap0', '--netns', ns.path, '--api-socket', api, '--hostfwd', 'tcp::0-:8000', '--dns-server', '127.0.0.1:9']);
  fwdPort = (vmnat.ready['forwards'] as unknown as { host_port: number }[])[0]!.host_port;
  await leaseWithUdhcpc(ns);
  guestServers = spawn('ip', ['netns', 'exec', ns.name, 'python3', path.join(ROOT, 'test/helpers/guestservers.py'), '8000', '9000'], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    guestServers.stdout!.once('data', () => resolve());
    guestServers.once('exit', (c) => reject(new Error(`guest servers exited ${c}`)));
  });
  // Paced traffic through the forward, both ways, for the whole file.
  client = net.connect(fwdPort, '127.0.0.1');
  await new Promise<void>((resolve, reject) => {
    client!.once('connect', resolve);
    client!.once('error', reject);
  });
  client.on('data', (d: Buffer) => (echoed += d.length));
  client.write('echo\n');
  const chunk = Buffer.alloc(CHUNK, 0x5a);
  pacer = setInterval(() => {
    if (client!.writableLength < 4 * CHUNK) client!.write(chunk);
  }, EVERY_MS);
  // Wait until bytes come back: the whole path is up.
  for (let i = 0; i < 100 && echoed === 0; i++) await new Promise((r) => setTimeout(r, 50));
  expect(echoed).toBeGreaterThan(0);
}, 60_000);

afterAll(async () => {
  clearInterval(pacer);
  client?.destroy();
  guestServers?.kill('SIGKILL');
  await vmnat?.stop();
  await ns?.destroy();
  killAll();
});

describe.sequential('vmnat ctl top', () => {
  it('over a pipe prints one snapshot: the port, the forward and its flow with their rates each way', async () => {
    const r = await run([process.execPath, VMNAT_BIN, 'ctl', '--api-socket', api, 'top', '--interval', '1'], { timeoutMs: 30_000 });
    expect(r.code, r.stderr).toBe(0);
    console.log(`[top] snapshot over a pipe:\n${r.stdout}`);
    expect(r.stdout).not.toMatch(/\x1b/); // no escape codes on a pipe
    expect(r.stdout).toMatch(/^vmnat {2}· {2}up \S+ {2}· {2}1 port {2}· {2}\d+ flows? \(tcp \d+, udp \d+, icmp \d+\) {2}· {2}1 forward/);

    const ports = section(r.stdout, 'PORTS');
    expect(ports).toHaveLength(1);
    const [id, transport, , address, , fromGuest, toGuest] = ports[0]!;
    expect(id).toBe('1');
    expect(transport).toMatch(/^tap tap0/);
    expect(address).toBe('10.0.2.15');
    // The echo sends back what it receives: both directions carry the paced rate (Ethernet and
    // TCP headers add a few percent; ACKs and timers make it lower, never above the cap).
    for (const cell of [fromGuest!, toGuest!]) {
      expect(rate(cell)).toBeGreaterThan(100_000);
      expect(rate(cell)).toBeLessThan(MAX_RATE * 1.3);
    }

    const forwards = section(r.stdout, 'FORWARDS');
    expect(forwards).toHaveLength(1);
    const [name, proto, host, guest, open, fFrom, fTo] = forwards[0]!;
    expect([name, proto, host, guest, open]).toEqual([`tcp-127.0.0.1-${fwdPort}`, 'tcp', `127.0.0.1:${fwdPort}`, 'guest:8000', '1']);
    for (const cell of [fFrom!, fTo!]) {
      expect(rate(cell)).toBeGreaterThan(100_000);
      expect(rate(cell)).toBeLessThan(MAX_RATE * 1.1);
    }

    const flows = section(r.stdout, 'FLOWS');
    const fwdFlow = flows.find((f) => f[3] === name);
    expect(fwdFlow, r.stdout).toBeDefined();
    expect(fwdFlow!.slice(0, 2)).toEqual(['tcp', '10.0.2.15:8000']);
    expect(fwdFlow![4]).toBe('established');
    // The busiest flow comes first.
    expect(flows[0]).toEqual(fwdFlow);
    expect(rate(fwdFlow![5]!)).toBeGreaterThan(100_000);
    expect(rate(fwdFlow![6]!)).toBeGreaterThan(100_000);
  }, 60_000);

  it('on a terminal it draws on the alternate screen, refreshes, and q quits with the terminal restored', async () => {
    const cmd = [process.execPath, VMNAT_BIN, 'ctl', '--api-socket', api, 'top', '--interval', '0.3'].map((a) => `'${a}'`).join(' ');
    // script(1) runs the command on a new pty and copies our stdin to it: the keyboard.
    const child = spawn('script', ['-q', '-f', '-e', '-c', `stty cols 160 rows 40; exec ${cmd}`, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString('utf8')));
    const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
    try {
      // Two full screens drawn (each starts at home and ends clearing below).
      for (let i = 0; i < 200 && (out.match(/FLOWS/g) ?? []).length < 2; i++) await new Promise((r) => setTimeout(r, 50));
      expect((out.match(/FLOWS/g) ?? []).length, out).toBeGreaterThanOrEqual(2);
      expect(out).toContain('\x1b[?1049h'); // the alternate screen
      expect(out).toContain('(q quits; every 0.3 s)');
      expect(out).toMatch(/tcp-127\.0\.0\.1-\d+ +tcp/);
      const quitAt = performance.now();
      child.stdin!.write('q');
      const code = await Promise.race([exited, new Promise<'late'>((r) => setTimeout(() => r('late'), 10_000))]);
      expect(code, out.slice(-2000)).toBe(0);
      expect(performance.now() - quitAt).toBeLessThan(5_000);
      // Cursor shown again and the normal screen back, after the last frame.
      expect(out.lastIndexOf('\x1b[?25h\x1b[?1049l')).toBeGreaterThan(out.lastIndexOf('FLOWS'));
    } finally {
      child.kill('SIGKILL');
      child.stdin!.destroy();
    }
  }, 60_000);

  it('a bad --interval is a usage error naming it (exit 2)', async () => {
    const r = await run([process.execPath, VMNAT_BIN, 'ctl', '--api-socket', api, 'top', '--interval', '0']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^vmnat: --interval: "0" is not a number of seconds from 0.1 to 3600/);
  });
});
