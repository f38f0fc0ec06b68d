import { MAX_FRAME_PAYLOAD, MAX_FRAME_PAYLOAD_V2 } from '../protocol/frame.js';

/**
 * Frames above the version-1 size are the only ones that need a budget: a
 * version-1-sized frame is bounded per connection by the decoder already,
 * and the number of connections by the server.
 */
export const LARGE_FRAME_BYTES = MAX_FRAME_PAYLOAD;

/** SPEC §8 defaults: three full version-2 frames per connection, eight per server. */
export const DEFAULT_CONNECTION_BUFFER_BYTES = 3 * MAX_FRAME_PAYLOAD_V2;
export const DEFAULT_SERVER_BUFFER_BYTES = 8 * MAX_FRAME_PAYLOAD_V2;

/** Bytes of large frames held by the whole server (being received, being handled, or queued for sending). */
export class ByteBudget {
  private used = 0;

  constructor(readonly capacity: number) {}

  get inUse(): number {
    return this.used;
  }

  tryTake(n: number): boolean {
    if (this.used + n > this.capacity) return false;
    this.used += n;
    return true;
  }

  give(n: number): void {
    this.used = Math.max(0, this.used - n);
  }
}

/**
 * One connection's share of the server budget, with a cap of its own, so
 * one client cannot take the whole server's. close() returns whatever it
 * still holds; later gives are ignored, so a write callback that fires
 * after the close cannot return bytes twice.
 */
export class ConnectionBytes {
  private held = 0;
  private closed = false;

  constructor(
    private readonly server: ByteBudget,
    private readonly cap: number,
  ) {}

  get holding(): number {
    return this.held;
  }

  tryTake(n: number): boolean {
    if (this.closed || this.held + n > this.cap) return false;
    if (!this.server.tryTake(n)) return false;
    this.held += n;
    return true;
  }

  give(n: number): void {
    if (this.closed || n <= 0) return;
    const back = Math.min(n, this.held);
    this.held -= back;
    this.server.give(back);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.server.give(this.held);
    this.held = 0;
  }
}
