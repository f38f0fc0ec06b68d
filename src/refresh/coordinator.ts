import { pino } from 'pino';
import { CredproxyError, isCredproxyError } from '../errors.js';
import type { Logger } from '../log.js';
import { noTokenMessage } from '../login/hints.js';
import { assertBucketName, assertProviderName, DEFAULT_BUCKET } from '../names.js';
import { isProviderError, ProviderError } from '../oauth/errors.js';
import type { OAuthProvider } from '../oauth/types.js';
import { mergeToken } from '../store/merge.js';
import type { OAuthToken, TokenStore } from '../store/types.js';
import { sleep, systemClock, systemTimers, type Clock, type Timers } from './clock.js';
import type { CooldownStore } from './cooldown.js';
import { RenewalScheduler, type RenewalOutcome, type RenewalSchedulerOptions } from './scheduler.js';
import { SingleFlight } from './single-flight.js';
import type { CredentialService, TokenMerge } from './types.js';
import { sandboxRemoval, type SandboxRemoval } from '../store/sandbox-token.js';

/** The providers the coordinator can refresh with (ProviderRegistry implements this). */
export interface ProviderLookup {
  has(name: string): boolean;
  /** Throws PROVIDER_NOT_FOUND for an unknown name. */
  get(name: string): OAuthProvider;
}

export interface RefreshCoordinatorOptions {
  store: TokenStore;
  providers: ProviderLookup;
  /** Last-refresh times shared by every process using the store (FileCooldownStore in production). */
  cooldown: CooldownStore;
  clock?: Clock;
  timers?: Timers;
  logger?: Logger;
  /** SPEC §5: at most one refresh per provider:bucket per 30 s. */
  cooldownMs?: number;
  /** SPEC §5: get_token refreshes tokens expiring within 60 s. */
  refreshWindowMs?: number;
  /** SPEC §5: transient failures retry after 1 s and 3 s. */
  retryDelaysMs?: readonly number[];
  /** SPEC §5: the whole refresh (lock wait, attempts, delays) fits in the client's 30 s. */
  budgetMs?: number;
  /** How long remove() and save() wait for a refresh holding the lock. */
  removeLockWaitMs?: number;
  /** After the provider refuses a refresh (a 4xx other than revocation): no new attempt for this long, doubling per refusal in a row up to 16 times (default 30 s). */
  refusalPauseMs?: number;
  /** Renewal scheduler tuning (backoff, jitter source); renew/clock/timers/logger are supplied here. */
  scheduler?: Omit<RenewalSchedulerOptions, 'renew' | 'clock' | 'timers' | 'logger'>;
}

type Mode = 'force' | 'if-needed' | 'timer';

function hasRefreshToken(token: OAuthToken): boolean {
  return typeof token.refresh_token === 'string' && token.refresh_token !== '';
}

