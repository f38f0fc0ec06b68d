import type { z } from 'zod';
import { CredproxyError, isWireErrorCode, type WireErrorCode } from '../errors.js';
import type { Logger } from '../log.js';
import { noTokenMessage } from '../login/hints.js';
import { DEFAULT_BUCKET } from '../names.js';
import { isOp, OP_PAYLOADS, PROTOCOL_VERSION, type Op, type OpData, type OpPayload } from '../protocol/messages.js';
import type { CredentialService } from '../refresh/types.js';
import { sanitizeToken } from '../store/sanitize.js';
import { mergeSandboxSave, sandboxToken } from '../store/sandbox-token.js';
import type { KeyStore, TokenStore } from '../store/types.js';
import { BucketUsage } from './bucket-stats.js';
import type { LoginPort, RequestContext } from './context.js';
import { Deadlines } from './deadlines.js';
import type { Policy } from './policy.js';

/** SPEC §5: simple host operations (store read, write, list). */
export const HOST_OP_TIMEOUT_MS = 15_000;
/**
 * Operations that may refresh or wait for the refresh lock (each provider
 * call has its own 15 s, retries included stay inside the client's 30 s).
 */
export const CREDENTIAL_OP_TIMEOUT_MS = 30_000;

export interface DispatcherOptions {
  tokens: TokenStore;
  keys: KeyStore;
  credentials: CredentialService;
  policy: Policy;
  logger: Logger;
  login?: LoginPort;
  hostOpTimeoutMs?: number;
  credentialOpTimeoutMs?: number;
}

/** Validated names a request concerned, for the audit line. */
export interface AuditFields {
  provider?: string;
  bucket?: string;
  key?: string;
}

export type Outcome =
  | { ok: true; data: unknown }
  | { ok: false; code: WireErrorCode; error: string; retryAfter?: number };

export interface DispatchResult {
  /** The op when it is a known one, else 'unknown' (raw op strings are never logged). */
  op: Op | 'unknown';
  outcome: Outcome;
  audit: AuditFields;
  /** Refused by the schema or the policy, before any store: audited in aggregate, not line by line. */
  refused?: true;
}

type Bound = 'host' | 'credential' | 'none';

interface OpSpec<O extends Op> {
  bound: Bound;
  /** Names for the audit line; only from the validated payload. */
  audit(p: OpPayload<O>): AuditFields;
  /** Returns why the policy refuses this request, or null. Runs before any store access. */
  deny(p: OpPayload<O>, policy: Policy): string | null;
  run(p: OpPayload<O>, ctx: RequestContext): Promise<OpData[O]>;
  /**
   * The answer without waiting, when it is known at once (a cached token);
   * undefined sends the request down `run`. Answering in the tick the
   * request arrived keeps the reply ahead of the event loop's other work.
   */
  fast?(p: OpPayload<O>): OpData[O] | undefined;
}

type OpTable = { [O in Op]: OpSpec<O> };

const LOCAL_CODE_TEXT: Record<string, string> = {
  STORE_UNAVAILABLE: 'the credential store on the host is unavailable',
  CORRUPT_ENTRY: 'the stored entry is corrupt; run `credproxy status` on the host',
  BAD_PASSPHRASE: 'the credential store on the host cannot be opened',
  TIMEOUT: 'a host operation timed out',
  LOCK_FAILED: 'the credential is busy; try again',
};

const SAFE_SEGMENT = /^[A-Za-z0-9_]{1,32}$/;

function valueAt(root: unknown, path: readonly PropertyKey[]): unknown {
  let v = root;
  for (const seg of path) {
    if (typeof v !== 'object' || v === null) return undefined;
    v = (v as Record<PropertyKey, unknown>)[seg];
  }
  return v;
}

/** A short reason naming the field; built from schema keys and issue kinds only. */
function describeIssue(issue: z.core.$ZodIssue, payload: unknown): string {
  const field = issue.path.map(String).filter((s) => SAFE_SEGMENT.test(s)).join('.') || 'payload';
  switch (issue.code) {
    case 'invalid_type':
      return valueAt(payload, issue.path) === undefined ? `missing ${field}` : `wrong type for ${field}`;
    case 'invalid_format':
      return `bad format for ${field}`;
    case 'too_big':
    case 'too_small':
      return `${field} out of range`;
    default:
      return `invalid ${field}`;
  }
}

