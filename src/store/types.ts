/**
 * SPEC §2. A token as stored on the host. Provider-specific extra fields
 * (id_token, account_id, resource_url, ...) are preserved on every path.
 */
export interface OAuthToken {
  access_token: string;
  /** Unix seconds. */
  expiry: number;
  token_type?: string;
  refresh_token?: string;
  scope?: string;
  [extra: string]: unknown;
}

/** What may cross the socket: an OAuthToken without refresh_token. */
export interface SanitizedToken {
  access_token: string;
  expiry: number;
  token_type?: string;
  refresh_token?: never;
  scope?: string;
  [extra: string]: unknown;
}

export interface BucketStats {
  bucket: string;
  requestCount: number;
  percentage: number;
  lastUsed?: number;
}

export interface RefreshLockOptions {
  bucket?: string;
  /** How long to wait for a lock held elsewhere; 0 = try once. */
  waitMs?: number;
}

/** SPEC §2. Implemented by the host store and by the sandbox-side proxy store. */
export interface TokenStore {
  saveToken(provider: string, token: OAuthToken, bucket?: string): Promise<void>;
  /** The host store returns a deeply frozen token shared between readers: copy before changing it. */
  getToken(provider: string, bucket?: string): Promise<OAuthToken | null>;
  /**
   * getToken without waiting, when the store can answer from memory and
   * prove that current (null: provably absent); undefined when it cannot.
   */
  peekToken?(provider: string, bucket?: string): OAuthToken | null | undefined;
  removeToken(provider: string, bucket?: string): Promise<void>;
  listProviders(): Promise<string[]>;
  listBuckets(provider: string): Promise<string[]>;
  getBucketStats(provider: string, bucket: string): Promise<BucketStats | null>;
  acquireRefreshLock(provider: string, options?: RefreshLockOptions): Promise<boolean>;
  releaseRefreshLock(provider: string, bucket?: string): Promise<void>;
}

/** SPEC §2. */
export interface KeyStore {
  getKey(name: string): Promise<string | null>;
  listKeys(): Promise<string[]>;
  hasKey(name: string): Promise<boolean>;
  saveKey(name: string, value: string): Promise<void>;
  deleteKey(name: string): Promise<void>;
}

export type StoreBackendName = 'keyring' | 'file';
export type StoreChoice = 'auto' | StoreBackendName;
