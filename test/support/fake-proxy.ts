import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FrameDecoder, parsePayload } from '../../src/protocol/frame.js';
import { frameOf } from './raw-client.js';

export type Frame = Record<string, unknown>;

/** How the scripted server answers one request. `null`: never answer. `raw`: send exactly this frame. */
export type Reply = { data: unknown } | { code: string; error: string; retryAfter?: number } | { raw: Frame } | null;

export interface FakeRequest {
  op: string;
  id: string;
  payload: Frame;
  conn: FakeConnection;
}

export type FakeHandler = (req: FakeRequest) => Reply | Promise<Reply>;

export interface FakeProxyOptions {
  transport?: 'unix' | 'tcp';
  /** Unix socket path to listen on (default: a fresh temp dir). */
  path?: string;
  /** When set, handshakes must carry exactly this token (else UNAUTHORIZED, then close). */
  capabilityToken?: string;
  /** Replace the handshake answer entirely (e.g. to force UNKNOWN_VERSION or garbage); `close` ends the connection after it. */
  handshake?: (payload: Frame) => { reply: Frame; close: boolean };
  handler?: FakeHandler;
  /** Like the real server: a cancelled request is never answered. false: answer it anyway. */
  honourCancel?: boolean;
}

/** Event-driven waiting (no polling timers, so it also works under fake timers). */
class Notifier {
  private waiters = new Set<() => void>();
  notify(): void {
    for (const w of [...this.waiters]) w();
  }
  async until(pred: () => boolean, timeoutMs: number, what: string): Promise<void> {
    if (pred()) return;
    await new Promise<void>((resolve, reject) => {
      const check = (): void => {
        if (!pred()) return;
        this.waiters.delete(check);
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`fake proxy: timed out waiting for ${what}`));
      }, timeoutMs);
      this.waiters.add(check);
    });
  }
}

/** One accepted connection as the scripted server sees it. */
export class FakeConnection {
  /** Every frame received, in order, the handshake first. */
  readonly frames: Frame[] = [];
  /** Every byte received, for "this never crossed the socket" assertions. */
  readonly received: Buffer[] = [];
  readonly closed: Promise<void>;
  isClosed = false;
  /** True when this side ended the connection; false when the client did. */
  closedByServer = false;
  handshaken = false;
  /** Ids the scripted server still owes an answer. */
  readonly inFlight = new Set<string>();
  private readonly cancelled = new Set<string>();

  constructor(
    readonly socket: Socket,
    private readonly proxy: FakeProxy,
    private readonly notifier: Notifier,
  ) {
    const decoder = new FrameDecoder(1 << 24);
    socket.on('data', (chunk: Buffer) => {
      this.received.push(chunk);
      for (const p of decoder.push(chunk)) {
        const frame = parsePayload(p);
        this.frames.push(frame);
        this.onFrame(frame);
      }
      notifier.notify();
    });
    socket.on('error', () => undefined);
    this.closed = new Promise((resolve) =>
      socket.once('close', () => {
        this.isClosed = true;
        notifier.notify();
        resolve();
      }),
    );
  }

  get receivedText(): string {
    return Buffer.concat(this.received).toString('utf8');
  }

  /** Request frames (everything after the handshake). */
  get requests(): Frame[] {
    return this.frames.slice(1);
  }

  send(frame: Frame): void {
    this.socket.write(frameOf(frame));
  }

