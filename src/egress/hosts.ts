import { canonicalIp, isNumericHostForm } from './address.js';

/**
 * `--allow-host` rules (issue 15): which hosts and ports the sandbox may
 * reach through the egress proxy.
 *
 * Grammar of one entry: `HOST`, `HOST:PORT`, `HOST:*`, where HOST is a DNS
 * name (`registry.npmjs.org`), a wildcard (`*.npmjs.org`: any name with at
 * least one more label, never `npmjs.org` itself nor `evilnpmjs.org`), an
 * IPv4 dotted quad or a bracketed IPv6 address (`[::1]:8080`); or a preset,
 * `@npm`, `@pypi`, `@github`. Without a port a rule covers 80 and 443.
 */

/** Ports a rule without `:PORT` covers: plain HTTP and HTTPS. */
export const DEFAULT_PORTS: readonly number[] = [80, 443];

/** Documented host lists for `--allow-host @name` (HTTPS only). */
export const HOST_PRESETS: Readonly<Record<string, readonly string[]>> = Object.freeze({
  npm: ['registry.npmjs.org:443', 'registry.yarnpkg.com:443'],
  pypi: ['pypi.org:443', 'files.pythonhosted.org:443'],
  github: ['github.com:443', 'api.github.com:443', 'codeload.github.com:443', 'objects.githubusercontent.com:443', 'raw.githubusercontent.com:443', 'release-assets.githubusercontent.com:443'],
});

type HostRuleKind = 'name' | 'wildcard' | 'address';

export interface HostRule {
  kind: HostRuleKind;
  /** name: the lower-case name; wildcard: the suffix after `*.`; address: the canonical IP. */
  value: string;
  /** null: any port. */
  ports: readonly number[] | null;
  /** The entry as the user wrote it (a preset's entries name the preset). */
  source: string;
}

/** A host as a request names it, after parsing and normalising. */
export type RequestHost = { kind: 'name'; name: string } | { kind: 'address'; address: string; family: 4 | 6 };

export class HostRuleError extends Error {}

const LABEL_RE = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/;

/** A DNS name in lower case without its trailing dot, or null when it is not a valid one (or is numeric, see isNumericHostForm). */
function normaliseName(raw: string): string | null {
  if (raw.length === 0 || raw.length > 254) return null;
  const name = (raw.endsWith('.') ? raw.slice(0, -1) : raw).toLowerCase();
  if (name.length === 0 || name.length > 253) return null;
  if (isNumericHostForm(name)) return null;
  return name.split('.').every((l) => LABEL_RE.test(l)) ? name : null;
}

function parsePort(text: string, what: string): number {
  if (!/^\d{1,5}$/.test(text) || Number(text) < 1 || Number(text) > 65535) throw new HostRuleError(`${what}: port must be 1 to 65535 or *`);
  return Number(text);
}

/** Split `HOST[:PORT]` / `[V6][:PORT]` / bare IPv6; the port text is undefined when absent. */
function splitHostPort(entry: string): { host: string; port: string | undefined } {
  if (entry.startsWith('[')) {
    const close = entry.indexOf(']');
    if (close < 0) throw new HostRuleError(`${entry}: missing ]`);
    const rest = entry.slice(close + 1);
    if (rest !== '' && !rest.startsWith(':')) throw new HostRuleError(`${entry}: expected :PORT after ]`);
    return { host: entry.slice(0, close + 1), port: rest === '' ? undefined : rest.slice(1) };
  }
  const colons = entry.split(':').length - 1;
  if (colons > 1) return { host: entry, port: undefined }; // a bare IPv6 address
  const cut = entry.lastIndexOf(':');
  return cut < 0 ? { host: entry, port: undefined } : { host: entry.slice(0, cut), port: entry.slice(cut + 1) };
}

/** One `--allow-host` entry (not a preset) to its rule; throws HostRuleError naming what is wrong. */
export function parseHostRule(entry: string, source = entry): HostRule {
  if (entry.length === 0 || entry.length > 300) throw new HostRuleError(`'${entry.slice(0, 40)}': empty or too long`);
  const { host, port } = splitHostPort(entry);
  const ports = port === undefined ? DEFAULT_PORTS : port === '*' ? null : [parsePort(port, entry)];
  if (host.startsWith('[') || host.includes(':')) {
    const ip = canonicalIp(host);
    if (ip === null || ip.family !== 6 && !host.startsWith('[')) throw new HostRuleError(`${entry}: not a valid IPv6 address`);
    return { kind: 'address', value: ip.address, ports, source };
  }
  const ip = canonicalIp(host);
  if (ip !== null) return { kind: 'address', value: ip.address, ports, source };
  if (host === '*' || host === '*.') throw new HostRuleError(`${entry}: a rule for every host is not an allowlist (use --share-net if you really want all of the network)`);
  if (host.startsWith('*.')) {
    const suffix = normaliseName(host.slice(2));
    if (suffix === null) throw new HostRuleError(`${entry}: not a valid wildcard (*.example.org)`);
    if (!suffix.includes('.')) throw new HostRuleError(`${entry}: a wildcard needs at least two labels after *. (like *.npmjs.org), not a whole top-level domain`);
    return { kind: 'wildcard', value: suffix, ports, source };
  }
  if (host.includes('*')) throw new HostRuleError(`${entry}: * is allowed only as the whole first label (*.example.org)`);
  if (isNumericHostForm(host)) throw new HostRuleError(`${entry}: write an IPv4 address as four decimal numbers (like 192.0.2.10)`);
  const name = normaliseName(host);
  if (name === null) throw new HostRuleError(`${entry}: not a valid host name (letters, digits, - and _, in labels of at most 63)`);
  return { kind: 'name', value: name, ports, source };
}

