import { decodeBucket, encodeBucket } from './entry-name.js';
import type { StoreBackendName } from './types.js';

/**
 * Raw secret storage under which the host TokenStore and KeyStore are built.
 * Entry names are `token:<provider>:<bucket>` and `key:<name>` (names are
 * validated before they get here). Values are opaque strings (JSON for tokens).
 *
 * get() throws CredproxyError CORRUPT_ENTRY for an entry that exists but
 * cannot be read back, STORE_UNAVAILABLE / BAD_PASSPHRASE for a store that
 * cannot be used; it returns null only when the entry does not exist.
 */
export interface SecretBackend {
  readonly name: StoreBackendName;
  get(entry: string): Promise<string | null>;
  /**
   * The value without waiting, when the backend's cache is provably current
   * (null: provably absent); undefined when it cannot tell, and then `get`
   * answers. Lets a cached get_token be answered in the tick it arrived.
   */
  peek?(entry: string): string | null | undefined;
  set(entry: string, value: string): Promise<void>;
  /** true when something was deleted. */
  delete(entry: string): Promise<boolean>;
  /** All entry names, in no particular order. */
  list(): Promise<string[]>;
  /** Releases what the backend holds open (a watcher, a helper process). */
  close?(): void;
}

/** The bucket is encoded (entry-name.ts): names of SPEC §2 map to the same entry as before. */
export const tokenEntry = (provider: string, bucket: string): string => `token:${provider}:${encodeBucket(bucket)}`;
export const keyEntry = (name: string): string => `key:${name}`;

/** Inverse of tokenEntry/keyEntry; null for names that are neither. */
export function parseEntry(entry: string): { kind: 'token'; provider: string; bucket: string } | { kind: 'key'; name: string } | null {
  if (entry.startsWith('key:')) return { kind: 'key', name: entry.slice(4) };
  if (entry.startsWith('token:')) {
    const rest = entry.slice(6);
    // Provider names may contain neither ':' nor '/', so the first ':' splits.
    const i = rest.indexOf(':');
    if (i <= 0 || i === rest.length - 1) return null;
    const bucket = decodeBucket(rest.slice(i + 1));
    return bucket === null ? null : { kind: 'token', provider: rest.slice(0, i), bucket };
  }
  return null;
}
