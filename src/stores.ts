import { ProxySocketClient } from './client/socket-client.js';
import { ProxyKeyStore } from './client/proxy-key-store.js';
import { ProxyTokenStore } from './client/proxy-token-store.js';
import { resolveDirs } from './paths.js';
import { openHostStores, storeChoiceFrom, type HostStores } from './store/open.js';
import type { BucketStats, KeyStore, OAuthToken, RefreshLockOptions, TokenStore } from './store/types.js';

/**
 * SPEC §1 mode detection for library callers: with CREDPROXY_SOCKET set the
 * stores talk to the proxy, otherwise they are the host stores. Callers never
 * branch on the mode; each factory returns one shared instance per process.
 */
let client: ProxySocketClient | undefined;
let host: Promise<HostStores> | undefined;
let tokenStore: TokenStore | undefined;
let keyStore: KeyStore | undefined;

function sandboxMode(): boolean {
  return Boolean(process.env.CREDPROXY_SOCKET);
}

function sharedClient(): ProxySocketClient {
  client ??= ProxySocketClient.fromEnv(process.env);
  return client;
}

function hostStores(): Promise<HostStores> {
  host ??= openHostStores({
    choice: storeChoiceFrom(undefined, process.env),
    dirs: resolveDirs(process.env),
    env: process.env,
    notice: (line) => process.stderr.write(`credproxy: ${line}\n`),
  });
  return host;
}

/** Host stores open on first use: creating the factory's instance does no I/O. */
class LazyHostTokenStore implements TokenStore {
  private async s(): Promise<TokenStore> {
    return (await hostStores()).tokens;
  }
  async saveToken(provider: string, token: OAuthToken, bucket?: string): Promise<void> {
    return (await this.s()).saveToken(provider, token, bucket);
  }
  async getToken(provider: string, bucket?: string): Promise<OAuthToken | null> {
    return (await this.s()).getToken(provider, bucket);
  }
  async removeToken(provider: string, bucket?: string): Promise<void> {
    return (await this.s()).removeToken(provider, bucket);
  }
  async listProviders(): Promise<string[]> {
    return (await this.s()).listProviders();
  }
  async listBuckets(provider: string): Promise<string[]> {
    return (await this.s()).listBuckets(provider);
  }
  async getBucketStats(provider: string, bucket: string): Promise<BucketStats | null> {
    return (await this.s()).getBucketStats(provider, bucket);
  }
  async acquireRefreshLock(provider: string, options?: RefreshLockOptions): Promise<boolean> {
    return (await this.s()).acquireRefreshLock(provider, options);
  }
  async releaseRefreshLock(provider: string, bucket?: string): Promise<void> {
    return (await this.s()).releaseRefreshLock(provider, bucket);
  }
}

class LazyHostKeyStore implements KeyStore {
  private async s(): Promise<KeyStore> {
    return (await hostStores()).keys;
  }
  async getKey(name: string): Promise<string | null> {
    return (await this.s()).getKey(name);
  }
  async listKeys(): Promise<string[]> {
    return (await this.s()).listKeys();
  }
  async hasKey(name: string): Promise<boolean> {
    return (await this.s()).hasKey(name);
  }
  async saveKey(name: string, value: string): Promise<void> {
    return (await this.s()).saveKey(name, value);
  }
  async deleteKey(name: string): Promise<void> {
    return (await this.s()).deleteKey(name);
  }
}

export function createTokenStore(): TokenStore {
  tokenStore ??= sandboxMode() ? new ProxyTokenStore(sharedClient()) : new LazyHostTokenStore();
  return tokenStore;
}

export function createKeyStore(): KeyStore {
  keyStore ??= sandboxMode() ? new ProxyKeyStore(sharedClient()) : new LazyHostKeyStore();
  return keyStore;
}
