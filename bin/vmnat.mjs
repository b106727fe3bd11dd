#!/usr/bin/env node
// Entry point. Runs the compiled JavaScript in dist/ when it is there and not older than src/
// (an installed package, or a checkout after `npm install`/`npm run build`): Node then loads
// plain JS, with no TypeScript compiler in the process. Otherwise (no build, or src/ edited
// since) it loads src/ through tsx, so a checkout always runs what is in src/.
// VMNAT_FROM_SOURCE=1 forces src/.
import { readdirSync, statSync } from 'node:fs';

const src = new URL('../src/', import.meta.url);
const stamp = new URL('../dist/build.json', import.meta.url);

/** Newest mtime of the .ts files under `dir`, or 0 when there is no such directory. */
function newestSource(dir) {
  let newest = 0;
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return 0;
  }
  for (const e of entries) {
    if (e.isDirectory()) newest = Math.max(newest, newestSource(new URL(`${e.name}/`, dir)));
    else if (e.name.endsWith('.ts')) newest = Math.max(newest, statSync(new URL(e.name, dir)).mtimeMs);
  }
  return newest;
}

function distIsCurrent() {
  if (process.env.VMNAT_FROM_SOURCE === '1') return false;
  let built;
  try {
    built = statSync(stamp).mtimeMs;
  } catch {
    return false;
  }
  return newestSource(src) <= built;
}

if (distIsCurrent()) {
  // The single-file bundle when the build made one (faster to load), else the module tree.
  let bundle = true;
  try {
    statSync(new URL('../dist/bundle/cli.js', import.meta.url));
  } catch {
    bundle = false;
  }
  await import(bundle ? '../dist/bundle/cli.js' : '../dist/cli.js');
} else {
  const { register } = await import('tsx/esm/api');
  register();
  await import('../src/cli.ts');
}
