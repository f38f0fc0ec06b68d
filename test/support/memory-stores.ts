import { DEFAULT_BUCKET } from '../../src/names.js';
import type { BucketStats, KeyStore, OAuthToken, RefreshLockOptions, TokenStore } from '../../src/store/types.js';

/** In-memory TokenStore for unit tests: same contract as the host store, no I/O. */
export class MemoryTokenStore implements TokenStore {
  readonly tokens = new Map<string, OAuthToken>();
  private readonly locks = new Set<string>();
  private readonly lockWaiters = new Map<string, Array<() => void>>();

  private static k(provider: string, bucket = DEFAULT_BUCKET): string {
    return `${provider}:${bucket}`;
  }

  async saveToken(provider: string, token: OAuthToken, bucket?: string): Promise<void> {
    this.tokens.set(MemoryTokenStore.k(provider, bucket), structuredClone(token));
  }
  async getToken(provider: string, bucket?: string): Promise<OAuthToken | null> {
    const t = this.tokens.get(MemoryTokenStore.k(provider, bucket));
    return t ? structuredClone(t) : null;
  }
  async removeToken(provider: string, bucket?: string): Promise<void> {
    this.tokens.delete(MemoryTokenStore.k(provider, bucket));
  }
  async listProviders(): Promise<string[]> {
    return [...new Set([...this.tokens.keys()].map((k) => k.split(':')[0]!))].sort();
  }
  async listBuckets(provider: string): Promise<string[]> {
    return [...this.tokens.keys()].filter((k) => k.startsWith(`${provider}:`)).map((k) => k.slice(provider.length + 1)).sort();
  }
  async getBucketStats(provider: string, bucket: string): Promise<BucketStats | null> {
    return this.tokens.has(MemoryTokenStore.k(provider, bucket)) ? { bucket, requestCount: 0, percentage: 0 } : null;
  }
  async acquireRefreshLock(provider: string, options: RefreshLockOptions = {}): Promise<boolean> {
    const key = MemoryTokenStore.k(provider, options.bucket);
    const deadline = Date.now() + (options.waitMs ?? 0);
    while (this.locks.has(key)) {
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        const list = this.lockWaiters.get(key) ?? [];
        list.push(() => {
          clearTimeout(timer);
          resolve();
        });
        this.lockWaiters.set(key, list);
      });
    }
    this.locks.add(key);
    return true;
  }
  async releaseRefreshLock(provider: string, bucket?: string): Promise<void> {
    const key = MemoryTokenStore.k(provider, bucket);
    this.locks.delete(key);
    const waiters = this.lockWaiters.get(key) ?? [];
    this.lockWaiters.delete(key);
    for (const w of waiters) w();
  }
}

export class MemoryKeyStore implements KeyStore {
  readonly keys = new Map<string, string>();
  async getKey(name: string): Promise<string | null> {
    return this.keys.get(name) ?? null;
  }
  async listKeys(): Promise<string[]> {
    return [...this.keys.keys()].sort();
  }
  async hasKey(name: string): Promise<boolean> {
    return this.keys.has(name);
  }
  async saveKey(name: string, value: string): Promise<void> {
    this.keys.set(name, value);
  }
  async deleteKey(name: string): Promise<void> {
    this.keys.delete(name);
  }
}
