export type { BucketStats, KeyStore, OAuthToken, RefreshLockOptions, SanitizedToken, StoreBackendName, StoreChoice, TokenStore } from './types.js';
export { keyEntry, parseEntry, tokenEntry, type SecretBackend } from './backend.js';
export { EncryptedFileBackend, scryptKdf, type EncryptedFileBackendOptions, type Kdf } from './file.js';
export { HostKeyStore, HostTokenStore } from './host-stores.js';
export {
  DEFAULT_KEYRING_CALL_TIMEOUT_MS,
  DEFAULT_KEYRING_PROBE_TIMEOUT_MS,
  DEFAULT_KEYRING_SERVICE,
  KeyringBackend,
  probeKeyring,
  type KeyringBackendOptions,
  type KeyringProbe,
} from './keyring.js';
export { DEFAULT_STALE_MS, RefreshLocks, type RefreshLocksOptions } from './locks.js';
export { mergeToken } from './merge.js';
export { openHostStores, storeChoiceFrom, type HostStores, type OpenHostStoresOptions } from './open.js';
export { sanitizeToken } from './sanitize.js';
