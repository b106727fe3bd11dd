/**
 * `npm run lab -- NAME [--out DIR] [--port N]`: runs one lab and prints its transcript.
 *
 * Theory of operation: parse the flags, make the lab's private temp dir ($LAB: sockets, initrd)
 * and its output dir (what the reader keeps: the topology SVG, the capture, the page), run the
 * lab, then unwind its cleanup stack whatever happened — also on SIGINT/SIGTERM, so an
 * interrupted lab leaves no qemu, vmnat or listener behind. Exit status: 0 every check held;
 * 1 a check failed or a step broke; 2 a usage error. A JSON summary (checks, timings) is written
 * to OUTDIR/NAME-summary.json for scripts and the e2e test.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { captureLab } from './capture.ts';
import { Cleanup } from './lib/host.ts';
import type { LabContext } from './lib/lab.ts';
import { LabCheckFailed, Transcript } from './lib/transcript.ts';
import { isolationLab } from './isolation.ts';
import { ipv6Lab } from './ipv6.ts';
import { natLab } from './nat.ts';
import { hostonlyLab } from './hostonly.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** The labs that exist, and those waiting for the features they teach. */
const LABS: Record<string, (ctx: LabContext) => Promise<void>> = { nat: natLab, capture: captureLab, isolation: isolationLab, hostonly: hostonlyLab, ipv6: ipv6Lab };
const PLANNED: Record<string, string> = {};

const USAGE = `Usage: npm run lab -- NAME [--out DIR] [--port N]

Labs: ${Object.keys(LABS).join(', ')}${Object.keys(PLANNED).length > 0 ? `   (coming: ${Object.keys(PLANNED).join(', ')}; see labs/README.md)` : '   (see labs/README.md)'}
  --out DIR   where the lab leaves the topology SVG and other results (default .cache/labs/NAME)
  --port N    nat: the host port of the forward to the guest's port 22 (default 2222; 0: the kernel picks)
`;

function usage(msg: string): never {
  process.stderr.write(`lab: ${msg}\n${USAGE}`);
  process.exit(2);
}

async function main(argv: readonly string[]): Promise<number> {
  let name: string | undefined;
  let outDir: string | undefined;
  let forwardPort = 2222;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = (): string => argv[++i] ?? usage(`${a} needs a value`);
    if (a === '--help' || a === '-h') {
      process.stdout.write(USAGE);
      return 0;
    } else if (a === '--out') outDir = value();
    else if (a === '--port') {
      const v = value();
      forwardPort = Number(v);
      if (!/^\d+$/.test(v) || forwardPort > 65535) usage(`--port ${v}: not a port in 0..65535`);
    } else if (a.startsWith('-')) usage(`unknown option ${a}`);
    else if (name === undefined) name = a;
    else usage(`unexpected argument ${a}`);
  }
  if (name === undefined) usage('which lab?');
  const lab = LABS[name];
  if (lab === undefined || !Object.hasOwn(LABS, name)) {
    const later = PLANNED[name];
    if (later !== undefined) {
      process.stderr.write(`lab ${name} is not written yet: it waits for ${later}.\n`);
      return 2;
    }
    usage(`no lab named ${name}`);
  }

  const out = path.resolve(outDir ?? path.join(ROOT, '.cache/labs', name));
  mkdirSync(out, { recursive: true });
  const t = new Transcript(process.stdout);
  const cleanup = new Cleanup();
  const workDir = mkdtempSync(path.join(os.tmpdir(), `vmnat-lab-${name}-`));
  cleanup.add('temp dir', () => rmSync(workDir, { recursive: true, force: true }));
  const ctx: LabContext = { t, cleanup, outDir: out, workDir, forwardPort, timings: {} };
  process.stdout.write(`($LAB below is ${workDir}: sockets and the guest's initrd, removed when the lab ends)\n`);

  let interrupted = false;
  const onSignal = (sig: NodeJS.Signals): void => {
    if (interrupted) return;
    interrupted = true;
    process.stderr.write(`\nlab: ${sig}: cleaning up\n`);
    void cleanup.run((l) => process.stderr.write(`${l}\n`)).then(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const started = performance.now();
  let status = 0;
  let failure: string | undefined;
  try {
    await lab(ctx);
  } catch (e) {
    status = 1;
    failure = e instanceof LabCheckFailed ? `check failed: ${e.message}` : `error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`;
  }
  await cleanup.run((l) => process.stderr.write(`${l}\n`));
  ctx.timings['total_ms'] = Math.round(performance.now() - started);
  const passed = t.checks.filter((c) => c.ok).length;
  const summary = { lab: name, ok: status === 0, checks: t.checks, timings: ctx.timings, failure: failure ?? null, out };
  writeFileSync(path.join(out, `${name}-summary.json`), `${JSON.stringify(summary, null, 2)}\n`);
  process.stdout.write('\n');
  if (status === 0) process.stdout.write(`lab ${name}: all ${passed} checks passed in ${t.elapsedS()} s; results in ${out}\n`);
  else process.stdout.write(`lab ${name}: FAILED after ${passed} checks (${failure})\nresults so far in ${out}\n`);
  return status;
}

process.exitCode = await main(process.argv.slice(2));
