import { CredproxyError } from './errors.js';

/** SPEC §2: provider names. */
export const PROVIDER_NAME_RE = /^[a-zA-Z0-9._@-]{1,64}$/;
/** The bucket names of SPEC §2, which still map to files and keyring entries unchanged. */
export const LEGACY_BUCKET_NAME_RE = /^[a-zA-Z0-9._@-]+$/;
/**
 * SPEC §8: bucket names are what llxprt-code accepts: spaces, `+`, `@`,
 * non-ASCII and more than 64 characters are fine. The bound is in UTF-8
 * bytes because the encoded name must fit in a file name (255 bytes) with
 * the provider and the lock suffixes (see store/entry-name.ts).
 */
export const MAX_BUCKET_NAME_BYTES = 120;
/**
 * Never in a bucket name: `:` (policies say PROVIDER:BUCKET), path and
 * shell-special characters `/ \ < > " | ? *`, control characters, line and
 * paragraph separators, bidirectional overrides and the BOM (they make a
 * name print as something else in logs and terminals), and lone surrogates
 * (they encode to U+FFFD: two names would share one entry).
 */
const BUCKET_FORBIDDEN = /[:/\\<>"|?*\p{Cc}\p{Cs}\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]/u;
/** Device names Windows reserves whatever the extension; llxprt-code refuses them too. */
const RESERVED_BUCKET = /^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$/i;
/** SPEC §2: API key names. */
export const KEY_NAME_RE = /^[a-zA-Z0-9._-]{1,64}$/;

export const DEFAULT_BUCKET = 'default';

export function isProviderName(s: unknown): s is string {
  return typeof s === 'string' && PROVIDER_NAME_RE.test(s);
}
export function isBucketName(s: unknown): s is string {
  if (typeof s !== 'string' || s.length === 0) return false;
  if (LEGACY_BUCKET_NAME_RE.test(s)) return s.length <= MAX_BUCKET_NAME_BYTES && s !== '.' && s !== '..' && !RESERVED_BUCKET.test(s);
  return (
    Buffer.byteLength(s, 'utf8') <= MAX_BUCKET_NAME_BYTES &&
    !BUCKET_FORBIDDEN.test(s) &&
    // Leading or trailing blanks make two names that look the same.
    s.trim() === s &&
    !RESERVED_BUCKET.test(s)
  );
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
