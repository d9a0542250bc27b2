import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // Vitest's default is one file fewer than the cores (one file at a time on the 2-core CI
    // machine). The files mostly wait on processes, locks and timers, each with its own database
    // and queue prefix: three at once took 279-294 s against 641 s for one.
    maxWorkers: 3,
    reporters: ['default'],
  },
});