/** Expand presets and parse every entry; agent presets are passed in as plain entries by the caller. */
export function parseHostRules(entries: readonly string[]): HostRule[] {
  const rules: HostRule[] = [];
  for (const entry of entries) {
    if (entry.startsWith('@')) {
      const preset = HOST_PRESETS[entry.slice(1)];
      if (preset === undefined || !Object.hasOwn(HOST_PRESETS, entry.slice(1))) {
        throw new HostRuleError(`${entry}: unknown preset (known: ${Object.keys(HOST_PRESETS).map((p) => `@${p}`).join(', ')})`);
      }
      for (const e of preset) rules.push(parseHostRule(e, entry));
    } else {
      rules.push(parseHostRule(entry));
    }
  }
  return rules;
}

function portMatches(rule: HostRule, port: number): boolean {
  return rule.ports === null || rule.ports.includes(port);
}

/** The first rule that lets a request to HOST:PORT through by its name (address rules match address requests only). */
export function matchHost(rules: readonly HostRule[], host: RequestHost, port: number): HostRule | null {
  for (const rule of rules) {
    if (!portMatches(rule, port)) continue;
    if (host.kind === 'address') {
      if (rule.kind === 'address' && rule.value === host.address) return rule;
      continue;
    }
    if (rule.kind === 'name' && rule.value === host.name) return rule;
    if (rule.kind === 'wildcard' && host.name.endsWith(`.${rule.value}`)) return rule;
  }
  return null;
}

/** An address named literally by a rule for this port: it may be reached even if loopback or private. */
export function literallyAllowed(rules: readonly HostRule[], address: string, port: number): boolean {
  return rules.some((r) => r.kind === 'address' && r.value === address && portMatches(r, port));
}

/** One line per rule for `run --explain` and notices. */
export function describeRule(rule: HostRule): string {
  const host = rule.kind === 'wildcard' ? `*.${rule.value}` : rule.kind === 'address' && rule.value.includes(':') ? `[${rule.value}]` : rule.value;
  const ports = rule.ports === null ? 'any port' : `port${rule.ports.length > 1 ? 's' : ''} ${rule.ports.join(', ')}`;
  const from = rule.source.startsWith('@') ? ` (from ${rule.source})` : '';
  const literal = rule.kind === 'address' ? ', literal address (reachable even if loopback or private)' : '';
  return `${host} ${ports}${literal}${from}`;
}

export class AuthorityError extends Error {}

/** Longest CONNECT target / Host authority accepted (a name of 253 plus brackets and port). */
const MAX_AUTHORITY_LENGTH = 270;

/**
 * A request's `host:port` (CONNECT's target, or the authority of an
 * absolute http:// URL). The port is required unless a default is given.
 * Names are normalised; IPv4 dotted quads and bracketed IPv6 are
 * addresses (an IPv4-mapped one becomes IPv4); `inet_aton` numeric forms,
 * userinfo, zone ids and anything else are refused.
 */
export function parseAuthority(text: string, defaultPort?: number): { host: RequestHost; port: number; display: string } {
  if (text.length === 0 || text.length > MAX_AUTHORITY_LENGTH) throw new AuthorityError('the target is empty or too long');
  if (!/^[\x21-\x7e]+$/.test(text) || /[@/\\?#%]/.test(text)) throw new AuthorityError('the target must be HOST:PORT');
  let hostText: string;
  let portText: string | undefined;
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0) throw new AuthorityError('unterminated IPv6 literal');
    hostText = text.slice(1, close);
    const rest = text.slice(close + 1);
    if (rest !== '' && !rest.startsWith(':')) throw new AuthorityError('the target must be HOST:PORT');
    portText = rest === '' ? undefined : rest.slice(1);
    const ip = canonicalIp(`[${hostText}]`);
    if (ip === null) throw new AuthorityError('not a valid IPv6 address');
    const port = authorityPort(portText, defaultPort);
    return { host: { kind: 'address', address: ip.address, family: ip.family }, port, display: `${ip.family === 6 ? `[${ip.address}]` : ip.address}:${port}` };
  }
  const cut = text.lastIndexOf(':');
  if (text.indexOf(':') !== cut) throw new AuthorityError('an IPv6 address must be in brackets');
  hostText = cut < 0 ? text : text.slice(0, cut);
  portText = cut < 0 ? undefined : text.slice(cut + 1);
  const port = authorityPort(portText, defaultPort);
  const ip = canonicalIp(hostText);
  if (ip !== null && ip.family === 4) return { host: { kind: 'address', address: ip.address, family: 4 }, port, display: `${ip.address}:${port}` };
  if (isNumericHostForm(hostText)) throw new AuthorityError('write an IPv4 address as four decimal numbers');
  const name = normaliseName(hostText);
  if (name === null) throw new AuthorityError('not a valid host name');
  return { host: { kind: 'name', name }, port, display: `${name}:${port}` };
}

function authorityPort(text: string | undefined, defaultPort: number | undefined): number {
  if (text === undefined || text === '') {
    if (defaultPort === undefined) throw new AuthorityError('the target needs a port (HOST:PORT)');
    if (text === '') throw new AuthorityError('empty port');
    return defaultPort;
  }
  if (!/^\d{1,5}$/.test(text)) throw new AuthorityError('the port must be a number');
  const n = Number(text);
  if (n < 1 || n > 65535) throw new AuthorityError('the port must be 1 to 65535');
  return n;
}

/** How a refusal names the flag to add. */
export function suggestFlag(host: RequestHost, port: number): string {
  const h = host.kind === 'name' ? host.name : host.family === 6 ? `[${host.address}]` : host.address;
  return DEFAULT_PORTS.includes(port) ? `--allow-host ${h}` : `--allow-host ${h}:${port}`;
}
