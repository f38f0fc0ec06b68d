export { classifyProviderError, isProviderError, ProviderError, type ProviderFailureKind } from './errors.js';
export { BUILTIN_PRESETS } from './presets/index.js';
export { FALLBACK_EXPIRES_IN_SECONDS, OpenIdProvider, type ProviderRuntimeOptions } from './provider.js';
export { ProviderRegistry, type ProviderRegistryOptions, type ProviderSource } from './registry.js';
export { DEFAULT_PROVIDER_TIMEOUT_MS, type FetchLike } from './transport.js';
export type { OAuthProvider } from './types.js';
