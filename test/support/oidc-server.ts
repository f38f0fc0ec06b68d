/**
 * A real OAuth 2.0 / OpenID Connect authorization server for tests:
 * oidc-provider running in-process on 127.0.0.1 with an ephemeral port,
 * device flow, dev interactions (login/consent pages), revocation, PKCE
 * required and refresh-token rotation.
 *
 * Extras for tests: an artificial delay on the token endpoint, canned
 * token-endpoint answers (for status codes the real server never sends) and
 * counters of refresh grants.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import Provider from 'oidc-provider';
import { ScriptedBrowser } from './browser.js';

export const NATIVE_CLIENT_ID = 'credproxy-native';
export const CONFIDENTIAL_CLIENT_ID = 'credproxy-confidential';
/** Loopback redirect registered for the native client (any port matches, RFC 8252 §7.3). */
export const NATIVE_REDIRECT_URI = 'http://127.0.0.1/callback';
/** A redirect the browser never visits: the code is read off the Location header ("code paste"). */
export const CONFIDENTIAL_REDIRECT_URI = 'https://client.invalid/callback';
export const DEFAULT_SCOPE = 'openid offline_access';

/**
 * config.json providers for this server, one per login flow (device code,
 * code paste, loopback redirect), configured as a user would: no prompt of
 * their own (credproxy adds prompt=consent for offline_access itself).
 */
export function loginProviders(issuer: string): Record<string, object> {
  const common = { issuer, client_id: NATIVE_CLIENT_ID, scopes: ['openid', 'offline_access'] };
  return {
    dev: { ...common, flow: 'device_code' },
    paste: { ...common, flow: 'pkce_redirect', redirect_uri: NATIVE_REDIRECT_URI },
    loop: { ...common, flow: 'browser_redirect' },
  };
}

export interface OidcServerOptions {
  /** Lifetime of issued access tokens (default 3600 s). */
  accessTokenTtlSeconds?: number;
  /** Lifetime of refresh tokens (default 14 days). */
  refreshTokenTtlSeconds?: number;
  /** Delay before every token endpoint request is handled. */
  tokenDelayMs?: number;
  /** Rotate refresh tokens on use (default true). */
  rotateRefreshToken?: boolean;
}

export interface CannedResponse {
  status: number;
  body: string;
  contentType?: string;
}

export interface GrantEvent {
  grantType: string;
  ok: boolean;
  error?: string;
}

/** The token endpoint's JSON answer (the fields tests care about; others kept). */
export interface TokenSet {
  access_token: string;
  refresh_token?: string;
  expires_in?: number;
  token_type: string;
  scope?: string;
  id_token?: string;
  [extra: string]: unknown;
}

export interface ServerEndpoints {
  authorization: string;
  token: string;
  deviceAuthorization: string;
  revocation: string;
}

const b64u = (buf: Buffer): string => buf.toString('base64url');

export class OidcTestServer {
  readonly issuer: string;
  readonly confidentialClientSecret: string;
  /** Every token-endpoint grant the server finished, in order. */
  readonly grants: GrantEvent[] = [];
  /** Auth codes, PKCE verifiers, device codes and refresh tokens seen in requests and answers. */
  readonly secretsSeen = new Set<string>();
  /** Delay applied to each token endpoint request; may be changed at any time. */
  tokenDelayMs: number;
  private readonly canned: CannedResponse[] = [];
  private tokenRequestsSeen = 0;

  private constructor(
    private readonly http: Server,
    issuer: string,
    secret: string,
    options: OidcServerOptions,
  ) {
    this.issuer = issuer;
    this.confidentialClientSecret = secret;
    this.tokenDelayMs = options.tokenDelayMs ?? 0;
  }

  static async start(options: OidcServerOptions = {}): Promise<OidcTestServer> {
    const http = createServer();
    await new Promise<void>((resolve, reject) => {
      http.once('error', reject);
      http.listen(0, '127.0.0.1', () => resolve());
    });
    const { port } = http.address() as AddressInfo;
    const issuer = `http://127.0.0.1:${port}`;
    const secret = b64u(randomBytes(24));
    const server = new OidcTestServer(http, issuer, secret, options);
    const provider = server.createProvider(options);
    http.on('request', provider.callback());
    return server;
  }

  private createProvider(options: OidcServerOptions): Provider {
    const accessTtl = options.accessTokenTtlSeconds ?? 3600;
    const refreshTtl = options.refreshTokenTtlSeconds ?? 14 * 24 * 3600;
    const grantTypes = ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code'];
    const provider = new Provider(this.issuer, {
      clients: [
        {
          client_id: NATIVE_CLIENT_ID,
          application_type: 'native',
          token_endpoint_auth_method: 'none',
          redirect_uris: [NATIVE_REDIRECT_URI],
          grant_types: grantTypes,
          response_types: ['code'],
        },
        {
          client_id: CONFIDENTIAL_CLIENT_ID,
          client_secret: this.confidentialClientSecret,
          application_type: 'web',
          token_endpoint_auth_method: 'client_secret_post',
          redirect_uris: [CONFIDENTIAL_REDIRECT_URI],
          grant_types: grantTypes,
          response_types: ['code'],
        },
      ],
      cookies: { keys: [b64u(randomBytes(32))] },
      features: {
        devInteractions: { enabled: true },
        deviceFlow: { enabled: true },
        revocation: { enabled: true },
      },
      pkce: { required: () => true },
      rotateRefreshToken: options.rotateRefreshToken ?? true,
      scopes: ['openid', 'offline_access', 'profile', 'email'],
      ttl: {
        AccessToken: () => accessTtl,
        RefreshToken: () => refreshTtl,
        Grant: () => refreshTtl,
        Session: () => 3600,
        Interaction: () => 600,
        DeviceCode: () => 600,
        IdToken: () => 3600,
        AuthorizationCode: () => 60,
      },
    });

    provider.use(async (ctx, next) => {
      if (ctx.method === 'POST' && ctx.path === '/token') {
        this.tokenRequestsSeen++;
        if (this.tokenDelayMs > 0) await new Promise((r) => setTimeout(r, this.tokenDelayMs));
        const canned = this.canned.shift();
        if (canned) {
          ctx.status = canned.status;
          ctx.type = canned.contentType ?? 'application/json';
          ctx.body = canned.body;
          return;
        }
      }
      await next();
      // Remember every host-only secret that crossed this server, for canary sweeps.
      const params = (ctx.oidc?.params ?? {}) as Record<string, unknown>;
      for (const k of ['code', 'code_verifier', 'device_code', 'refresh_token']) if (typeof params[k] === 'string') this.secretsSeen.add(params[k] as string);
      const body = ctx.body as Record<string, unknown> | undefined;
      if (body && typeof body === 'object') for (const k of ['device_code', 'refresh_token']) if (typeof body[k] === 'string') this.secretsSeen.add(body[k] as string);
    });
    provider.on('grant.success', (ctx) => {
      this.grants.push({ grantType: String(ctx.oidc?.params?.grant_type ?? ''), ok: true });
    });
    provider.on('grant.error', (ctx, error) => {
      this.grants.push({ grantType: String(ctx.oidc?.params?.grant_type ?? ''), ok: false, error: error.error ?? error.message ?? 'unknown' });
    });
    return provider;
  }

