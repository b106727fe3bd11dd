/**
 * Which addon a test run exercises, and what the portable one links against.
 *
 * The portable build (native/portable/build, VMNAT_PORTABLE) stands in on Linux for the macOS
 * build: every platform guard of native/src/platform.h takes its non-Linux branch. The proof that
 * it really does is in the binary: its undefined symbols (what it asks libc for) must include none
 * of the Linux-only calls, while the normal build's must include them — the same check would then
 * catch a guard that was left out. This file runs in both vitest projects; the symbol check needs
 * the portable build and runs in the 'portable' project, whose globalSetup builds it.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, test } from 'vitest';
import { loadNative, nativeAddonPath, nativeVariant } from '../../src/link/native.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const LINUX_ONLY = /^(recvmmsg|sendmmsg|accept4|pipe2|setns|epoll_\w+|eventfd\w*|unshare)$/;

/** The libc symbols a .node file imports (undefined dynamic symbols, version suffix dropped). */
function importedSymbols(file: string): string[] {
  const out = execFileSync('nm', ['-D', '--undefined-only', file], { encoding: 'utf8' });
  return out
    .split('\n')
    .map((line) => line.trim().split(/\s+/).pop() ?? '')
    .map((sym) => sym.replace(/@.*$/, ''))
    .filter((sym) => sym.length > 0);
}

describe('the addon this run loads', () => {
  test('is the build VMNAT_NATIVE names, in this process and in the processes it starts', () => {
    const want = nativeVariant() === 'portable' ? 'portable' : process.platform === 'darwin' ? 'portable' : 'linux';
    expect(loadNative().build.flavor).toBe(want);
    // vmnat processes started by the e2e tests inherit the environment and load the same file.
    const child = spawnSync(process.execPath, ['--import', 'tsx', '-e',
      "import('./src/link/native.ts').then((m) => console.log(m.loadNative().build.flavor))"], { cwd: ROOT, encoding: 'utf8' });
    expect(child.stdout.trim(), child.stderr).toBe(want);
  });

  test('TAP is refused with ENOTSUP and a line naming the platform where there is no TAP', () => {
    const native = loadNative();
    if (native.build.flavor === 'linux') return; // the Linux build opens TAPs: link-tap.test.ts
    let caught: unknown;
    try {
      native.tapOpen('vmnat-none0');
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(Error);
    expect((caught as NodeJS.ErrnoException).code).toBe('ENOTSUP');
    expect((caught as Error).message).toMatch(/Linux-only; not available on (macOS|the portable build)/);
  });
});

describe.skipIf(nativeVariant() !== 'portable' || process.platform !== 'linux')('portable build, checked with nm', () => {
  test('imports none of the Linux-only calls; the normal build imports them (so the check can fail)', () => {
    const portable = nativeAddonPath();
    const normal = nativeAddonPath({});
    expect(fs.existsSync(normal), `${normal}: run npm run build:native`).toBe(true);
    const portableSyms = importedSymbols(portable);
    const normalSyms = importedSymbols(normal);
    // Sanity: nm really listed the imports (a parse that finds nothing would pass vacuously).
    expect(portableSyms).toContain('recvmsg');
    expect(portableSyms).toContain('sendmsg');
    expect(portableSyms.filter((s) => LINUX_ONLY.test(s))).toEqual([]);
    expect(normalSyms).toEqual(expect.arrayContaining(['recvmmsg', 'sendmmsg', 'setns']));
  });
});
