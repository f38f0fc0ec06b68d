import { homedir } from 'node:os';
import { join } from 'node:path';
import type { OAuthToken } from '../../store/types.js';
import { FieldReader, alreadyMoved, formatError, isPlaceholder, isRecord, msToExpiry, placeholderText, placeholderValue, type AgentImporter, type MappedCredential } from './common.js';

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
  agent: 'qwen',
  tool: TOOL,
  provider: PROVIDER,
  map(value: unknown, where: string): MappedCredential {
    const f = new FieldReader(where, TOOL);
    if (!isRecord(value)) throw formatError(where, TOOL, '(top level)', 'is not a JSON object');
    if (isPlaceholder(value.access_token) || isPlaceholder(value.refresh_token)) throw alreadyMoved(where, TOOL, PROVIDER);
    const accessToken = f.string(value, 'access_token', 'access_token');
    const refreshToken = f.optionalString(value, 'refresh_token', 'refresh_token');
    const expiryDate = f.epochMs(value, 'expiry_date', 'expiry_date');
    const tokenType = f.optionalString(value, 'token_type', 'token_type');
    const resourceUrl = f.optionalString(value, 'resource_url', 'resource_url');
    const idToken = f.optionalString(value, 'id_token', 'id_token');

    const token: OAuthToken = { access_token: accessToken, expiry: msToExpiry(expiryDate), token_type: tokenType ?? 'Bearer' };
    if (refreshToken) token.refresh_token = refreshToken;
    if (resourceUrl) token.resource_url = resourceUrl;
    if (idToken) token.id_token = idToken;

    const moved = placeholderValue(PROVIDER);
    const placeholder: Record<string, unknown> = { ...value, access_token: moved, refresh_token: moved, expiry_date: 0 };
    if (idToken) placeholder.id_token = moved;
    return { provider: PROVIDER, token, placeholder: placeholderText(placeholder), notes: [] };
  },
};
