import { connect, type Socket } from 'node:net';
import { FrameDecoder, parsePayload } from '../../src/protocol/frame.js';

export type Frame = Record<string, unknown>;

/** Length-prefixed frame with no size limit, so tests can send what the server must refuse. */
export function rawFrame(payload: string | Buffer): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
  const header = Buffer.alloc(4);
  header.writeUInt32BE(body.length, 0);
  return Buffer.concat([header, body]);
}

export function frameOf(message: object): Buffer {
  return rawFrame(JSON.stringify(message));
}

/**
 * A minimal protocol client over a real socket that keeps every frame it
 * receives (`frames`), so tests can assert on exactly what crossed the wire.
 */
export class RawClient {
  readonly frames: Frame[] = [];
  /** Every byte received, for "no secret anywhere" assertions. */
  readonly received: Buffer[] = [];
  readonly closed: Promise<void>;
  private readonly decoder = new FrameDecoder(16 * 1024 * 1024);
  private waiters: Array<() => void> = [];
  private isClosedFlag = false;
  private nextId = 0;
  /** The `v` put on requests: set it to the agreed version after a v2 handshake. */
  v = 1;

  private constructor(readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.received.push(chunk);
      for (const p of this.decoder.push(chunk)) this.frames.push(parsePayload(p));
      this.wake();
    });
    socket.on('error', () => undefined);
    this.closed = new Promise((resolve) =>
      socket.once('close', () => {
        this.isClosedFlag = true;
        this.wake();
        resolve();
      }),
    );
  }

  static connect(path: string): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = connect(path);
      s.once('connect', () => {
        s.off('error', reject);
        resolve(new RawClient(s));
      });
      s.once('error', reject);
    });
  }

  get isClosed(): boolean {
    return this.isClosedFlag;
  }

  get receivedText(): string {
    return Buffer.concat(this.received).toString('utf8');
  }

  sendRaw(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  send(message: object): void {
    this.socket.write(frameOf(message));
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Resolves when `pred` holds over the received frames/closed state; rejects after timeoutMs. */
  async waitUntil(pred: () => boolean, timeoutMs = 3000, what = 'condition'): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!pred()) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}; frames so far: ${this.summary()}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** ids and codes of the frames received, short enough for an error message. */
  summary(): string {
    return this.frames.map((f) => `${String(f.id ?? f.op ?? '-')}:${f.ok === true ? 'ok' : String(f.code)}`).join(' ');
  }

  /** The frame at index `n` of everything received, waiting for it. */
  async frameAt(n: number, timeoutMs = 3000): Promise<Frame> {
    await this.waitUntil(() => this.frames.length > n || this.isClosedFlag, timeoutMs, `frame #${n}`);
    const f = this.frames[n];
    if (f === undefined) throw new Error(`connection closed before frame #${n}; frames: ${this.summary()}`);
    return f;
  }

  /** The answer carrying `id`. */
  async answerFor(id: string, timeoutMs = 3000): Promise<Frame> {
    const find = (): Frame | undefined => this.frames.find((f) => f.id === id);
    await this.waitUntil(() => find() !== undefined || this.isClosedFlag, timeoutMs, `answer ${id}`);
    const f = find();
    if (f === undefined) throw new Error(`connection closed before the answer to ${id}`);
    return f;
  }

  async handshake(payload: Frame = { minVersion: 1, maxVersion: 1 }): Promise<Frame> {
    const before = this.frames.length;
    this.send({ v: 1, op: 'handshake', payload });
    return this.frameAt(before);
  }

  /** Send a request and wait for its answer. */
  async request(op: string, payload?: Frame, id = `r${++this.nextId}`, timeoutMs = 3000): Promise<Frame> {
    this.send(payload === undefined ? { v: this.v, id, op } : { v: this.v, id, op, payload });
    return this.answerFor(id, timeoutMs);
  }

  /** Send without waiting; returns the id. */
  fire(op: string, payload?: Frame, id = `r${++this.nextId}`): string {
    this.send(payload === undefined ? { v: this.v, id, op } : { v: this.v, id, op, payload });
    return id;
  }

  close(): void {
    this.socket.destroy();
  }
}
