import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

/**
 * `npm run test:agents`: the agent CLIs that are not devDependencies (Codex,
 * Qwen Code on Node 22), installed on demand by scripts/agents-install. The
 * default suite (vitest.config.ts) leaves this directory out.
 */
export default defineConfig({
  root: fileURLToPath(new URL('../..', import.meta.url)),
  test: {
    include: ['test/agents-extra/**/*.test.ts'],
    testTimeout: 300_000,
    hookTimeout: 120_000,
    pool: 'forks',
  },
});
