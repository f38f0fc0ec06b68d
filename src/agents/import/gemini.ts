import { homedir } from 'node:os';
import { join } from 'node:path';
import { mapOAuthCredsFile, type AgentImporter, type MappedCredential } from './common.js';

/**
 * The Gemini CLI keeps its Google login in `~/.gemini/oauth_creds.json`, the
 * google-auth-library credentials object:
 *
 *     {"access_token": "...", "refresh_token": "...", "scope": "a b",
 *      "token_type": "Bearer", "id_token": "<JWT>", "expiry_date": <ms>}
 */

const TOOL = 'Gemini CLI';
const PROVIDER = 'gemini';

export function geminiCredsPath(env: NodeJS.ProcessEnv): string {
  return join(env.HOME || homedir(), '.gemini', 'oauth_creds.json');
}

export const geminiImporter: AgentImporter = {
  tool: TOOL,
  map(value: unknown, where: string): MappedCredential {
    return mapOAuthCredsFile(value, where, { tool: TOOL, provider: PROVIDER, extra: 'scope' });
  },
};
