import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { CredproxyError } from './errors.js';
import { KEY_NAME_RE, PROVIDER_NAME_RE } from './names.js';
import { BUILTIN_PRESETS } from './oauth/presets/index.js';
import { endpointUrlProblem, loopbackRedirectProblem } from './oauth/url-policy.js';
import { HostRuleError, parseHostRules } from './egress/hosts.js';

/** SPEC §7: the config file inside the config dir. */
export const CONFIG_FILE_NAME = 'config.json';

export const FLOWS = ['pkce_redirect', 'device_code', 'browser_redirect'] as const;
export type Flow = (typeof FLOWS)[number];

/** SPEC §7: default loopback redirect for browser_redirect; the port is picked when the listener starts. */
export const DEFAULT_LOOPBACK_REDIRECT_URI = 'http://127.0.0.1/callback';

/** Authorization parameters credproxy sets itself; config may not override them. */
const RESERVED_AUTH_PARAMS = new Set(['client_id', 'redirect_uri', 'response_type', 'state', 'code_challenge', 'code_challenge_method', 'scope', 'nonce']);

const endpoint = z.string().superRefine((value, ctx) => {
  const problem = endpointUrlProblem(value);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
});

/** Gateway rules for one route: when given, only these methods / path prefixes are forwarded. */
export const RouteRulesSchema = z.strictObject({
  methods: z.array(z.string().regex(/^[A-Z]{1,16}$/, 'an upper-case HTTP method')).min(1).optional(),
  path_prefixes: z.array(z.string().regex(/^\/[\x21-\x7e]{0,255}$/, 'a path starting with /')).min(1).optional(),
});
export type RouteRules = z.output<typeof RouteRulesSchema>;

export const KEY_HEADERS = ['x-api-key', 'authorization', 'x-goog-api-key'] as const;
export type KeyHeader = (typeof KEY_HEADERS)[number];

/** `keys.<name>.route`: where the gateway sends a key, in which header (authorization: Bearer). */
export const KeyRouteSchema = z.strictObject({
  api_base: z.string().superRefine((value, ctx) => {
    const problem = endpointUrlProblem(value);
    if (problem) ctx.addIssue({ code: 'custom', message: problem });
  }),
  header: z.enum(KEY_HEADERS),
  ...RouteRulesSchema.shape,
});
export type KeyRoute = z.output<typeof KeyRouteSchema>;

/** Built-in key routes (issue 13): keys with these names need no config. */
export const BUILTIN_KEY_ROUTES: Readonly<Record<string, KeyRoute>> = Object.freeze({
  anthropic: { api_base: 'https://api.anthropic.com', header: 'x-api-key' },
  openai: { api_base: 'https://api.openai.com/v1', header: 'authorization' },
  gemini: { api_base: 'https://generativelanguage.googleapis.com', header: 'x-goog-api-key' },
});

const redirectUri = z.string().superRefine((value, ctx) => {
  const u = URL.canParse(value) ? new URL(value) : null;
  if (!u) ctx.addIssue({ code: 'custom', message: 'Invalid URL' });
  else if (u.protocol !== 'https:' && loopbackRedirectProblem(value) !== null) {
    ctx.addIssue({ code: 'custom', message: 'must be an https URL or an http URL on a loopback address' });
  }
});

/**
 * One OAuth provider (SPEC §7). Field names follow the config file. The
 * optional quirk fields exist because real providers deviate from RFC 6749:
 * a JSON-bodied token endpoint, errors sent with HTTP 200, provider-specific
 * codes for a revoked refresh token, no expires_in.
 */
