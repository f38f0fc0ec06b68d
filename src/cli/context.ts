import { CredproxyError } from '../errors.js';
import { loadConfig, type CredproxyConfig } from '../config.js';
import { noTokenMessage } from '../login/hints.js';
import { ProviderRegistry } from '../oauth/registry.js';
import { createLogger, type Logger } from '../log.js';
import { resolveDirs, type CredproxyDirs } from '../paths.js';
import { FileCooldownStore } from '../refresh/cooldown.js';
import { RefreshCoordinator } from '../refresh/coordinator.js';
import { sanitizeToken } from '../store/sanitize.js';
import { openHostStores, storeChoiceFrom, type HostStores } from '../store/open.js';
import type { KeyStore, SanitizedToken, TokenStore } from '../store/types.js';
import { ProxySocketClient } from '../client/socket-client.js';
import { KEY_MANAGEMENT_UNAVAILABLE, ProxyKeyStore } from '../client/proxy-key-store.js';
import { ProxyTokenStore } from '../client/proxy-token-store.js';
import { notice as printNotice, type CliIO } from './io.js';

/** Everything a host-side command may need, opened once per process. */
export interface HostContext {
  dirs: CredproxyDirs;
  stores: HostStores;
  config: CredproxyConfig;
  providers: ProviderRegistry;
  /** The single refresh path; `token get` on the host goes through it too. */
  credentials: RefreshCoordinator;
}

/**
 * Per-invocation state of the CLI: decides host or sandbox mode once
 * (CREDPROXY_SOCKET set = sandbox) and owns whatever it opens.
 */
export class CliContext {
  readonly io: CliIO;
  storeChoice: string | undefined;
  /** What the process exits with when the action itself succeeded (run/exec set it). */
  exitCode = 0;
  /** serve/run log at info; one-shot commands only say what went wrong. CREDPROXY_LOG_LEVEL wins. */
  defaultLogLevel = 'warn';
  private log: Logger | undefined;
  private hostPromise: Promise<HostContext> | undefined;
  private proxyClient: ProxySocketClient | undefined;

  constructor(io: CliIO) {
    this.io = io;
  }

  get inSandbox(): boolean {
    return Boolean(this.io.env.CREDPROXY_SOCKET);
  }

  notice(line: string): void {
    printNotice(this.io, line);
  }

  dirs(): CredproxyDirs {
    return resolveDirs(this.io.env);
  }

  /** JSON log lines on stderr, shared by everything this invocation opens. */
  get logger(): Logger {
    this.log ??= createLogger({ level: this.io.env.CREDPROXY_LOG_LEVEL ?? this.defaultLogLevel });
    return this.log;
  }

  host(): Promise<HostContext> {
    this.hostPromise ??= this.openHost();
    return this.hostPromise;
  }

  /** The config file alone (serve needs it before opening stores, to resolve a profile). */
  async config(): Promise<CredproxyConfig> {
    return loadConfig(this.dirs().config);
  }

  client(): ProxySocketClient {
    this.proxyClient ??= ProxySocketClient.fromEnv(this.io.env);
    return this.proxyClient;
  }

  async tokenStore(): Promise<TokenStore> {
    return this.inSandbox ? new ProxyTokenStore(this.client()) : (await this.host()).stores.tokens;
  }

  async keyStore(): Promise<KeyStore> {
    return this.inSandbox ? new ProxyKeyStore(this.client()) : (await this.host()).stores.keys;
  }

  /** Key management exists only on the host (checked before stdin is read). */
  async hostOnlyKeyStore(): Promise<KeyStore> {
    if (this.inSandbox) throw new CredproxyError('UNAUTHORIZED', KEY_MANAGEMENT_UNAVAILABLE);
    return (await this.host()).stores.keys;
  }

  async hostOnlyTokenStore(command: string): Promise<TokenStore> {
    if (this.inSandbox) throw new CredproxyError('UNAUTHORIZED', `${command} is a host command; run it outside the sandbox.`);
    return (await this.host()).stores.tokens;
  }

  /** A usable access token: through the proxy in a sandbox, through the refresh path on the host. */
  async accessToken(provider: string, bucket: string): Promise<SanitizedToken> {
    if (this.inSandbox) return this.client().request('get_token', { provider, bucket });
    const token = await (await this.host()).credentials.getToken(provider, bucket);
    if (!token) throw new CredproxyError('NOT_FOUND', noTokenMessage(provider, bucket));
    return sanitizeToken(token);
  }

  async close(): Promise<void> {
    await this.proxyClient?.close();
    if (this.hostPromise) {
      const host = await this.hostPromise.catch(() => undefined);
      await host?.credentials.close();
      await host?.stores.close();
    }
    this.log?.flush();
  }

  private async openHost(): Promise<HostContext> {
    const dirs = this.dirs();
    const config = await loadConfig(dirs.config);
    const stores = await openHostStores({
      choice: storeChoiceFrom(this.storeChoice, this.io.env),
      dirs,
      env: this.io.env,
      notice: (line) => this.notice(line),
    });
    const providers = new ProviderRegistry({ config });
    const credentials = new RefreshCoordinator({
      store: stores.tokens,
      providers,
      cooldown: FileCooldownStore.inStateDir(dirs.state),
      logger: this.logger,
    });
    return { dirs, stores, config, providers, credentials };
  }
}
