import { availableParallelism } from 'node:os';
import { configDefaults, defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // The agent CLIs installed on demand: `npm run test:agents` (test/agents-extra/vitest.config.ts).
    exclude: [...configDefaults.exclude, 'test/agents-extra/**'],
    globalSetup: ['test/support/keyring-session.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    pool: 'forks',
    // Vitest's default (cores - 1) runs the files one at a time on a 2-core machine: 7.3 min instead of
    // 4.3. Most of the time is spent waiting on real servers, sandboxes and timers, and every test is
    // bounded by work done, so two at a time is safe on 2 cores (each file still runs its tests in order).
    maxWorkers: Math.max(2, availableParallelism() - 1),
  },
});