export const ProviderConfigSchema = z
  .strictObject({
    flow: z.enum(FLOWS),
    /** Discovery (RFC 8414 / OIDC) fills in any endpoint not given explicitly; also the expected id_token issuer. */
    issuer: endpoint.optional(),
    authorization_endpoint: endpoint.optional(),
    token_endpoint: endpoint.optional(),
    device_authorization_endpoint: endpoint.optional(),
    revocation_endpoint: endpoint.optional(),
    client_id: z.string().min(1).max(512),
    client_secret: z.string().min(1).max(4096).optional(),
    token_endpoint_auth_method: z.enum(['none', 'client_secret_post', 'client_secret_basic']).optional(),
    scopes: z.array(z.string().regex(/^[\x21\x23-\x5b\x5d-\x7e]+$/, 'invalid scope token')).optional(),
    redirect_uri: redirectUri.optional(),
    /** Extra query parameters on the authorization request (e.g. access_type=offline). */
    authorization_params: z.record(z.string(), z.string()).optional(),
    /**
     * Code flows: send prompt=consent when offline_access is asked of an OpenID
     * provider (default true; OpenID Connect Core §11: without it servers such as
     * oidc-provider and Keycloak drop offline_access and issue no refresh token).
     * A prompt in authorization_params always wins.
     */
    offline_consent: z.boolean().optional(),
    /** device_code only: send a PKCE challenge with the device authorization request. */
    use_pkce: z.boolean().optional(),
    token_request_format: z.enum(['form', 'json']).optional(),
    /** Error codes besides invalid_grant that mean "the refresh token is dead". */
    revoked_error_codes: z.array(z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'invalid error code')).optional(),
    /** The token endpoint reports OAuth errors with HTTP 200 (GitHub does). */
    errors_with_status_200: z.boolean().optional(),
    /** Lifetime assumed when a token response has no expires_in (seconds). */
    default_expires_in: z.int().min(60).max(10 * 365 * 24 * 3600).optional(),
    /** Gateway: the API the provider's tokens are for (`/<provider>/...` goes to `<api_base>/...`). */
    api_base: endpoint.optional(),
    /** Gateway: only these methods / path prefixes are forwarded. */
    gateway: RouteRulesSchema.optional(),
  })
  .superRefine((p, ctx) => {
    const need = (field: 'token_endpoint' | 'authorization_endpoint' | 'device_authorization_endpoint', why: string): void => {
      if (p[field] === undefined && p.issuer === undefined) {
        ctx.addIssue({ code: 'custom', path: [field], message: `required ${why} unless issuer is set (discovery)` });
      }
    };
    need('token_endpoint', 'for every flow');
    if (p.flow === 'device_code') need('device_authorization_endpoint', 'for flow device_code');
    else need('authorization_endpoint', `for flow ${p.flow}`);
    if (p.flow === 'browser_redirect' && p.redirect_uri !== undefined) {
      const problem = loopbackRedirectProblem(p.redirect_uri);
      if (problem) ctx.addIssue({ code: 'custom', path: ['redirect_uri'], message: `${problem} for flow browser_redirect` });
    }
    if (p.flow !== 'device_code' && p.use_pkce === false) {
      ctx.addIssue({ code: 'custom', path: ['use_pkce'], message: `PKCE is always used for flow ${p.flow}` });
    }
    const auth = p.token_endpoint_auth_method;
    if (auth !== undefined && auth !== 'none' && p.client_secret === undefined) {
      ctx.addIssue({ code: 'custom', path: ['client_secret'], message: `required by token_endpoint_auth_method ${auth}` });
    }
    if (auth === 'none' && p.client_secret !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['token_endpoint_auth_method'], message: 'is none but a client_secret is set' });
    }
    for (const key of Object.keys(p.authorization_params ?? {})) {
      if (RESERVED_AUTH_PARAMS.has(key)) {
        ctx.addIssue({ code: 'custom', path: ['authorization_params', key], message: 'is set by credproxy and cannot be overridden' });
      }
    }
  });
export type ProviderConfig = z.output<typeof ProviderConfigSchema>;

const ALLOW_ENTRY_RE = /^[a-zA-Z0-9._@-]{1,64}(?::(?:[a-zA-Z0-9._@-]{1,64}|\*))?$/;

/** A profile applies in any directory: its paths may not be relative to one. */
const profilePath = z.string().max(4096).regex(/^(\/|~\/)/, 'must be an absolute path or start with ~/');

export const ProfileConfigSchema = z.strictObject({
  /** PROVIDER (its default bucket), PROVIDER:BUCKET, or PROVIDER:* (SPEC §5 policy). */
  allow: z.array(z.string().regex(ALLOW_ENTRY_RE, 'must be PROVIDER, PROVIDER:BUCKET or PROVIDER:*')).default([]),
  keys: z.array(z.string().regex(KEY_NAME_RE, 'invalid key name')).default([]),
  /** Neither token writes nor logins from the sandbox. */
  readOnly: z.boolean().default(false),
  /** save_token / remove_token from the sandbox (off unless set). */
  allowWrite: z.boolean().default(false),
  /** Logins from the sandbox (on unless set to false). */
  login: z.boolean().default(true),
  /** bwrap: extra paths shown read-only / read-write inside (absolute or ~/…), and protections to drop. */
  roBind: z.array(profilePath).optional(),
  bind: z.array(profilePath).optional(),
  unprotect: z.array(profilePath).optional(),
  /** Egress allowlist (issue 15): `--allow-host` entries (HOST[:PORT], *.domain, literal addresses, @npm/@pypi/@github). */
  allowHost: z
    .array(
      z.string().superRefine((value, ctx) => {
        try {
          parseHostRules([value]);
        } catch (err) {
          ctx.addIssue({ code: 'custom', message: err instanceof HostRuleError ? err.message : 'invalid host rule' });
        }
      }),
    )
    .optional(),
});
export type ProfileConfig = z.output<typeof ProfileConfigSchema>;

const NAME_HINT = 'invalid name (1-64 of letters, digits, . _ @ -)';

/** The audit file's size cap and retention (SPEC §8: it rotates at a cap). */
export const AuditConfigSchema = z.strictObject({
  maxFileBytes: z.int().min(4096).max(2 ** 40).optional(),
  keepFiles: z.int().min(1).max(100).optional(),
});

export const KeyConfigSchema = z.strictObject({ route: KeyRouteSchema.optional() });

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Entries named like a built-in are merged field by field over it (a partial
 * `{"api_base": ...}` is valid); the merged entry is then validated whole,
 * so unknown fields are still errors.
 */
