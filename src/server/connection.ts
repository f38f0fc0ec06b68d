import type { Socket } from 'node:net';
import type { WireErrorCode } from '../errors.js';
import type { Logger } from '../log.js';
import { encodeFrame, FrameDecoder, FrameError, frameLimitFor, parsePayload } from '../protocol/frame.js';
import { HandshakeSchema, isOp, PROTOCOL_VERSION } from '../protocol/messages.js';
import type { AuditEntry, AuditSink } from './audit.js';
import { LARGE_FRAME_BYTES, type ConnectionBytes } from './byte-budget.js';
import type { CapabilityCheck } from './capability.js';
import type { PeerIdentity, RequestContext } from './context.js';
import type { AuditFields, DispatchResult, Dispatcher, Outcome } from './dispatch.js';
import { ConnectionLimiter, type LimitOptions } from './limits.js';
import { RefusalMeter } from './refusals.js';

export interface ConnectionOptions {
  id: number;
  socket: Socket;
  peer: PeerIdentity;
  /** null when the server runs without a capability token. */
  capability: CapabilityCheck | null;
  dispatcher: Dispatcher;
  limits: LimitOptions;
  /** SPEC §4: handshake must complete this long after connecting (5 s). */
  handshakeTimeoutMs: number;
  /** SPEC §4: a frame must complete this long after its first byte (5 s). */
  frameTimeoutMs: number;
  /** Answers queued for a client that does not read; beyond this it is dropped. */
  maxOutputBytes: number;
  /** This connection's share of the server's buffer budget for frames above the version-1 size. */
  bytes: ConnectionBytes;
  /** Highest protocol version this server agrees to. */
  maxVersion: number;
  audit: AuditSink | null;
  logger: Logger;
  /** Shared by every connection of the same peer (per-peer limits). */
  peerLimiter?: ConnectionLimiter;
  /** TCP: the client's address:port, recorded on its audit lines. */
  remote?: string | null;
  /** Close the connection after this long with nothing in flight and nothing received (default: never). */
  idleTimeoutMs?: number;
  /** Rate-limited refusals per second that count as flooding, and how many such seconds in a row end the connection. */
  flood?: { perSecond?: number; disconnectAfter?: number };
  onClose(conn: Connection): void;
  /** A handshake was refused or timed out (the TCP transport rate-limits these per address). */
  onHandshakeFailed?(): void;
  /**
   * Decides a failed handshake's fate (TCP tarpit): the answer and close are
   * delayed by the returned ms; undefined = answer at once.
   */
  handshakeFailureDelayMs?(): number | undefined;
  /** The handshake succeeded (the server counts connections per peer from here). */
  onReady?(conn: Connection): void;
  /** Handshake failures are audited in aggregate by the server. */
  onHandshakeRefused?(code: string): void;
  /**
   * The server's per-peer audit: refusals, and lines about the connection
   * itself (its handshake, its disconnection), go there rather than straight
   * to the audit, so that opening many connections buys no extra lines.
   */
  peerAudit?: { refused(code: string, op: string): void; connection(entry: AuditEntry): void };
}

type PauseReason = 'output' | 'audit' | 'tarpit';

type State = 'handshake' | 'ready' | 'closing' | 'closed';

/**
 * One admitted request. Its AbortController is made only when the handler
 * asks for the signal: most ops (get_token) never do, and creating one costs
 * more than the rest of a cached read.
 */
class InFlight {
  cancelled = false;
  private controller: AbortController | null = null;
  private aborted = false;

  get signal(): AbortSignal {
    this.controller ??= new AbortController();
    if (this.aborted) this.controller.abort();
    return this.controller.signal;
  }

  abort(): void {
    this.aborted = true;
    this.controller?.abort();
  }
}

const MAX_ID_LENGTH = 256;
/** A rejected handshake gets this long to flush its answer before the socket is destroyed. */
const CLOSE_FLUSH_MS = 1000;

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * One client connection: framing with its timers, the handshake, then
 * concurrent requests through the dispatcher, answered by id in whatever
 * order they finish. Owns its socket and its timers.
 */
