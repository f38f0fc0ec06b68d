import { homedir } from 'node:os';
import { join } from 'node:path';
import { chatgptAccountId, isChatgptAccountId, unverifiedClaims } from '../../oauth/jwt.js';
import type { OAuthToken } from '../../store/types.js';
import {
  FieldReader,
  alreadyMoved,
  formatError,
  isPlaceholder,
  isRecord,
  placeholderJwt,
  placeholderText,
  placeholderValue,
  type AgentImporter,
  type MappedCredential,
} from './common.js';

/**
 * The Codex CLI keeps its login in `$CODEX_HOME/auth.json` (default
 * `~/.codex`):
 *
 *     {"OPENAI_API_KEY": null | "sk-...",
 *      "tokens": {"id_token": "<JWT>", "access_token": "<JWT>",
 *                 "refresh_token": "...", "account_id": "..."},
 *      "last_refresh": "<ISO time>"}
 *
 * The file has no expiry: it comes from the access token's `exp` claim when
 * that is a JWT (ChatGPT's are). The ChatGPT account id is `tokens.account_id`
 * (refused unless a header can carry it: the gateway sends it as one),
 * else the id_token's `https://api.openai.com/auth` → `chatgpt_account_id`
 * claim. An OPENAI_API_KEY value is an API key: it is stored as the key
 * `openai` (what `credproxy key set openai` would do; the gateway's built-in
 * `openai` route uses it).
 */

const TOOL = 'Codex';
const PROVIDER = 'codex';
const CODEX_API_KEY_NAME = 'openai';

export function codexAuthPath(env: NodeJS.ProcessEnv): string {
  const dir = env.CODEX_HOME !== undefined && env.CODEX_HOME !== '' ? env.CODEX_HOME : join(env.HOME || homedir(), '.codex');
  return join(dir, 'auth.json');
}


export const codexImporter: AgentImporter = {
  tool: TOOL,
  map(parsed: unknown, where: string): MappedCredential {
    const f = new FieldReader(where, TOOL);
    const value = f.root(parsed);
    const rawKey = value.OPENAI_API_KEY;
    if (rawKey !== undefined && rawKey !== null && typeof rawKey !== 'string') throw formatError(where, TOOL, 'OPENAI_API_KEY', 'is neither null nor a string');
    const rawTokens = value.tokens;
    if (rawTokens !== undefined && rawTokens !== null && !isRecord(rawTokens)) throw formatError(where, TOOL, 'tokens', 'is not an object');
    const tokens = isRecord(rawTokens) ? rawTokens : undefined;

    if (tokens ? isPlaceholder(tokens.access_token) || isPlaceholder(tokens.refresh_token) : isPlaceholder(rawKey)) {
      throw alreadyMoved(where, TOOL, tokens ? PROVIDER : `key ${CODEX_API_KEY_NAME}`);
    }
    const apiKeyValue = typeof rawKey === 'string' && rawKey !== '' && !isPlaceholder(rawKey) ? rawKey : undefined;
    if (!tokens && !apiKeyValue) throw formatError(where, TOOL, 'tokens', 'is missing and OPENAI_API_KEY is empty: no login to import');

    const notes: string[] = [];
    let token: OAuthToken | undefined;
    let placeholderTokens: Record<string, unknown> | undefined;
    if (tokens) {
      const idToken = f.string(tokens, 'id_token', 'tokens.id_token');
      const accessToken = f.string(tokens, 'access_token', 'tokens.access_token');
      const refreshToken = f.string(tokens, 'refresh_token', 'tokens.refresh_token');
      // The gateway sends the account id as a header (chatgpt-account-id): it must be one a header can carry.
      const fileAccountId = f.optionalString(tokens, 'account_id', 'tokens.account_id');
      if (fileAccountId !== undefined && !isChatgptAccountId(fileAccountId)) {
        throw formatError(where, TOOL, 'tokens.account_id', 'is not an account id (1 to 256 printable ASCII characters, no spaces)');
      }
      const accountId = fileAccountId ?? chatgptAccountId(idToken);
      const exp = unverifiedClaims(accessToken)?.exp;
      let expiry: number;
      if (typeof exp === 'number' && Number.isFinite(exp) && exp >= 0) {
        expiry = Math.floor(exp);
      } else {
        expiry = 0;
        notes.push('the access token carries no expiry (not a JWT with exp): stored as expired, so credproxy refreshes it on first use');
      }
      token = { access_token: accessToken, expiry, token_type: 'Bearer', refresh_token: refreshToken, id_token: idToken };
      if (accountId) token.account_id = accountId;
      // The Codex CLI parses the id_token as a JWT: leave it one, with no claims of the login.
      placeholderTokens = {
        ...tokens,
        id_token: placeholderJwt({ credproxy: placeholderValue(PROVIDER) }),
        access_token: placeholderValue(PROVIDER),
        refresh_token: placeholderValue(PROVIDER),
      };
    }

    const placeholder: Record<string, unknown> = { ...value };
    if (placeholderTokens) placeholder.tokens = placeholderTokens;
    if (typeof rawKey === 'string' && rawKey !== '') placeholder.OPENAI_API_KEY = placeholderValue(CODEX_API_KEY_NAME);
    return {
      provider: PROVIDER,
      ...(token ? { token } : {}),
      ...(apiKeyValue ? { apiKey: { name: CODEX_API_KEY_NAME, value: apiKeyValue, field: 'OPENAI_API_KEY' } } : {}),
      placeholder: placeholderText(placeholder),
      notes,
    };
  },
};
