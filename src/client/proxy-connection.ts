import { connect, type Socket } from 'node:net';
import { CredproxyError } from '../errors.js';
import { encodeFrame, FrameDecoder, frameLimitFor, parsePayload } from '../protocol/frame.js';
import { MAX_PROTOCOL_VERSION, PROTOCOL_VERSION, type Op } from '../protocol/messages.js';
import { answerError, parseAnswer } from './answer.js';
import { connectOptions, describeAddress, type SocketAddress } from './socket-address.js';

/** SPEC §6: the one message every call sees once the connection is gone. */
export const CONNECTION_LOST_MESSAGE = 'Credential proxy connection lost. Restart the session.';

export function connectionLostError(): CredproxyError {
  return new CredproxyError('CONNECTION_LOST', CONNECTION_LOST_MESSAGE);
}

export interface ProxyConnectionOptions {
  capabilityToken?: string;
  /** Bound on connecting plus the handshake. */
  connectTimeoutMs: number;
}

export interface ProxyConnectionEvents {
  /** The connection broke on its own (peer gone, socket error, malformed answer); not called after close(). */
  onLost(): void;
  /**
   * The server closed the connection while nothing was awaited (its idle
   * timeout, or a connection cap making room): nothing was lost, the next
   * call may open a new connection. Without it, such a close counts as lost.
   */
  onIdleClose?(): void;
  /** Whether any request is awaiting its answer; not called after the connection ended. */
  onBusyChange(busy: boolean): void;
}

interface Pending {
  op: Op;
  resolve(data: Record<string, unknown>): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
}

type Phase = 'handshake' | 'open' | 'ended';

const CONNECT_ERROR_REASONS: Record<string, string> = {
  ENOENT: 'the socket does not exist',
  ECONNREFUSED: 'nothing is listening there',
  EACCES: 'permission denied',
  EPERM: 'permission denied',
  ENOTSOCK: 'the path is not a socket',
  ENOTDIR: 'a parent of the path is not a directory',
  ETIMEDOUT: 'the connection timed out',
  EHOSTUNREACH: 'the host is unreachable',
  ENETUNREACH: 'the network is unreachable',
  ENOTFOUND: 'the host name does not resolve',
};

function connectError(where: string, err: NodeJS.ErrnoException): CredproxyError {
  const code = typeof err.code === 'string' && /^[A-Z0-9_]{1,32}$/.test(err.code) ? err.code : 'unknown error';
  const reason = CONNECT_ERROR_REASONS[code] ?? code;
  return new CredproxyError(
    'CONNECTION_LOST',
    `Cannot connect to the credential proxy at ${where}: ${reason}. Is the proxy still running? Check CREDPROXY_SOCKET.`,
  );
}

function connectSocket(address: SocketAddress, timeoutMs: number): Promise<Socket> {
  const where = describeAddress(address);
  return new Promise((resolve, reject) => {
    const socket = connect(connectOptions(address));
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new CredproxyError('CONNECTION_LOST', `Cannot connect to the credential proxy at ${where}: no answer within ${timeoutMs} ms.`));
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      resolve(socket);
    });
    socket.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      socket.destroy();
      reject(connectError(where, err));
    });
  });
}

function handshakeRejection(where: string, code: string, text: string): CredproxyError {
  if (code === 'UNAUTHORIZED') {
    return new CredproxyError(
      'UNAUTHORIZED',
      `The credential proxy at ${where} refused the handshake (UNAUTHORIZED: ${text}). Check that CREDPROXY_TOKEN is the token this proxy was started with.`,
    );
  }
  if (code === 'UNKNOWN_VERSION') {
    return new CredproxyError(
      'UNKNOWN_VERSION',
      `The credential proxy at ${where} does not speak protocol versions ${PROTOCOL_VERSION} to ${MAX_PROTOCOL_VERSION} (UNKNOWN_VERSION: ${text}). Use the same credproxy version inside and outside the sandbox.`,
    );
  }
  return new CredproxyError('CONNECTION_LOST', `The credential proxy at ${where} refused the handshake (${code}: ${text}).`);
}

/**
 * One handshaken connection to the proxy: request ids, answers matched by
 * id in any order, per-request timeouts with a `cancel` frame. Owns its
 * socket and every timer it starts. The socket holds the event loop only
 * while a request is awaiting its answer.
 */
