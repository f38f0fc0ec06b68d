import { randomBytes } from 'node:crypto';
import { pino } from 'pino';
import { collectGarbage } from '../heap.js';
import { CredproxyError } from '../errors.js';
import { shortSessionId, type Logger } from '../log.js';
import type { OAuthProvider } from '../oauth/types.js';
import type { FlowType, OAuthInitiateData, OAuthPollData } from '../protocol/messages.js';
import type { LoginPort, PeerIdentity } from '../server/context.js';
import type { OAuthToken, TokenStore } from '../store/types.js';
import type { FlowOutcome, FlowStarter, FlowTiming, RunningFlow } from './flows/index.js';
import { ownerGone, ownerKey, procStartTime, type ProcessStartTime } from './owner.js';
import { loginAnswer, type LoginAnswer } from './renewal.js';
import { accountOf } from './account.js';
import { PollGate } from './poll-gate.js';

/** A sandbox as login caps see it: the peer's uid (one proxy serves one sandbox's capability), else the whole server. */
function sandboxKey(peer: PeerIdentity): string {
  return peer.uid === null ? 'any' : `uid:${peer.uid}`;
}

/** SPEC §5 defaults. */
export const DEFAULT_SESSION_TIMEOUT_MS = 10 * 60_000;
export const DEFAULT_SWEEP_INTERVAL_MS = 60_000;
/** Overall cap: room for a burst of abandoned sessions, bounded memory and listeners. */
export const DEFAULT_MAX_SESSIONS = 10_000;
/** Per peer process: a person logs in to one or two accounts at a time; a looping agent is stopped here. */
export const DEFAULT_MAX_SESSIONS_PER_OWNER = 32;
/**
 * Logins in progress per sandbox (uid; forking new processes does not add
 * room): each may hold a loopback listener or poll a provider.
 */
export const DEFAULT_MAX_LIVE_PER_SANDBOX = 4;
/**
 * Logins started per sandbox in any rolling minute. The caps above bound
 * logins in progress; a start-and-cancel loop stays under them while every
 * start is a request from the user's address to the provider (device code)
 * and a notice on the host's terminal.
 */
export const DEFAULT_MAX_STARTS_PER_MINUTE = 10;
const START_WINDOW_MS = 60_000;
/** After a connection closes, when to look again whether its process has exited. */
const ABANDON_RECHECK_MS = 1000;
/** A sweep dropping at least this many sessions is followed by one full garbage collection. */
export const BULK_SWEEP = 1000;

export interface LoginSessionManagerOptions {
  /** Where a finished login is stored, refresh token included (the entry is replaced). */
  tokens: TokenStore;
  providers: { get(name: string): OAuthProvider };
  /** CREDPROXY_OAUTH_SESSION_TIMEOUT_SECONDS, in ms (default 10 minutes). */
  timeoutMs?: number;
  sweepIntervalMs?: number;
  maxSessions?: number;
  maxSessionsPerOwner?: number;
  /** Logins in progress (not yet used, cancelled or expired) per sandbox (default 4). */
  maxLivePerSandbox?: number;
  /** Logins started per sandbox in any rolling minute (default 10). */
  maxStartsPerMinute?: number;
  /** Poll intervals of the flows (tests shorten them). */
  flowTiming?: FlowTiming;
  /** How a flow is started (default: the real flows for the provider's flow type). */
  startFlow?: FlowStarter;
  /** Tells a peer's pid apart from a later process that reuses it (default: /proc on Linux). */
  processStartTime?: ProcessStartTime;
  logger?: Logger;
  /** Wall clock in ms, for expiry. */
  now?: () => number;
  /** Run after a sweep dropped BULK_SWEEP sessions or more (default: one full garbage collection). */
  afterBulkSweep?: () => void;
  /** Told when a login starts, completes or fails (the proxy announces sandbox logins on the host). */
  onLogin?: (event: LoginEvent) => void;
}

/** A login's milestones, for the host's terminal and audit log: names, codes and the account only. */
export interface LoginEvent {
  phase: 'started' | 'completed' | 'failed';
  provider: string;
  bucket: string;
  flow: FlowType;
  peer: PeerIdentity;
  /** completed: id_token email (or `sub:<sub>`) when the provider returned one. */
  account?: string;
  /** failed: the error code. */
  code?: string;
}

