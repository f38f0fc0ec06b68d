/**
 * A scripted stand-in for "the user's browser" in OAuth tests: a cookie jar,
 * manual redirects, and a driver that fills in the HTML forms an
 * authorization server shows (dev login, consent, device user-code and
 * confirmation pages of oidc-provider) until the flow leaves the server.
 *
 * It talks plain HTTP to loopback servers only and never runs scripts.
 */

export interface HtmlForm {
  id: string | undefined;
  action: string;
  method: string;
  /** Named inputs with their (decoded) default values, in document order. */
  fields: Array<{ name: string; value: string; type: string }>;
}

export interface Page {
  url: URL;
  status: number;
  html: string;
  forms: HtmlForm[];
}

export interface BrowserOptions {
  /** Account name typed into the dev login page. */
  login?: string;
  password?: string;
  /** Safety net against redirect / form loops. */
  maxSteps?: number;
}

export type Decision = 'approve' | 'deny';

interface Action {
  url: URL;
  method: string;
  form: Array<[string, string]> | undefined;
  /** This action declines the request. */
  declines: boolean;
}

interface Cookie {
  name: string;
  value: string;
  host: string;
  path: string;
  expiresAt: number | undefined;
}

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", '#39': "'" };

export function decodeEntities(s: string): string {
  return s.replace(/&(#x[0-9a-f]+|#[0-9]+|[a-z]+|#39);/gi, (whole, name: string) => {
    const lower = name.toLowerCase();
    if (lower.startsWith('#x')) return String.fromCodePoint(parseInt(lower.slice(2), 16));
    if (lower.startsWith('#')) return String.fromCodePoint(parseInt(lower.slice(1), 10));
    return ENTITIES[lower] ?? whole;
  });
}

function parseAttributes(source: string): Map<string, string> {
  const attrs = new Map<string, string>();
  const re = /([a-zA-Z_:][-a-zA-Z0-9_:.]*)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+)))?/g;
  for (const m of source.matchAll(re)) {
    const name = m[1]!.toLowerCase();
    if (!attrs.has(name)) attrs.set(name, decodeEntities(m[2] ?? m[3] ?? m[4] ?? ''));
  }
  return attrs;
}

export function parseForms(html: string): HtmlForm[] {
  const forms: HtmlForm[] = [];
  for (const m of html.matchAll(/<form\b([^>]*)>([\s\S]*?)<\/form>/gi)) {
    const attrs = parseAttributes(m[1]!);
    const fields: HtmlForm['fields'] = [];
    for (const input of m[2]!.matchAll(/<input\b([^>]*)>/gi)) {
      const a = parseAttributes(input[1]!);
      const name = a.get('name');
      if (name !== undefined) fields.push({ name, value: a.get('value') ?? '', type: (a.get('type') ?? 'text').toLowerCase() });
    }
    forms.push({ id: attrs.get('id'), action: attrs.get('action') ?? '', method: (attrs.get('method') ?? 'get').toLowerCase(), fields });
  }
  return forms;
}

export class ScriptedBrowser {
  private readonly cookies: Cookie[] = [];
  private readonly login: string;
  private readonly password: string;
  private readonly maxSteps: number;
  /** Every URL requested, in order (for assertions about what the "user" visited). */
  readonly visited: string[] = [];

  constructor(options: BrowserOptions = {}) {
    this.login = options.login ?? 'alice';
    this.password = options.password ?? 'password';
    this.maxSteps = options.maxSteps ?? 30;
  }

  /** One HTTP request with the jar's cookies; redirects are not followed. */
  async request(url: URL, init: { method?: string; form?: Array<[string, string]> } = {}): Promise<Response> {
    if (url.protocol !== 'http:' || !['127.0.0.1', '[::1]', 'localhost'].includes(url.hostname)) {
      throw new Error(`scripted browser only visits loopback http URLs, not ${url.origin}`);
    }
    this.visited.push(url.href);
    const headers: Record<string, string> = { accept: 'text/html,application/json' };
    const cookie = this.cookieHeader(url);
    if (cookie) headers.cookie = cookie;
    let body: string | undefined;
    if (init.form) {
      headers['content-type'] = 'application/x-www-form-urlencoded';
      body = new URLSearchParams(init.form).toString();
    }
    const res = await fetch(url, { method: init.method ?? 'GET', headers, body, redirect: 'manual' });
    this.storeCookies(url, res.headers.getSetCookie());
    return res;
  }

  /**
   * Completes an authorization-code request: logs in, consents (or cancels
   * when `decision` is 'deny'), and returns the URL the server finally
   * redirects to — the one whose prefix is `redirectUri` — without visiting it.
   */
  async authorize(authUrl: string | URL, redirectUri: string, decision: Decision = 'approve'): Promise<URL> {
    const stop = (u: URL): boolean => u.href.startsWith(redirectUri) || sameEndpoint(u, redirectUri);
    const result = await this.drive(new URL(authUrl), { stop, decision });
    if (result.kind === 'redirect') return result.url;
    throw new Error(`authorization did not redirect to ${redirectUri}; stopped on ${result.page.url.pathname} (HTTP ${result.page.status})`);
  }

  /**
   * Approves (or denies) a device-code request on the verification page.
   * Accepts verification_uri_complete, or verification_uri plus the user code.
   * Returns the final page (the server's success or error page).
   */
  async completeDevice(verificationUri: string | URL, userCode?: string, decision: Decision = 'approve'): Promise<Page> {
    const result = await this.drive(new URL(verificationUri), { stop: () => false, decision, userCode });
    if (result.kind === 'page') return result.page;
    throw new Error(`device flow unexpectedly redirected to ${result.url.origin}${result.url.pathname}`);
  }