export class ProxyConnection {
  private readonly socket: Socket;
  private readonly where: string;
  private readonly events: ProxyConnectionEvents;
  private readonly decoder = new FrameDecoder(frameLimitFor(PROTOCOL_VERSION));
  /** Agreed in the handshake; 1 until then. */
  private agreed = PROTOCOL_VERSION;
  private readonly pending = new Map<string, Pending>();
  /** Timed-out requests whose late answer is still allowed to arrive, and is then dropped. */
  private readonly abandoned = new Set<string>();
  /** Cancel request id -> the id it cancels. */
  private readonly cancels = new Map<string, string>();
  private phase: Phase = 'handshake';
  private counter = 0;
  private handshakeDone: { resolve(): void; reject(err: Error): void } | null = null;
  private readonly closedPromise: Promise<void>;

  private constructor(socket: Socket, where: string, events: ProxyConnectionEvents) {
    this.socket = socket;
    this.where = where;
    this.events = events;
    this.closedPromise = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', () => this.fail());
    socket.on('close', () => this.closedByServer());
  }

  /** Connect and complete the handshake within options.connectTimeoutMs. */
  static async open(address: SocketAddress, options: ProxyConnectionOptions, events: ProxyConnectionEvents): Promise<ProxyConnection> {
    const started = Date.now();
    const socket = await connectSocket(address, options.connectTimeoutMs);
    const conn = new ProxyConnection(socket, describeAddress(address), events);
    await conn.handshake(options.capabilityToken, Math.max(1, options.connectTimeoutMs - (Date.now() - started)));
    return conn;
  }

  get isOpen(): boolean {
    return this.phase === 'open';
  }

  get busy(): boolean {
    return this.pending.size > 0;
  }

  /** The protocol version agreed in the handshake. */
  get version(): number {
    return this.agreed;
  }