export class Connection {
  readonly id: number;
  private readonly o: ConnectionOptions;
  private readonly socket: Socket;
  private readonly decoder: FrameDecoder;
  private readonly limiter: ConnectionLimiter;
  /** The agreed protocol version; 1 until a handshake agrees on more. */
  private version = PROTOCOL_VERSION;
  private readonly inFlight = new Map<string, InFlight>();
  private state: State = 'handshake';
  private draining = false;
  private frameTimer: NodeJS.Timeout | null = null;
  private handshakeTimer: NodeJS.Timeout | null = null;
  /** Handlers still running, cancelled ones included: their host work is real. */
  private running = 0;
  private idleWaiters: Array<() => void> = [];
  /** Why reading is paused; it resumes when this is empty. */
  private readonly pauses = new Set<PauseReason>();
  /** Complete frames may wait in the decoder, unhandled (reading paused between them). */
  private backlogged = false;
  private readonly refusals: RefusalMeter;
  private idleTimer: NodeJS.Timeout | null = null;
  /** performance.now() of the last byte received or answer finished. */
  private lastActive = performance.now();

  constructor(options: ConnectionOptions) {
    this.o = options;
    this.id = options.id;
    this.socket = options.socket;
    this.limiter = new ConnectionLimiter(options.limits);
    // Every large frame reserves its declared size before any of it is kept, so
    // slow senders of many large frames hit the budget, not the heap.
    this.decoder = new FrameDecoder(frameLimitFor(PROTOCOL_VERSION), {
      admit: (len) => len <= LARGE_FRAME_BYTES || options.bytes.tryTake(len),
    });
    const peerAudit = options.peerAudit;
    this.refusals = new RefusalMeter({
      audit: options.audit,
      ...(peerAudit !== undefined ? { record: (code: string, op: string) => peerAudit.refused(code, op) } : {}),
      peer: options.peer,
      remote: options.remote ?? null,
      ...(options.flood?.perSecond !== undefined ? { floodPerSecond: options.flood.perSecond } : {}),
      ...(options.flood?.disconnectAfter !== undefined ? { disconnectAfter: options.flood.disconnectAfter } : {}),
    });
  }

  get peer(): PeerIdentity {
    return this.o.peer;
  }

  /** Requests running now (cancelled ones included until their work ends). */
  get busy(): boolean {
    return this.running > 0 || this.backlogged;
  }

  /** ms since the last byte received or answer finished. */
  get idleForMs(): number {
    return this.busy ? 0 : performance.now() - this.lastActive;
  }

  /**
   * May be closed to make room for a new connection: no host work running.
   * Frames read but not handled (a client that does not read its answers)
   * were never admitted, so they do not protect it; such a client goes first.
   */
  get evictionRank(): number | null {
    if (this.running > 0 || this.state === 'closed') return null;
    if (this.pauses.has('output')) return Number.MAX_SAFE_INTEGER;
    return performance.now() - this.lastActive;
  }

  get isReady(): boolean {
    return this.state === 'ready';
  }

  start(): void {
    const s = this.socket;
    s.on('data', (chunk: Buffer) => this.onData(chunk));
    s.on('end', () => this.onEnd());
    s.on('drain', () => this.unpause('output'));
    s.on('error', (err: NodeJS.ErrnoException) => this.o.logger.debug({ conn: this.id, code: err.code }, 'connection error'));
    s.on('close', () => this.onSocketClose());
    this.handshakeTimer = setTimeout(() => {
      this.o.onHandshakeFailed?.();
      this.abort('handshake timeout');
    }, this.o.handshakeTimeoutMs);
    this.handshakeTimer.unref();
    this.armIdle();
  }

  private armIdle(): void {
    const ms = this.o.idleTimeoutMs;
    if (ms === undefined || this.idleTimer !== null) return;
    this.idleTimer = setTimeout(() => {
      this.idleTimer = null;
      if (this.state === 'closed') return;
      const idle = this.idleForMs;
      if (idle >= ms) {
        this.o.logger.debug({ conn: this.id }, 'closing an idle connection');
        this.abort('idle');
        return;
      }
      this.armIdle();
    }, Math.max(10, ms - this.idleForMs));
    this.idleTimer.unref();
  }

