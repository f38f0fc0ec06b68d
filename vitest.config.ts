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
  },
});