  sendRaw(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  destroy(): void {
    this.closedByServer = true;
    this.socket.destroy();
  }

  waitUntil(pred: () => boolean, what: string, timeoutMs = 3000): Promise<void> {
    return this.notifier.until(pred, timeoutMs, what);
  }

  /** Wait until `n` request frames (after the handshake) have arrived. */
  waitForRequests(n: number, timeoutMs = 3000): Promise<void> {
    return this.waitUntil(() => this.requests.length >= n, `${n} requests`, timeoutMs);
  }

  private onFrame(frame: Frame): void {
    if (!this.handshaken) {
      this.onHandshake(frame);
      return;
    }
    const id = frame.id as string;
    const op = frame.op as string;
    const payload = (frame.payload ?? {}) as Frame;
    if (op === 'cancel') {
      const target = payload.targetId as string;
      const honour = this.proxy.options.honourCancel ?? true;
      const wasInFlight = this.inFlight.has(target);
      if (honour && wasInFlight) {
        this.cancelled.add(target);
        this.inFlight.delete(target);
      }
      this.send({ v: 1, id, ok: true, data: { cancelled: honour && wasInFlight } });
      return;
    }
    this.inFlight.add(id);
    void Promise.resolve(this.proxy.handler({ op, id, payload, conn: this })).then((reply) => {
      if (reply === null || this.cancelled.has(id) || this.isClosed) return;
      this.inFlight.delete(id);
      if ('raw' in reply) this.send(reply.raw);
      else if ('data' in reply) this.send({ v: 1, id, ok: true, data: reply.data });
      else this.send({ v: 1, id, ok: false, ...reply });
      this.notifier.notify();
    });
  }

  private onHandshake(frame: Frame): void {
    const payload = (frame.payload ?? {}) as Frame;
    const custom = this.proxy.options.handshake;
    if (custom !== undefined) {
      const { reply, close } = custom(payload);
      this.send(reply);
      if (close) this.endAfterFlush();
      else this.handshaken = true;
      return;
    }
    const required = this.proxy.options.capabilityToken;
    if (frame.op !== 'handshake') {
      this.send({ v: 1, ok: false, code: 'INVALID_REQUEST', error: 'first frame must be a handshake' });
      this.endAfterFlush();
    } else if (required !== undefined && payload.capabilityToken !== required) {
      this.send({ v: 1, op: 'handshake', ok: false, code: 'UNAUTHORIZED', error: 'capability token rejected' });
      this.endAfterFlush();
    } else if (!(Number(payload.minVersion) <= 1 && Number(payload.maxVersion) >= 1)) {
      this.send({ v: 1, op: 'handshake', ok: false, code: 'UNKNOWN_VERSION', error: 'this server speaks version 1' });
      this.endAfterFlush();
    } else {
      this.handshaken = true;
      this.send({ v: 1, op: 'handshake', ok: true, data: { version: 1 } });
    }
  }

  private endAfterFlush(): void {
    this.closedByServer = true;
    this.socket.end();
  }
}

/**
 * A scripted framed server on a real Unix socket (or loopback TCP) speaking
 * the SPEC §4 wire protocol: handshake checks like the real server, cancel
 * handling, and per-request answers chosen by the test's handler.
 */
export class FakeProxy {
  readonly connections: FakeConnection[] = [];
  handler: FakeHandler;
  private readonly notifier = new Notifier();

  private constructor(
    private readonly server: Server,
    readonly address: string,
    private readonly dir: string | null,
    readonly options: FakeProxyOptions,
  ) {
    this.handler = options.handler ?? (() => ({ code: 'NOT_FOUND', error: 'not found' }));
    server.on('connection', (socket) => {
      this.connections.push(new FakeConnection(socket, this, this.notifier));
      this.notifier.notify();
    });
  }

  static async start(options: FakeProxyOptions = {}): Promise<FakeProxy> {
    const server = createServer();
    if (options.transport === 'tcp') {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, '127.0.0.1', () => resolve());
      });
      const addr = server.address();
      if (addr === null || typeof addr === 'string') throw new Error('no tcp address');
      return new FakeProxy(server, `tcp://127.0.0.1:${addr.port}`, null, options);
    }
    const dir = options.path === undefined ? mkdtempSync(join(tmpdir(), 'cpfake-')) : null;
    const path = options.path ?? join(dir!, 'p.sock');
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => resolve());
    });
    return new FakeProxy(server, path, dir, options);
  }

  /** The `n`-th connection (0-based), waiting for it. */
  async connection(n = 0, timeoutMs = 3000): Promise<FakeConnection> {
    await this.notifier.until(() => this.connections.length > n, timeoutMs, `connection #${n}`);
    return this.connections[n]!;
  }

  /** Every frame received on every connection, in connection order. */
  allFrames(): Frame[] {
    return this.connections.flatMap((c) => c.frames);
  }

  async close(): Promise<void> {
    for (const c of this.connections) c.socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    if (this.dir !== null) rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A promise with its resolve exposed, for answering requests in a chosen order. */
export function deferred<T>(): { promise: Promise<T>; resolve(value: T): void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}
