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
  /**
   * Where refusals are audited instead of this meter's own line a second
   * (the server aggregates them per peer, across its connections).
   */
  record?: (code: string, op: string) => void;
}

const WINDOW_MS = 1000;
const MAX_PAUSE_MS = 1000;

/**
 * Counts events of one second by two keys and hands the second's counts to
 * `flush` once: when the next event falls in a later second, when the
 * second's timer fires, or on an explicit flush(). A flood of refusals so
 * costs at most one audit line a second, and nothing counted is lost.
 */
export class SecondTally {
  private windowStart = 0;
  // Null-prototype: keys come from outside (a host name could be "__proto__").
  private first: Record<string, number> = Object.create(null) as Record<string, number>;
  private second: Record<string, number> = Object.create(null) as Record<string, number>;
  private secondKeys = 0;
  /** Notes whose second key came after `maxSecondKeys` distinct ones (names chosen by a client: bounded). */
  private overflow = 0;
  private count = 0;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly onFlush: (windowStart: number, first: Record<string, number>, second: Record<string, number>, overflow: number) => void,
    private readonly now: () => number = Date.now,
    private readonly maxSecondKeys = Infinity,
  ) {}

  /** Start of the second the last note fell in. */
  get window(): number {
    return this.windowStart;
  }

  note(first: string, second: string): void {
    const now = this.now();
    if (this.count > 0 && now - this.windowStart >= WINDOW_MS) this.flush();
    if (this.count === 0) {
      this.windowStart = now;
      this.timer = setTimeout(() => this.flush(), WINDOW_MS);
      this.timer.unref();
    }
    this.count++;
    this.first[first] = (this.first[first] ?? 0) + 1;
    const seen = this.second[second];
    if (seen !== undefined) this.second[second] = seen + 1;
    else if (this.secondKeys < this.maxSecondKeys) {
      this.second[second] = 1;
      this.secondKeys++;
    } else this.overflow++;
  }

  flush(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    if (this.count === 0) return;
    const [first, second, overflow] = [this.first, this.second, this.overflow];
    this.first = Object.create(null) as Record<string, number>;
    this.second = Object.create(null) as Record<string, number>;
    this.secondKeys = 0;
    this.overflow = 0;
    this.count = 0;
    this.onFlush(this.windowStart, first, second, overflow);
  }
}

/**
 * Refused requests of one connection (schema, policy, rate limit): one audit
 * line per second with counts instead of one per request, so a flood cannot
 * grow the audit file faster than a line a second. A client that keeps
 * hitting the rate limit second after second is slowed (its reading paused
 * for longer each second) and then disconnected.
 */
export class RefusalMeter {
  private readonly floodPerSecond: number;
  private readonly disconnectAfter: number;
  private readonly slowStepMs: number;
  private readonly tally: SecondTally;
  private rateLimited = 0;
  private strikes = 0;
  private lastFloodWindow = -Infinity;
  private readonly record: ((code: string, op: string) => void) | undefined;

  constructor(options: RefusalMeterOptions) {
    this.record = options.record;
    this.floodPerSecond = options.floodPerSecond ?? 60;
    this.disconnectAfter = options.disconnectAfter ?? 5;
    this.slowStepMs = options.slowStepMs ?? 200;
    this.tally = new SecondTally((windowStart, byCode, byOp) => {
      this.rateLimited = 0;
      if (options.record !== undefined) return;
      const entry: AuditEntry = {
        time: new Date(windowStart).toISOString(),
        conn: options.peer.connectionId,
        peerPid: options.peer.pid,
        peerUid: options.peer.uid,
        ...(options.remote !== null ? { remote: options.remote } : {}),
        op: 'refused',
        refused: byCode,
        ops: byOp,
        result: 'REFUSED',
        durationMs: 0,
      };
      options.audit?.record(entry);
    }, options.now);
  }

  /** Consecutive flooding seconds so far. */
  get floodStrikes(): number {
    return this.strikes;
  }

  note(op: string, code: string): RefusalAction {
    this.tally.note(code, op);
    this.record?.(code, op);
    if (code !== 'RATE_LIMITED') return { kind: 'none' };
    this.rateLimited++;
    if (this.rateLimited !== this.floodPerSecond) return { kind: 'none' };
    // This second floods: a strike, counted once per second, kept only while the seconds are consecutive.
    const windowStart = this.tally.window;
    this.strikes = windowStart - this.lastFloodWindow <= WINDOW_MS + MAX_PAUSE_MS + WINDOW_MS ? this.strikes + 1 : 1;
    this.lastFloodWindow = windowStart;
    if (this.strikes >= this.disconnectAfter) return { kind: 'disconnect' };
    return { kind: 'slow', pauseMs: Math.min(MAX_PAUSE_MS, this.strikes * this.slowStepMs) };
  }

  /** Write the current second's line (also on close, so nothing counted is lost). */
  flush(): void {
    this.tally.flush();
  }
}