  get endpoints(): ServerEndpoints {
    return {
      authorization: `${this.issuer}/auth`,
      token: `${this.issuer}/token`,
      deviceAuthorization: `${this.issuer}/device/auth`,
      revocation: `${this.issuer}/token/revocation`,
    };
  }

  /** Successful refresh_token grants so far. */
  get refreshSuccesses(): number {
    return this.grants.filter((g) => g.grantType === 'refresh_token' && g.ok).length;
  }
  /** Failed refresh_token grants so far. */
  get refreshErrors(): number {
    return this.grants.filter((g) => g.grantType === 'refresh_token' && !g.ok).length;
  }
  /** POSTs that reached the token endpoint (including canned answers). */
  get tokenRequests(): number {
    return this.tokenRequestsSeen;
  }

  /** The next token endpoint requests get these answers instead of the real ones. */
  injectTokenResponses(...responses: CannedResponse[]): void {
    this.canned.push(...responses);
  }

  /**
   * A real login: authorization code + PKCE through the scripted browser,
   * then the code exchange. Returns the server's token set (with a refresh
   * token when `offline_access` is in the scope).
   */
  async issueTokens(options: { clientId?: string; scope?: string; login?: string } = {}): Promise<TokenSet> {
    const clientId = options.clientId ?? NATIVE_CLIENT_ID;
    const confidential = clientId === CONFIDENTIAL_CLIENT_ID;
    const redirectUri = confidential ? CONFIDENTIAL_REDIRECT_URI : NATIVE_REDIRECT_URI;
    const verifier = b64u(randomBytes(32));
    const challenge = b64u(createHash('sha256').update(verifier).digest());
    const state = b64u(randomBytes(16));
    const auth = new URL(this.endpoints.authorization);
    auth.search = new URLSearchParams({
      client_id: clientId,
      response_type: 'code',
      redirect_uri: redirectUri,
      scope: options.scope ?? DEFAULT_SCOPE,
      // oidc-provider drops offline_access unless consent is prompted for.
      prompt: 'consent',
      state,
      code_challenge: challenge,
      code_challenge_method: 'S256',
    }).toString();
    const browser = new ScriptedBrowser({ login: options.login ?? 'alice' });
    const final = await browser.authorize(auth, redirectUri);
    if (final.searchParams.get('state') !== state) throw new Error('state mismatch in test login');
    const code = final.searchParams.get('code');
    if (!code) throw new Error(`test login failed: ${final.searchParams.get('error') ?? 'no code'}`);
    const form: Record<string, string> = { grant_type: 'authorization_code', code, redirect_uri: redirectUri, code_verifier: verifier, client_id: clientId };
    if (confidential) form.client_secret = this.confidentialClientSecret;
    return this.tokenRequest(form);
  }

  /** A raw refresh_token grant, bypassing credproxy (to simulate "another client"). */
  async refreshDirect(refreshToken: string, clientId = NATIVE_CLIENT_ID): Promise<TokenSet> {
    const form: Record<string, string> = { grant_type: 'refresh_token', refresh_token: refreshToken, client_id: clientId };
    if (clientId === CONFIDENTIAL_CLIENT_ID) form.client_secret = this.confidentialClientSecret;
    return this.tokenRequest(form);
  }

  /** RFC 7009 revocation of a token the native client holds. */
  async revoke(token: string, hint: 'refresh_token' | 'access_token' = 'refresh_token'): Promise<void> {
    const res = await fetch(this.endpoints.revocation, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token, token_type_hint: hint, client_id: NATIVE_CLIENT_ID }).toString(),
    });
    await res.body?.cancel();
    if (res.status !== 200) throw new Error(`revocation answered HTTP ${res.status}`);
  }

  private async tokenRequest(form: Record<string, string>): Promise<TokenSet> {
    const res = await fetch(this.endpoints.token, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
      body: new URLSearchParams(form).toString(),
    });
    const json = (await res.json()) as Record<string, unknown>;
    if (res.status !== 200) throw new Error(`token endpoint answered HTTP ${res.status}: ${String(json.error)}`);
    return json as TokenSet;
  }

  async close(): Promise<void> {
    this.http.closeAllConnections();
    await new Promise<void>((resolve) => this.http.close(() => resolve()));
  }
}
