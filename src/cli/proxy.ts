import { join } from 'node:path';
import { keepYoungGenerationSmall } from '../heap.js';
import type { Logger } from '../log.js';
import { ensurePrivateDir } from '../paths.js';
import { generateCapabilityToken } from '../server/capability.js';
import type { Policy } from '../server/policy.js';
import { ProxyServer } from '../server/server.js';
import { howToStore } from '../login/hints.js';
import type { CliContext, HostContext } from './context.js';
import { LoginSessionManager, sessionTimeoutFromEnv, type LoginEvent } from '../login/session-manager.js';
import { policyFromFlags, type PolicyFlags } from './policy-flags.js';
import { createSocketDir, removeSocketDir } from './socket-dir.js';
import { UsageError } from './io.js';
import type { RunningGateway } from '../gateway/index.js';
import type { GatewayListen } from '../gateway/server.js';
import type { Command } from 'commander';
import type { RunningEgress } from '../egress/index.js';
import type { HostRule } from '../egress/hosts.js';

export interface ProxyFlags extends PolicyFlags {
  socketDir?: string;
  /** `unix` (default), `tcp` (127.0.0.1, ephemeral port) or `tcp:HOST[:PORT]`. */
  transport?: string;
  peerCheck: boolean;
  allowRoot?: boolean;
  /** serve --rate-limit: requests per second per connection (SPEC §5 default 60). */
  rateLimit?: string;
  /** --gateway: the HTTP gateway that injects credentials (issue 13). */
  gateway?: boolean;
  /** --gateway-expose-tokens: the socket still hands out gateway-served credentials. */
  gatewayExposeTokens?: boolean;
}

/** The gateway flags shared by `serve` and `run`. */
export function addGatewayOptions(cmd: Command): Command {
  return cmd
    .option('--gateway', 'start the HTTP gateway: API calls with the placeholder get the real credential injected on the host')
    .option('--gateway-expose-tokens', 'with --gateway, still answer get_token/refresh_token/get_api_key for the credentials the gateway serves');
}

/** `--rate-limit N`: a whole number of requests per second, 1 to 1,000,000. */
export function parseRateLimit(raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || !Number.isSafeInteger(n) || n < 1 || n > 1_000_000) {
    throw new UsageError(`invalid --rate-limit '${raw.slice(0, 40)}' (a whole number of requests per second per connection, 1 to 1000000)`);
  }
  return n;
}

/** A running proxy as `serve` and `run` use it: the server plus the directory it owns. */
export interface RunningProxy {
  server: ProxyServer;
  socketPath: string;
  /** The directory created for this proxy (removed by stop), or undefined with --socket-dir. */
  ownDir: string | undefined;
  capabilityToken: string;
  logger: Logger;
  /** Stop the server (socket removed) and remove the directory; idempotent. */
  stop(): Promise<void>;
  /** Synchronous last resort on a forced exit. */
  removeNow(): void;
  /** The gateway, with --gateway. */
  gateway: RunningGateway | undefined;
  /** The egress proxy, with --allow-host (issue 15). */
  egress: RunningEgress | undefined;
}

/** Where the gateway listens; given by the caller, which knows the sandbox. */
export interface GatewayPlacement {
  /** Listen addresses; a `{ path }` relative name is placed in the proxy's socket directory. */
  listen: GatewayListen[];
}

