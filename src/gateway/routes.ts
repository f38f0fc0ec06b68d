import { BUILTIN_KEY_ROUTES, type CredproxyConfig, type KeyHeader, type RouteRules } from '../config.js';
import { DEFAULT_BUCKET } from '../names.js';
import { BUILTIN_PRESETS } from '../oauth/presets/index.js';
import { endpointUrlProblem } from '../oauth/url-policy.js';
import type { Policy } from '../server/policy.js';

/** Provider-specific request changes, chosen by the provider's name. */
export type Quirk = 'anthropic-oauth' | 'codex-account' | 'qwen-resource-url';

export interface OAuthRoute {
  kind: 'oauth';
  /** The first path segment: `/<name>/...`. */
  name: string;
  provider: string;
  bucket: string;
  /** undefined: taken from the token (qwen's resource_url). */
  apiBase: string | undefined;
  rules: RouteRules | undefined;
  quirks: readonly Quirk[];
}

export interface KeyRoute {
  kind: 'key';
  /** `keys/<key>`: `/keys/<key>/...`. */
  name: string;
  key: string;
  apiBase: string;
  header: KeyHeader;
  rules: RouteRules | undefined;
}

export type Route = OAuthRoute | KeyRoute;

/** Key routes live under this first segment, so a key and a provider may share a name. */
export const KEY_ROUTE_PREFIX = 'keys';

const QUIRKS: Readonly<Record<string, readonly Quirk[]>> = {
  anthropic: ['anthropic-oauth'],
  codex: ['codex-account'],
  qwen: ['qwen-resource-url'],
};

export interface RouteTable {
  routes: ReadonlyMap<string, Route>;
  /** Providers and keys the gateway serves: the socket refuses to hand them out. */
  providers: string[];
  keys: string[];
  /** Allowed credentials that got no route, and why (for a notice). */
  skipped: string[];
}

export interface BuildRoutesInput {
  policy: Policy;
  config: Pick<CredproxyConfig, 'providers' | 'keys'>;
  /** Key names to consider under --allow-all (those stored on the host). */
  storedKeys?: readonly string[];
}

/** The bucket a provider route serves: the default one when allowed, else the only one allowed. */
function routeBucket(policy: Policy, provider: string): string | null {
  if (policy.allowsToken(provider, DEFAULT_BUCKET)) return DEFAULT_BUCKET;
  const buckets = policy
    .describe()
    .allow.filter((rule) => rule.startsWith(`${provider}:`))
    .map((rule) => rule.slice(provider.length + 1));
  return buckets.length === 1 && buckets[0] !== '*' ? buckets[0]! : null;
}

/**
 * Routes from the credentials the policy allows (issue 13): OAuth providers
 * with an api_base (or qwen, whose base comes with the token), and keys with
 * a route in config.json or a built-in one.
 */
export function buildRoutes(input: BuildRoutesInput): RouteTable {
  const { policy, config } = input;
  const routes = new Map<string, Route>();
  const skipped: string[] = [];
  const providerNames = new Set<string>([...Object.keys(BUILTIN_PRESETS), ...Object.keys(config.providers)]);
  const allowedProviders = policy.allowAll ? [...providerNames] : policy.describe().allow.map((rule) => rule.slice(0, rule.indexOf(':')));
  for (const provider of new Set(allowedProviders)) {
    if (provider === KEY_ROUTE_PREFIX) {
      skipped.push(`provider ${provider}: the name is reserved for key routes`);
      continue;
    }
    const settings = config.providers[provider] ?? BUILTIN_PRESETS[provider];
    const quirks = QUIRKS[provider] ?? [];
    const apiBase = settings?.api_base;
    if (apiBase === undefined && !quirks.includes('qwen-resource-url')) {
      skipped.push(`provider ${provider}: no api_base configured`);
      continue;
    }
    const bucket = routeBucket(policy, provider);
    if (bucket === null) {
      skipped.push(`provider ${provider}: several buckets allowed and not the default one; allow ${provider} for its route`);
      continue;
    }
    routes.set(provider, { kind: 'oauth', name: provider, provider, bucket, apiBase, rules: settings?.gateway, quirks });
  }
  const keyNames = policy.allowAll ? [...new Set([...Object.keys(config.keys), ...(input.storedKeys ?? [])])] : policy.describe().keys;
  for (const key of keyNames) {
    const route = config.keys[key]?.route ?? BUILTIN_KEY_ROUTES[key];
    if (route === undefined) {
      skipped.push(`key ${key}: no keys.${key}.route in config.json`);
      continue;
    }
    const { api_base, header, ...rules } = route;
    const name = `${KEY_ROUTE_PREFIX}/${key}`;
    routes.set(name, { kind: 'key', name, key, apiBase: api_base, header, rules: Object.keys(rules).length ? rules : undefined });
  }
  const served = [...routes.values()];
  return {
    routes,
    providers: served.flatMap((r) => (r.kind === 'oauth' ? [r.provider] : [])),
    keys: served.flatMap((r) => (r.kind === 'key' ? [r.key] : [])),
    skipped,
  };
}

/**
 * qwen-code's rule: the token's resource_url, https unless a scheme is
 * given, ending in /v1. null when the token has none or it is unusable.
 */
export function qwenApiBase(resourceUrl: unknown): string | null {
  if (typeof resourceUrl !== 'string' || resourceUrl === '' || resourceUrl.length > 512) return null;
  const withScheme = /^https?:\/\//.test(resourceUrl) ? resourceUrl : `https://${resourceUrl}`;
  const trimmed = withScheme.replace(/\/+$/, '');
  const base = trimmed.endsWith('/v1') ? trimmed : `${trimmed}/v1`;
  return endpointUrlProblem(base) === null ? base : null;
}

/** Whether the route's allowlist lets this request through (no rules: everything); prefixes match whole segments. */
export function rulesAllow(rules: RouteRules | undefined, method: string, path: string): boolean {
  if (rules === undefined) return true;
  if (rules.methods !== undefined && !rules.methods.includes(method)) return false;
  if (rules.path_prefixes !== undefined && !rules.path_prefixes.some((prefix) => path === prefix || path.startsWith(prefix.endsWith('/') ? prefix : `${prefix}/`))) return false;
  return true;
}
