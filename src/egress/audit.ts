import type { AuditSink } from '../server/audit.js';
import { SecondTally } from '../server/refusals.js';

/** The egress proxy's audit file in the state dir, next to audit.jsonl and gateway-audit.jsonl. */
export const EGRESS_AUDIT_FILE = 'egress-audit.jsonl';

/** Why a connection did not go through. */
export type EgressRefusal =
  /** Not parseable as a proxy request (bad target, header too large, timeout, origin-form URL). */
  | 'bad_request'
  /** The host:port matches no --allow-host rule. */
  | 'not_allowed'
  /** Every address the name resolved to (or the literal) is loopback, private, link-local... and not named literally. */
  | 'blocked_address'
  /** The name did not resolve. */
  | 'dns_failed'
  /** Too many connections open, or too many name lookups waiting. */
  | 'busy'
  /** The checked address did not accept the connection in time. */
  | 'connect_failed'
  /** On the host's loopback (`--sandbox none`): a process of another user connected. */
  | 'foreign_peer';

/**
 * One line per connection that reached its upstream: a CONNECT tunnel, or a
 * forwarded plain-HTTP request (each gets its own upstream connection).
 * Host, port, the address connected to, bytes each way, duration. Never a
 * path, query, header or body: URLs and headers carry credentials.
 */
export interface EgressConnectionEntry {
  time: string;
  kind: 'egress';
  type: 'connect' | 'http';
  host: string;
  port: number;
  /** The address the proxy checked and connected to. */
  address: string;
  /** http only. */
  method?: string;
  status?: number;
  result: 'allowed';
  /** Bytes from the sandbox to the upstream. */
  bytesUp: number;
  /** Bytes from the upstream to the sandbox. */
  bytesDown: number;
  durationMs: number;
}

/**
 * Refused connections of one second, counted, so that a flood from the
 * sandbox adds at most a line a second: by reason and by host:port (at most
 * MAX_REFUSED_HOSTS distinct ones, the rest in `otherHosts`).
 */
export interface EgressRefusedEntry {
  time: string;
  kind: 'egress';
  type: 'refused';
  result: 'refused';
  count: number;
  reasons: Partial<Record<EgressRefusal, number>>;
  hosts: Record<string, number>;
  otherHosts?: number;
  durationMs: 0;
}

export type EgressAuditEntry = EgressConnectionEntry | EgressRefusedEntry;
export type EgressAuditSink = AuditSink<EgressAuditEntry>;

const MAX_REFUSED_HOSTS = 32;

/** Aggregates refusals into one line per second (server-wide: every refused connection counts, whoever made it). */
export class EgressRefusals {
  private readonly tally: SecondTally;
  /** Refusals counted so far in total (for tests and the bench). */
  total = 0;

  constructor(audit: EgressAuditSink | undefined, now: () => number = Date.now) {
    this.tally = new SecondTally(
      (windowStart, reasons, hosts, otherHosts) =>
        audit?.record({
          time: new Date(windowStart).toISOString(),
          kind: 'egress',
          type: 'refused',
          result: 'refused',
          count: Object.values(reasons).reduce((a, b) => a + b, 0),
          reasons: { ...reasons },
          hosts: { ...hosts },
          ...(otherHosts > 0 ? { otherHosts } : {}),
          durationMs: 0,
        }),
      now,
      MAX_REFUSED_HOSTS,
    );
  }

  note(reason: EgressRefusal, hostPort: string): void {
    this.total++;
    this.tally.note(reason, hostPort);
  }

  /** Write the current second's line (also on stop, so nothing counted is lost). */
  flush(): void {
    this.tally.flush();
  }
}
