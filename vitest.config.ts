import { defineConfig } from 'vitest/config';

// Unit tests are quick; the e2e tests start real guests (network namespaces, qemu under TCG) and
// each needs most of a core, so at most two files run at once on these 2-core machines.
//
// Two projects on Linux:
//   default   every test, against the normal addon (native/build: recvmmsg/sendmmsg, TAP, netns).
//   portable  the transport tests again, against the portable addon (native/portable/build: every
//             platform guard on its macOS branch; built by its globalSetup if missing or stale).
//             VMNAT_NATIVE=portable reaches the tests, the vmnat processes they start and the
//             scripts that load the addon by path. This is how CI checks the macOS I/O path.
//             TAP and network-namespace tests are not in it: the portable build, like macOS, has
//             no TAP (link-tap.test.ts, badinput.test.ts, the netns-* e2e tests); the fuzz test
//             runs there over --socket instead (badinput-socket.test.ts, in both projects).
// On macOS the normal build already is the portable path, so there is one project.
const ALL_TESTS = ['test/**/*.test.ts'];
const PORTABLE_TESTS = [
  'test/unit/link-*.test.ts',
  'test/unit/icmp-native.test.ts',
  'test/unit/icmp-portable.test.ts',
  'test/unit/native-build.test.ts',
  'test/e2e/vm.test.ts',
  'test/e2e/badinput-socket.test.ts',
  'test/e2e/cli.test.ts',
  'test/unit/modes.test.ts',
];

// Every project first brings dist/ up to date with src/ (the compiled JS that bin/vmnat.mjs runs
// and `import 'vmnat'` loads): a no-op after `npm ci` or `npm run build`.
const DIST_SETUP = 'test/helpers/dist-build.ts';

export default defineConfig({
  // `include` lives in each project: with `extends: true` a project's include would be added to a
  // root-level one, not replace it.
  test: {
    testTimeout: 120_000,
    hookTimeout: 60_000,
    pool: 'forks',
    maxWorkers: 2,
    reporters: ['default'],
    projects:
      process.platform === 'darwin'
        ? [{ extends: true, test: { name: 'default', include: ALL_TESTS, globalSetup: [DIST_SETUP] } }]
        : [
            { extends: true, test: { name: 'default', include: ALL_TESTS, globalSetup: [DIST_SETUP] } },
            {
              extends: true,
              test: {
                name: 'portable',
                include: PORTABLE_TESTS,
                exclude: ['test/unit/link-tap.test.ts'],
                env: { VMNAT_NATIVE: 'portable' },
                globalSetup: [DIST_SETUP, 'test/helpers/portable-build.ts'],
              },
            },
          ],
  },
});