interface Session {
  readonly id: string;
  readonly owner: string;
  readonly provider: string;
  readonly bucket: string;
  readonly flowType: FlowType;
  readonly expiresAt: number;
  /** The peer that started it, for announcements. */
  readonly peer: PeerIdentity;
  /** Released (null) once the session is used, cancelled or expired: its secrets go with it. */
  flow: RunningFlow | null;
  /** Aborting it stops the flow's background work (polling, loopback listener). */
  readonly stop: AbortController;
  /** The sandbox it counts against while live. */
  readonly sandbox: string;
  live: boolean;
  /** Fires at expiry for flows with background work, so nothing polls or listens past it. */
  expiryTimer: NodeJS.Timeout | null;
  used: boolean;
  /** A background flow's result, waiting for the owner's next oauth_poll. */
  result: OAuthPollData | null;
}

const ALREADY_USED = 'this login session was already used; start a new login';

function wrongOp(flowType: FlowType, right: 'oauth_exchange' | 'oauth_poll', wrong: 'oauth_exchange' | 'oauth_poll'): CredproxyError {
  return new CredproxyError('INVALID_REQUEST', `a ${flowType} session is completed with ${right}, not ${wrong}`);
}

/** The initiate answer, field by field: nothing a flow might hold besides these can reach the socket. */
function answerFields(flow: RunningFlow): Omit<OAuthInitiateData, 'session_id'> {
  const { flow_type, auth_url, verification_url, user_code, pollIntervalMs } = flow.start;
  return {
    flow_type,
    ...(auth_url !== undefined ? { auth_url } : {}),
    ...(verification_url !== undefined ? { verification_url } : {}),
    ...(user_code !== undefined ? { user_code } : {}),
    ...(pollIntervalMs !== undefined ? { pollIntervalMs } : {}),
  };
}

/** The real flows, loaded with the first login (they bring openid-client; an idle proxy needs neither). */
const startFlowLazily: FlowStarter = async (provider, ctx) => (await import('./flows/index.js')).startFlow(provider, ctx);

/** CREDPROXY_OAUTH_SESSION_TIMEOUT_SECONDS as ms; undefined when unset. */
export function sessionTimeoutFromEnv(env: NodeJS.ProcessEnv): number | undefined {
  const raw = env.CREDPROXY_OAUTH_SESSION_TIMEOUT_SECONDS;
  if (raw === undefined || raw === '') return undefined;
  const n = Number(raw);
  if (!/^\d+$/.test(raw.trim()) || !Number.isSafeInteger(n) || n < 1 || n > 24 * 3600) {
    throw new CredproxyError('USAGE', 'CREDPROXY_OAUTH_SESSION_TIMEOUT_SECONDS must be a whole number of seconds (1 to 86400)');
  }
  return n * 1000;
}

function positive(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value <= 0 || value > 2_147_483_647) throw new CredproxyError('USAGE', `${name} must be a positive number`);
  return value;
}

/**
 * Login sessions (SPEC §5): 128-bit random ids, owned by the peer process
 * that started them (see ownerKey), single use, expiring. The finished token
 * is stored with its refresh token on the host; callers only ever get it
 * sanitized. Verifiers, state, device codes and auth codes stay inside the
 * flows; logs show at most 8 characters of an id.
 *
 * Used sessions stay until their expiry (so a replay is told
 * SESSION_ALREADY_USED), expired ones until the next sweep (SESSION_EXPIRED);
 * after that an id is simply unknown. The sweep timer runs only while there
 * are sessions, so an idle manager holds nothing.
 */
/** A refresh holds the lock for at most its 30 s budget. */
const LOGIN_SAVE_LOCK_WAIT_MS = 30_000;

