import type { IncomingHttpHeaders } from 'node:http';

/** RFC 9110 §7.6.1 hop-by-hop headers, plus the proxy ones: never passed on by the gateway or the egress proxy. */
export const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade']);

/** The headers a message's Connection header names as hop-by-hop for it (lower case). */
export function connectionTokens(headers: IncomingHttpHeaders): Set<string> {
  const raw = headers.connection;
  const out = new Set<string>();
  if (raw === undefined) return out;
  for (const t of String(raw).split(',')) {
    const token = t.trim().toLowerCase();
    if (token !== '') out.add(token);
  }
  return out;
}
