import { homedir } from 'node:os';
import { join } from 'node:path';
import type { OAuthToken } from '../../store/types.js';
import { FieldReader, alreadyMoved, formatError, isPlaceholder, isRecord, msToExpiry, placeholderText, placeholderValue, type AgentImporter, type MappedCredential } from './common.js';

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
  agent: 'gemini',
  tool: TOOL,
  provider: PROVIDER,
  map(value: unknown, where: string): MappedCredential {
    const f = new FieldReader(where, TOOL);
    if (!isRecord(value)) throw formatError(where, TOOL, '(top level)', 'is not a JSON object');
    if (isPlaceholder(value.access_token) || isPlaceholder(value.refresh_token)) throw alreadyMoved(where, TOOL, PROVIDER);
    const accessToken = f.string(value, 'access_token', 'access_token');
    const refreshToken = f.optionalString(value, 'refresh_token', 'refresh_token');
    const expiryDate = f.epochMs(value, 'expiry_date', 'expiry_date');
    const scope = f.optionalString(value, 'scope', 'scope');
    const tokenType = f.optionalString(value, 'token_type', 'token_type');
    const idToken = f.optionalString(value, 'id_token', 'id_token');

    const token: OAuthToken = { access_token: accessToken, expiry: msToExpiry(expiryDate), token_type: tokenType ?? 'Bearer' };
    if (refreshToken) token.refresh_token = refreshToken;
    if (scope) token.scope = scope;
    if (idToken) token.id_token = idToken;

    const moved = placeholderValue(PROVIDER);
    const placeholder: Record<string, unknown> = { ...value, access_token: moved, refresh_token: moved, expiry_date: 0 };
    if (idToken) placeholder.id_token = moved;
    return { provider: PROVIDER, token, placeholder: placeholderText(placeholder), notes: [] };
  },
};
