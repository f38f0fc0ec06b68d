import type { AuditSink } from '../server/audit.js';
import { SecondTally } from '../server/refusals.js';

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
  | 'client_closed'
  /** The client went away before its request went upstream. */
  | 'abandoned'
  | 'bad_request'
  | 'slow_head'
  | 'busy'
  | 'foreign_peer'
  | 'pipelined';

/** Outcomes where nothing went upstream (the gateway answered itself, or the client left first): counted per second, not a line each. */
export const REFUSAL_OUTCOMES: ReadonlySet<GatewayOutcome> = new Set(['no_route', 'bad_path', 'not_allowed', 'no_placeholder', 'credential_error', 'bad_request', 'slow_head', 'busy', 'foreign_peer', 'pipelined', 'abandoned']);

/**
 * The gateway's refusals of one second: a sandbox sending requests without
 * the placeholder, to routes it does not have, or malformed HTTP, grows the
 * audit file by at most this one line a second.
 */
export interface GatewayRefusedEntry {
  time: string;
  kind: 'gateway_refused';
  /** By outcome (no_placeholder, no_route, …). */
  refused: Record<string, number>;
  /** By route name; '-' when the path named none. */
  routes: Record<string, number>;
}

export type GatewayAuditSink = AuditSink<GatewayAuditEntry | GatewayRefusedEntry>;

/** Counts refusals into one GatewayRefusedEntry per second. */
export class GatewayRefusals {
  private readonly tally: SecondTally;

  constructor(sink: GatewayAuditSink | undefined, now?: () => number) {
    this.tally = new SecondTally((windowStart, refused, routes) => sink?.record({ time: new Date(windowStart).toISOString(), kind: 'gateway_refused', refused, routes }), now);
  }

  note(outcome: GatewayOutcome, route: string | null): void {
    this.tally.note(outcome, route ?? '-');
  }

  flush(): void {
    this.tally.flush();
  }
}

/** Paths in the audit are cut to a readable length; the query never goes in. */
export function auditPath(path: string): string {
  const q = path.indexOf('?');
  const bare = q < 0 ? path : path.slice(0, q);
  return bare.length > 256 ? `${bare.slice(0, 256)}...` : bare;
}