  /** Send one request; resolves with the answer's data or rejects with its error. */
  request(op: Op, payload: object, timeoutMs: number): Promise<Record<string, unknown>> {
    if (this.phase !== 'open') return Promise.reject(connectionLostError());
    const id = this.nextId();
    let frame: Buffer;
    try {
      frame = encodeFrame({ v: this.agreed, id, op, payload }, frameLimitFor(this.agreed));
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => this.onTimeout(id), timeoutMs);
      const wasBusy = this.busy;
      this.pending.set(id, { op, resolve, reject, timer });
      if (!wasBusy) this.setBusy(true);
      this.socket.write(frame);
    });
  }

  /** Close on purpose: pending calls reject with `makeReason()`; onLost is not called. */
  close(makeReason: () => Error): Promise<void> {
    if (this.phase !== 'ended') {
      this.phase = 'ended';
      this.rejectAll(makeReason);
      this.socket.destroy();
    }
    return this.closedPromise;
  }

  private handshake(capabilityToken: string | undefined, timeoutMs: number): Promise<void> {
    const payload: Record<string, unknown> = { minVersion: PROTOCOL_VERSION, maxVersion: MAX_PROTOCOL_VERSION };
    if (capabilityToken !== undefined) payload.capabilityToken = capabilityToken;
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.endHandshake(new CredproxyError('CONNECTION_LOST', `The credential proxy at ${this.where} did not answer the handshake within ${timeoutMs} ms.`));
      }, timeoutMs);
      this.handshakeDone = {
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (err) => {
          clearTimeout(timer);
          reject(err);
        },
      };
      this.socket.write(encodeFrame({ v: PROTOCOL_VERSION, op: 'handshake', payload }));
    });
  }

  /** Handshake failed: the connection never opened, so this is not a loss. */
  private endHandshake(err: Error): void {
    const done = this.handshakeDone;
    this.handshakeDone = null;
    this.phase = 'ended';
    this.socket.destroy();
    done?.reject(err);
  }

  private onHandshakeAnswer(frame: Record<string, unknown>): void {
    const answer = frame.op === 'handshake' ? parseAnswer(frame) : null;
    const version = answer?.ok === true ? answer.data.version : undefined;
    const understood = typeof version === 'number' && Number.isInteger(version) && version >= PROTOCOL_VERSION && version <= MAX_PROTOCOL_VERSION;
    if (answer === null || (answer.ok && !understood)) {
      this.endHandshake(new CredproxyError('CONNECTION_LOST', `The credential proxy at ${this.where} answered the handshake with a frame this client does not understand.`));
      return;
    }
    if (!answer.ok) {
      this.endHandshake(handshakeRejection(this.where, answer.code, answer.error));
      return;
    }
    this.agreed = version as number;
    this.decoder.setMaxPayload(frameLimitFor(this.agreed));
    const done = this.handshakeDone;
    this.handshakeDone = null;
    this.phase = 'open';
    this.socket.unref();
    done?.resolve();
  }

  private onData(chunk: Buffer): void {
    try {
      this.decoder.append(chunk);
      // One frame at a time: the handshake answer raises the limit for the frames behind it.
      for (let payload = this.decoder.next(); payload !== null; payload = this.decoder.next()) {
        if (this.phase === 'ended') return;
        const frame = parsePayload(payload);
        if (this.phase === 'handshake') this.onHandshakeAnswer(frame);
        else this.onAnswer(frame);
      }
    } catch {
      // Oversized, non-JSON or non-object frame: the stream can no longer be trusted.
      this.fail();
    }
  }

  private onAnswer(frame: Record<string, unknown>): void {
    const id = frame.id;
    const answer = parseAnswer(frame, this.agreed);
    if (typeof id !== 'string' || answer === null) {
      this.fail();
      return;
    }
    const pending = this.pending.get(id);
    if (pending !== undefined) {
      this.pending.delete(id);
      clearTimeout(pending.timer);
      if (answer.ok) pending.resolve(answer.data);
      else pending.reject(answerError(answer));
      if (!this.busy) this.setBusy(false);
      return;
    }
    const target = this.cancels.get(id);
    if (target !== undefined) {
      this.cancels.delete(id);
      // Only a successful cancel guarantees the target is never answered; otherwise its late answer stays welcome.
      if (answer.ok && answer.data.cancelled === true) this.abandoned.delete(target);
      return;
    }
    if (this.abandoned.delete(id)) return;
    this.fail();
  }

  private onTimeout(id: string): void {
    const pending = this.pending.get(id);
    if (pending === undefined || this.phase !== 'open') return;
    this.pending.delete(id);
    this.abandoned.add(id);
    const cancelId = this.nextId();
    this.cancels.set(cancelId, id);
    this.socket.write(encodeFrame({ v: this.agreed, id: cancelId, op: 'cancel', payload: { targetId: id } }));
    pending.reject(new CredproxyError('TIMEOUT', `The credential proxy did not answer ${pending.op} in time; the request was cancelled.`));
    if (!this.busy) this.setBusy(false);
  }

  /** A clean close by the server with nothing awaited is an idle close, not a loss. */
  private closedByServer(): void {
    if (this.phase === 'open' && this.pending.size === 0 && this.cancels.size === 0 && this.events.onIdleClose !== undefined) {
      this.phase = 'ended';
      this.socket.destroy();
      this.abandoned.clear();
      this.events.onIdleClose();
      return;
    }
    this.fail();
  }

  /** The connection broke by itself: every pending call gets the one lost message. */
  private fail(): void {
    if (this.phase === 'handshake') {
      this.endHandshake(new CredproxyError('CONNECTION_LOST', `The credential proxy at ${this.where} closed the connection during the handshake.`));
      return;
    }
    if (this.phase === 'ended') return;
    this.phase = 'ended';
    this.socket.destroy();
    this.rejectAll(connectionLostError);
    this.events.onLost();
  }

  private rejectAll(makeError: () => Error): void {
    const all = [...this.pending.values()];
    this.pending.clear();
    this.abandoned.clear();
    this.cancels.clear();
    for (const p of all) {
      clearTimeout(p.timer);
      p.reject(makeError());
    }
  }

  private setBusy(busy: boolean): void {
    // Ref only while an answer is awaited, so an idle client never keeps its process alive.
    if (busy) this.socket.ref();
    else this.socket.unref();
    this.events.onBusyChange(busy);
  }

  private nextId(): string {
    this.counter += 1;
    return this.counter.toString(36);
  }
}
