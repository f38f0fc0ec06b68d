import type { AuditEntry, AuditSink } from './audit.js';
import type { PeerIdentity } from './context.js';
import { SecondTally } from './refusals.js';

export interface PeerAuditOptions {
  audit: AuditSink | null;
  /** Connection lines (handshake, refused connect) written one by one per peer and second; the rest are counted. */
  linesPerSecond?: number;
  now?: () => number;
}

const WINDOW_MS = 1000;
/** Peers whose state is kept before idle ones are forgotten. */
const MAX_IDLE_PEERS = 1024;

interface Contributor {
  peer: PeerIdentity;
  remote: string | null;
}

/** One peer's lines of the current second. */
class PeerLines {
  windowStart = -Infinity;
  single = 0;
  /** Who the aggregate lines name: the first connection that contributed this second. */
  firstRefused: Contributor | null = null;
  refusedConns = new Set<number>();
  firstCounted: Contributor | null = null;
  readonly refusals: SecondTally;
  readonly counted: SecondTally;

  constructor(audit: AuditSink | null, now: () => number) {
    this.refusals = new SecondTally((windowStart, byCode, byOp) => {
      const who = this.firstRefused;
      const conns = this.refusedConns.size;
      this.firstRefused = null;
      this.refusedConns = new Set();
      if (who === null) return;
      audit?.record({
        ...identity(windowStart, who),
        op: 'refused',
        refused: byCode,
        ops: byOp,
        ...(conns > 1 ? { connections: conns } : {}),
        result: 'REFUSED',
        durationMs: 0,
      });
    }, now);
    this.counted = new SecondTally((windowStart, byKind) => {
      const who = this.firstCounted;
      this.firstCounted = null;
      if (who === null) return;
      audit?.record({ ...identity(windowStart, who), op: 'aggregated', counts: byKind, result: 'AGGREGATED', durationMs: 0 });
    }, now);
  }

  get idle(): boolean {
    return this.firstRefused === null && this.firstCounted === null;
  }
}

function identity(windowStart: number, who: Contributor): Pick<AuditEntry, 'time' | 'conn' | 'peerPid' | 'peerUid' | 'remote'> {
  return {
    time: new Date(windowStart).toISOString(),
    conn: who.peer.connectionId,
    peerPid: who.peer.pid,
    peerUid: who.peer.uid,
    ...(who.remote !== null ? { remote: who.remote } : {}),
  };
}

/**
 * Audit lines that are not served requests, per peer (the sandbox) rather
 * than per connection: a peer that opens connection after connection must
 * not buy an audit line with each (a handshake, a refused connect, its
 * refusals). Refusals of all the peer's connections make one line a second;
 * connection lines are written one by one up to a small number a second and
 * counted in one line a second beyond it. Nothing is dropped.
 */
export class PeerAudit {
  private readonly peers = new Map<string, PeerLines>();
  private readonly audit: AuditSink | null;
  private readonly linesPerSecond: number;
  private readonly now: () => number;

  constructor(options: PeerAuditOptions) {
    this.audit = options.audit;
    this.linesPerSecond = options.linesPerSecond ?? 16;
    this.now = options.now ?? Date.now;
  }

  /** A request of `key`'s connection was refused before any store. */
  refused(key: string, peer: PeerIdentity, remote: string | null, code: string, op: string): void {
    const p = this.lines(key);
    p.firstRefused ??= { peer, remote };
    if (p.refusedConns.size < 1024) p.refusedConns.add(peer.connectionId);
    p.refusals.note(code, op);
  }

  /** A connection-level event: `entry` is written as it is, or counted as `op:result` when the peer has had its share this second. */
  connection(key: string, entry: AuditEntry, peer: PeerIdentity, remote: string | null): void {
    if (this.audit === null) return;
    const p = this.lines(key);
    const now = this.now();
    if (now - p.windowStart >= WINDOW_MS) {
      p.windowStart = now;
      p.single = 0;
    }
    if (p.single < this.linesPerSecond) {
      p.single++;
      this.audit.record(entry);
      return;
    }
    p.firstCounted ??= { peer, remote };
    p.counted.note(`${entry.op}:${entry.result}`, '');
  }

  /** Write what is counted so far (server stop). */
  flush(): void {
    for (const p of this.peers.values()) {
      p.refusals.flush();
      p.counted.flush();
    }
  }

  private lines(key: string): PeerLines {
    let p = this.peers.get(key);
    if (p !== undefined) return p;
    if (this.peers.size >= MAX_IDLE_PEERS) this.forgetIdle();
    p = new PeerLines(this.audit, this.now);
    this.peers.set(key, p);
    return p;
  }

  private forgetIdle(): void {
    const now = this.now();
    for (const [key, p] of this.peers) {
      if (p.idle && now - p.windowStart >= WINDOW_MS) this.peers.delete(key);
    }
  }
}