function loginHint(provider: string, bucket: string): string {
  // Quoted when it has to be: bucket names may hold blanks and quotes.
  const arg = /^[A-Za-z0-9._@+-]+$/.test(bucket) ? bucket : `'${bucket.replace(/'/g, `'\\''`)}'`;
  return bucket === DEFAULT_BUCKET ? `credproxy login ${provider}` : `credproxy login ${provider} --bucket ${arg}`;
}

function where(provider: string, bucket: string): string {
  return bucket === DEFAULT_BUCKET ? provider : `${provider}:${bucket}`;
}

/**
 * THE refresh path (SPEC §5). Every trigger — the refresh_token op, get_token
 * near expiry, renewal timers, host commands — ends up in refreshLocked():
 * in-process single-flight, then the store's cross-process lock, a re-read
 * (another process may have refreshed already), the cooldown check, the
 * provider call with retries, merge, save, unlock.
 *
 * Tokens returned are full host-side tokens; callers sanitize before they
 * cross the socket. Nothing secret is logged or put into an error message.
 *
 * Decisions where the spec is silent:
 * - get_token on an EXPIRED token that cannot be refreshed (no refresh
 *   token, or no provider configured under that name) answers
 *   REAUTH_REQUIRED rather than serving a dead token; while such a token is
 *   still valid it is served as is.
 * - get_token whose refresh fails for a reason other than revocation
 *   (provider down, rejected) serves the old token while it is still valid
 *   and reports the failure only once it has expired.
 */
export class RefreshCoordinator implements CredentialService {
  private readonly store: TokenStore;
  private readonly providers: ProviderLookup;
  private readonly cooldown: CooldownStore;
  private readonly clock: Clock;
  private readonly timers: Timers;
  private readonly logger: Logger;
  private readonly cooldownMs: number;
  private readonly refreshWindowMs: number;
  private readonly retryDelaysMs: readonly number[];
  private readonly budgetMs: number;
  private readonly removeLockWaitMs: number;
  private readonly refusalPauseMs: number;
  /**
   * provider:bucket whose last refresh the provider refused (429, invalid_client...):
   * until when no call goes out, and the refusal to repeat meanwhile.
   */
  private readonly refused = new Map<string, { until: number; streak: number; message: string }>();
  private readonly flights = new SingleFlight<OAuthToken>();
  private readonly shutdown = new AbortController();
  readonly scheduler: RenewalScheduler;
  private closed = false;

  constructor(options: RefreshCoordinatorOptions) {
    this.store = options.store;
    this.providers = options.providers;
    this.cooldown = options.cooldown;
    this.clock = options.clock ?? systemClock;
    this.timers = options.timers ?? systemTimers;
    this.logger = options.logger ?? pino({ level: 'silent' });
    this.cooldownMs = options.cooldownMs ?? 30_000;
    this.refreshWindowMs = options.refreshWindowMs ?? 60_000;
    this.retryDelaysMs = options.retryDelaysMs ?? [1_000, 3_000];
    this.budgetMs = options.budgetMs ?? 30_000;
    this.removeLockWaitMs = options.removeLockWaitMs ?? 30_000;
    this.refusalPauseMs = options.refusalPauseMs ?? 30_000;
    this.scheduler = new RenewalScheduler({
      ...options.scheduler,
      renew: (provider, bucket, expectedExpiry) => this.renewFromTimer(provider, bucket, expectedExpiry),
      clock: this.clock,
      timers: this.timers,
      logger: this.logger,
    });
  }

  private checkOpen(): void {
    if (this.closed) throw new CredproxyError('INTERNAL_ERROR', 'the credential service is shutting down');
  }

  private expiresWithinWindow(token: OAuthToken): boolean {
    return token.expiry * 1000 - this.clock.now() <= this.refreshWindowMs;
  }

  private isExpired(token: OAuthToken): boolean {
    return token.expiry * 1000 <= this.clock.now();
  }

  private canRefresh(provider: string, token: OAuthToken): boolean {
    return hasRefreshToken(token) && this.providers.has(provider);
  }

  private reauth(provider: string, bucket: string, why: string): CredproxyError {
    return new CredproxyError('REAUTH_REQUIRED', `${why}; log in again with \`${loginHint(provider, bucket)}\``);
  }

  async getToken(provider: string, bucket: string = DEFAULT_BUCKET): Promise<OAuthToken | null> {
    assertProviderName(provider);
    assertBucketName(bucket);
    this.checkOpen();
    const token = await this.store.getToken(provider, bucket);
    if (!token) return null;
    if (!this.expiresWithinWindow(token)) {
      if (this.canRefresh(provider, token)) this.scheduler.arm(provider, bucket, token);
      return token;
    }
    if (!hasRefreshToken(token)) {
      if (!this.isExpired(token)) return token;
      throw this.reauth(provider, bucket, `the stored ${where(provider, bucket)} token has expired and has no refresh token`);
    }
    if (!this.providers.has(provider)) {
      if (!this.isExpired(token)) return token;
      throw new CredproxyError(
        'REAUTH_REQUIRED',
        `the stored ${where(provider, bucket)} token has expired and no OAuth provider named "${provider}" is configured to refresh it; import a fresh token with \`credproxy token import ${provider}\` or add the provider to config.json`,
      );
    }
    try {
      const fresh = await this.flights.run(`${provider}:${bucket}`, () => this.refreshLocked(provider, bucket, 'if-needed', token));
      if (!this.isExpired(fresh)) this.scheduler.arm(provider, bucket, fresh);
      return fresh;
    } catch (err) {
      const fatal = isCredproxyError(err, 'REAUTH_REQUIRED') || isCredproxyError(err, 'NOT_FOUND') || isCredproxyError(err, 'RATE_LIMITED');
      if (fatal || this.isExpired(token) || this.closed) throw err;
      this.logger.warn({ provider, bucket, code: isCredproxyError(err) ? err.code : 'INTERNAL_ERROR' }, 'refresh failed; serving the still-valid token');
      return token;
    }
  }

  peekToken(provider: string, bucket: string = DEFAULT_BUCKET): OAuthToken | null | undefined {
    if (this.closed || this.store.peekToken === undefined) return undefined;
    const token = this.store.peekToken(provider, bucket);
    if (token === undefined || token === null) return token;
    // Anything that may need the provider takes the waiting path.
    if (this.expiresWithinWindow(token)) return undefined;
    if (this.canRefresh(provider, token)) this.scheduler.arm(provider, bucket, token);
    return token;
  }

  async refresh(provider: string, bucket: string = DEFAULT_BUCKET): Promise<OAuthToken> {
    assertProviderName(provider);
    assertBucketName(bucket);
    this.checkOpen();
    const token = await this.store.getToken(provider, bucket);
    if (!token) throw new CredproxyError('NOT_FOUND', noTokenMessage(provider, bucket));
    if (!hasRefreshToken(token)) throw this.reauth(provider, bucket, `the stored ${where(provider, bucket)} token has no refresh token`);
    this.providers.get(provider);
    return this.flights.run(`${provider}:${bucket}`, () => this.refreshLocked(provider, bucket, 'force', token));
  }

  /**
   * save_token: merge under the refresh lock. Unlocked, a save that read the
   * token before a concurrent refresh rotated it would write the old refresh
   * token back, and the next refresh would present a revoked one.
   */
  async save(provider: string, bucket: string, incoming: OAuthToken, merge: TokenMerge = mergeToken): Promise<void> {
    assertProviderName(provider);
    assertBucketName(bucket);
    this.checkOpen();
    await this.underLock(provider, bucket, async () => {
      const stored = await this.store.getToken(provider, bucket);
      await this.store.saveToken(provider, merge(stored, incoming), bucket);
    });
  }

  async remove(provider: string, bucket: string = DEFAULT_BUCKET, options: { keepRefreshToken?: boolean } = {}): Promise<SandboxRemoval> {
    assertProviderName(provider);
    assertBucketName(bucket);
    this.checkOpen();
    let removed: SandboxRemoval = 'entry';
    await this.underLock(provider, bucket, async () => {
      const stored = options.keepRefreshToken ? await this.readForRemoval(provider, bucket) : null;
      const plan = stored === null ? { keep: null, removed: 'entry' as const } : sandboxRemoval(stored);
      removed = plan.removed;
      if (plan.keep === null) await this.store.removeToken(provider, bucket);
      else await this.store.saveToken(provider, plan.keep, bucket);
      this.scheduler.cancel(provider, bucket);
      if (plan.keep === null) await this.cooldown.clear(provider, bucket).catch((err: unknown) => this.logBookkeepingFailure(provider, bucket, err));
    });
    return removed;
  }

  /** A corrupt entry is unusable for everyone: the removal takes it whole. */
  private async readForRemoval(provider: string, bucket: string): Promise<OAuthToken | null> {
    try {
      return await this.store.getToken(provider, bucket);
    } catch (err) {
      if (isCredproxyError(err, 'CORRUPT_ENTRY')) return null;
      throw err;
    }
  }

  /** A write other than a refresh: waits for a running refresh (up to removeLockWaitMs), then holds the lock. */
  private async underLock(provider: string, bucket: string, work: () => Promise<void>): Promise<void> {
    const locked = await this.store.acquireRefreshLock(provider, { bucket, waitMs: this.removeLockWaitMs });
    if (!locked) throw new CredproxyError('LOCK_FAILED', `a refresh of the ${where(provider, bucket)} token is still running; try again`);
    try {
      await work();
    } finally {
      await this.release(provider, bucket);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.scheduler.close();
    this.shutdown.abort();
    // Let in-flight refreshes unwind so their cross-process locks are released.
    await this.flights.drain();
  }

  /** Renewal timer callback: re-checks the stored token, then uses the one refresh path. */
  private async renewFromTimer(provider: string, bucket: string, expectedExpiry: number): Promise<RenewalOutcome> {
    if (this.closed) return { kind: 'stop' };
    const token = await this.store.getToken(provider, bucket);
    if (!token || !this.canRefresh(provider, token)) return { kind: 'stop' };
    const now = this.clock.now();
    if (token.expiry !== expectedExpiry) {
      // Someone else renewed (or replaced) it: just re-arm for what is stored now.
      return { kind: 'renewed', expiry: token.expiry, obtainedAt: now };
    }
    const last = await this.cooldown.lastRefresh(provider, bucket);
    if (last !== null && now - last < this.cooldownMs) return { kind: 'deferred', until: last + this.cooldownMs };
    try {
      const fresh = await this.flights.run(`${provider}:${bucket}`, () => this.refreshLocked(provider, bucket, 'timer', token));
      const after = this.clock.now();
      return { kind: 'renewed', expiry: fresh.expiry, obtainedAt: after, notBefore: after + this.cooldownMs };
    } catch (err) {
      if (isCredproxyError(err, 'RATE_LIMITED')) return { kind: 'deferred', until: this.clock.now() + (err.retryAfter ?? 1) * 1000 };
      if (isCredproxyError(err, 'REAUTH_REQUIRED') || isCredproxyError(err, 'NOT_FOUND') || isCredproxyError(err, 'PROVIDER_NOT_FOUND')) {
        return { kind: 'stop' };
      }
      throw err;
    }
  }

  /** Lock, re-read, cooldown, provider call, merge, save, unlock. Runs once per provider:bucket at a time. */
  private async refreshLocked(provider: string, bucket: string, mode: Mode, seen: OAuthToken): Promise<OAuthToken> {
    this.checkOpen();
    const oauth = this.providers.get(provider);
    const started = this.clock.now();
    const deadline = started + this.budgetMs;
    const budget = new AbortController();
    const budgetTimer = this.timers.setTimeout(() => budget.abort(), this.budgetMs, { keepAlive: false });
    const signal = AbortSignal.any([budget.signal, this.shutdown.signal]);
    try {
      const locked = await this.store.acquireRefreshLock(provider, { bucket, waitMs: Math.max(0, deadline - this.clock.now()) });
      if (!locked) throw new CredproxyError('LOCK_FAILED', `another process is refreshing the ${where(provider, bucket)} token; try again`);
      try {
        return await this.refreshUnderLock(oauth, provider, bucket, mode, seen, deadline, signal);
      } finally {
        await this.release(provider, bucket);
      }
    } catch (err) {
      throw this.finalError(err, provider, bucket, budget.signal);
    } finally {
      this.timers.clearTimeout(budgetTimer);
    }
  }

  private async refreshUnderLock(
    oauth: OAuthProvider,
    provider: string,
    bucket: string,
    mode: Mode,
    seen: OAuthToken,
    deadline: number,
    signal: AbortSignal,
  ): Promise<OAuthToken> {
    const current = await this.store.getToken(provider, bucket);
    // Removed while we waited for the lock: the logout wins, nothing is resurrected.
    if (!current) throw new CredproxyError('NOT_FOUND', `the ${where(provider, bucket)} token was removed`);
    if (!hasRefreshToken(current)) throw this.reauth(provider, bucket, `the stored ${where(provider, bucket)} token has no refresh token`);
    const changed = current.access_token !== seen.access_token || current.expiry !== seen.expiry;
    if ((changed || mode === 'if-needed') && !this.expiresWithinWindow(current)) return current;

    const last = await this.cooldown.lastRefresh(provider, bucket);
    const now = this.clock.now();
    if (last !== null && now - last < this.cooldownMs) {
      if (!this.isExpired(current)) return current;
      const retryAfter = Math.max(1, Math.ceil((last + this.cooldownMs - now) / 1000));
      throw new CredproxyError('RATE_LIMITED', `the ${where(provider, bucket)} token was refreshed less than ${Math.round(this.cooldownMs / 1000)} s ago; retry in ${retryAfter} s`, { retryAfter });
    }

    // A refusal is not retried, and neither should a caller looping on refresh make it into a storm:
    // a provider that answered 429 is asked again only after a pause, and so is one that said invalid_client.
    const key = `${provider}:${bucket}`;
    const pause = this.refused.get(key);
    if (pause !== undefined && now < pause.until) {
      throw new CredproxyError('INTERNAL_ERROR', `${pause.message}; not asked again for ${Math.ceil((pause.until - now) / 1000)} s`);
    }
    let fresh: OAuthToken;
    try {
      fresh = await this.callWithRetries(oauth, current, provider, bucket, deadline, signal);
    } catch (err) {
      if (isProviderError(err, 'rejected')) {
        const streak = Math.min((pause?.streak ?? 0) + 1, 16);
        const ms = Math.min(this.refusalPauseMs * 2 ** (streak - 1), 16 * this.refusalPauseMs);
        this.refused.set(key, { until: this.clock.now() + ms, streak, message: err.message });
      }
      if (isProviderError(err, 'revoked')) {
        // Keep everything but the dead refresh token (SPEC §2); a failed refresh starts no cooldown.
        const { refresh_token: _dead, ...rest } = current;
        await this.store.saveToken(provider, rest as OAuthToken, bucket);
        this.scheduler.cancel(provider, bucket);
        this.logger.warn({ provider, bucket, error: err.oauthError }, 'refresh token revoked; cleared it');
        throw this.reauth(provider, bucket, `the ${where(provider, bucket)} refresh token was rejected as revoked or expired (${err.oauthError ?? 'invalid_grant'})`);
      }
      throw err;
    }
    this.refused.delete(key);
    const merged = mergeToken(current, fresh);
    await this.store.saveToken(provider, merged, bucket);
    const savedAt = this.clock.now();
    await this.cooldown.recordRefresh(provider, bucket, savedAt).catch((e: unknown) => this.logBookkeepingFailure(provider, bucket, e));
    this.scheduler.arm(provider, bucket, merged, { obtainedAt: savedAt, notBefore: savedAt + this.cooldownMs });
    this.logger.info({ provider, bucket, expiry: merged.expiry, trigger: mode }, 'token refreshed');
    return merged;
  }

  private async callWithRetries(
    oauth: OAuthProvider,
    token: OAuthToken,
    provider: string,
    bucket: string,
    deadline: number,
    signal: AbortSignal,
  ): Promise<OAuthToken> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await oauth.refresh(token, signal);
      } catch (err) {
        const delay = this.retryDelaysMs[attempt];
        if (!isProviderError(err, 'transient') || delay === undefined || this.clock.now() + delay >= deadline) throw err;
        this.logger.warn({ provider, bucket, attempt: attempt + 1, retryInMs: delay, reason: err.message }, 'refresh attempt failed; retrying');
        await sleep(this.timers, delay, signal).catch(() => {
          throw new ProviderError('aborted', `${provider} refresh cancelled`);
        });
      }
    }
  }

  /** The error a caller sees: safe text, and a clear word when our own budget or shutdown cut the work short. */
  private finalError(err: unknown, provider: string, bucket: string, budget: AbortSignal): Error {
    if (isProviderError(err, 'aborted')) {
      return this.closed
        ? new CredproxyError('INTERNAL_ERROR', `refresh of the ${where(provider, bucket)} token cancelled: the credential service is shutting down`)
        : new CredproxyError('INTERNAL_ERROR', `refresh of the ${where(provider, bucket)} token did not finish within ${Math.round(this.budgetMs / 1000)} s`);
    }
    if (isCredproxyError(err)) {
      this.logger.warn({ provider, bucket, code: err.code, budgetExpired: budget.aborted }, 'refresh failed');
      return err;
    }
    // Store and lock failures come from other modules; their text is not ours to vouch for.
    this.logger.error({ provider, bucket, errorName: err instanceof Error ? err.name : typeof err }, 'refresh failed with an unexpected error');
    return new CredproxyError('INTERNAL_ERROR', `refresh of the ${where(provider, bucket)} token failed`);
  }

  private async release(provider: string, bucket: string): Promise<void> {
    try {
      await this.store.releaseRefreshLock(provider, bucket);
    } catch {
      this.logger.warn({ provider, bucket }, 'could not release the refresh lock');
    }
  }

  private logBookkeepingFailure(provider: string, bucket: string, err: unknown): void {
    const code = (err as NodeJS.ErrnoException | undefined)?.code;
    this.logger.warn({ provider, bucket, code: typeof code === 'string' ? code : undefined }, 'could not update the refresh cooldown record');
  }
}
