import { join } from 'node:path';
import { CredproxyError } from '../errors.js';
import { ensurePrivateDir, type CredproxyDirs } from '../paths.js';
import type { SecretBackend } from './backend.js';
import { EncryptedFileBackend, type Kdf } from './file.js';
import { HostKeyStore, HostTokenStore } from './host-stores.js';
import { DEFAULT_KEYRING_SERVICE, KeyringBackend } from './keyring.js';
import { RefreshLocks } from './locks.js';
import type { StoreBackendName, StoreChoice } from './types.js';

export interface OpenHostStoresOptions {
  choice?: StoreChoice;
  dirs: CredproxyDirs;
  env?: NodeJS.ProcessEnv;
  /** Keyring service name (tests use unique ones). */
  service?: string;
  /** Receives the one-line notice of `auto` (the CLI prints it on stderr). */
  notice?: (line: string) => void;
  kdf?: Kdf;
  lockStaleMs?: number;
  keyringProbeTimeoutMs?: number;
  keyringCallTimeoutMs?: number;
}

export interface HostStores {
  tokens: HostTokenStore;
  keys: HostKeyStore;
  backend: StoreBackendName;
  /** Why this backend is in use (for status and the notice). */
  reason: string;
  locks: RefreshLocks;
  /** Releases held refresh locks and stops the keyring helper process. */
  close(): Promise<void>;
}

const CHOICES: readonly StoreChoice[] = ['auto', 'keyring', 'file'];

/** `--store` wins over CREDPROXY_STORE; default auto. */
export function storeChoiceFrom(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): StoreChoice {
  const value = flag ?? env.CREDPROXY_STORE ?? 'auto';
  if (!(CHOICES as readonly string[]).includes(value)) {
    throw new CredproxyError('USAGE', `unknown store backend '${value.slice(0, 32)}' (use auto, keyring or file)`);
  }
  return value as StoreChoice;
}

/**
 * SPEC §3 backend selection. `auto`: the keyring when a usable one answers,
 * else the encrypted file store, with one notice saying which and why.
 * An explicit `keyring` never falls back.
 */
export async function openHostStores(options: OpenHostStoresOptions): Promise<HostStores> {
  const env = options.env ?? process.env;
  const choice = options.choice ?? 'auto';
  const service = options.service ?? DEFAULT_KEYRING_SERVICE;
  let backend: SecretBackend;
  let reason: string;

  const fileBackend = async (): Promise<EncryptedFileBackend> => {
    const b = new EncryptedFileBackend({ dir: options.dirs.data, passphrase: env.CREDPROXY_PASSPHRASE, ...(options.kdf ? { kdf: options.kdf } : {}) });
    await b.key(); // open now: a wrong passphrase or unreadable dir is reported up front
    return b;
  };

  if (choice === 'file') {
    backend = await fileBackend();
    reason = 'chosen with --store/CREDPROXY_STORE';
  } else {
    const keyring = new KeyringBackend({
      service,
      env,
      stampPath: join(ensurePrivateDir(options.dirs.state), `keyring-${service.replace(/[^A-Za-z0-9._-]/g, '_')}.stamp`),
      ...(options.keyringCallTimeoutMs ? { callTimeoutMs: options.keyringCallTimeoutMs } : {}),
    });
    const probe = await keyring.probe(options.keyringProbeTimeoutMs);
    if (probe.ok) {
      backend = keyring;
      reason = choice === 'keyring' ? 'chosen with --store/CREDPROXY_STORE' : 'the OS keyring answered';
    } else {
      keyring.close();
      if (choice === 'keyring') {
        throw new CredproxyError('STORE_UNAVAILABLE', `${probe.reason}; start and unlock a Secret Service keyring (e.g. gnome-keyring) in this session, or use --store file`);
      }
      backend = await fileBackend();
      reason = `no usable OS keyring (${probe.reason})`;
      options.notice?.(`using the encrypted file store in ${options.dirs.data}: ${reason}`);
    }
  }

  const locks = new RefreshLocks({ dir: join(options.dirs.state, 'locks'), ...(options.lockStaleMs ? { staleMs: options.lockStaleMs } : {}) });
  const close = async (): Promise<void> => {
    await locks.releaseAll();
    backend.close?.();
  };
  return { tokens: new HostTokenStore(backend, locks), keys: new HostKeyStore(backend), backend: backend.name, reason, locks, close };
}
