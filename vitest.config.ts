import { defineConfig } from 'vitest/config';

// Unit tests are quick; the e2e tests start real guests (network namespaces, qemu under TCG) and
// each needs most of a core, so at most two files run at once on these 2-core machines.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 60_000,
    pool: 'forks',
    maxWorkers: 2,
    reporters: ['default'],
  },
});
