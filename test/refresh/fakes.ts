import { Writable } from 'node:stream';
import type { Configuration, TokenEndpointResponse } from 'openid-client';
import type { ProviderConfig } from '../../src/config.js';
import { CredproxyError } from '../../src/errors.js';
import { createLogger, type Logger } from '../../src/log.js';
import { classifyProviderError, ProviderError } from '../../src/oauth/errors.js';
import type { OAuthProvider } from '../../src/oauth/types.js';
import type { Clock } from '../../src/refresh/clock.js';
import type { ProviderLookup } from '../../src/refresh/coordinator.js';
import type { OAuthToken } from '../../src/store/types.js';

export type Behaviour = (token: OAuthToken, signal: AbortSignal | undefined, call: number) => Promise<OAuthToken>;

/**
 * A scripted provider for conditions a real server cannot produce on demand
 * (5xx bursts, exact timings, hangs). Each call takes the next behaviour;
 * with none left it answers a fresh token with a rotated refresh token.
 */
export class FakeProvider implements OAuthProvider {
  readonly flow = 'pkce_redirect' as const;
  readonly settings: ProviderConfig = { flow: 'pkce_redirect', token_endpoint: 'https://fake.invalid/token', authorization_endpoint: 'https://fake.invalid/a', client_id: 'c' };
  readonly canRefresh = true;
  readonly calls: Array<{ at: number; refreshToken: string | undefined }> = [];
  readonly behaviours: Behaviour[] = [];
  lifetimeSeconds = 3600;

  constructor(
    readonly name: string,
    private readonly clock: Clock,
  ) {}

  async refresh(token: OAuthToken, signal?: AbortSignal): Promise<OAuthToken> {
    this.calls.push({ at: this.clock.now(), refreshToken: token.refresh_token });
    const n = this.calls.length;
    const behaviour = this.behaviours.shift();
    if (behaviour) return behaviour(token, signal, n);
    return this.issue(n);
  }

  issue(n: number, extra: Partial<OAuthToken> = {}): OAuthToken {
    return { access_token: `at-${this.name}-${n}`, expiry: Math.floor(this.clock.now() / 1000) + this.lifetimeSeconds, token_type: 'Bearer', refresh_token: `rt-${this.name}-${n}-secret`, ...extra };
  }

  configuration(): Promise<Configuration> {
    return Promise.reject(new Error('not used by the refresh path'));
  }
  tokenFromResponse(_response: TokenEndpointResponse): OAuthToken {
    throw new Error('not used by the refresh path');
  }
  toError(action: string, err: unknown, signal?: AbortSignal): ProviderError {
    return classifyProviderError(err, { provider: this.name, action, signal, timeoutMs: 15_000 });
  }
}

export const transient = (name = 'p'): Behaviour => () => Promise.reject(new ProviderError('transient', `${name} refresh failed: provider unavailable (HTTP 503)`, { status: 503 }));
export const rejected = (code: string, name = 'p'): Behaviour => () => Promise.reject(new ProviderError('rejected', `${name} refresh failed: ${code}`, { oauthError: code, status: 400 }));
export const revoked = (name = 'p'): Behaviour => () => Promise.reject(new ProviderError('revoked', `${name} refresh failed: invalid_grant`, { oauthError: 'invalid_grant', status: 400 }));

/** A behaviour that never answers; it fails only when the caller's signal aborts. */
export const hang: Behaviour = (_t, signal) =>
  new Promise<OAuthToken>((_resolve, reject) => {
    signal?.addEventListener('abort', () => reject(new ProviderError('aborted', 'p refresh failed: cancelled')), { once: true });
  });

export class FakeProviders implements ProviderLookup {
  private readonly map = new Map<string, OAuthProvider>();
  constructor(...providers: OAuthProvider[]) {
    for (const p of providers) this.map.set(p.name, p);
  }
  has(name: string): boolean {
    return this.map.has(name);
  }
  get(name: string): OAuthProvider {
    const p = this.map.get(name);
    if (!p) throw new CredproxyError('PROVIDER_NOT_FOUND', `no OAuth provider "${name}" is configured`);
    return p;
  }
}

/** A pino logger whose output lands in a string, for secret canaries. */
export function capturingLogger(): { logger: Logger; output: () => string } {
  let text = '';
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      text += chunk.toString('utf8');
      cb();
    },
  });
  return { logger: createLogger({ level: 'debug', destination: sink }), output: () => text };
}