  private async drive(
    start: URL,
    opts: { stop: (u: URL) => boolean; decision: Decision; userCode?: string },
  ): Promise<{ kind: 'redirect'; url: URL } | { kind: 'page'; page: Page }> {
    let url = start;
    let method = 'GET';
    let form: Array<[string, string]> | undefined;
    // After the user declined, whatever page the server shows next is the end of the flow.
    let declined = false;
    for (let step = 0; step < this.maxSteps; step++) {
      const res = await this.request(url, { method, form });
      method = 'GET';
      form = undefined;
      if (res.status >= 300 && res.status < 400) {
        await res.body?.cancel();
        const location = res.headers.get('location');
        if (!location) throw new Error(`redirect without Location from ${url.pathname}`);
        const next = new URL(location, url);
        if (opts.stop(next)) return { kind: 'redirect', url: next };
        url = next;
        continue;
      }
      const html = await res.text();
      const page: Page = { url, status: res.status, html, forms: parseForms(html) };
      if (res.status >= 400 || declined) return { kind: 'page', page };
      const action = this.chooseAction(page, opts);
      if (!action) return { kind: 'page', page };
      declined = action.declines;
      url = action.url;
      method = action.method;
      form = action.form;
    }
    throw new Error(`gave up after ${this.maxSteps} steps`);
  }

  /** Decide what a user would click on this page; undefined when there is nothing to do. */
  private chooseAction(
    page: Page,
    opts: { decision: Decision; userCode?: string },
  ): Action | undefined {
    const submit = (f: HtmlForm, overrides: Record<string, string>, extra: Array<[string, string]> = []): Action => {
      const values: Array<[string, string]> = f.fields.map((field) => [field.name, overrides[field.name] ?? field.value]);
      const declines = extra.some(([name]) => name === 'abort');
      return { url: new URL(f.action || page.url.href, page.url), method: f.method === 'post' ? 'POST' : 'GET', form: [...values, ...extra], declines };
    };
    for (const f of page.forms) {
      const prompt = f.fields.find((x) => x.name === 'prompt')?.value;
      if (prompt === 'login') {
        if (opts.decision === 'deny') return this.abortLink(page);
        return submit(f, { login: this.login, password: this.password });
      }
      if (prompt === 'consent') {
        if (opts.decision === 'deny') return this.abortLink(page);
        return submit(f, {});
      }
      if (f.id === 'op.deviceInputForm') {
        const current = f.fields.find((x) => x.name === 'user_code')?.value ?? '';
        if (!current && !opts.userCode) throw new Error('device page asks for a user code but none was given');
        return submit(f, current ? {} : { user_code: opts.userCode! });
      }
      if (f.id === 'op.deviceConfirmForm') {
        return opts.decision === 'deny' ? submit(f, {}, [['abort', 'yes']]) : submit(f, {});
      }
    }
    // Pages that submit a form from script on load (a browser would): submit it.
    if (page.forms.length > 0 && /\.submit\(\)/.test(page.html)) return submit(page.forms[0]!, {});
    return undefined;
  }

  private abortLink(page: Page): Action {
    const m = /href="([^"]*\/abort)"/.exec(page.html);
    if (!m) throw new Error('no cancel link on the interaction page');
    // The server answers the cancel with a redirect carrying error=access_denied.
    return { url: new URL(decodeEntities(m[1]!), page.url), method: 'GET', form: undefined, declines: false };
  }

  private cookieHeader(url: URL): string {
    const now = Date.now();
    const host = url.host;
    return this.cookies
      .filter((c) => c.host === host && (c.expiresAt === undefined || c.expiresAt > now) && pathMatches(url.pathname, c.path))
      .map((c) => `${c.name}=${c.value}`)
      .join('; ');
  }

  private storeCookies(url: URL, setCookies: string[]): void {
    for (const line of setCookies) {
      const [pair, ...attrParts] = line.split(';');
      const eq = pair!.indexOf('=');
      if (eq <= 0) continue;
      const name = pair!.slice(0, eq).trim();
      const value = pair!.slice(eq + 1).trim();
      let path = defaultPath(url.pathname);
      let expiresAt: number | undefined;
      for (const part of attrParts) {
        const [k, ...rest] = part.split('=');
        const key = k!.trim().toLowerCase();
        const v = rest.join('=').trim();
        if (key === 'path' && v.startsWith('/')) path = v;
        else if (key === 'max-age') expiresAt = Date.now() + Number(v) * 1000;
        else if (key === 'expires' && expiresAt === undefined) expiresAt = Date.parse(v);
      }
      const idx = this.cookies.findIndex((c) => c.name === name && c.path === path && c.host === url.host);
      if (idx >= 0) this.cookies.splice(idx, 1);
      if (expiresAt === undefined || expiresAt > Date.now()) this.cookies.push({ name, value, host: url.host, path, expiresAt });
    }
  }
}

function sameEndpoint(u: URL, redirectUri: string): boolean {
  // RFC 8252 §7.3: a loopback redirect matches whatever port the client chose.
  const r = new URL(redirectUri);
  return u.protocol === r.protocol && u.hostname === r.hostname && u.pathname === r.pathname && (r.port === '' || u.port === r.port);
}

function defaultPath(pathname: string): string {
  const i = pathname.lastIndexOf('/');
  return i <= 0 ? '/' : pathname.slice(0, i);
}

function pathMatches(requestPath: string, cookiePath: string): boolean {
  if (requestPath === cookiePath) return true;
  if (!requestPath.startsWith(cookiePath)) return false;
  return cookiePath.endsWith('/') || requestPath[cookiePath.length] === '/';
}
