import { connect, type Socket } from 'node:net';
import { encodeFrame, FrameDecoder, parsePayload } from '../src/protocol/frame.js';

/** A minimal framed client used against both servers, so only the servers differ. */
export class FrameClient {
  private readonly decoder = new FrameDecoder();
  private waiting: ((m: Record<string, unknown>) => void) | null = null;
  private n = 0;

  private constructor(private readonly socket: Socket) {
    socket.on('data', (chunk) => {
      for (const p of this.decoder.push(chunk)) this.waiting?.(parsePayload(p));
    });
  }

  static connect(path: string): Promise<FrameClient> {
    return new Promise((resolve, reject) => {
      const s = connect(path, () => resolve(new FrameClient(s)));
      s.once('error', reject);
    });
  }

  /** One request, one answer (the benchmark is sequential per client). */
  call(message: Record<string, unknown>): Promise<Record<string, unknown>> {
    return new Promise((resolve) => {
      this.waiting = resolve;
      this.socket.write(encodeFrame({ ...message, id: `b${++this.n}` }));
    });
  }

  handshake(token: string): Promise<Record<string, unknown>> {
    return new Promise((resolve) => {
      this.waiting = resolve;
      this.socket.write(encodeFrame({ v: 1, op: 'handshake', payload: { minVersion: 1, maxVersion: 1, capabilityToken: token } }));
    });
  }

  close(): void {
    this.socket.destroy();
  }
}