/** The egress proxy (issue 15): its rules and where it listens (relative paths as for the gateway). */
export interface EgressPlacement {
  rules: readonly HostRule[];
  listen: GatewayListen[];
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** `tcp`, `tcp:HOST`, `tcp:HOST:PORT`, `tcp:[V6]:PORT`; undefined for the Unix socket. */
/** CREDPROXY_IDLE_TIMEOUT_SECONDS: how long the server keeps a connection with nothing going on (default 6 minutes). */
export function idleTimeoutFromEnv(env: NodeJS.ProcessEnv): { idleTimeoutMs?: number } {
  const raw = env.CREDPROXY_IDLE_TIMEOUT_SECONDS;
  if (raw === undefined || raw === '') return {};
  const n = Number(raw);
  if (!/^\d+$/.test(raw.trim()) || !Number.isSafeInteger(n) || n < 1 || n > 24 * 3600) {
    throw new UsageError('CREDPROXY_IDLE_TIMEOUT_SECONDS must be a whole number of seconds (1 to 86400)');
  }
  return { idleTimeoutMs: n * 1000 };
}

/** The host-side line for a login started from the sandbox. */
export function describeLoginEvent(e: LoginEvent): string {
  const who = e.peer.pid === null ? `connection ${e.peer.connectionId}` : `pid ${e.peer.pid}`;
  const what = `login from the sandbox (${who}) for ${e.provider}:${e.bucket}`;
  if (e.phase === 'started') return `${what} started (${e.flow})`;
  if (e.phase === 'failed') return `${what} failed (${e.code ?? 'error'})`;
  return `${what} completed: account ${e.account ?? 'unknown (the provider returned no id_token)'}`;
}

export function parseTransport(spec: string | undefined): { host: string; port: number } | undefined {
  if (spec === undefined || spec === 'unix') return undefined;
  if (spec === 'tcp') return { host: '127.0.0.1', port: 0 };
  const m = /^tcp:(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+))(?::(\d{1,5}))?$/.exec(spec);
  const port = m?.[3] === undefined ? 0 : Number(m[3]);
  if (!m || port > 65535) throw new UsageError(`invalid --transport '${spec.slice(0, 80)}' (use unix, tcp, tcp:HOST or tcp:HOST:PORT)`);
  return { host: (m[1] ?? m[2])!, port };
}

/**
 * A newcomer's first run often allows a provider nothing was stored for
 * yet; every request for it would fail with NOT_FOUND, one by one, inside
 * the sandbox. Said once here, with what to do. Only names are listed: no
 * entry is read or decrypted.
 */
async function warnAboutEmptyEntries(ctx: CliContext, host: HostContext, policy: Policy): Promise<void> {
  if (policy.allowAll) return;
  const { allow, keys } = policy.describe();
  try {
    const buckets = new Map<string, string[]>();
    for (const rule of allow) {
      const cut = rule.lastIndexOf(':');
      const provider = rule.slice(0, cut);
      const bucket = rule.slice(cut + 1);
      if (!buckets.has(provider)) buckets.set(provider, await host.stores.tokens.listBuckets(provider));
      const stored = buckets.get(provider)!;
      const missing = bucket === '*' ? stored.length === 0 : !stored.includes(bucket);
      if (!missing) continue;
      const what = bucket === '*' ? `${provider} (any bucket)` : `${provider}:${bucket}`;
      ctx.notice(`nothing is stored for ${what} yet, so its requests will fail: ${howToStore(provider, bucket === '*' ? undefined : bucket)}`);
    }
    if (keys.length > 0) {
      const storedKeys = new Set(await host.stores.keys.listKeys());
      for (const name of keys) if (!storedKeys.has(name)) ctx.notice(`no API key named ${name} is stored yet: set it on the host with \`credproxy key set ${name}\` (value on stdin)`);
    }
  } catch {
    // Advice only: a store that cannot list now will say so on the first request.
  }
}

/**
 * Start the host-side proxy for `serve` and `run`: policy from flags/profile,
 * host stores and the refresh path, a fresh socket directory, a capability
 * token. Any failure leaves nothing behind.
 */
