import { randomBytes } from 'node:crypto';
import { pino } from 'pino';
import { CredproxyError } from '../errors.js';
import { shortSessionId, type Logger } from '../log.js';
import type { OAuthInitiateData, OAuthPollData } from '../protocol/messages.js';
import type { PeerIdentity, LoginPort } from '../server/context.js';
import { sanitizeToken } from '../store/sanitize.js';
import type { OAuthToken, SanitizedToken, TokenStore } from '../store/types.js';
import type { OAuthProvider } from '../oauth/types.js';
import { startFlow, type FlowOutcome, type RunningFlow } from './flows.js';

/** SPEC §5 defaults. */
export const DEFAULT_SESSION_TIMEOUT_MS = 10 * 60_000;
export const SWEEP_INTERVAL_MS = 60_000;
export const DEFAULT_MAX_SESSIONS = 10_000;

export interface LoginSessionsOptions {
  tokens: TokenStore;
  providers: { get(name: string): OAuthProvider };
  /** CREDPROXY_OAUTH_SESSION_TIMEOUT_SECONDS, in ms. */
  timeoutMs?: number;
  maxSessions?: number;
  logger?: Logger;
  now?: () => number;
}

interface Session {
  id: string;
  /** Who may use it: the peer process (uid+pid), or the connection when peer checks are off. */
  owner: string;
  provider: string;
  bucket: string;
  flowType: RunningFlow['start']['flow_type'];
  /** Null once the session is used: its secrets are gone, the id stays until expiry to answer replays. */
  flow: RunningFlow | null;
  expiresAt: number;
  used: boolean;
  result: OAuthPollData | null;
}

/** A session belongs to the peer process that created it, so it survives the client's idle reconnect. */
function ownerKey(peer: PeerIdentity): string {
  return peer.pid !== null && peer.uid !== null ? `p:${peer.uid}:${peer.pid}` : `c:${peer.connectionId}`;
}

export function sessionTimeoutFromEnv(env: NodeJS.ProcessEnv): number | undefined {
  const raw = env.CREDPROXY_OAUTH_SESSION_TIMEOUT_SECONDS;
  if (raw === undefined || raw === '') return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 24 * 3600) throw new CredproxyError('USAGE', 'CREDPROXY_OAUTH_SESSION_TIMEOUT_SECONDS must be a whole number of seconds (1 to 86400)');
  return n * 1000;
}

/**
 * Login sessions (SPEC §5): 128-bit ids, bound to the peer that created
 * them, single use, expiring, swept every minute. The finished token is
 * stored with its refresh token; callers only ever get it sanitized.
 */
export class LoginSessions implements LoginPort {
  private readonly sessions = new Map<string, Session>();
  private readonly o: Required<Omit<LoginSessionsOptions, 'logger' | 'now'>>;
  private readonly logger: Logger;
  private readonly now: () => number;
  private readonly sweeper: NodeJS.Timeout;

  constructor(options: LoginSessionsOptions) {
    this.o = { tokens: options.tokens, providers: options.providers, timeoutMs: options.timeoutMs ?? DEFAULT_SESSION_TIMEOUT_MS, maxSessions: options.maxSessions ?? DEFAULT_MAX_SESSIONS };
    this.logger = options.logger ?? pino({ level: 'silent' });
    this.now = options.now ?? Date.now;
    this.sweeper = setInterval(() => this.sweep(), SWEEP_INTERVAL_MS);
    this.sweeper.unref();
  }

  get size(): number {
    return this.sessions.size;
  }

  async initiate(provider: string, bucket: string, owner: PeerIdentity, signal: AbortSignal): Promise<OAuthInitiateData> {
    this.sweep();
    if (this.sessions.size >= this.o.maxSessions) throw new CredproxyError('RATE_LIMITED', 'too many login sessions in progress; try again later', { retryAfter: 60 });
    const oauth = this.o.providers.get(provider);
    const flow = await startFlow(oauth, signal);
    const id = randomBytes(16).toString('hex');
    const session: Session = { id, owner: ownerKey(owner), provider, bucket, flowType: flow.start.flow_type, flow, expiresAt: this.now() + this.o.timeoutMs, used: false, result: null };
    this.sessions.set(id, session);
    if (flow.outcome) void flow.outcome.then((out) => this.finish(session, out));
    this.logger.debug({ session: shortSessionId(id), provider, bucket, flow: flow.start.flow_type }, 'login session started');
    return { session_id: id, ...flow.start };
  }

