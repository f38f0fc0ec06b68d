import { spawnSync } from 'node:child_process';
import { realpathSync } from 'node:fs';
import { dirname } from 'node:path';
import { CredproxyError } from '../errors.js';
import type { Policy } from '../server/policy.js';
import { KEY_ROUTE_PREFIX } from './routes.js';
import type { AgentEnvPlan } from './agent-env.js';

export { resolveAgentEnv, type AgentEnvPlan } from './agent-env.js';

export const AGENTS = ['claude'] as const;
export type Agent = (typeof AGENTS)[number];

/**
 * Claude Code (2.1.x): it honours ANTHROPIC_BASE_URL with a path prefix;
 * with CLAUDE_CODE_OAUTH_TOKEN it sends Authorization: Bearer and never
 * calls a token endpoint; with ANTHROPIC_API_KEY it sends x-api-key.
 * Without CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC it would also send the
 * placeholder straight to api.anthropic.com for telemetry.
 *
 * Key mode when the policy names the `anthropic` key explicitly
 * (`--allow-key anthropic`), else the Claude login (`--allow anthropic`).
 */
export function agentEnvPlan(agent: Agent, policy: Policy): AgentEnvPlan {
  const described = policy.describe();
  const keyMode = described.keys.includes('anthropic');
  if (keyMode) {
    const route = `${KEY_ROUTE_PREFIX}/anthropic`;
    return { route, set: { CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1' }, fromGatewayUrl: { ANTHROPIC_BASE_URL: `/${route}` }, placeholder: ['ANTHROPIC_API_KEY'] };
  }
  if (policy.allowsToken('anthropic')) {
    return { route: 'anthropic', set: { CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1' }, fromGatewayUrl: { ANTHROPIC_BASE_URL: '/anthropic' }, placeholder: ['CLAUDE_CODE_OAUTH_TOKEN'] };
  }
  throw new CredproxyError('USAGE', `--agent ${agent} needs an Anthropic credential: --allow anthropic (the Claude login, \`credproxy login anthropic\`) or --allow-key anthropic (an API key, \`credproxy key set anthropic\`)`);
}

/**
 * The agent's program as the sandbox must start it. Claude Code usually
 * lives under the home directory (~/.local/bin -> ~/.local/share/claude,
 * an npm prefix, nvm), which bwrap masks: a bare command name is resolved
 * on the host's PATH to its real file, whose directory is then bound
 * read-only. Throws USAGE when it cannot be found.
 */
export function locateAgentCommand(command: readonly string[], env: NodeJS.ProcessEnv): { command: string[]; dir: string } {
  const name = command[0]!;
  let path = name;
  if (!name.includes('/')) {
    const found = spawnSync('sh', ['-c', 'command -v -- "$1"', 'sh', name], { env: { PATH: env.PATH ?? '/usr/bin:/bin' }, encoding: 'utf8' });
    path = found.status === 0 ? found.stdout.trim() : '';
    if (!path.startsWith('/')) {
      throw new CredproxyError('USAGE', `${name} is not on PATH; install it (for Claude Code: \`npm install -g @anthropic-ai/claude-code\`) or give its full path after --`);
    }
  }
  let real: string;
  try {
    real = realpathSync(path);
  } catch {
    throw new CredproxyError('USAGE', `${name} does not exist`);
  }
  return { command: [real, ...command.slice(1)], dir: dirname(real) };
}