function tokenFields(p: { provider: string; bucket?: string | undefined }): AuditFields {
  return { provider: p.provider, bucket: p.bucket ?? DEFAULT_BUCKET };
}

function denyToken(p: { provider: string; bucket?: string | undefined }, policy: Policy): string | null {
  const bucket = p.bucket ?? DEFAULT_BUCKET;
  return policy.allowsToken(p.provider, bucket) ? null : `${p.provider}:${bucket} is not allowed by the policy`;
}

/** get_token/refresh_token: also refused for a provider the gateway serves (zero credentials in the sandbox). */
function denyTokenRead(p: { provider: string; bucket?: string | undefined }, policy: Policy): string | null {
  return denyToken(p, policy) ?? policy.gatewayTokenRefusal(p.provider);
}

function denyWrite(policy: Policy): string | null {
  if (policy.allowsWrite) return null;
  return policy.readOnlyFlag ? 'the policy is read-only' : 'token writes from the sandbox are off (start the proxy with --allow-write)';
}

function denyLogin(policy: Policy): string | null {
  if (policy.allowsLogin) return null;
  return policy.readOnlyFlag ? 'the policy is read-only' : 'logins from the sandbox are off (--no-login)';
}

const NO_AUDIT = (): AuditFields => ({});
const NO_DENY = (): string | null => null;

/**
 * The one dispatch table, and the one order every request goes through:
 * envelope and payload schema (INVALID_REQUEST) -> policy (UNAUTHORIZED) ->
 * the store or service, bounded in time. Never rejects.
 */
export class Dispatcher {
  private readonly o: DispatcherOptions;
  private readonly hostOpTimeoutMs: number;
  private readonly credentialOpTimeoutMs: number;
  private readonly table: OpTable;
  private readonly deadlines: Deadlines;
  /** Served-token counters for get_bucket_stats. */
  readonly usage = new BucketUsage();

  constructor(options: DispatcherOptions) {
    this.o = options;
    this.hostOpTimeoutMs = options.hostOpTimeoutMs ?? HOST_OP_TIMEOUT_MS;
    this.credentialOpTimeoutMs = options.credentialOpTimeoutMs ?? CREDENTIAL_OP_TIMEOUT_MS;
    // A tenth of the shorter bound, at most 250 ms: a 15 s bound may end up to 1.7% late.
    const tick = Math.min(250, Math.max(5, Math.floor(Math.min(this.hostOpTimeoutMs, this.credentialOpTimeoutMs) / 10)));
    this.deadlines = new Deadlines(tick);
    this.table = this.buildTable();
  }