export class LoginSessionManager implements LoginPort {
  private readonly sessions = new Map<string, Session>();
  /** The live ones (at most 4 per sandbox): what a connection close looks at, not every session held. */
  private readonly liveSessions = new Set<Session>();
  private readonly perOwner = new Map<string, number>();
  private readonly livePerSandbox = new Map<string, number>();
  private readonly maxLivePerSandbox: number;
  private readonly maxStartsPerMinute: number;
  /** Start times of the last minute, oldest first, per sandbox. */
  private readonly startsPerSandbox = new Map<string, number[]>();
  private readonly pollGate: PollGate;
  private readonly tokens: TokenStore;
  private readonly providers: { get(name: string): OAuthProvider };
  private readonly timeoutMs: number;
  private readonly sweepIntervalMs: number;
  private readonly maxSessions: number;
  private readonly maxPerOwner: number;
  private readonly flowTiming: FlowTiming;
  private readonly start: FlowStarter;
  private readonly startTimeOf: ProcessStartTime;
  private readonly logger: Logger;
  private readonly now: () => number;
  private readonly afterBulkSweep: () => void;
  private readonly onLogin: (event: LoginEvent) => void;
  private sweeper: NodeJS.Timeout | null = null;
  private recheck: NodeJS.Timeout | null = null;
  /** Initiations between the cap check and their session's creation (they await the provider). */
  private starting = 0;
  private closed = false;

  constructor(options: LoginSessionManagerOptions) {
    this.tokens = options.tokens;
    this.providers = options.providers;
    this.timeoutMs = positive(options.timeoutMs, DEFAULT_SESSION_TIMEOUT_MS, 'timeoutMs');
    this.sweepIntervalMs = positive(options.sweepIntervalMs, DEFAULT_SWEEP_INTERVAL_MS, 'sweepIntervalMs');
    this.maxSessions = positive(options.maxSessions, DEFAULT_MAX_SESSIONS, 'maxSessions');
    this.maxPerOwner = positive(options.maxSessionsPerOwner, DEFAULT_MAX_SESSIONS_PER_OWNER, 'maxSessionsPerOwner');
    this.maxLivePerSandbox = positive(options.maxLivePerSandbox, DEFAULT_MAX_LIVE_PER_SANDBOX, 'maxLivePerSandbox');
    this.maxStartsPerMinute = positive(options.maxStartsPerMinute, DEFAULT_MAX_STARTS_PER_MINUTE, 'maxStartsPerMinute');
    this.now = options.now ?? Date.now;
    this.pollGate = new PollGate(this.now);
    this.afterBulkSweep = options.afterBulkSweep ?? collectGarbage;
    this.onLogin = options.onLogin ?? (() => undefined);
    this.flowTiming = { now: this.now, ...options.flowTiming };
    this.start = options.startFlow ?? startFlowLazily;
    this.startTimeOf = options.processStartTime ?? procStartTime;
    this.logger = options.logger ?? pino({ level: 'silent' });
  }

  /** Sessions held (open, used or expired but not yet swept). */
  get size(): number {
    return this.sessions.size;
  }