function mergeOverBuiltins(raw: unknown): unknown {
  if (!isPlainObject(raw)) return raw;
  const out: Record<string, unknown> = { ...raw };
  const over = (section: unknown, builtins: Readonly<Record<string, object>>, wrap: (b: object) => object): unknown => {
    if (!isPlainObject(section)) return section;
    const merged: Record<string, unknown> = {};
    for (const [name, entry] of Object.entries(section)) {
      const builtin = Object.hasOwn(builtins, name) ? builtins[name] : undefined;
      merged[name] = builtin !== undefined && isPlainObject(entry) ? mergeEntry(wrap(builtin), entry) : entry;
    }
    return merged;
  };
  out.providers = over(raw.providers, BUILTIN_PRESETS, (b) => b);
  out.keys = over(raw.keys, BUILTIN_KEY_ROUTES, (b) => ({ route: b }));
  return out;
}

/** A field given replaces the built-in's; a key's `route` object is merged one level deeper. */
function mergeEntry(base: object, entry: Record<string, unknown>): Record<string, unknown> {
  const merged: Record<string, unknown> = { ...base };
  for (const [field, value] of Object.entries(entry)) {
    const prior = merged[field];
    merged[field] = field === 'route' && isPlainObject(prior) && isPlainObject(value) ? { ...prior, ...value } : value;
  }
  return merged;
}

export const ConfigSchema = z.preprocess(
  mergeOverBuiltins,
  z.strictObject({
    providers: z.record(z.string().regex(PROVIDER_NAME_RE), ProviderConfigSchema).default({}),
    profiles: z.record(z.string().regex(PROVIDER_NAME_RE), ProfileConfigSchema).default({}),
    keys: z.record(z.string().regex(KEY_NAME_RE), KeyConfigSchema).default({}),
    audit: AuditConfigSchema.optional(),
  }),
);
export type CredproxyConfig = z.output<typeof ConfigSchema>;

export function emptyConfig(): CredproxyConfig {
  return { providers: {}, profiles: {}, keys: {} };
}

function formatIssue(issue: z.core.$ZodIssue): string {
  const path = issue.path.map(String).join('.') || '(top level)';
  const message = issue.code === 'invalid_key' ? NAME_HINT : issue.message;
  return `${path}: ${message}`;
}

/** Line and column of a JSON.parse failure, when the engine reports a position. */
function jsonErrorLocation(text: string, err: unknown): string {
  const m = err instanceof SyntaxError ? /position (\d+)/.exec(err.message) : null;
  if (!m) return '';
  const pos = Math.min(Number(m[1]), text.length);
  const before = text.slice(0, pos).split('\n');
  return ` (line ${before.length}, column ${before[before.length - 1]!.length + 1})`;
}

/**
 * Validate config text. Error messages name the file and the offending field
 * path, never a value from the file (it may hold a client secret).
 */
export function parseConfig(text: string, sourcePath: string): CredproxyConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new CredproxyError('CONFIG_INVALID', `${sourcePath}: not valid JSON${jsonErrorLocation(text, err)}`);
  }
  const result = ConfigSchema.safeParse(raw);
  if (!result.success) {
    const issues = result.error.issues;
    const shown = issues.slice(0, 5).map(formatIssue).join('; ');
    const more = issues.length > 5 ? ` (and ${issues.length - 5} more)` : '';
    throw new CredproxyError('CONFIG_INVALID', `${sourcePath}: ${shown}${more}`);
  }
  return result.data;
}

/**
 * The config names the token endpoints that receive refresh tokens: a
 * config dir or file that another user can write (owned by someone else,
 * or group/world-writable) could redirect them. Refused, naming the fix.
 */
export async function checkConfigTrust(configDir: string, uid = process.getuid?.()): Promise<void> {
  if (uid === undefined) return; // no owners to compare (Windows)
  for (const path of [configDir, join(configDir, CONFIG_FILE_NAME)]) {
    let st;
    try {
      st = await stat(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw new CredproxyError('CONFIG_INVALID', `${path}: cannot be read (${(err as NodeJS.ErrnoException).code ?? 'unknown error'})`);
    }
    if (st.uid !== uid) {
      throw new CredproxyError('CONFIG_INVALID', `${path} is owned by uid ${st.uid}, not by you (uid ${uid}), so another user could change where tokens are sent: \`chown ${uid} ${path}\` if it is yours, or remove it`);
    }
    if ((st.mode & 0o022) !== 0) {
      throw new CredproxyError('CONFIG_INVALID', `${path} is writable by ${st.mode & 0o002 ? 'every user' : 'its group'}, so another user could change where tokens are sent: run \`chmod go-w ${path}\``);
    }
  }
}

/** SPEC §7: `config.json` in the config dir; a missing file is an empty config. */
export async function loadConfig(configDir: string): Promise<CredproxyConfig> {
  const path = join(configDir, CONFIG_FILE_NAME);
  await checkConfigTrust(configDir);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return emptyConfig();
    throw new CredproxyError('CONFIG_INVALID', `${path}: cannot be read (${code ?? 'unknown error'})`);
  }
  return parseConfig(text, path);
}
