import { z } from 'zod';
import { isBucketName, KEY_NAME_RE, PROVIDER_NAME_RE } from '../names.js';
import { sanitizeToken } from '../store/sanitize.js';
import type { OAuthToken, SanitizedToken } from '../store/types.js';
import type { WireErrorCode } from '../errors.js';

/** SPEC §4: the base protocol version; handshakes are always sent and answered in it. */
export const PROTOCOL_VERSION = 1;
/**
 * SPEC §8: the highest version spoken, agreed when both sides offer it.
 * Version 2 is version 1 with 4 MiB frames both ways (and the ops added
 * with it, which the server also answers on version 1).
 */
export const MAX_PROTOCOL_VERSION = 2;

const provider = z.string().regex(PROVIDER_NAME_RE, 'invalid provider name');
const bucket = z.string().refine(isBucketName, 'invalid bucket name').optional();
const keyName = z.string().regex(KEY_NAME_RE, 'invalid key name');
/** Login session ids are 128-bit random values in lowercase hex. */
export const SESSION_ID_RE = /^[0-9a-f]{32}$/;
const sessionId = z.string().regex(SESSION_ID_RE, 'invalid session_id');

/** SPEC §2 token shape; extra provider fields pass through untouched. */
export const TokenSchema = z.looseObject({
  access_token: z.string().min(1),
  expiry: z.number().finite().nonnegative(),
  token_type: z.string().optional(),
  refresh_token: z.string().optional(),
  scope: z.string().optional(),
});

/** A token arriving from a client: refresh_token is dropped before anything else. */
const IncomingTokenSchema = z
  .looseObject({})
  .transform((raw): Record<string, unknown> => sanitizeToken(raw as OAuthToken))
  .pipe(TokenSchema);

const ProviderBucket = z.object({ provider, bucket });
const Empty = z.object({});

/** One schema per operation's payload (SPEC §4 table). Unknown fields are ignored. */
export const OP_PAYLOADS = {
  get_token: ProviderBucket,
  save_token: z.object({ provider, bucket, token: IncomingTokenSchema }),
  remove_token: ProviderBucket,
  list_providers: Empty,
  list_buckets: z.object({ provider }),
  refresh_token: ProviderBucket,
  get_api_key: z.object({ name: keyName }),
  list_api_keys: Empty,
  oauth_initiate: ProviderBucket,
  oauth_exchange: z.object({ session_id: sessionId, code: z.string().min(1).max(8192) }),
  oauth_poll: z.object({ session_id: sessionId }),
  oauth_cancel: z.object({ session_id: sessionId }),
  cancel: z.object({ targetId: z.string().min(1).max(256) }),
  get_bucket_stats: ProviderBucket,
  has_api_key: z.object({ name: keyName }),
} as const;

export type Op = keyof typeof OP_PAYLOADS;
export const OPS = Object.keys(OP_PAYLOADS) as Op[];
export type OpPayload<O extends Op> = z.output<(typeof OP_PAYLOADS)[O]>;
/** What a client passes for an op (before validation / transforms). */
export type OpInput<O extends Op> = z.input<(typeof OP_PAYLOADS)[O]>;

export function isOp(s: unknown): s is Op {
  return typeof s === 'string' && Object.prototype.hasOwnProperty.call(OP_PAYLOADS, s);
}

export type FlowType = 'pkce_redirect' | 'device_code' | 'browser_redirect';

export interface OAuthInitiateData {
  session_id: string;
  flow_type: FlowType;
  auth_url?: string;
  verification_url?: string;
  user_code?: string;
  pollIntervalMs?: number;
}

export type OAuthPollData =
  | { status: 'pending'; pollIntervalMs: number }
  | ({ status: 'complete' } & SanitizedToken)
  | { status: 'error'; code: WireErrorCode; error: string };

/** The `data` of a successful answer, per op. */
export interface OpData {
  get_token: SanitizedToken;
  save_token: Record<string, never>;
  /** What went: the whole entry, or only the access token (the host keeps its login). */
  remove_token: { removed?: 'entry' | 'access_token' };
  list_providers: { providers: string[] };
  list_buckets: { buckets: string[] };
  refresh_token: SanitizedToken;
  get_api_key: { key: string };
  list_api_keys: { keys: string[] };
  oauth_initiate: OAuthInitiateData;
  oauth_exchange: SanitizedToken;
  oauth_poll: OAuthPollData;
  oauth_cancel: Record<string, never>;
  cancel: { cancelled: boolean };
  get_bucket_stats: BucketStatsData;
  has_api_key: { exists: boolean };
}

/** get_bucket_stats: the server's own counters since it started (lastUsed in ms since the epoch). */
export interface BucketStatsData {
  bucket: string;
  requestCount: number;
  percentage: number;
  lastUsed?: number;
}

/** Envelope of every request after the handshake. Payload is validated per op. */
export const RequestEnvelopeSchema = z.object({
  v: z.int().min(PROTOCOL_VERSION).max(MAX_PROTOCOL_VERSION),
  id: z.string().min(1).max(256),
  op: z.string(),
  payload: z.record(z.string(), z.unknown()).optional(),
});

export const HandshakeSchema = z.object({
  v: z.literal(PROTOCOL_VERSION),
  op: z.literal('handshake'),
  payload: z.object({
    minVersion: z.int().min(1),
    maxVersion: z.int().min(1),
    capabilityToken: z.string().max(1024).optional(),
  }),
});
export type Handshake = z.output<typeof HandshakeSchema>;

export interface SuccessResponse<D = unknown> {
  v: number;
  id?: string;
  op?: 'handshake';
  ok: true;
  data: D;
}
export interface ErrorResponse {
  v: number;
  id?: string;
  op?: 'handshake';
  ok: false;
  code: WireErrorCode;
  error: string;
  retryAfter?: number;
}
export type Response<D = unknown> = SuccessResponse<D> | ErrorResponse;
