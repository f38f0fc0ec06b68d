import { DEFAULT_BUCKET, isBucketName, isKeyName, isProviderName } from '../names.js';
import { UsageError } from './io.js';

/** Validate command-line names up front: a bad name is a usage error (exit 2). */
export function providerArg(value: string): string {
  if (!isProviderName(value)) throw new UsageError(`invalid provider name '${printable(value)}' (allowed: letters, digits, . _ @ -, 1-64 characters)`);
  return value;
}

export function bucketArg(value: string | undefined): string {
  const bucket = value ?? DEFAULT_BUCKET;
  if (!isBucketName(bucket)) {
    throw new UsageError(
      `invalid bucket name '${printable(bucket)}' (1-120 bytes; not : / \\ < > " | ? *, control characters, leading or trailing blanks, . or .., or a reserved device name such as con or nul)`,
    );
  }
  return bucket;
}

export function keyNameArg(value: string): string {
  if (!isKeyName(value)) throw new UsageError(`invalid key name '${printable(value)}' (allowed: letters, digits, . _ -, 1-64 characters)`);
  return value;
}

/** Names are echoed in errors; keep control characters and huge inputs out of the terminal. */
function printable(s: string): string {
  const clipped = s.length > 70 ? `${s.slice(0, 64)}...` : s;
  return clipped.replace(/[^\x20-\x7e]/g, '?');
}
