// Builds dist/ from src/ (tsc -p tsconfig.build.json) and stamps it: bin/vmnat.mjs runs dist/
// only while no file in src/ is newer than dist/build.json.
//
// tsc rewrites `./x.ts` to `./x.js` in the JavaScript it emits (rewriteRelativeImportExtensions)
// but leaves declaration files importing `./x.ts`, which a consumer's TypeScript cannot resolve
// (there is only x.d.ts): those specifiers are rewritten here too.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dist = path.join(root, 'dist');
const started = Date.now();
let tsc;
try {
  tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
} catch {
  // `npm install --omit=dev` in a checkout: no compiler. Not an error: bin/vmnat.mjs runs src/.
  process.stderr.write('build-dist: typescript is not installed; dist/ not built (vmnat runs src/ through tsx)\n');
  process.exit(0);
}
rmSync(dist, { recursive: true, force: true });
execFileSync(process.execPath, [tsc, '-p', path.join(root, 'tsconfig.build.json')], { stdio: 'inherit' });

let rewritten = 0;
const walk = (dir) => {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) walk(p);
    else if (e.name.endsWith('.d.ts')) {
      const text = readFileSync(p, 'utf8');
      const out = text.replace(/((?:from|import)\s*\(?\s*['"])(\.{1,2}\/[^'"]*?)\.ts(['"])/g, (_, a, b, c) => `${a}${b}.js${c}`);
      if (out !== text) {
        writeFileSync(p, out);
        rewritten++;
      }
    }
  }
};
walk(dist);
// The command line also as one file (dist/bundle/cli.js, with esbuild, which tsx brings): Node
// then reads and compiles one module instead of ~70, and vmnat is ready in ~100 ms instead of
// ~145 (bin/vmnat.mjs prefers it). dist/bundle/ sits at the depth of dist/link/, so the addon's
// path resolves the same; the dependencies are bundled in. Without esbuild, dist/cli.js serves.
let bundled = false;
try {
  const esbuild = createRequire(createRequire(import.meta.url).resolve('tsx/package.json')).resolve('esbuild');
  const { buildSync } = await import(esbuild);
  buildSync({
    entryPoints: [path.join(dist, 'cli.js')],
    outfile: path.join(dist, 'bundle', 'cli.js'),
    bundle: true,
    platform: 'node',
    format: 'esm',
    logLevel: 'warning',
    // dns-packet and its helpers are CommonJS: give the bundle a require() of its own.
    banner: { js: "import { createRequire as __vmnatRequire } from 'node:module'; const require = __vmnatRequire(import.meta.url);" },
  });
  bundled = true;
} catch (err) {
  process.stderr.write(`build-dist: no single-file bundle (${err.message.split('\n')[0]}); dist/cli.js serves\n`);
}
const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8'));
writeFileSync(path.join(dist, 'build.json'), `${JSON.stringify({ version: pkg.version, built: new Date().toISOString() })}\n`);
process.stderr.write(`build-dist: dist/ in ${((Date.now() - started) / 1000).toFixed(1)} s (${rewritten} declaration files re-pointed to .js${bundled ? '; dist/bundle/cli.js' : ''})\n`);