  async initiate(provider: string, bucket: string, peer: PeerIdentity, signal: AbortSignal): Promise<OAuthInitiateData> {
    if (this.closed) throw new CredproxyError('INTERNAL_ERROR', 'login is not available: the proxy is shutting down');
    const owner = ownerKey(peer, this.startTimeOf);
    this.sweep();
    if (this.sessions.size + this.starting >= this.maxSessions) {
      throw new CredproxyError('RATE_LIMITED', 'too many login sessions in progress on this host; try again later', { retryAfter: Math.ceil(this.sweepIntervalMs / 1000) });
    }
    const sandbox = sandboxKey(peer);
    if ((this.livePerSandbox.get(sandbox) ?? 0) >= this.maxLivePerSandbox) {
      throw new CredproxyError('RATE_LIMITED', `${this.maxLivePerSandbox} logins are already in progress from this sandbox; finish or cancel one first`, { retryAfter: 5 });
    }
    if ((this.perOwner.get(owner) ?? 0) >= this.maxPerOwner) {
      throw new CredproxyError('RATE_LIMITED', `this process already has ${this.maxPerOwner} login sessions; finish or cancel one first`, { retryAfter: Math.ceil(this.sweepIntervalMs / 1000) });
    }
    const oauth = this.providers.get(provider);
    this.takeStart(sandbox);
    // The slot is taken before the provider is contacted, so concurrent initiations cannot overshoot the caps.
    this.starting++;
    this.countOwner(owner, +1);
    this.countLive(sandbox, +1);
    const stop = new AbortController();
    let flow: RunningFlow;
    try {
      flow = await this.start(oauth, {
        signal,
        stop: stop.signal,
        timing: this.flowTiming,
        pollTurn: (ms, stopped) => this.pollGate.wait(provider, ms, stopped),
      });
    } catch (err) {
      stop.abort();
      this.countOwner(owner, -1);
      this.countLive(sandbox, -1);
      throw err;
    } finally {
      this.starting--;
    }
    if (this.closed || signal.aborted) {
      stop.abort();
      this.countOwner(owner, -1);
      this.countLive(sandbox, -1);
      throw new CredproxyError('INTERNAL_ERROR', this.closed ? 'login is not available: the proxy is shutting down' : 'the login request was cancelled');
    }

    const id = randomBytes(16).toString('hex');
    const session: Session = {
      id,
      owner,
      provider,
      bucket,
      flowType: flow.start.flow_type,
      expiresAt: this.now() + this.timeoutMs,
      peer: { ...peer },
      flow,
      stop,
      sandbox,
      live: true,
      expiryTimer: null,
      used: false,
      result: null,
    };
    this.sessions.set(id, session);
    this.liveSessions.add(session);
    if (flow.outcome) {
      session.expiryTimer = setTimeout(() => this.release(session), this.timeoutMs);
      session.expiryTimer.unref();
      void flow.outcome.then((out) => this.finish(session, out));
    }
    this.armSweeper();
    this.logger.debug({ session: shortSessionId(id), provider, bucket, flow: session.flowType }, 'login session started');
    this.announce(session, 'started');
    return { session_id: id, ...answerFields(flow) };
  }

  /**
   * Store a fresh login under the same cross-process lock the refresh path
   * uses, so a refresh of the old token already in flight cannot overwrite
   * it with a merge of the old one: the refresh re-reads under the lock and
   * sees the new token, or finishes first and the login saves after it.
   */
  private async saveLoggedIn(provider: string, bucket: string, token: OAuthToken): Promise<void> {
    if (!(await this.tokens.acquireRefreshLock(provider, { bucket, waitMs: LOGIN_SAVE_LOCK_WAIT_MS }))) {
      throw new CredproxyError('LOCK_FAILED', `a refresh of ${provider}:${bucket} is still running; log in again`);
    }
    try {
      await this.tokens.saveToken(provider, token, bucket);
    } finally {
      await this.tokens.releaseRefreshLock(provider, bucket);
    }
  }

  async exchange(sessionId: string, code: string, peer: PeerIdentity, signal: AbortSignal): Promise<LoginAnswer> {
    const s = this.find(sessionId, peer);
    if (s.flowType !== 'pkce_redirect') throw wrongOp(s.flowType, 'oauth_poll', 'oauth_exchange');
    this.assertAlive(s);
    // Consumed before the exchange starts: a failed or concurrent second attempt finds it used.
    const flow = this.consume(s);
    try {
      if (!flow?.exchange) throw new CredproxyError('INTERNAL_ERROR', 'this login flow cannot exchange a code');
      const token = await flow.exchange(code, signal);
      await this.saveLoggedIn(s.provider, s.bucket, token);
      return this.completed(s, token);
    } catch (err) {
      const code = err instanceof CredproxyError ? err.code : 'error';
      this.logger.info({ session: shortSessionId(s.id), provider: s.provider, bucket: s.bucket, code }, 'login failed');
      this.announce(s, 'failed', { code });
      throw err;
    } finally {
      this.release(s);
    }
  }

  async poll(sessionId: string, peer: PeerIdentity): Promise<OAuthPollData> {
    const s = this.find(sessionId, peer);
    if (s.flowType === 'pkce_redirect') throw wrongOp(s.flowType, 'oauth_exchange', 'oauth_poll');
    if (s.result !== null) {
      // A result reached before expiry is still handed out, once; then the session counts as used.
      const result = s.result;
      s.result = null;
      this.consume(s);
      return result;
    }
    this.assertAlive(s);
    if (s.used) throw new CredproxyError('SESSION_ALREADY_USED', ALREADY_USED);
    return { status: 'pending', pollIntervalMs: s.flow?.pollIntervalMs() ?? 0 };
  }

