import type { AuditEntry, AuditSink } from './audit.js';
import type { PeerIdentity } from './context.js';

/** What the connection should do after a refusal. */
export type RefusalAction = { kind: 'none' } | { kind: 'slow'; pauseMs: number } | { kind: 'disconnect' };

export interface RefusalMeterOptions {
  audit: AuditSink | null;
  peer: PeerIdentity;
  remote: string | null;
  /** Rate-limited refusals within one second that make it a flooding second (default 60). */
  floodPerSecond?: number;
  /** Consecutive flooding seconds before the connection is dropped (default 5). */
  disconnectAfter?: number;
  /** Reading pauses this long per consecutive flooding second (default 200 ms, at most 1 s). */
  slowStepMs?: number;
  now?: () => number;
}

const WINDOW_MS = 1000;
const MAX_PAUSE_MS = 1000;

/**
 * Refused requests of one connection (schema, policy, rate limit): one audit
 * line per second with counts instead of one per request, so a flood cannot
 * grow the audit file faster than a line a second. A client that keeps
 * hitting the rate limit second after second is slowed (its reading paused
 * for longer each second) and then disconnected.
 */
export class RefusalMeter {
  private readonly o: RefusalMeterOptions;
  private readonly floodPerSecond: number;
  private readonly disconnectAfter: number;
  private readonly slowStepMs: number;
  private readonly now: () => number;
  private windowStart = 0;
  private byCode: Record<string, number> = {};
  private byOp: Record<string, number> = {};
  private rateLimited = 0;
  private total = 0;
  private strikes = 0;
  private lastFloodWindow = -Infinity;
  private timer: NodeJS.Timeout | null = null;

  constructor(options: RefusalMeterOptions) {
    this.o = options;
    this.floodPerSecond = options.floodPerSecond ?? 60;
    this.disconnectAfter = options.disconnectAfter ?? 5;
    this.slowStepMs = options.slowStepMs ?? 200;
    this.now = options.now ?? Date.now;
  }

  /** Consecutive flooding seconds so far. */
  get floodStrikes(): number {
    return this.strikes;
  }

  note(op: string, code: string): RefusalAction {
    const now = this.now();
    if (this.total > 0 && now - this.windowStart >= WINDOW_MS) this.flush();
    if (this.total === 0) {
      this.windowStart = now;
      this.timer = setTimeout(() => this.flush(), WINDOW_MS);
      this.timer.unref();
    }
    this.total++;
    this.byCode[code] = (this.byCode[code] ?? 0) + 1;
    this.byOp[op] = (this.byOp[op] ?? 0) + 1;
    if (code !== 'RATE_LIMITED') return { kind: 'none' };
    this.rateLimited++;
    if (this.rateLimited !== this.floodPerSecond) return { kind: 'none' };
    // This second floods: a strike, counted once per second, kept only while the seconds are consecutive.
    this.strikes = this.windowStart - this.lastFloodWindow <= WINDOW_MS + MAX_PAUSE_MS + WINDOW_MS ? this.strikes + 1 : 1;
    this.lastFloodWindow = this.windowStart;
    if (this.strikes >= this.disconnectAfter) return { kind: 'disconnect' };
    return { kind: 'slow', pauseMs: Math.min(MAX_PAUSE_MS, this.strikes * this.slowStepMs) };
  }

  /** Write the current second's line (also on close, so nothing counted is lost). */
  flush(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    if (this.total === 0) return;
    const entry: AuditEntry = {
      time: new Date(this.windowStart).toISOString(),
      conn: this.o.peer.connectionId,
      peerPid: this.o.peer.pid,
      peerUid: this.o.peer.uid,
      ...(this.o.remote !== null ? { remote: this.o.remote } : {}),
      op: 'refused',
      refused: this.byCode,
      ops: this.byOp,
      result: 'REFUSED',
      durationMs: 0,
    };
    this.o.audit?.record(entry);
    this.byCode = {};
    this.byOp = {};
    this.rateLimited = 0;
    this.total = 0;
  }
}
