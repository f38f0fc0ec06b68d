import { CredproxyError } from '../errors.js';

/** SPEC §4: maximum payload bytes of one frame (protocol version 1, and every handshake). */
export const MAX_FRAME_PAYLOAD = 65536;
/** SPEC §8: maximum payload bytes of one frame once version 2 is agreed, both ways. */
export const MAX_FRAME_PAYLOAD_V2 = 4 * 1024 * 1024;

/** The frame limit of an agreed protocol version. */
export function frameLimitFor(version: number): number {
  return version >= 2 ? MAX_FRAME_PAYLOAD_V2 : MAX_FRAME_PAYLOAD;
}
/** SPEC §4: a frame must complete this long after its first byte. */
export const FRAME_TIMEOUT_MS = 5000;

const HEADER = 4;

export type FrameErrorReason = 'oversize' | 'over_budget' | 'not_json' | 'not_object';

export class FrameError extends Error {
  readonly reason: FrameErrorReason;
  constructor(reason: FrameErrorReason, message: string) {
    super(message);
    this.name = 'FrameError';
    this.reason = reason;
  }
}

/** Encode one JSON object as a length-prefixed frame. */
export function encodeFrame(message: object, maxPayload = MAX_FRAME_PAYLOAD): Buffer {
  const json = JSON.stringify(message);
  const bodyLen = Buffer.byteLength(json, 'utf8');
  if (bodyLen > maxPayload) {
    throw new CredproxyError('INVALID_REQUEST', `message of ${bodyLen} bytes exceeds the ${maxPayload}-byte frame limit`);
  }
  const buf = Buffer.allocUnsafe(HEADER + bodyLen);
  buf.writeUInt32BE(bodyLen, 0);
  buf.write(json, HEADER, 'utf8');
  return buf;
}

/** Parse a frame payload: it must be UTF-8 JSON whose top level is an object. */
export function parsePayload(payload: Buffer): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(payload.toString('utf8'));
  } catch {
    throw new FrameError('not_json', 'frame payload is not JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new FrameError('not_object', 'frame payload is not a JSON object');
  }
  return value as Record<string, unknown>;
}

/**
 * Incremental decoder for length-prefixed frames. Chunks are kept as they
 * arrive and copied once, into the payload, only when a frame straddles
 * chunks; a frame inside one chunk is returned as a view without copying.
 * The declared length is checked before any payload buffer is allocated.
 */
export interface FrameDecoderOptions {
  /**
   * Asked once per frame, with its declared length, before any of its
   * payload is kept: false refuses the frame (FrameError 'over_budget').
   * Lets the owner reserve memory for large frames.
   */
  admit?(length: number): boolean;
}

export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private expected = -1; // payload length of the frame in progress, -1 = header not read yet
  private maxPayload: number;
  private readonly admit: ((length: number) => boolean) | undefined;

  constructor(maxPayload = MAX_FRAME_PAYLOAD, options: FrameDecoderOptions = {}) {
    this.maxPayload = maxPayload;
    this.admit = options.admit;
  }

  /** Applies to frames whose header has not been read yet (a version agreed mid-stream). */
  setMaxPayload(maxPayload: number): void {
    this.maxPayload = maxPayload;
  }

  /** True when some bytes of an incomplete frame are buffered. */
  get hasPartialFrame(): boolean {
    return this.buffered > 0 || this.expected >= 0;
  }

  /**
   * Feed bytes; returns the complete payloads they finish, in order.
   * Throws FrameError('oversize') as soon as a header declares too much.
   */
  push(chunk: Buffer): Buffer[] {
    this.append(chunk);
    const out: Buffer[] = [];
    for (let p = this.next(); p !== null; p = this.next()) out.push(p);
    return out;
  }

  /** Keep bytes without decoding them; `next()` takes frames out one at a time. */
  append(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.buffered += chunk.length;
  }

  /**
   * The next complete payload, or null when none is complete yet. One at a
   * time, so a limit changed after a frame (the handshake) applies to the
   * frames behind it in the same chunk.
   */
  next(): Buffer | null {
    if (this.expected < 0) {
      if (this.buffered < HEADER) return null;
      const len = this.readHeader();
      if (len > this.maxPayload) {
        throw new FrameError('oversize', `frame of ${len} bytes exceeds the ${this.maxPayload}-byte limit`);
      }
      if (this.admit !== undefined && !this.admit(len)) {
        throw new FrameError('over_budget', `no buffer space for a frame of ${len} bytes`);
      }
      this.expected = len;
    }
    if (this.buffered < this.expected) return null;
    const payload = this.take(this.expected);
    this.expected = -1;
    return payload;
  }

  private readHeader(): number {
    const first = this.chunks[0]!;
    if (first.length >= HEADER) {
      const len = first.readUInt32BE(0);
      this.consume(HEADER);
      return len;
    }
    const header = this.take(HEADER);
    return header.readUInt32BE(0);
  }

  /** Remove and return the next n bytes (n <= buffered). */
  private take(n: number): Buffer {
    const first = this.chunks[0];
    if (n === 0) return Buffer.alloc(0);
    if (first !== undefined && first.length >= n) {
      const view = first.subarray(0, n);
      this.consume(n);
      return view;
    }
    const out = Buffer.allocUnsafe(n);
    let written = 0;
    while (written < n) {
      const c = this.chunks[0]!;
      const need = n - written;
      if (c.length <= need) {
        c.copy(out, written);
        written += c.length;
        this.chunks.shift();
      } else {
        c.copy(out, written, 0, need);
        this.chunks[0] = c.subarray(need);
        written += need;
      }
    }
    this.buffered -= n;
    return out;
  }

  private consume(n: number): void {
    const first = this.chunks[0]!;
    if (first.length === n) this.chunks.shift();
    else this.chunks[0] = first.subarray(n);
    this.buffered -= n;
  }
}
