import { createHash } from 'node:crypto';
import { homedir, userInfo } from 'node:os';
import { join } from 'node:path';
import type { OAuthToken } from '../../store/types.js';
import { FieldReader, alreadyMoved, isPlaceholder, msToExpiry, placeholderText, placeholderValue, formatError, type AgentImporter, type MappedCredential } from './common.js';

/**
 * Claude Code keeps its login as `.credentials.json` in its config dir
 * (`$CLAUDE_CONFIG_DIR`, default `~/.claude`) on Linux and Windows, and in a
 * macOS Keychain item on macOS:
 *
 *     {"claudeAiOauth": {"accessToken": "...", "refreshToken": "...",
 *       "expiresAt": <ms since 1970>, "scopes": ["user:inference", ...],
 *       "subscriptionType": "max"}, ...other entries}
 *
 * Other top-level entries (MCP servers' logins and the like) are not ours
 * and are kept as they are by --move.
 */

const TOOL = 'Claude Code';
const PROVIDER = 'anthropic';

function claudeConfigDir(env: NodeJS.ProcessEnv): string {
  const dir = env.CLAUDE_CONFIG_DIR;
  return dir !== undefined && dir !== '' ? dir : join(env.HOME || homedir(), '.claude');
}

export function claudeCredentialsPath(env: NodeJS.ProcessEnv): string {
  return join(claudeConfigDir(env), '.credentials.json');
}

/**
 * The Keychain item Claude Code uses on macOS: service "Claude
 * Code-credentials", with the first 8 hex digits of the SHA-256 of the
 * config dir appended when CLAUDE_CONFIG_DIR is set; account: the user name.
 */
export function claudeKeychainItem(env: NodeJS.ProcessEnv): { service: string; account: string } {
  const custom = env.CLAUDE_CONFIG_DIR !== undefined && env.CLAUDE_CONFIG_DIR !== '';
  const suffix = custom ? `-${createHash('sha256').update(claudeConfigDir(env).normalize('NFC')).digest('hex').slice(0, 8)}` : '';
  let account = env.USER;
  if (!account) {
    try {
      account = userInfo().username;
    } catch {
      account = undefined;
    }
  }
  if (!account || !/^[a-zA-Z0-9._-]+$/.test(account)) account = 'claude-code-user';
  return { service: `Claude Code-credentials${suffix}`, account };
}

export const claudeImporter: AgentImporter = {
  tool: TOOL,
  map(parsed: unknown, where: string): MappedCredential {
    const f = new FieldReader(where, TOOL);
    const value = f.root(parsed);
    if (value.claudeAiOauth === null) throw formatError(where, TOOL, 'claudeAiOauth', 'is null: Claude Code is not logged in');
    const oauth = f.object(value, 'claudeAiOauth', 'claudeAiOauth');
    if (isPlaceholder(oauth.accessToken) || isPlaceholder(oauth.refreshToken)) throw alreadyMoved(where, TOOL, PROVIDER);
    const accessToken = f.string(oauth, 'accessToken', 'claudeAiOauth.accessToken');
    const refreshToken = f.optionalString(oauth, 'refreshToken', 'claudeAiOauth.refreshToken');
    const expiresAt = f.epochMs(oauth, 'expiresAt', 'claudeAiOauth.expiresAt');
    const scopes = oauth.scopes;
    if (scopes !== undefined && scopes !== null && !(Array.isArray(scopes) && scopes.every((s) => typeof s === 'string'))) {
      throw formatError(where, TOOL, 'claudeAiOauth.scopes', 'is not a list of strings');
    }
    const subscription = f.optionalString(oauth, 'subscriptionType', 'claudeAiOauth.subscriptionType');

    const token: OAuthToken = { access_token: accessToken, expiry: msToExpiry(expiresAt), token_type: 'Bearer' };
    if (refreshToken) token.refresh_token = refreshToken;
    if (Array.isArray(scopes) && scopes.length > 0) token.scope = (scopes as string[]).join(' ');
    if (subscription) token.subscription_type = subscription;

    const moved = placeholderValue(PROVIDER);
    const placeholder = {
      ...value,
      claudeAiOauth: { ...oauth, accessToken: moved, refreshToken: moved, expiresAt: 0 },
    };
    return { provider: PROVIDER, token, placeholder: placeholderText(placeholder), notes: [] };
  },
};