export async function startProxy(ctx: CliContext, flags: ProxyFlags, options: { logLevel?: string; policy?: Policy; gateway?: GatewayPlacement; egress?: EgressPlacement } = {}): Promise<RunningProxy> {
  const config = await ctx.config();
  const policy = options.policy ?? policyFromFlags(flags, config);
  if (flags.allowAll) ctx.notice('serving every provider, bucket and key (--allow-all)');
  else if (policy.isEmpty) ctx.notice('no --allow, --allow-key or --profile given: every request will be refused');

  ctx.defaultLogLevel = options.logLevel ?? 'info';
  keepYoungGenerationSmall();
  const host = await ctx.host();
  const logger = ctx.logger;
  const tcp = parseTransport(flags.transport);
  const rateLimit = parseRateLimit(flags.rateLimit);
  if (tcp && flags.socketDir !== undefined) throw new UsageError('--socket-dir and --transport tcp exclude each other');
  if (tcp && !isLoopback(tcp.host)) ctx.notice(`listening on ${tcp.host}, which is not a loopback address: anyone who can reach it and holds the token gets the policy's credentials`);
  const ownDir = flags.socketDir === undefined && !tcp ? createSocketDir(host.dirs.run) : undefined;
  const capabilityToken = generateCapabilityToken();
  let server: ProxyServer | null = null;
  const login = new LoginSessionManager({
    tokens: host.stores.tokens,
    providers: host.providers,
    timeoutMs: sessionTimeoutFromEnv(ctx.io.env),
    logger,
    onLogin: (event) => {
      // An account swapped by a hostile sandbox must be visible to the person at the host.
      ctx.notice(describeLoginEvent(event));
      server?.recordLogin(event);
    },
  });
  // A relative socket path given by the caller lands in the run's socket directory.
  const placed = (where: GatewayListen[]): GatewayListen[] => where.map((w) => ('path' in w && !w.path.startsWith('/') ? { path: join(ownDir ?? flags.socketDir ?? host.dirs.run, w.path) } : w));
  const rotation = config.audit ? { rotation: { ...config.audit } } : {};
  const stateDir = ensurePrivateDir(host.dirs.state);
  let gateway: RunningGateway | undefined;
  let egress: RunningEgress | undefined;
  let proxyServer: ProxyServer;
  try {
    if (flags.gateway) {
      // Loaded only when asked for: a plain serve/run does not pay for the HTTP stack at startup.
      const { startGateway } = await import('../gateway/index.js');
      gateway = await startGateway({
        policy,
        config: host.config,
        credentials: host.credentials,
        keys: host.stores.keys,
        placeholder: capabilityToken,
        logger,
        stateDir,
        listen: placed(options.gateway?.listen ?? [{ host: '127.0.0.1', port: 0 }]),
        exposeOnSocket: Boolean(flags.gatewayExposeTokens),
        ...rotation,
      });
      if (gateway.routes.size === 0) ctx.notice('--gateway: the policy allows no credential with a gateway route; every gateway request will be refused');
    }
    if (options.egress) {
      const { startEgress } = await import('../egress/index.js');
      egress = await startEgress({ rules: options.egress.rules, logger, stateDir, listen: placed(options.egress.listen), ...rotation });
    }
    proxyServer = new ProxyServer({
      tokens: host.stores.tokens,
      keys: host.stores.keys,
      credentials: host.credentials,
      policy,
      capabilityToken,
      ...(tcp ? { tcp } : { socketDir: ownDir ?? flags.socketDir }),
      peerCheck: flags.peerCheck ? 'required' : 'off',
      allowRoot: Boolean(flags.allowRoot),
      auditPath: join(stateDir, 'audit.jsonl'),
      ...(rotation.rotation ? { auditRotation: rotation.rotation } : {}),
      ...idleTimeoutFromEnv(ctx.io.env),
      logger,
      login,
      ...(rateLimit === undefined ? {} : { limits: { requestsPerWindow: rateLimit } }),
    });
    server = proxyServer;
    await proxyServer.start();
  } catch (err) {
    // Whatever started is stopped, whichever step failed.
    login.close();
    await gateway?.stop();
    await egress?.stop();
    if (ownDir) removeSocketDir(ownDir);
    throw err;
  }
  await warnAboutEmptyEntries(ctx, host, policy);
  let stopped: Promise<void> | undefined;
  return {
    server: proxyServer,
    socketPath: proxyServer.socketPath,
    ownDir,
    capabilityToken,
    logger,
    gateway,
    egress,
    stop() {
      stopped ??= Promise.all([proxyServer.stop(), gateway?.stop(), egress?.stop()])
        .then(() => undefined)
        .finally(() => {
          login.close();
          if (ownDir) removeSocketDir(ownDir);
        });
      return stopped;
    },
    removeNow() {
      proxyServer.removeSocketNow();
      if (ownDir) removeSocketDir(ownDir);
    },
  };
}
