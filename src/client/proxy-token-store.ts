import { CredproxyError, isCredproxyError } from '../errors.js';
import { assertBucketName, assertProviderName, DEFAULT_BUCKET } from '../names.js';
import { TokenSchema } from '../protocol/messages.js';
import { sanitizeToken } from '../store/sanitize.js';
import type { BucketStats, OAuthToken, RefreshLockOptions, TokenStore } from '../store/types.js';
import { isStringArray, malformedData, storeFailure } from './failure.js';
import type { ProxySocketClient } from './socket-client.js';

function checkNames(provider: string, bucket: string | undefined): void {
  assertProviderName(provider);
  if (bucket !== undefined) assertBucketName(bucket);
}

function label(op: string, provider: string, bucket: string | undefined): string {
  return `${op} ${provider}:${bucket ?? DEFAULT_BUCKET}`;
}

/** Only a token-shaped answer is returned, and never with a refresh_token, whatever the server sent. */
function asToken(op: string, data: unknown): OAuthToken {
  const parsed = TokenSchema.safeParse(data);
  if (!parsed.success) throw malformedData(op);
  return sanitizeToken(parsed.data as OAuthToken) as OAuthToken;
}

/**
 * TokenStore inside a sandbox (SPEC §6): each method is one proxy op. The
 * host owns refresh, so the lock methods are local no-ops.
 */
export class ProxyTokenStore implements TokenStore {
  constructor(private readonly client: ProxySocketClient) {}

  async saveToken(provider: string, token: OAuthToken, bucket?: string): Promise<void> {
    checkNames(provider, bucket);
    if (typeof token !== 'object' || token === null || Array.isArray(token)) {
      throw new CredproxyError('INVALID_REQUEST', 'invalid save_token request: token must be an object');
    }
    // The host drops refresh_token too; it never leaves this process in the first place.
    const payload = { provider, bucket, token: sanitizeToken(token) };
    try {
      await this.client.request('save_token', payload);
    } catch (err) {
      throw storeFailure(label('save_token', provider, bucket), err);
    }
  }

  async getToken(provider: string, bucket?: string): Promise<OAuthToken | null> {
    checkNames(provider, bucket);
    let data: unknown;
    try {
      data = await this.client.request('get_token', { provider, bucket });
    } catch (err) {
      if (isCredproxyError(err, 'NOT_FOUND')) return null;
      throw storeFailure(label('get_token', provider, bucket), err);
    }
    return asToken('get_token', data);
  }

  /** Ask the host to refresh now, even a still-valid token (subject to the host's cooldown). */
  async refreshToken(provider: string, bucket?: string): Promise<OAuthToken> {
    checkNames(provider, bucket);
    let data: unknown;
    try {
      data = await this.client.request('refresh_token', { provider, bucket });
    } catch (err) {
      throw storeFailure(label('refresh_token', provider, bucket), err);
    }
    return asToken('refresh_token', data);
  }

  async removeToken(provider: string, bucket?: string): Promise<void> {
    await this.removeTokenReporting(provider, bucket);
  }

  /**
   * removeToken, telling what the host removed: the whole entry, only the
   * access token (the host keeps its refresh token), or nothing (none stored).
   */
  async removeTokenReporting(provider: string, bucket?: string): Promise<'entry' | 'access_token' | 'nothing'> {
    checkNames(provider, bucket);
    try {
      const data = await this.client.request('remove_token', { provider, bucket });
      return data?.removed === 'access_token' ? 'access_token' : 'entry';
    } catch (err) {
      if (isCredproxyError(err, 'NOT_FOUND')) return 'nothing';
      throw storeFailure(label('remove_token', provider, bucket), err);
    }
  }

  async listProviders(): Promise<string[]> {
    let data: { providers?: unknown };
    try {
      data = await this.client.request('list_providers', {});
    } catch (err) {
      throw storeFailure('list_providers', err);
    }
    if (!isStringArray(data.providers)) throw malformedData('list_providers');
    return data.providers;
  }

  async listBuckets(provider: string): Promise<string[]> {
    assertProviderName(provider);
    let data: { buckets?: unknown };
    try {
      data = await this.client.request('list_buckets', { provider });
    } catch (err) {
      throw storeFailure(`list_buckets ${provider}`, err);
    }
    if (!isStringArray(data.buckets)) throw malformedData('list_buckets');
    return data.buckets;
  }

  /**
   * The proxy's own counters (get_bucket_stats) when version 2 is agreed; an
   * older proxy has none, so there it only tells whether the bucket holds a token.
   */
  async getBucketStats(provider: string, bucket: string): Promise<BucketStats | null> {
    checkNames(provider, bucket);
    if ((await this.client.protocolVersion()) < 2) {
      const token = await this.getToken(provider, bucket);
      return token === null ? null : { bucket, requestCount: 0, percentage: 0 };
    }
    let data: Record<string, unknown>;
    try {
      data = { ...(await this.client.request('get_bucket_stats', { provider, bucket })) };
    } catch (err) {
      if (isCredproxyError(err, 'NOT_FOUND')) return null;
      throw storeFailure(label('get_bucket_stats', provider, bucket), err);
    }
    const { requestCount, percentage, lastUsed } = data;
    const count = (n: unknown): n is number => typeof n === 'number' && Number.isFinite(n) && n >= 0;
    if (data.bucket !== bucket || !count(requestCount) || !count(percentage) || (lastUsed !== undefined && !count(lastUsed))) {
      throw malformedData('get_bucket_stats');
    }
    return lastUsed === undefined ? { bucket, requestCount, percentage } : { bucket, requestCount, percentage, lastUsed };
  }

  async acquireRefreshLock(provider: string, options: RefreshLockOptions = {}): Promise<boolean> {
    checkNames(provider, options.bucket);
    return true;
  }

  async releaseRefreshLock(provider: string, bucket?: string): Promise<void> {
    checkNames(provider, bucket);
  }
}
