import { UsageError } from '../cli/io.js';
import type { Agent } from '../gateway/agents.js';
import { proxyEnv } from './env.js';
import { describeRule, HostRuleError, parseHostRules, type HostRule } from './hosts.js';

/**
 * Hosts an agent needs for its model traffic when the gateway cannot carry
 * it. Claude Code: none. `--agent claude` always runs behind the gateway,
 * which carries every model call (ANTHROPIC_BASE_URL points at it), and it
 * sets CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1, which turns off the
 * telemetry, error reporting and auto-update calls that would otherwise go
 * to other hosts. Adding api.anthropic.com here would only open a path
 * around the gateway (a placeholder sent there directly is useless anyway).
 * An agent that must reach a host the gateway cannot carry (an OAuth
 * refresh endpoint called from inside, a websocket API) lists it here.
 */
// codex, gemini, qwen: none either. Their presets (gateway/agents.ts) send every model call to the
// gateway, keep any token refresh on the host, and turn their analytics, usage statistics and update
// checks off; what is left (codex's ChatGPT account and settings look-ups) also goes to the gateway.
export const AGENT_HOSTS: Readonly<Record<Agent, readonly string[]>> = Object.freeze({ claude: [], codex: [], gemini: [], qwen: [] });

export function agentHosts(agent: Agent): string[] {
  return [...AGENT_HOSTS[agent]];
}

/** `--allow-host` entries (flags, profile, agent) to rules; a bad entry is a usage error (exit 2). */
export function egressRules(entries: readonly string[]): HostRule[] {
  try {
    return parseHostRules(entries);
  } catch (err) {
    if (err instanceof HostRuleError) throw new UsageError(`invalid --allow-host ${err.message}`);
    throw err;
  }
}

/** `run --explain`: the allowlist, one rule a line. */
export function describeRules(rules: readonly HostRule[]): string[] {
  if (rules.length === 0) return ['egress: none (no --allow-host: the sandbox has no network; --share-net would give it all)'];
  return [
    'egress (--allow-host) through the proxy, names resolved on the host; loopback, private and link-local addresses refused unless named literally:',
    ...rules.map((r) => `  ${describeRule(r)}`),
    `  proxy variables: ${Object.keys(proxyEnv('')).join(' ')}`,
  ];
}
