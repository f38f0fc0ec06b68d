/**
 * Which URLs credproxy may talk OAuth to. Tokens only travel over https;
 * plain http is accepted solely for loopback IP literals (local test servers
 * and RFC 8252 loopback redirects), never for a name that DNS could send
 * elsewhere.
 */

/** 127.0.0.0/8 or ::1, as URL.hostname spells them. */
export function isLoopbackIp(hostname: string): boolean {
  if (hostname === '[::1]') return true;
  const m = /^127\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(hostname);
  return m !== null && m.slice(1).every((o) => Number(o) <= 255);
}

function parse(value: string): URL | null {
  try {
    return new URL(value);
  } catch {
    return null;
  }
}

/** null when `value` is an acceptable endpoint URL, else why not (safe text: no part of the value). */
export function endpointUrlProblem(value: string): string | null {
  const u = parse(value);
  if (!u) return 'Invalid URL';
  if (u.username || u.password) return 'must not contain credentials';
  if (u.hash) return 'must not contain a fragment';
  if (u.protocol === 'https:') return null;
  if (u.protocol === 'http:' && isLoopbackIp(u.hostname)) return null;
  return 'must be an https URL (plain http only for 127.0.0.1 or [::1])';
}

/** Loopback redirect for browser_redirect (RFC 8252 §7.3); "localhost" is what some registered clients use. */
export function loopbackRedirectProblem(value: string): string | null {
  const u = parse(value);
  if (!u) return 'Invalid URL';
  if (u.protocol !== 'http:' || !(isLoopbackIp(u.hostname) || u.hostname === 'localhost')) {
    return 'must be an http URL on 127.0.0.1, [::1] or localhost';
  }
  if (u.search || u.hash) return 'must not contain a query or fragment';
  return null;
}

/** True when this URL may be used without TLS (a loopback IP over http). */
export function isInsecureLoopback(url: URL): boolean {
  return url.protocol === 'http:' && isLoopbackIp(url.hostname);
}

/** True when credproxy may send a request to this URL at all. */
export function isAllowedRequestUrl(url: URL): boolean {
  return url.protocol === 'https:' || isInsecureLoopback(url);
}
