/**
 * What every lab shares: its context (transcript, cleanup stack, directories), starting vmnat with
 * the lab's own DNS server, booting the guest on it, `vmnat ctl` as the reader would type it, and
 * the closing picture.
 *
 * Theory of operation: a lab is an async function of a `LabContext`. Each helper here shows the
 * command it stands for before its output (`host$ vmnat ctl … flows`) and registers what it
 * started with the cleanup stack at once. vmnat runs as `node bin/vmnat.mjs` (the same entry
 * point as `npx vmnat`), on a unix datagram socket in the lab's private temp dir, with its API
 * socket beside it; the guest is qemu's `-netdev dgram` on that socket — the first row of the
 * README's "Attaching a VM" table.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { ApiClient } from '../../src/api/client.ts';
import { GUEST_DIR, REPO_ROOT, VMNAT_BIN, startVmnat, type VmnatProcess } from '../../test/helpers/vm.ts';
import { Guest } from './guest.ts';
import { runHost, type Cleanup } from './host.ts';
import { renderSvg, renderText, snapshotFromApi, topologyModel } from './topology.ts';
import type { Transcript } from './transcript.ts';

export interface LabContext {
  t: Transcript;
  cleanup: Cleanup;
  /** Where the lab leaves what the reader keeps (SVG, pcap, page): printed at the end. */
  outDir: string;
  /** A private temp dir for sockets and the initrd (short: unix socket paths have a 108-byte limit). */
  workDir: string;
  /** The host port of the nat lab's forward to the guest's port 22 (`--port`, default 2222). */
  forwardPort: number;
  /** Timings (ms) the lab measured, reported in its summary. */
  timings: Record<string, number>;
}

/** The guest's MAC: fixed, so the transcript is the same on every run. */
export const GUEST_MAC = '52:54:00:12:34:56';

/** Short display of paths under the lab's temp dir (`$LAB/api.sock`), also inside a longer argument. */
export function shown(ctx: LabContext, p: string): string {
  return p.split(ctx.workDir).join('$LAB');
}

export interface LabVmnat {
  proc: VmnatProcess;
  api: ApiClient;
  apiSocket: string;
  netSocket: string;
}

/**
 * Starts vmnat on `$LAB/net.sock` (or one `--socket` per name in `sockets`: `$LAB/NAME.sock`) with
 * its API on `$LAB/api.sock` and DNS to `127.0.0.1:dnsPort`.
 */
export async function startLabVmnat(ctx: LabContext, dnsPort: number, extra: readonly string[] = [], sockets: readonly string[] = ['net']): Promise<LabVmnat> {
  const netSocket = path.join(ctx.workDir, `${sockets[0] ?? 'net'}.sock`);
  const apiSocket = path.join(ctx.workDir, 'api.sock');
  const args = [...sockets.flatMap((n) => ['--socket', path.join(ctx.workDir, `${n}.sock`)]), '--api-socket', apiSocket, '--dns-server', `127.0.0.1:${dnsPort}`, ...extra];
  const started = performance.now();
  const proc = await startVmnat(args);
  ctx.cleanup.add('vmnat', async () => {
    await proc.stop();
  });
  ctx.timings[ctx.timings['vmnat_ready_ms'] === undefined ? 'vmnat_ready_ms' : 'vmnat_restart_ready_ms'] = Math.round(performance.now() - started);
  ctx.t.command('host$', `vmnat ${args.map((a) => shown(ctx, a)).join(' ')} &`, proc.stdout().split('\n')[0] ?? '');
  return { proc, api: new ApiClient(apiSocket), apiSocket, netSocket };
}

/**
 * Boots a guest on vmnat's datagram socket (`o.socket`, default the first), with `files` added to
 * its initramfs. Several guests need each its own `o.name` (host name, qemu socket, initrd).
 */
