import type { Connection } from './connection.js';
import type { PeerIdentity } from './context.js';
import { ConnectionLimiter, type LimitOptions } from './limits.js';

/**
 * What one peer may use across all its connections (SPEC §8: limits hold
 * per peer, not only per connection). A peer is what the server can tell
 * apart: the uid on a Unix socket with peer checks, else the transport as a
 * whole. The capability token is one per server, so every peer here already
 * holds it; a server per sandbox (what `run` starts) makes the peer the
 * sandbox.
 */
export interface PeerLimitOptions {
  /** Requests per window across the peer's connections (default 4 × the per-connection limit). */
  requestsPerWindow: number;
  /** In flight across the peer's connections (default 128: eight connections' worth, so a refresh storm of a few clients still fits). */
  maxInFlight: number;
  /** Open connections per peer (default 256); past it the peer's longest-idle connection is closed. */
  maxConnections: number;
}

export function defaultPeerLimits(perConnection: LimitOptions): PeerLimitOptions {
  return { requestsPerWindow: perConnection.requestsPerWindow * 4, maxInFlight: perConnection.maxInFlight * 8, maxConnections: 256 };
}

export function peerKey(peer: PeerIdentity, transport: 'unix' | 'tcp'): string {
  if (peer.uid !== null) return `uid:${peer.uid}`;
  return transport;
}

interface PeerState {
  limiter: ConnectionLimiter;
  connections: Set<Connection>;
}

/** The per-peer shared limiter and connection set; entries go when a peer's last connection closes. */
export class PeerTable {
  private readonly peers = new Map<string, PeerState>();

  constructor(
    private readonly connectionLimits: LimitOptions,
    private readonly peerLimits: PeerLimitOptions,
  ) {}

  /** The limiter shared by every connection of `key`. */
  limiterFor(key: string): ConnectionLimiter {
    return this.state(key).limiter;
  }

  add(key: string, conn: Connection): void {
    this.state(key).connections.add(conn);
  }

  remove(key: string, conn: Connection): void {
    const s = this.peers.get(key);
    if (s === undefined) return;
    s.connections.delete(conn);
    if (s.connections.size === 0 && s.limiter.inFlight === 0) this.peers.delete(key);
  }

  count(key: string): number {
    return this.peers.get(key)?.connections.size ?? 0;
  }

  get maxConnections(): number {
    return this.peerLimits.maxConnections;
  }

  /** The connection of `key` (or of anyone, without a key) idle the longest, with nothing in flight. */
  longestIdle(key?: string): Connection | null {
    let best: Connection | null = null;
    let bestIdle = -1;
    const sets = key === undefined ? [...this.peers.values()].map((p) => p.connections) : [this.peers.get(key)?.connections ?? new Set<Connection>()];
    for (const set of sets) {
      for (const c of set) {
        const idle = c.evictionRank;
        if (idle === null) continue;
        if (idle > bestIdle) {
          best = c;
          bestIdle = idle;
        }
      }
    }
    return best;
  }

  private state(key: string): PeerState {
    let s = this.peers.get(key);
    if (s === undefined) {
      s = {
        limiter: new ConnectionLimiter({
          requestsPerWindow: this.peerLimits.requestsPerWindow,
          windowMs: this.connectionLimits.windowMs,
          maxInFlight: this.peerLimits.maxInFlight,
        }),
        connections: new Set(),
      };
      this.peers.set(key, s);
    }
    return s;
  }
}