  dispatch(envelope: Record<string, unknown>, ctx: RequestContext): DispatchResult | Promise<DispatchResult> {
    const op = envelope.op;
    const knownOp = isOp(op) ? op : 'unknown';
    const v = envelope.v;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < PROTOCOL_VERSION || v > ctx.version) {
      return invalid(knownOp, `unsupported protocol version in v (expected ${PROTOCOL_VERSION}${ctx.version > PROTOCOL_VERSION ? ` to ${ctx.version}` : ''})`);
    }
    if (!isOp(op)) return invalid('unknown', 'unknown op');
    const rawPayload = envelope.payload === undefined ? {} : envelope.payload;
    if (typeof rawPayload !== 'object' || rawPayload === null || Array.isArray(rawPayload)) {
      return invalid(op, 'payload must be an object');
    }
    return this.run(op, rawPayload, ctx);
  }

  private run<O extends Op>(op: O, rawPayload: object, ctx: RequestContext): DispatchResult | Promise<DispatchResult> {
    const parsed = OP_PAYLOADS[op].safeParse(rawPayload);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      return invalid(op, issue === undefined ? 'invalid payload' : describeIssue(issue, rawPayload));
    }
    const payload = parsed.data as OpPayload<O>;
    const spec = this.table[op] as OpSpec<O>;
    const audit = spec.audit(payload);
    const denied = spec.deny(payload, this.o.policy);
    if (denied !== null) return { op, audit, outcome: { ok: false, code: 'UNAUTHORIZED', error: denied }, refused: true };
    if (spec.fast !== undefined) {
      try {
        const data = spec.fast(payload);
        if (data !== undefined) return { op, audit, outcome: { ok: true, data } };
      } catch (err) {
        return { op, audit, outcome: this.errorOutcome(op, err) };
      }
    }
    return this.runWaiting(op, spec, payload, audit, ctx);
  }

  private async runWaiting<O extends Op>(op: O, spec: OpSpec<O>, payload: OpPayload<O>, audit: AuditFields, ctx: RequestContext): Promise<DispatchResult> {
    try {
      const data = await this.bounded(spec.bound, spec.run(payload, ctx));
      return { op, audit, outcome: { ok: true, data } };
    } catch (err) {
      return { op, audit, outcome: this.errorOutcome(op, err) };
    }
  }

  private bounded<T>(bound: Bound, work: Promise<T>): Promise<T> {
    if (bound === 'none') return work;
    const ms = bound === 'host' ? this.hostOpTimeoutMs : this.credentialOpTimeoutMs;
    return this.deadlines.bound(work, ms, () => new CredproxyError('INTERNAL_ERROR', `host operation timed out after ${Math.ceil(ms / 1000)} s`));
  }

  /** Wire-coded CredproxyErrors pass through; everything else is INTERNAL_ERROR with a fixed text. */
  private errorOutcome(op: Op, err: unknown): Outcome {
    if (err instanceof CredproxyError) {
      if (isWireErrorCode(err.code)) {
        const out: Outcome = { ok: false, code: err.code, error: err.message };
        if (err.retryAfter !== undefined) out.retryAfter = Math.max(1, Math.ceil(err.retryAfter));
        if (err.code === 'INTERNAL_ERROR') this.o.logger.warn({ op, code: err.code }, 'request failed');
        return out;
      }
      this.o.logger.warn({ op, code: err.code }, 'request failed');
      return { ok: false, code: 'INTERNAL_ERROR', error: LOCAL_CODE_TEXT[err.code] ?? 'internal error on the host' };
    }
    // Only the error's class name: a foreign message may carry provider data.
    const errName = err instanceof Error ? err.name : typeof err;
    this.o.logger.error({ op, errName }, 'request failed with an unexpected error');
    return { ok: false, code: 'INTERNAL_ERROR', error: 'internal error on the host' };
  }

  private buildTable(): OpTable {
    const { tokens, keys, credentials } = this.o;
    const login = (): LoginPort => {
      if (this.o.login === undefined) throw new CredproxyError('INTERNAL_ERROR', 'login is not available on this server');
      return this.o.login;
    };
    return {
      get_token: {
        bound: 'credential',
        audit: tokenFields,
        deny: denyTokenRead,
        run: async (p) => {
          const bucket = p.bucket ?? DEFAULT_BUCKET;
          const token = await credentials.getToken(p.provider, bucket);
          if (token === null) throw notStored(p.provider, bucket);
          this.usage.noteServed(p.provider, bucket);
          return sanitizeToken(token);
        },
        fast: (p) => {
          const bucket = p.bucket ?? DEFAULT_BUCKET;
          const token = credentials.peekToken?.(p.provider, bucket);
          if (token === null) throw notStored(p.provider, bucket);
          if (token === undefined) return undefined;
          this.usage.noteServed(p.provider, bucket);
          return sanitizeToken(token);
        },
      },
      save_token: {
        bound: 'credential',
        audit: tokenFields,
        deny: (p, policy) => denyWrite(policy) ?? denyToken(p, policy),
        run: async (p) => {
          // The schema already dropped any refresh_token; sandboxToken keeps
          // only bounded §2 fields, and the merge keeps the host's own fields.
          const token = sandboxToken(p.token, Date.now() / 1000);
          await credentials.save(p.provider, p.bucket ?? DEFAULT_BUCKET, token, mergeSandboxSave);
          return {};
        },
      },
      remove_token: {
        bound: 'credential',
        audit: tokenFields,
        deny: (p, policy) => denyWrite(policy) ?? denyToken(p, policy),
        // Idempotent (SPEC §8): removing what is already gone is the state the caller wanted.
        run: async (p) => {
          const bucket = p.bucket ?? DEFAULT_BUCKET;
          if (!(await this.tokenExists(p.provider, bucket))) return {};
          const removed = await credentials.remove(p.provider, bucket, { keepRefreshToken: true });
          this.usage.forget(p.provider, bucket);
          return { removed };
        },
      },
      list_providers: {
        bound: 'host',
        audit: NO_AUDIT,
        deny: NO_DENY,
        run: async () => ({ providers: this.o.policy.filterProviders(await tokens.listProviders()) }),
      },
      list_buckets: {
        bound: 'host',
        audit: (p) => ({ provider: p.provider }),
        deny: (p, policy) => (policy.allowsProvider(p.provider) ? null : `${p.provider} is not allowed by the policy`),
        run: async (p) => ({ buckets: this.o.policy.filterBuckets(p.provider, await tokens.listBuckets(p.provider)) }),
      },
      refresh_token: {
        bound: 'credential',
        audit: tokenFields,
        deny: denyTokenRead,
        run: async (p) => {
          const bucket = p.bucket ?? DEFAULT_BUCKET;
          const token = await credentials.refresh(p.provider, bucket);
          this.usage.noteServed(p.provider, bucket);
          return sanitizeToken(token);
        },
      },
      get_bucket_stats: {
        bound: 'host',
        audit: tokenFields,
        deny: denyToken,
        // Whether a token is stored comes from the store (a corrupt entry is an error, not "absent"); the numbers from the counters.
        run: async (p) => {
          const bucket = p.bucket ?? DEFAULT_BUCKET;
          if ((await tokens.getToken(p.provider, bucket)) === null) throw notStored(p.provider, bucket);
          return this.usage.stats(p.provider, bucket);
        },
        fast: (p) => {
          const bucket = p.bucket ?? DEFAULT_BUCKET;
          const token = tokens.peekToken?.(p.provider, bucket);
          if (token === null) throw notStored(p.provider, bucket);
          return token === undefined ? undefined : this.usage.stats(p.provider, bucket);
        },
      },
      get_api_key: {
        bound: 'host',
        audit: (p) => ({ key: p.name }),
        deny: (p, policy) => (policy.allowsKey(p.name) ? policy.gatewayKeyRefusal(p.name) : `key ${p.name} is not allowed by the policy`),
        run: async (p) => {
          const key = await keys.getKey(p.name);
          if (key === null) throw new CredproxyError('NOT_FOUND', `no API key named ${p.name}`);
          return { key };
        },
      },
      has_api_key: {
        bound: 'host',
        audit: (p) => ({ key: p.name }),
        deny: (p, policy) => (policy.allowsKey(p.name) ? null : `key ${p.name} is not allowed by the policy`),
        run: async (p) => ({ exists: await keys.hasKey(p.name) }),
      },
      list_api_keys: {
        bound: 'host',
        audit: NO_AUDIT,
        deny: NO_DENY,
        run: async () => ({ keys: this.o.policy.filterKeys(await keys.listKeys()) }),
      },
      oauth_initiate: {
        bound: 'credential',
        audit: tokenFields,
        deny: (p, policy) => denyLogin(policy) ?? denyToken(p, policy),
        run: async (p, ctx) => login().initiate(p.provider, p.bucket ?? DEFAULT_BUCKET, ctx.peer, ctx.signal),
      },
      oauth_exchange: {
        bound: 'credential',
        audit: NO_AUDIT,
        deny: (_p, policy) => denyLogin(policy),
        run: async (p, ctx) => login().exchange(p.session_id, p.code, ctx.peer, ctx.signal),
      },
      oauth_poll: {
        bound: 'credential',
        audit: NO_AUDIT,
        deny: (_p, policy) => denyLogin(policy),
        run: async (p, ctx) => login().poll(p.session_id, ctx.peer, ctx.signal),
      },
      oauth_cancel: {
        bound: 'credential',
        audit: NO_AUDIT,
        deny: (_p, policy) => denyLogin(policy),
        run: async (p, ctx) => {
          await login().cancel(p.session_id, ctx.peer);
          return {};
        },
      },
      cancel: {
        bound: 'none',
        audit: NO_AUDIT,
        deny: NO_DENY,
        run: async (p, ctx) => ({ cancelled: ctx.cancel(p.targetId) }),
      },
    };
  }


  private async tokenExists(provider: string, bucket: string): Promise<boolean> {
    try {
      return (await this.o.tokens.getToken(provider, bucket)) !== null;
    } catch (err) {
      if (err instanceof CredproxyError && err.code === 'CORRUPT_ENTRY') return true;
      throw err;
    }
  }
}

function notStored(provider: string, bucket: string): CredproxyError {
  return new CredproxyError('NOT_FOUND', noTokenMessage(provider, bucket));
}

function invalid(op: Op | 'unknown', reason: string): DispatchResult {
  return { op, audit: {}, outcome: { ok: false, code: 'INVALID_REQUEST', error: reason }, refused: true };
}
