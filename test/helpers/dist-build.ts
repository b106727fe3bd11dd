/**
 * globalSetup of every vitest project (vitest.config.ts): makes sure dist/ (the compiled
 * JavaScript that bin/vmnat.mjs and `import 'vmnat'` run) is built from the current src/ before
 * any test starts, so that the vmnat processes the tests spawn run what users run, and a test
 * that imports the package gets today's code. Built once, before the workers start (never while a
 * test may be loading dist/); a no-op when dist/build.json is newer than every file in src/ (as
 * after `npm ci`, whose `prepare` builds it).
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

function newestSource(dir: string): number {
  let newest = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) newest = Math.max(newest, newestSource(p));
    else if (e.name.endsWith('.ts')) newest = Math.max(newest, statSync(p).mtimeMs);
  }
  return newest;
}

/** True when dist/ exists and no file in src/ is newer than its stamp (bin/vmnat.mjs's test). */
export function distIsCurrent(): boolean {
  try {
    return newestSource(path.join(ROOT, 'src')) <= statSync(path.join(ROOT, 'dist/build.json')).mtimeMs;
  } catch {
    return false;
  }
}

/**
 * Two projects' setups may run at once: a directory made atomically is the lock (held by a
 * build; taken over after 3 minutes, the mark of a build that was killed).
 */
export default async function setup(): Promise<void> {
  const lock = path.join(ROOT, 'node_modules/.vmnat-dist-build.lock');
  for (;;) {
    if (distIsCurrent()) return;
    try {
      mkdirSync(lock);
      break;
    } catch {
      let age = 0;
      try {
        age = Date.now() - statSync(lock).mtimeMs;
      } catch {
        continue; // released meanwhile
      }
      if (age > 180_000) rmSync(lock, { recursive: true, force: true });
      else await new Promise((r) => setTimeout(r, 200));
    }
  }
  try {
    if (distIsCurrent()) return;
    const r = spawnSync(process.execPath, [path.join(ROOT, 'scripts/build-dist.mjs')], { cwd: ROOT, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`building dist/ failed (npm run build):\n${r.stdout}\n${r.stderr}`);
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
}