  async exchange(sessionId: string, code: string, owner: PeerIdentity, signal: AbortSignal): Promise<SanitizedToken> {
    const s = this.lookup(sessionId, owner);
    if (s.flowType !== 'pkce_redirect') throw new CredproxyError('INVALID_REQUEST', `a ${s.flowType} session is completed with oauth_poll, not oauth_exchange`);
    const flow = this.use(s); // before the exchange: a failed exchange still consumes the session
    const token = await flow.exchange!(code, signal);
    await this.o.tokens.saveToken(s.provider, token, s.bucket);
    this.logger.info({ session: shortSessionId(s.id), provider: s.provider, bucket: s.bucket }, 'login completed');
    return sanitizeToken(token);
  }

  async poll(sessionId: string, owner: PeerIdentity): Promise<OAuthPollData> {
    const s = this.lookup(sessionId, owner);
    if (s.flowType === 'pkce_redirect') throw new CredproxyError('INVALID_REQUEST', 'a pkce_redirect session is completed with oauth_exchange, not oauth_poll');
    if (s.used) throw new CredproxyError('SESSION_ALREADY_USED', 'this login session was already used; start a new login');
    if (s.result === null) return { status: 'pending', pollIntervalMs: s.flow?.start.pollIntervalMs ?? 5000 };
    // Single use: the outcome is handed out once.
    const result = s.result;
    this.use(s);
    s.result = null;
    return result;
  }

  async cancel(sessionId: string, owner: PeerIdentity): Promise<void> {
    this.drop(this.lookup(sessionId, owner));
  }

  /** Drop every session and stop their flows (server shutdown). */
  close(): void {
    clearInterval(this.sweeper);
    for (const s of [...this.sessions.values()]) this.drop(s);
  }

  /** Expired sessions go, and their polling / listeners stop. */
  sweep(): void {
    const now = this.now();
    for (const s of this.sessions.values()) if (s.expiresAt <= now) this.drop(s);
  }

  /** Mark used and release the flow (its listener or polling stops); replays get SESSION_ALREADY_USED. */
  private use(s: Session): RunningFlow {
    if (s.used || s.flow === null) throw new CredproxyError('SESSION_ALREADY_USED', 'this login session was already used; start a new login');
    const flow = s.flow;
    s.used = true;
    s.flow = null;
    // The exchange still needs the flow's closure; everything else about it stops now.
    if (s.flowType !== 'pkce_redirect') flow.cancel();
    return flow;
  }

  private lookup(sessionId: string, owner: PeerIdentity): Session {
    const s = this.sessions.get(sessionId);
    if (!s || s.owner !== ownerKey(owner)) throw new CredproxyError('SESSION_NOT_FOUND', 'no such login session');
    if (s.expiresAt <= this.now()) {
      this.drop(s);
      throw new CredproxyError('SESSION_EXPIRED', 'the login session expired; start the login again');
    }
    return s;
  }

  private async finish(s: Session, out: FlowOutcome): Promise<void> {
    if (this.sessions.get(s.id) !== s || s.used) return;
    if (!out.ok) {
      s.result = { status: 'error', code: out.code, error: out.error };
      return;
    }
    try {
      await this.o.tokens.saveToken(s.provider, out.token as OAuthToken, s.bucket);
      s.result = { status: 'complete', ...sanitizeToken(out.token) };
      this.logger.info({ session: shortSessionId(s.id), provider: s.provider, bucket: s.bucket }, 'login completed');
    } catch (err) {
      s.result = { status: 'error', code: 'INTERNAL_ERROR', error: `the login succeeded but the token could not be stored (${err instanceof CredproxyError ? err.code : 'error'})` };
    }
  }

  private drop(s: Session): void {
    if (this.sessions.get(s.id) !== s) return;
    this.sessions.delete(s.id);
    s.flow?.cancel();
    s.flow = null;
  }
}
