import { CredproxyError, isCredproxyError } from '../errors.js';
import { assertBucketName, assertKeyName, assertProviderName, DEFAULT_BUCKET } from '../names.js';
import { TokenSchema } from '../protocol/messages.js';
import { keyEntry, parseEntry, tokenEntry, type SecretBackend } from './backend.js';
import type { RefreshLocks } from './locks.js';
import type { BucketStats, KeyStore, OAuthToken, RefreshLockOptions, TokenStore } from './types.js';

/** Parse a stored token; anything unreadable is a corrupt entry, never "not found". */
function decodeToken(entry: string, text: string): OAuthToken {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new CredproxyError('CORRUPT_ENTRY', `stored entry ${entry} is not valid JSON; it was left in place — remove or re-import it`);
  }
  const parsed = TokenSchema.safeParse(value);
  if (!parsed.success) throw new CredproxyError('CORRUPT_ENTRY', `stored entry ${entry} is not a valid token; it was left in place — remove or re-import it`);
  const token = parsed.data as OAuthToken;
  // SPEC §2: token_type defaults to "Bearer". Applied when reading, so a save without it
  // never overwrites a stored type in the merge.
  token.token_type ??= 'Bearer';
  return deepFreeze(token);
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

interface Usage {
  count: number;
  lastUsed: number;
}

/** SPEC §2 TokenStore over a secret backend; saveToken replaces the entry (merging is the caller's job). */
export class HostTokenStore implements TokenStore {
  private readonly usage = new Map<string, Map<string, Usage>>();
  private readonly decoded = new Map<string, { text: string; token: OAuthToken }>();

  constructor(
    private readonly backend: SecretBackend,
    private readonly locks: RefreshLocks,
  ) {}

  async saveToken(provider: string, token: OAuthToken, bucket = DEFAULT_BUCKET): Promise<void> {
    assertProviderName(provider);
    assertBucketName(bucket);
    const parsed = TokenSchema.safeParse(token);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new CredproxyError('INVALID_REQUEST', `invalid token: ${issue?.path.join('.') || 'token'}: ${issue?.message ?? 'invalid'}`);
    }
    await this.backend.set(tokenEntry(provider, bucket), JSON.stringify(parsed.data));
  }

  async getToken(provider: string, bucket = DEFAULT_BUCKET): Promise<OAuthToken | null> {
    assertProviderName(provider);
    assertBucketName(bucket);
    const entry = tokenEntry(provider, bucket);
    const token = this.decode(entry, await this.backend.get(entry));
    if (token !== null) this.noteUse(provider, bucket);
    return token;
  }

  peekToken(provider: string, bucket = DEFAULT_BUCKET): OAuthToken | null | undefined {
    if (this.backend.peek === undefined) return undefined;
    assertProviderName(provider);
    assertBucketName(bucket);
    const entry = tokenEntry(provider, bucket);
    const text = this.backend.peek(entry);
    if (text === undefined) return undefined;
    // A corrupt entry is reported by the waiting path.
    if (text !== null && this.decoded.get(entry)?.text !== text) return undefined;
    const token = this.decode(entry, text);
    if (token !== null) this.noteUse(provider, bucket);
    return token;
  }

  /**
   * The backends hand back the same string while the entry is unchanged:
   * parse and validate it once. The token returned is the cached one itself,
   * deeply frozen: a copy per read showed up on the get_token path, and a
   * caller that tried to change it would throw rather than corrupt the cache
   * (merges build new objects).
   */
  private decode(entry: string, text: string | null): OAuthToken | null {
    if (text === null) {
      this.decoded.delete(entry);
      return null;
    }
    let cached = this.decoded.get(entry);
    if (cached?.text !== text) {
      cached = { text, token: decodeToken(entry, text) };
      this.decoded.set(entry, cached);
    }
    return cached.token;
  }

  async removeToken(provider: string, bucket = DEFAULT_BUCKET): Promise<void> {
    assertProviderName(provider);
    assertBucketName(bucket);
    await this.backend.delete(tokenEntry(provider, bucket));
  }

  private async tokenEntries(): Promise<Array<{ provider: string; bucket: string }>> {
    const out: Array<{ provider: string; bucket: string }> = [];
    for (const name of await this.backend.list()) {
      const e = parseEntry(name);
      if (e?.kind === 'token') out.push({ provider: e.provider, bucket: e.bucket });
    }
    return out;
  }

  async listProviders(): Promise<string[]> {
    return [...new Set((await this.tokenEntries()).map((e) => e.provider))].sort();
  }

  async listBuckets(provider: string): Promise<string[]> {
    assertProviderName(provider);
    return (await this.tokenEntries())
      .filter((e) => e.provider === provider)
      .map((e) => e.bucket)
      .sort();
  }

  async getBucketStats(provider: string, bucket: string): Promise<BucketStats | null> {
    assertProviderName(provider);
    assertBucketName(bucket);
    if ((await this.backend.get(tokenEntry(provider, bucket))) === null) return null;
    const perBucket = this.usage.get(provider);
    const mine = perBucket?.get(bucket);
    let total = 0;
    for (const u of perBucket?.values() ?? []) total += u.count;
    const requestCount = mine?.count ?? 0;
    return {
      bucket,
      requestCount,
      percentage: total === 0 ? 0 : Math.round((requestCount / total) * 1000) / 10,
      ...(mine ? { lastUsed: mine.lastUsed } : {}),
    };
  }

  async acquireRefreshLock(provider: string, options: RefreshLockOptions = {}): Promise<boolean> {
    const bucket = options.bucket ?? DEFAULT_BUCKET;
    assertProviderName(provider);
    assertBucketName(bucket);
    return this.locks.acquire(provider, bucket, options.waitMs ?? 0);
  }

  async releaseRefreshLock(provider: string, bucket = DEFAULT_BUCKET): Promise<void> {
    assertProviderName(provider);
    assertBucketName(bucket);
    await this.locks.release(provider, bucket);
  }

  private noteUse(provider: string, bucket: string): void {
    let perBucket = this.usage.get(provider);
    if (!perBucket) this.usage.set(provider, (perBucket = new Map()));
    const u = perBucket.get(bucket) ?? { count: 0, lastUsed: 0 };
    u.count++;
    u.lastUsed = Date.now();
    perBucket.set(bucket, u);
  }
}

/** SPEC §2 KeyStore over a secret backend. */
export class HostKeyStore implements KeyStore {
  constructor(private readonly backend: SecretBackend) {}

  async getKey(name: string): Promise<string | null> {
    assertKeyName(name);
    return this.backend.get(keyEntry(name));
  }

  async listKeys(): Promise<string[]> {
    const out: string[] = [];
    for (const name of await this.backend.list()) {
      const e = parseEntry(name);
      if (e?.kind === 'key') out.push(e.name);
    }
    return out.sort();
  }

  async hasKey(name: string): Promise<boolean> {
    assertKeyName(name);
    try {
      return (await this.backend.get(keyEntry(name))) !== null;
    } catch (err) {
      // An unreadable entry still exists; reading it will report why.
      if (isCredproxyError(err, 'CORRUPT_ENTRY')) return true;
      throw err;
    }
  }

  async saveKey(name: string, value: string): Promise<void> {
    assertKeyName(name);
    if (typeof value !== 'string' || value.length === 0) throw new CredproxyError('INVALID_REQUEST', 'an API key value must be a non-empty string');
    await this.backend.set(keyEntry(name), value);
  }

  async deleteKey(name: string): Promise<void> {
    assertKeyName(name);
    await this.backend.delete(keyEntry(name));
  }
}
