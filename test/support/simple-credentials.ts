import { CredproxyError } from '../../src/errors.js';
import type { CredentialService, TokenMerge } from '../../src/refresh/types.js';
import { sandboxRemoval, type SandboxRemoval } from '../../src/store/sandbox-token.js';
import { mergeToken } from '../../src/store/merge.js';
import type { OAuthToken, TokenStore } from '../../src/store/types.js';

/**
 * CredentialService for server tests: serves what the store holds and never
 * talks to a provider. refresh fails the way a host without a provider
 * configuration would.
 */
export class SimpleCredentials implements CredentialService {
  constructor(private readonly tokens: TokenStore) {}

  getToken(provider: string, bucket: string): Promise<OAuthToken | null> {
    return this.tokens.getToken(provider, bucket);
  }

  async refresh(provider: string, _bucket: string): Promise<OAuthToken> {
    throw new CredproxyError('INTERNAL_ERROR', `no provider configured for ${provider}`);
  }

  async save(provider: string, bucket: string, incoming: OAuthToken, merge: TokenMerge = mergeToken): Promise<void> {
    await this.tokens.saveToken(provider, merge(await this.tokens.getToken(provider, bucket), incoming), bucket);
  }

  async remove(provider: string, bucket: string, options: { keepRefreshToken?: boolean } = {}): Promise<SandboxRemoval> {
    const stored = options.keepRefreshToken ? await this.tokens.getToken(provider, bucket) : null;
    const plan = stored === null ? { keep: null, removed: 'entry' as const } : sandboxRemoval(stored);
    if (plan.keep === null) await this.tokens.removeToken(provider, bucket);
    else await this.tokens.saveToken(provider, plan.keep, bucket);
    return plan.removed;
  }

  async close(): Promise<void> {}
}
