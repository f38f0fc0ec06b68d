import { CredproxyError } from '../errors.js';
import { DEFAULT_BUCKET, isBucketName, KEY_NAME_RE, PROVIDER_NAME_RE } from '../names.js';

/** What `--allow`, `--allow-key`, `--allow-all`, `--allow-write`, `--no-login`, `--read-only` or a profile give. */
export interface PolicyInput {
  /** PROVIDER (its default bucket), PROVIDER:BUCKET, or PROVIDER:* (every bucket). */
  allow: readonly string[];
  keys: readonly string[];
  allowAll: boolean;
  /** Both of the two below off, whatever they say. */
  readOnly: boolean;
  /** save_token / remove_token from the sandbox (default off: least privilege). */
  allowWrite?: boolean;
  /** oauth_* from the sandbox (default on: logging in is what the sandbox needs the proxy for). */
  login?: boolean;
}

const ALL_BUCKETS = '*';

/** Rules come from the user: quote them, cut to a readable length. */
function quoteRule(rule: unknown): string {
  const text = typeof rule === 'string' ? rule : String(typeof rule);
  return JSON.stringify(text.length > 80 ? `${text.slice(0, 80)}...` : text);
}

/**
 * SPEC §5 access policy, fixed for the server's lifetime. With no rule
 * nothing is served.
 */
export class Policy {
  /** provider -> allowed buckets ('*' = all). */
  private readonly buckets = new Map<string, Set<string>>();
  private readonly keyNames = new Set<string>();
  /** Credentials served only through the gateway: the socket refuses to hand them out. */
  private readonly gatewayProviders = new Set<string>();
  private readonly gatewayKeys = new Set<string>();
  readonly allowAll: boolean;
  /** save_token and remove_token. */
  readonly allowsWrite: boolean;
  /** oauth_initiate / exchange / poll / cancel. */
  readonly allowsLogin: boolean;

  /** --read-only itself was given (refusals name it). */
  readonly readOnlyFlag: boolean;

  private constructor(allowAll: boolean, allowsWrite: boolean, allowsLogin: boolean, readOnlyFlag: boolean) {
    this.allowAll = allowAll;
    this.allowsWrite = allowsWrite;
    this.allowsLogin = allowsLogin;
    this.readOnlyFlag = readOnlyFlag;
  }

  /** Neither writes nor logins (what --read-only gives). */
  get readOnly(): boolean {
    return !this.allowsWrite && !this.allowsLogin;
  }

  /** Throws USAGE naming the first bad rule. */
  static from(input: PolicyInput): Policy {
    if (typeof input !== 'object' || input === null) throw new CredproxyError('USAGE', 'policy must be an object');
    if (!Array.isArray(input.allow)) throw new CredproxyError('USAGE', 'policy allow must be a list');
    if (!Array.isArray(input.keys)) throw new CredproxyError('USAGE', 'policy keys must be a list');
    if (typeof input.allowAll !== 'boolean' || typeof input.readOnly !== 'boolean') {
      throw new CredproxyError('USAGE', 'policy allowAll and readOnly must be booleans');
    }
    if ((input.allowWrite !== undefined && typeof input.allowWrite !== 'boolean') || (input.login !== undefined && typeof input.login !== 'boolean')) {
      throw new CredproxyError('USAGE', 'policy allowWrite and login must be booleans');
    }
    const allowsWrite = !input.readOnly && input.allowWrite === true;
    const allowsLogin = !input.readOnly && input.login !== false;
    const policy = new Policy(input.allowAll, allowsWrite, allowsLogin, input.readOnly);
    for (const rule of input.allow) policy.addAllowRule(rule);
    for (const name of input.keys) {
      if (typeof name !== 'string' || !KEY_NAME_RE.test(name)) {
        throw new CredproxyError('USAGE', `invalid --allow-key rule ${quoteRule(name)}: a key name matches ${KEY_NAME_RE.source}`);
      }
      policy.keyNames.add(name);
    }
    return policy;
  }

  private addAllowRule(rule: unknown): void {
    if (typeof rule !== 'string') throw new CredproxyError('USAGE', `invalid --allow rule ${quoteRule(rule)}: not a string`);
    const colon = rule.indexOf(':');
    const provider = colon < 0 ? rule : rule.slice(0, colon);
    const bucket = colon < 0 ? DEFAULT_BUCKET : rule.slice(colon + 1);
    if (provider === ALL_BUCKETS) {
      throw new CredproxyError('USAGE', `invalid --allow rule ${quoteRule(rule)}: use --allow-all to allow every provider`);
    }
    if (!PROVIDER_NAME_RE.test(provider)) {
      throw new CredproxyError('USAGE', `invalid --allow rule ${quoteRule(rule)}: expected PROVIDER, PROVIDER:BUCKET or PROVIDER:*`);
    }
    if (bucket !== ALL_BUCKETS && !isBucketName(bucket)) {
      throw new CredproxyError('USAGE', `invalid --allow rule ${quoteRule(rule)}: bad bucket name`);
    }
    const set = this.buckets.get(provider) ?? new Set<string>();
    set.add(bucket);
    this.buckets.set(provider, set);
  }

  allowsToken(provider: string, bucket: string = DEFAULT_BUCKET): boolean {
    if (this.allowAll) return true;
    const set = this.buckets.get(provider);
    return set !== undefined && (set.has(ALL_BUCKETS) || set.has(bucket));
  }

  /** Some bucket of `provider` is allowed (list_buckets, list_providers). */
  allowsProvider(provider: string): boolean {
    return this.allowAll || this.buckets.has(provider);
  }

  allowsKey(name: string): boolean {
    return this.allowAll || this.keyNames.has(name);
  }

  filterProviders(providers: readonly string[]): string[] {
    return providers.filter((p) => this.allowsProvider(p));
  }

  filterBuckets(provider: string, buckets: readonly string[]): string[] {
    return buckets.filter((b) => this.allowsToken(provider, b));
  }

  filterKeys(names: readonly string[]): string[] {
    return names.filter((n) => this.allowsKey(n));
  }

  /**
   * Zero credentials in the sandbox: once the gateway serves these, the
   * socket's get_token/refresh_token/get_api_key refuse them. Called before
   * the server starts.
   */
  reserveForGateway(providers: Iterable<string>, keys: Iterable<string>): void {
    for (const p of providers) this.gatewayProviders.add(p);
    for (const k of keys) this.gatewayKeys.add(k);
  }

  /** Why the socket may not hand out this provider's token, or null. */
  gatewayTokenRefusal(provider: string): string | null {
    return this.gatewayProviders.has(provider) ? `${provider} is served through the credproxy gateway only; send API requests to the gateway (see the run's base URL) instead of fetching the token` : null;
  }

  gatewayKeyRefusal(name: string): string | null {
    return this.gatewayKeys.has(name) ? `key ${name} is served through the credproxy gateway only; send API requests to the gateway instead of fetching the key` : null;
  }

  /** True when nothing at all would be served; the launcher warns about it. */
  get isEmpty(): boolean {
    return !this.allowAll && this.buckets.size === 0 && this.keyNames.size === 0;
  }

  /** Log-friendly summary (names only). */
  describe(): { allowAll: boolean; readOnly: boolean; write: boolean; login: boolean; allow: string[]; keys: string[] } {
    const allow: string[] = [];
    for (const [provider, set] of this.buckets) for (const b of set) allow.push(`${provider}:${b}`);
    return {
      allowAll: this.allowAll,
      readOnly: this.readOnly,
      write: this.allowsWrite,
      login: this.allowsLogin,
      allow: allow.sort(),
      keys: [...this.keyNames].sort(),
    };
  }
}