  get isClosed(): boolean {
    return this.state === 'closed';
  }

  /** Stop reading new requests; resolves when every running handler has finished. */
  beginShutdown(): Promise<void> {
    this.draining = true;
    // Frames read but not yet handled are dropped unanswered, like bytes never read.
    this.backlogged = false;
    this.clearFrameTimer();
    if (this.state === 'handshake') this.abort('server stopping');
    else this.socket.pause();
    return this.whenIdle();
  }

  whenIdle(): Promise<void> {
    if (this.running === 0 && (!this.backlogged || this.draining || this.state === 'closed')) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Close now; answers still running are dropped. */
  destroy(): void {
    this.abort('closed by server');
  }

  private onData(chunk: Buffer): void {
    if (this.draining || (this.state !== 'handshake' && this.state !== 'ready')) return;
    this.lastActive = performance.now();
    this.decoder.append(chunk);
    this.handleBacklog();
  }

  /**
   * Handle the frames read so far, one by one, stopping as soon as reading
   * is paused (the client does not read its answers, the audit writer is
   * behind, or the client is being slowed): what is left waits in the
   * decoder for the pause to end, so neither answers nor audit lines pile
   * up in memory. One frame at a time also lets the handshake change the
   * size limit for the frames behind it in the same chunk.
   */
  private handleBacklog(): void {
    let completed = 0;
    this.backlogged = true;
    while (this.pauses.size === 0 && !this.draining) {
      if (this.state !== 'handshake' && this.state !== 'ready') return;
      let payload: Buffer | null;
      try {
        payload = this.decoder.next();
      } catch (err) {
        this.abort(err instanceof FrameError ? err.reason : 'framing error');
        return;
      }
      if (payload === null) {
        this.backlogged = false;
        break;
      }
      completed++;
      // The budget the decoder reserved for a large frame stays taken until its request is done.
      const held = payload.length > LARGE_FRAME_BYTES ? payload.length : 0;
      let message: Record<string, unknown>;
      try {
        message = parsePayload(payload);
      } catch (err) {
        this.abort(err instanceof FrameError ? err.reason : 'bad payload');
        return;
      }
      if (this.state === 'handshake') {
        this.o.bytes.give(held);
        this.onHandshake(message);
      } else this.onRequest(message, held);
      if (this.o.audit?.congested === true) this.pauseForAudit();
    }
    if (this.state !== 'handshake' && this.state !== 'ready') return;
    // The timer runs from the first byte of each frame: a completed frame
    // ends it, a frame started meanwhile starts a new one. While reading is
    // paused the frame cannot progress by the client's fault, so no timer runs.
    if (completed > 0 || this.backlogged) this.clearFrameTimer();
    if (!this.backlogged && this.decoder.hasPartialFrame && this.frameTimer === null) {
      this.frameTimer = setTimeout(() => this.abort('partial frame timeout'), this.o.frameTimeoutMs);
      this.frameTimer.unref();
    }
    if (this.backlogged && this.pauses.size === 0) this.socket.pause();
    if (!this.backlogged && this.running === 0) this.wakeIdle();
  }

  private pause(reason: PauseReason): void {
    this.pauses.add(reason);
    this.socket.pause();
  }

  private unpause(reason: PauseReason): void {
    if (!this.pauses.delete(reason) || this.pauses.size > 0) return;
    if (this.draining || (this.state !== 'handshake' && this.state !== 'ready')) return;
    this.handleBacklog();
    if (this.pauses.size === 0 && !this.backlogged) this.socket.resume();
  }

  private pauseForAudit(): void {
    if (this.pauses.has('audit')) return;
    this.pause('audit');
    void this.o.audit!.whenDrained!().then(() => this.unpause('audit'));
  }

  /** A request refused before any store (schema, policy, rate limit): counted, audited per second, floods slowed then cut. */
  private refuse(op: string, code: string): void {
    const action = this.refusals.note(op, code);
    if (action.kind === 'none') return;
    if (action.kind === 'disconnect') {
      this.refusals.flush();
      this.record({ time: Date.now(), op: 'disconnect', result: 'RATE_LIMITED', started: performance.now(), connectionLine: true });
      this.o.logger.warn({ conn: this.id, peerPid: this.o.peer.pid }, 'disconnected a client that kept exceeding the rate limit');
      this.abort('kept exceeding the rate limit');
      return;
    }
    if (this.pauses.has('tarpit')) return;
    this.pause('tarpit');
    const t = setTimeout(() => this.unpause('tarpit'), action.pauseMs);
    t.unref();
  }

  private onHandshake(msg: Record<string, unknown>): void {
    const started = performance.now();
    const time = Date.now();
    const reject = (code: WireErrorCode, error: string): void => {
      this.o.onHandshakeFailed?.();
      if (this.o.onHandshakeRefused !== undefined) this.o.onHandshakeRefused(code);
      else this.record({ time, op: 'handshake', result: code, started });
      const answer = { v: PROTOCOL_VERSION, op: 'handshake', ok: false, code, error };
      const delay = this.o.handshakeFailureDelayMs?.();
      if (delay === undefined || delay <= 0) {
        this.closeAfter(answer);
        return;
      }
      // Tarpit: the failed peer waits, reading nothing more, before it learns the answer.
      this.state = 'closing';
      this.clearTimers();
      this.socket.pause();
      const t = setTimeout(() => this.closeAfter(answer), delay);
      t.unref();
      this.socket.once('close', () => clearTimeout(t));
    };
    if (msg.op !== 'handshake' || msg.id !== undefined) {
      reject('INVALID_REQUEST', 'the first frame must be a handshake without an id');
      return;
    }
    // The capability comes before anything else so that an unauthenticated
    // peer learns nothing, not even which versions are spoken.
    if (this.o.capability !== null) {
      const offered = isRecord(msg.payload) ? msg.payload.capabilityToken : undefined;
      if (!this.o.capability.matches(offered)) {
        reject('UNAUTHORIZED', 'capability token missing or wrong');
        return;
      }
    }
    const parsed = HandshakeSchema.shape.payload.safeParse(msg.payload);
    if (!parsed.success || !Number.isInteger(msg.v) || (msg.v as number) < 1) {
      reject('INVALID_REQUEST', 'malformed handshake');
      return;
    }
    const { minVersion, maxVersion } = parsed.data;
    if (minVersion > maxVersion) {
      reject('INVALID_REQUEST', 'minVersion is greater than maxVersion');
      return;
    }
    // The highest version both sides speak (SPEC §8): a v1-only client keeps v1 and its 64 KiB frames.
    const agreed = Math.min(maxVersion, this.o.maxVersion);
    if (agreed < minVersion || agreed < PROTOCOL_VERSION) {
      const spoken = this.o.maxVersion === PROTOCOL_VERSION ? `${PROTOCOL_VERSION}` : `${PROTOCOL_VERSION} to ${this.o.maxVersion}`;
      reject('UNKNOWN_VERSION', `this server speaks protocol versions ${spoken}`);
      return;
    }
    this.state = 'ready';
    if (this.handshakeTimer !== null) clearTimeout(this.handshakeTimer);
    this.handshakeTimer = null;
    this.record({ time, op: 'handshake', result: 'OK', started, connectionLine: true });
    // The answer itself is a version-1 frame: the client learns the version from it.
    this.write({ v: PROTOCOL_VERSION, op: 'handshake', ok: true, data: { version: agreed } });
    this.version = agreed;
    this.decoder.setMaxPayload(frameLimitFor(agreed));
    this.o.onReady?.(this);
  }

  /** `held`: budget bytes the request's frame holds, returned when the request is done. */
  private onRequest(msg: Record<string, unknown>, held: number): void {
    const started = performance.now();
    const time = Date.now();
    const auditOp = isOp(msg.op) ? msg.op : 'unknown';
    const id = msg.id;
    if (typeof id !== 'string' || id.length === 0 || id.length > MAX_ID_LENGTH) {
      this.o.bytes.give(held);
      this.answerAtOnce(undefined, auditOp, time, started, 'request without a valid string id');
      return;
    }
    if (this.inFlight.has(id)) {
      this.o.bytes.give(held);
      this.answerAtOnce(id, auditOp, time, started, 'a request with this id is already in flight');
      return;
    }
    const isCancel = msg.op === 'cancel';
    const admission = this.limiter.admitWith(this.o.peerLimiter ?? null, !isCancel);
    if (!admission.ok) {
      this.o.bytes.give(held);
      this.write({ v: this.version, id, ok: false, code: 'RATE_LIMITED', error: 'too many requests', retryAfter: admission.retryAfter });
      this.refuse(auditOp, 'RATE_LIMITED');
      return;
    }
    const entry = new InFlight();
    this.inFlight.set(id, entry);
    this.running++;
    const ctx: RequestContext = {
      peer: this.o.peer,
      version: this.version,
      get signal() {
        return entry.signal;
      },
      cancel: (targetId) => this.cancelRequest(targetId, id),
    };
    const finish = (result: DispatchResult): void => {
      this.o.bytes.give(held);
      this.running--;
      if (!isCancel) {
        this.limiter.release();
        this.o.peerLimiter?.release();
      }
      if (this.inFlight.get(id) === entry) this.inFlight.delete(id);
      let resultCode: string = result.outcome.ok ? 'OK' : result.outcome.code;
      if (entry.cancelled) resultCode = 'CANCELLED';
      else if (this.state === 'closed') resultCode = 'DISCONNECTED';
      else resultCode = this.answer(id, result.outcome);
      this.lastActive = performance.now();
      if (result.refused === true && !entry.cancelled) this.refuse(result.op, resultCode);
      else this.record({ time, op: result.op, fields: result.audit, result: resultCode, started });
      if (this.running === 0 && !this.backlogged) this.wakeIdle();
    };
    // Answered in this tick when the dispatcher knows the answer at once (a cached token).
    const result = this.o.dispatcher.dispatch(msg, ctx);
    if (result instanceof Promise) void result.then(finish);
    else finish(result);
  }

  /** Envelope-level rejections: answered immediately, counted by the rate limit. */
  private answerAtOnce(id: string | undefined, op: string, time: number, started: number, reason: string): void {
    const admission = this.limiter.admitWith(this.o.peerLimiter ?? null, false);
    const base = id === undefined ? { v: this.version } : { v: this.version, id };
    if (!admission.ok) {
      this.write({ ...base, ok: false, code: 'RATE_LIMITED', error: 'too many requests', retryAfter: admission.retryAfter });
      this.refuse(op, 'RATE_LIMITED');
      return;
    }
    this.write({ ...base, ok: false, code: 'INVALID_REQUEST', error: reason });
    this.refuse(op, 'INVALID_REQUEST');
  }

  private cancelRequest(targetId: string, cancelId: string): boolean {
    if (targetId === cancelId) return false;
    const entry = this.inFlight.get(targetId);
    if (entry === undefined) return false;
    entry.cancelled = true;
    entry.abort();
    // The id is free for reuse at once; the limiter slot is released only
    // when the host work really ends.
    this.inFlight.delete(targetId);
    return true;
  }

  /** Sends the answer; returns the code actually sent (for the audit). */
  private answer(id: string, outcome: Outcome): string {
    const v = this.version;
    const response = outcome.ok ? { v, id, ok: true, data: outcome.data } : { v, id, ...outcome };
    let frame: Buffer;
    try {
      frame = encodeFrame(response, frameLimitFor(v));
    } catch {
      this.o.logger.warn({ conn: this.id }, 'answer exceeds the frame size limit');
      frame = encodeFrame({ v, id, ok: false, code: 'INTERNAL_ERROR', error: 'the answer exceeds the frame size limit' });
      this.writeFrame(frame);
      return 'INTERNAL_ERROR';
    }
    const large = frame.length > LARGE_FRAME_BYTES;
    if (large && !this.o.bytes.tryTake(frame.length)) {
      // Transient: other large frames hold the budget; the answer is small and says when to retry.
      this.writeFrame(encodeFrame({ v, id, ok: false, code: 'RATE_LIMITED', error: 'the host is busy with other large frames', retryAfter: 1 }));
      return 'RATE_LIMITED';
    }
    this.writeFrame(frame, large ? frame.length : 0);
    return outcome.ok ? 'OK' : outcome.code;
  }

  private write(message: object): void {
    this.writeFrame(encodeFrame(message));
  }

  /**
   * Backpressure: reading pauses while the socket is full, so a client that
   * does not read cannot queue new work; answers to work already admitted
   * may still pile up, and past maxOutputBytes the client is dropped.
   */
  private writeFrame(frame: Buffer, reserved = 0): void {
    if (this.state === 'closed' || this.socket.destroyed || this.socket.writableEnded) {
      this.o.bytes.give(reserved);
      return;
    }
    // The budget comes back once the kernel has the bytes (or the socket is gone: close() returns the rest).
    const flushed = reserved === 0 ? this.socket.write(frame) : this.socket.write(frame, () => this.o.bytes.give(reserved));
    // One answer of the agreed size may always be queued on top of the bound.
    const bound = this.o.maxOutputBytes + (this.version >= 2 ? frameLimitFor(this.version) : 0);
    if (this.socket.writableLength > bound) {
      this.abort('client does not read its answers');
      return;
    }
    if (!flushed) this.pause('output');
  }

  /** Send a last frame, then close (rejected handshakes). */
  private closeAfter(message: object): void {
    this.state = 'closing';
    this.clearTimers();
    this.socket.end(encodeFrame(message));
    const timer = setTimeout(() => this.socket.destroy(), CLOSE_FLUSH_MS);
    timer.unref();
    this.socket.once('close', () => clearTimeout(timer));
  }

  private onEnd(): void {
    // A frame cut off by the end of input can never complete.
    if (this.decoder.hasPartialFrame || this.state === 'handshake') {
      this.abort('input ended');
      return;
    }
    // The server allows half-open sockets so that a client that sends its
    // requests and then shuts down its side still gets the answers.
    void this.whenIdle().then(() => {
      if (this.state === 'ready') this.socket.end();
    });
  }

  private abort(reason: string): void {
    if (this.state === 'closed') return;
    this.o.logger.debug({ conn: this.id, reason }, 'closing connection');
    this.markClosed();
    this.socket.destroy();
  }

  private onSocketClose(): void {
    this.markClosed();
    this.o.onClose(this);
  }

  private markClosed(): void {
    if (this.state !== 'closed') this.refusals.flush();
    this.state = 'closed';
    this.backlogged = false;
    this.o.bytes.close();
    if (this.idleTimer !== null) clearTimeout(this.idleTimer);
    this.idleTimer = null;
    this.clearTimers();
    if (this.running === 0) this.wakeIdle();
    for (const entry of this.inFlight.values()) entry.abort();
    this.inFlight.clear();
  }

  private clearTimers(): void {
    this.clearFrameTimer();
    if (this.handshakeTimer !== null) clearTimeout(this.handshakeTimer);
    this.handshakeTimer = null;
  }

  private clearFrameTimer(): void {
    if (this.frameTimer !== null) clearTimeout(this.frameTimer);
    this.frameTimer = null;
  }

  private wakeIdle(): void {
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }

  /** `connectionLine`: about the connection, not a request (goes through the per-peer audit when there is one). */
  private record(e: { time: number; op: string; result: string; started: number; fields?: AuditFields; connectionLine?: boolean }): void {
    if (this.o.audit === null) return;
    const entry: AuditEntry = {
      // Formatted here, after the answer went out, not on arrival.
      time: new Date(e.time).toISOString(),
      conn: this.id,
      peerPid: this.o.peer.pid,
      peerUid: this.o.peer.uid,
      ...(this.o.remote ? { remote: this.o.remote } : {}),
      op: e.op,
      ...e.fields,
      result: e.result,
      durationMs: Math.round((performance.now() - e.started) * 1000) / 1000,
    };
    if (e.connectionLine === true && this.o.peerAudit !== undefined) this.o.peerAudit.connection(entry);
    else this.o.audit.record(entry);
  }
}