export async function bootLabGuest(
  ctx: LabContext,
  v: LabVmnat,
  files: Readonly<Record<string, string>>,
  archives: readonly string[] = [],
  o: { name?: string; mac?: string; socket?: string; secondNic?: { socket: string; mac: string } } = {},
): Promise<Guest> {
  const qemuSocket = path.join(ctx.workDir, o.name === undefined ? 'qemu.sock' : `qemu-${o.name}.sock`);
  const netdev = `dgram,id=n0,local.type=unix,local.path=${qemuSocket},remote.type=unix,remote.path=${o.socket ?? v.netSocket}`;
  // A second card (eth1) on another vmnat's socket: its own qemu-side socket beside the first.
  const moreNics = o.secondNic === undefined ? [] : [{ netdev: `dgram,local.type=unix,local.path=${qemuSocket.replace(/\.sock$/, '-eth1.sock')},remote.type=unix,remote.path=${o.secondNic.socket}`, mac: o.secondNic.mac }];
  const guest = await Guest.boot({ netdev, mac: o.mac ?? GUEST_MAC, dir: ctx.workDir, files, archives, moreNics, ...(o.name !== undefined ? { hostname: o.name } : {}) });
  ctx.cleanup.add(`qemu ${o.name ?? ''}`, () => guest.stop());
  ctx.timings[o.name === undefined ? 'guest_boot_ms' : `guest_boot_ms_${o.name}`] = guest.bootMs;
  const showArgs = guest.argv.map((a) => shown(ctx, a)).map((a) => (a.includes(',') || a.includes(' ') ? `'${a}'` : a));
  ctx.t.command('host$', `qemu-system-x86_64 ${showArgs.join(' ')} &`, `(the guest's console is ready after ${(guest.bootMs / 1000).toFixed(1)} s under TCG)`);
  return guest;
}

/** Runs a guest command, shows it and its output, returns them. */
export async function guestSh(ctx: LabContext, guest: Guest, line: string, timeoutMs?: number): Promise<{ output: string; status: number }> {
  const r = await guest.sh(line, timeoutMs);
  const prompt = guest.hostname === 'vmnat-lab' ? 'guest#' : `${guest.hostname}#`;
  ctx.t.command(prompt as `${string}#`, line, r.status === 0 ? r.output : `${r.output}\n(exit status ${r.status})`);
  return r;
}

/** Runs `vmnat ctl --api-socket S ARGS…` as a separate process, shows it, returns its stdout. */
export async function ctl(ctx: LabContext, v: LabVmnat, args: readonly string[]): Promise<{ code: number | null; stdout: string }> {
  const r = await runHost([process.execPath, VMNAT_BIN, 'ctl', '--api-socket', v.apiSocket, ...args]);
  ctx.t.command('host$', `vmnat ctl --api-socket ${shown(ctx, v.apiSocket)} ${args.join(' ')}`, r.stdout + r.stderr);
  return { code: r.code, stdout: r.stdout };
}

/**
 * The guest's SSH server archive (dropbear from Debian's packages, scripts/build-guest-ssh.sh):
 * built on first use (a no-op once built). Returns its path.
 */
export function ensureSshArchive(): string {
  const archive = path.join(GUEST_DIR, 'ssh.cpio');
  const r = spawnSync('bash', [path.join(REPO_ROOT, 'scripts/build-guest-ssh.sh')], { encoding: 'utf8', env: { ...process.env, VMNAT_GUEST_DIR: GUEST_DIR }, timeout: 300_000 });
  if (r.status !== 0 || !existsSync(archive)) throw new Error(`scripts/build-guest-ssh.sh failed (status ${r.status}):\n${r.stdout}${r.stderr}`);
  return archive;
}

export function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/**
 * The closing step: the topology as vmnat's API reports it, in the terminal and as
 * `OUTDIR/NAME-topology.svg`. Returns the SVG's path.
 */
export async function drawTopology(ctx: LabContext, v: LabVmnat, name: string, moreLines: Readonly<Record<string, readonly string[]>> = {}): Promise<string> {
  const snapshot = await snapshotFromApi(v.api);
  const model = topologyModel(snapshot);
  // What another vmnat's API knows about a guest (the hostonly lab's second card), by host name.
  for (const g of model.guests) g.more = [...(moreLines[g.hostname ?? ''] ?? [])];
  ctx.t.command('host$', `curl --unix-socket ${shown(ctx, v.apiSocket)} http://vmnat/{config,leases,forwards,flows}`, '(four JSON answers; drawn below)');
  ctx.t.raw(renderText(model));
  const svg = path.join(ctx.outDir, `${name}-topology.svg`);
  writeFileSync(svg, renderSvg(model));
  writeFileSync(path.join(ctx.outDir, `${name}-api-snapshot.json`), `${JSON.stringify(snapshot, null, 2)}\n`);
  ctx.t.note(`The same picture as SVG: ${svg}\n(and the API answers it was drawn from: ${path.join(ctx.outDir, `${name}-api-snapshot.json`)})`);
  return svg;
}
