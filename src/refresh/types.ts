import type { SandboxRemoval } from '../store/sandbox-token.js';
import type { OAuthToken } from '../store/types.js';

/** How an incoming token is combined with the stored one (default: the SPEC §2 merge). */
export type TokenMerge = (stored: OAuthToken | null, incoming: OAuthToken) => OAuthToken;

/**
 * The single refresh path (SPEC §5) as the server sees it. Every trigger —
 * the refresh_token op, get_token near expiry, renewal timers, host-side
 * `credproxy token get` — goes through one implementation of this.
 * Tokens returned here are full (host-side); callers sanitize before sending.
 */
export interface CredentialService {
  /**
   * get_token: the stored token, refreshed first when it is expired or expires
   * within 60 s and can be refreshed. null when nothing is stored.
   * Arms the renewal timer for the token it serves.
   */
  getToken(provider: string, bucket: string): Promise<OAuthToken | null>;
  /**
   * getToken without waiting: the answer when the store has it in memory and
   * it needs no refresh (null: nothing stored); undefined otherwise.
   */
  peekToken?(provider: string, bucket: string): OAuthToken | null | undefined;
  /** refresh_token op: refresh even a still-valid token (outside the cooldown). */
  refresh(provider: string, bucket: string): Promise<OAuthToken>;
  /** save_token: merge `incoming` (never carrying a refresh token) into the stored token under the refresh lock. */
  save(provider: string, bucket: string, incoming: OAuthToken, merge?: TokenMerge): Promise<void>;
  /**
   * Remove under the refresh lock, so a logout racing a refresh waits and
   * wins. `keepRefreshToken` (a remove from the sandbox): an entry holding a
   * refresh token keeps it and only loses its access token (see sandboxRemoval).
   */
  remove(provider: string, bucket: string, options?: { keepRefreshToken?: boolean }): Promise<SandboxRemoval>;
  /** Stop all timers and in-process work. */
  close(): Promise<void>;
}
