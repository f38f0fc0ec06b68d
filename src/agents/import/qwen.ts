import { homedir } from 'node:os';
import { join } from 'node:path';
import { mapOAuthCredsFile, type AgentImporter, type MappedCredential } from './common.js';

/**
 * Qwen Code keeps its qwen.ai login in `~/.qwen/oauth_creds.json`:
 *
 *     {"access_token": "...", "refresh_token": "...", "token_type": "Bearer",
 *      "resource_url": "portal.qwen.ai", "expiry_date": <ms>}
 *
 * `resource_url` (the API base the login is for) is kept as the token's
 * extra field of the same name, which the gateway's qwen route reads.
 */

const TOOL = 'Qwen Code';
const PROVIDER = 'qwen';

export function qwenCredsPath(env: NodeJS.ProcessEnv): string {
  return join(env.HOME || homedir(), '.qwen', 'oauth_creds.json');
}

export const qwenImporter: AgentImporter = {
  tool: TOOL,
  map(value: unknown, where: string): MappedCredential {
    return mapOAuthCredsFile(value, where, { tool: TOOL, provider: PROVIDER, extra: 'resource_url' });
  },
};
