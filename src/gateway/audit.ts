import type { AuditSink } from '../server/audit.js';

/**
 * One audit line per gateway request. Names, numbers and codes only: never
 * a header value, a query string or a body.
 */
export interface GatewayAuditEntry {
  time: string;
  kind: 'gateway';
  /** The route name, or null when the path named none. */
  route: string | null;
  method: string;
  /** The path after the route, without the query. */
  path: string;
  status: number;
  /** Why the gateway answered itself or cut the request short (absent when the upstream answered and all went out). */
  outcome?: GatewayOutcome;
  bytesIn: number;
  bytesOut: number;
  durationMs: number;
  /** A 401 from the upstream led to a refreshed token and a replay. */
  refreshed: boolean;
  /** Secrets masked in the response (should always be 0). */
  masked?: number;
}

export type GatewayOutcome =
  | 'no_route'
  | 'bad_path'
  | 'not_allowed'
  | 'no_placeholder'
  | 'credential_error'
  | 'upstream_error'
  | 'upstream_timeout'
  | 'encoded_response'
  | 'client_closed';

export type GatewayAuditSink = AuditSink<GatewayAuditEntry>;

/** Paths in the audit are cut to a readable length; the query never goes in. */
export function auditPath(path: string): string {
  const q = path.indexOf('?');
  const bare = q < 0 ? path : path.slice(0, q);
  return bare.length > 256 ? `${bare.slice(0, 256)}...` : bare;
}
