import { isBucketName, LEGACY_BUCKET_NAME_RE } from '../names.js';

/**
 * Bucket names as they appear in store entry names, lock files and
 * cooldown files. A name made only of the characters SPEC §2 allowed
 * (letters, digits, `. _ @ -`) is used as it is, so every entry written
 * before bucket names were widened keeps its file and keyring entry. Any
 * other name becomes `~` + base64url of its UTF-8 bytes: `~` never occurs
 * in the plain form and base64url uses only letters, digits, `-` and `_`,
 * so the two forms cannot collide, nothing can leave a directory or hide
 * as a dotfile, and the result is the same on every file system and keyring.
 */
const ENCODED_PREFIX = '~';
const BASE64URL_RE = /^[A-Za-z0-9_-]+$/;

export function encodeBucket(bucket: string): string {
  if (LEGACY_BUCKET_NAME_RE.test(bucket)) return bucket;
  return ENCODED_PREFIX + Buffer.from(bucket, 'utf8').toString('base64url');
}

/** Inverse of encodeBucket; null for anything encodeBucket cannot have produced from a valid name. */
export function decodeBucket(encoded: string): string | null {
  if (!encoded.startsWith(ENCODED_PREFIX)) return isBucketName(encoded) ? encoded : null;
  const body = encoded.slice(ENCODED_PREFIX.length);
  if (!BASE64URL_RE.test(body)) return null;
  const bucket = Buffer.from(body, 'base64url').toString('utf8');
  // Only the canonical form: a name has exactly one encoding, so one entry.
  return isBucketName(bucket) && encodeBucket(bucket) === encoded ? bucket : null;
}
