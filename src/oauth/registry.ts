import type { CredproxyConfig, ProviderConfig } from '../config.js';
import { CredproxyError } from '../errors.js';
import { isProviderName } from '../names.js';
import { BUILTIN_PRESETS } from './presets/index.js';
import { OpenIdProvider, type ProviderRuntimeOptions } from './provider.js';
import type { OAuthProvider } from './types.js';

export type ProviderSource = 'preset' | 'config';

export interface ProviderRegistryOptions {
  /** Providers from the config file; one named like a preset was already merged over it by parseConfig, and replaces it here. */
  config?: Pick<CredproxyConfig, 'providers'>;
  /** Defaults to the built-in presets. */
  presets?: Readonly<Record<string, ProviderConfig>>;
  runtime?: ProviderRuntimeOptions;
}

/** Built-in presets plus config-file providers, by name (SPEC §7). */
export class ProviderRegistry {
  private readonly settings = new Map<string, { source: ProviderSource; config: ProviderConfig }>();
  private readonly instances = new Map<string, OAuthProvider>();
  private readonly runtime: ProviderRuntimeOptions;

  constructor(options: ProviderRegistryOptions = {}) {
    this.runtime = options.runtime ?? {};
    for (const [name, config] of Object.entries(options.presets ?? BUILTIN_PRESETS)) {
      this.settings.set(name, { source: 'preset', config });
    }
    for (const [name, config] of Object.entries(options.config?.providers ?? {})) {
      this.settings.set(name, { source: 'config', config });
    }
  }

  names(): string[] {
    return [...this.settings.keys()].sort();
  }

  has(name: string): boolean {
    return this.settings.has(name);
  }

  source(name: string): ProviderSource | undefined {
    return this.settings.get(name)?.source;
  }

  /** The provider called `name`; PROVIDER_NOT_FOUND when neither a preset nor the config defines it. */
  get(name: string): OAuthProvider {
    const cached = this.instances.get(name);
    if (cached) return cached;
    const entry = this.settings.get(name);
    if (!entry) {
      const shown = isProviderName(name) ? `"${name}"` : 'with that name';
      throw new CredproxyError('PROVIDER_NOT_FOUND', `no OAuth provider ${shown} is configured (built-in: ${Object.keys(BUILTIN_PRESETS).join(', ')}; others go in config.json)`);
    }
    const provider = new OpenIdProvider(name, entry.config, this.runtime);
    this.instances.set(name, provider);
    return provider;
  }
}
