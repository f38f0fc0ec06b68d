import { CredproxyError } from '../../src/errors.js';
import type { CredentialService } from '../../src/refresh/types.js';
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

  async save(provider: string, bucket: string, incoming: OAuthToken): Promise<void> {
    await this.tokens.saveToken(provider, mergeToken(await this.tokens.getToken(provider, bucket), incoming), bucket);
  }

  remove(provider: string, bucket: string): Promise<void> {
    return this.tokens.removeToken(provider, bucket);
  }

  async close(): Promise<void> {}
}
