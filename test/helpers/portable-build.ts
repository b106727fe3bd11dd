/**
 * globalSetup of the vitest project 'portable' (vitest.config.ts): makes sure the portable addon
 * (native/portable/build) is built from the current sources before its tests load it — configure
 * once, then an incremental make that does nothing when nothing changed. A failed build fails the
 * run here, with the compiler's output, rather than as a "not built" error in every test.
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export default function setup(): void {
  const r = spawnSync('bash', [path.join(ROOT, 'scripts/build-native.sh'), '--if-needed'], {
    cwd: ROOT,
    env: { ...process.env, VMNAT_PORTABLE: '1' },
    encoding: 'utf8',
  });
  if (r.status !== 0) {
    throw new Error(`portable addon build failed (VMNAT_PORTABLE=1 npm run build:native):\n${r.stdout}\n${r.stderr}`);
  }
}
