import { connect, type Socket } from 'node:net';
import { encodeFrame, FrameDecoder, parsePayload } from '../src/protocol/frame.js';

/** A minimal framed client used against both servers, so only the servers differ. Answers are matched by id. */
export class FrameClient {
  private readonly decoder = new FrameDecoder();
  private readonly waiting = new Map<string, (m: Record<string, unknown>) => void>();
  private handshakeWaiter: ((m: Record<string, unknown>) => void) | null = null;
  private n = 0;

  private constructor(private readonly socket: Socket) {
    socket.on('data', (chunk) => {
      for (const p of this.decoder.push(chunk)) {
        const m = parsePayload(p);
        const id = typeof m.id === 'string' ? m.id : undefined;
        const w = id === undefined ? this.handshakeWaiter : this.waiting.get(id);
        if (id === undefined) this.handshakeWaiter = null;
        else this.waiting.delete(id);
        w?.(m);
      }
    });
  }

  static connect(path: string): Promise<FrameClient> {
    return new Promise((resolve, reject) => {
      const s = connect(path, () => resolve(new FrameClient(s)));
      s.once('error', reject);
    });
  }

  call(message: Record<string, unknown>): Promise<Record<string, unknown>> {
    return new Promise((resolve) => {
      const id = `b${++this.n}`;
      this.waiting.set(id, resolve);
      this.socket.write(encodeFrame({ ...message, id }));
    });
  }

  handshake(token: string): Promise<Record<string, unknown>> {
    return new Promise((resolve) => {
      this.handshakeWaiter = resolve;
      this.socket.write(encodeFrame({ v: 1, op: 'handshake', payload: { minVersion: 1, maxVersion: 1, capabilityToken: token } }));
    });
  }

  close(): void {
    this.socket.destroy();
  }
}
