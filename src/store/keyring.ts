import { AsyncEntry, findCredentialsAsync, type EntryOptions } from '@napi-rs/keyring';
import { CredproxyError } from '../errors.js';
import type { SecretBackend } from './backend.js';

export const DEFAULT_KEYRING_SERVICE = 'credproxy';
/** D-Bus calls can hang (a locked keyring waiting for a prompt nobody sees). */
const CALL_TIMEOUT_MS = 5000;
const PROBE_TIMEOUT_MS = 2000;

// Pinning Secret Service turns "no usable keyring" into explicit errors
// instead of a silent fallback to the kernel keyring (MACHINE-NOTES).
const ENTRY_OPTIONS: EntryOptions = process.platform === 'linux' ? { linux: { store: 'secret-service' } } : {};

const FIX = 'start and unlock a Secret Service keyring (e.g. gnome-keyring) in this session, or use `--store file`';

/** One line saying why the keyring failed; the library text names D-Bus causes, never secrets. */
function keyringError(action: string, err: unknown): CredproxyError {
  if (err instanceof CredproxyError) return err;
  const detail = err instanceof Error ? err.message.split('\n')[0]!.slice(0, 200) : 'unknown failure';
  return new CredproxyError('STORE_UNAVAILABLE', `OS keyring ${action} failed (${detail}); ${FIX}`);
}

async function bounded<T>(action: string, run: (signal: AbortSignal) => Promise<T>, ms = CALL_TIMEOUT_MS): Promise<T> {
  const controller = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      controller.abort();
      reject(new CredproxyError('STORE_UNAVAILABLE', `OS keyring ${action} did not answer within ${ms / 1000} s; ${FIX}`));
    }, ms);
    timer.unref();
  });
  try {
    return await Promise.race([run(controller.signal), timeout]);
  } catch (err) {
    throw keyringError(action, err);
  } finally {
    clearTimeout(timer);
  }
}

/** The OS keyring through @napi-rs/keyring: one credential per entry under one service name. */
export class KeyringBackend implements SecretBackend {
  readonly name = 'keyring' as const;
  readonly service: string;

  constructor(service = DEFAULT_KEYRING_SERVICE) {
    this.service = service;
  }

  private entry(name: string): AsyncEntry {
    return new AsyncEntry(this.service, name, ENTRY_OPTIONS);
  }

  get(entry: string): Promise<string | null> {
    return bounded('read', (signal) => this.entry(entry).getPassword(signal));
  }

  set(entry: string, value: string): Promise<void> {
    return bounded('write', (signal) => this.entry(entry).setPassword(value, signal));
  }

  delete(entry: string): Promise<boolean> {
    return bounded('delete', (signal) => this.entry(entry).deleteCredential(signal));
  }

  async list(): Promise<string[]> {
    const creds = await bounded('search', (signal) => findCredentialsAsync(this.service, null, signal));
    return creds.map((c) => c.account);
  }
}

export type KeyringProbe = { ok: true } | { ok: false; reason: string };

/** Does a usable keyring answer? A search touches the bus and the unlocked collection. */
export async function probeKeyring(service = DEFAULT_KEYRING_SERVICE): Promise<KeyringProbe> {
  try {
    await bounded('probe', (signal) => findCredentialsAsync(service, null, signal), PROBE_TIMEOUT_MS);
    // A search can succeed on a locked collection; a read of a missing entry cannot.
    await bounded('probe', (signal) => new AsyncEntry(service, 'probe:credproxy', ENTRY_OPTIONS).getPassword(signal), PROBE_TIMEOUT_MS);
    return { ok: true };
  } catch (err) {
    const msg = err instanceof Error ? err.message : 'unknown failure';
    return { ok: false, reason: msg.replace(/; start and unlock.*$/, '') };
  }
}
