import { CredproxyError } from './errors.js';

/** SPEC §2: provider and bucket names. */
export const PROVIDER_NAME_RE = /^[a-zA-Z0-9._@-]{1,64}$/;
export const BUCKET_NAME_RE = PROVIDER_NAME_RE;
/** SPEC §2: API key names. */
export const KEY_NAME_RE = /^[a-zA-Z0-9._-]{1,64}$/;

export const DEFAULT_BUCKET = 'default';

export function isProviderName(s: unknown): s is string {
  return typeof s === 'string' && PROVIDER_NAME_RE.test(s);
}
export function isBucketName(s: unknown): s is string {
  return typeof s === 'string' && BUCKET_NAME_RE.test(s);
}
export function isKeyName(s: unknown): s is string {
  return typeof s === 'string' && KEY_NAME_RE.test(s);
}

/** Throws INVALID_REQUEST for a bad name; used at every host-store entry point. */
export function assertProviderName(s: string): void {
  if (!isProviderName(s)) throw new CredproxyError('INVALID_REQUEST', 'invalid provider name');
}
export function assertBucketName(s: string): void {
  if (!isBucketName(s)) throw new CredproxyError('INVALID_REQUEST', 'invalid bucket name');
}
export function assertKeyName(s: string): void {
  if (!isKeyName(s)) throw new CredproxyError('INVALID_REQUEST', 'invalid key name');
}