  /** Drops the session whatever its state (an expired or used one too: the client wants it gone). */
  async cancel(sessionId: string, peer: PeerIdentity): Promise<void> {
    const s = this.find(sessionId, peer);
    this.drop(s);
    this.logger.debug({ session: shortSessionId(s.id), provider: s.provider, bucket: s.bucket }, 'login session cancelled');
  }

  /** Drop every session and stop every flow (server shutdown); later initiations are refused. */
  close(): void {
    this.closed = true;
    for (const s of [...this.sessions.values()]) this.drop(s);
    this.disarmSweeper();
    if (this.recheck !== null) clearTimeout(this.recheck);
    this.recheck = null;
  }

  /**
   * A connection closed. Logins whose owner is gone (that connection, or a
   * process that exited) stop polling and listening at once and free their
   * sandbox's slot: nobody is left to collect them. A process that is still
   * running keeps its logins (the client reconnects after an idle close).
   */
  connectionClosed(peer: PeerIdentity): void {
    if (this.liveSessions.size === 0) return;
    this.releaseAbandoned(peer.connectionId);
    // An exiting process closes its sockets before it is a zombie: look again shortly (one timer for any number of closes).
    if (peer.pid !== null && this.recheck === null) {
      this.recheck = setTimeout(() => {
        this.recheck = null;
        this.releaseAbandoned(null);
      }, ABANDON_RECHECK_MS);
      this.recheck.unref();
    }
  }

  private releaseAbandoned(closedConnectionId: number | null): void {
    for (const s of [...this.liveSessions]) {
      if (s.used) continue;
      if (!ownerGone(s.owner, s.peer, closedConnectionId, this.startTimeOf)) continue;
      this.logger.debug({ session: shortSessionId(s.id), provider: s.provider, bucket: s.bucket }, 'login session abandoned: its owner is gone');
      this.release(s);
    }
  }

  /** Forget sessions past their expiry, stopping whatever they still run; stop the abandoned ones. */
  sweep(): void {
    const now = this.now();
    let dropped = 0;
    // An owner that closed its socket a moment before exiting is caught here.
    this.releaseAbandoned(null);
    for (const s of this.sessions.values()) {
      if (s.expiresAt > now) continue;
      this.drop(s);
      dropped++;
    }
    if (this.sessions.size === 0) this.disarmSweeper();
    // A burst of abandoned logins (a looping agent) would otherwise keep its
    // memory for as long as the server stays idle.
    if (dropped >= BULK_SWEEP) setImmediate(this.afterBulkSweep).unref();
  }

  private find(sessionId: string, peer: PeerIdentity): Session {
    const s = this.sessions.get(sessionId);
    // Someone else's session is indistinguishable from none at all.
    if (!s || s.owner !== ownerKey(peer, this.startTimeOf)) throw new CredproxyError('SESSION_NOT_FOUND', 'no such login session');
    return s;
  }

  private assertAlive(s: Session): void {
    if (s.expiresAt > this.now()) return;
    this.release(s);
    throw new CredproxyError('SESSION_EXPIRED', 'the login session expired; start the login again');
  }

  /**
   * Mark used and take the flow out of the session. A pkce exchange still
   * runs on it, so its stop signal stays quiet until exchange() releases it;
   * a background flow is finished and released at once.
   */
  private consume(s: Session): RunningFlow | null {
    if (s.used) throw new CredproxyError('SESSION_ALREADY_USED', ALREADY_USED);
    const flow = s.flow;
    s.used = true;
    s.flow = null;
    if (s.flowType !== 'pkce_redirect') this.release(s);
    return flow;
  }

  private async finish(s: Session, out: FlowOutcome): Promise<void> {
    if (this.sessions.get(s.id) !== s || s.used || s.stop.signal.aborted) return;
    if (!out.ok) {
      s.result = { status: 'error', code: out.code, error: out.error };
      this.logger.info({ session: shortSessionId(s.id), provider: s.provider, bucket: s.bucket, code: out.code }, 'login failed');
      this.announce(s, 'failed', { code: out.code });
      return;
    }
    try {
      await this.saveLoggedIn(s.provider, s.bucket, out.token);
      s.result = { status: 'complete', ...this.completed(s, out.token) };
    } catch (err) {
      const code = err instanceof CredproxyError ? err.code : 'error';
      this.announce(s, 'failed', { code });
      s.result = { status: 'error', code: 'INTERNAL_ERROR', error: `the login succeeded but the token could not be stored (${code})` };
      this.logger.warn({ session: shortSessionId(s.id), provider: s.provider, bucket: s.bucket, code }, 'login token not stored');
    }
  }

  /** The answer to a finished login, announced on the host; one that cannot be renewed is also said there. */
  private completed(s: Session, token: OAuthToken): LoginAnswer {
    const answer = loginAnswer(token);
    const fields = { session: shortSessionId(s.id), provider: s.provider, bucket: s.bucket };
    this.logger.info(fields, 'login completed');
    if (answer.login_warning !== undefined) this.logger.warn({ ...fields, expiry: token.expiry }, `${s.provider}:${s.bucket}: ${answer.login_warning}`);
    this.announce(s, 'completed', { account: accountOf(token) });
    return answer;
  }

  private announce(s: Session, phase: LoginEvent['phase'], extra: { account?: string | null; code?: string } = {}): void {
    const event: LoginEvent = { phase, provider: s.provider, bucket: s.bucket, flow: s.flowType, peer: s.peer };
    if (extra.account) event.account = extra.account;
    if (extra.code !== undefined) event.code = extra.code;
    try {
      this.onLogin(event);
    } catch (err) {
      this.logger.warn({ errName: err instanceof Error ? err.name : typeof err }, 'login announcement failed');
    }
  }

  /** Stop the flow's background work and drop its secrets; the entry itself stays (used/expired answers). */
  private release(s: Session): void {
    if (s.live) {
      s.live = false;
      this.liveSessions.delete(s);
      this.countLive(s.sandbox, -1);
    }
    if (s.expiryTimer) clearTimeout(s.expiryTimer);
    s.expiryTimer = null;
    s.flow = null;
    s.stop.abort();
  }

  private drop(s: Session): void {
    if (this.sessions.get(s.id) !== s) return;
    this.sessions.delete(s.id);
    this.countOwner(s.owner, -1);
    this.release(s);
    s.result = null;
  }

  /** Counts a start against the sandbox's minute, or refuses it (RATE_LIMITED naming when the oldest start leaves). */
  private takeStart(sandbox: string): void {
    const now = this.now();
    const times = (this.startsPerSandbox.get(sandbox) ?? []).filter((t) => now - t < START_WINDOW_MS);
    if (times.length >= this.maxStartsPerMinute) {
      this.startsPerSandbox.set(sandbox, times);
      const retryAfter = Math.max(1, Math.ceil((times[0]! + START_WINDOW_MS - now) / 1000));
      throw new CredproxyError('RATE_LIMITED', `${this.maxStartsPerMinute} logins were started from this sandbox in the last minute; try again in ${retryAfter} s`, { retryAfter });
    }
    times.push(now);
    this.startsPerSandbox.set(sandbox, times);
  }

  private countLive(sandbox: string, delta: number): void {
    const n = (this.livePerSandbox.get(sandbox) ?? 0) + delta;
    if (n <= 0) this.livePerSandbox.delete(sandbox);
    else this.livePerSandbox.set(sandbox, n);
  }

  private countOwner(owner: string, delta: number): void {
    const n = (this.perOwner.get(owner) ?? 0) + delta;
    if (n <= 0) this.perOwner.delete(owner);
    else this.perOwner.set(owner, n);
  }

  private armSweeper(): void {
    if (this.sweeper !== null) return;
    this.sweeper = setInterval(() => this.sweep(), this.sweepIntervalMs);
    this.sweeper.unref();
  }

  private disarmSweeper(): void {
    if (this.sweeper !== null) clearInterval(this.sweeper);
    this.sweeper = null;
  }
}
