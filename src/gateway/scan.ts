import { Transform, type TransformCallback } from 'node:stream';

/** Secrets shorter than this are not scanned for (they would match ordinary text). */
export const MIN_SECRET_LENGTH = 8;

/**
 * Masks every occurrence of the secrets in a byte stream, including one
 * split across chunks, without holding back more than it must: only a chunk
 * tail that could be the start of a secret waits for the next chunk. An SSE
 * event ends in "\n\n", which no token starts with, so events are never
 * delayed. The mask has the secret's length, so Content-Length stays true.
 */
export class SecretRedactor extends Transform {
  private readonly secrets: Buffer[];
  private carry: Buffer = Buffer.alloc(0);
  /** Bytes passed on (after masking). */
  bytes = 0;
  /** Secrets masked so far. */
  masked = 0;

  constructor(secrets: readonly string[], highWaterMark?: number) {
    super(highWaterMark === undefined ? {} : { highWaterMark });
    this.secrets = uniqueSecrets(secrets);
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    if (this.secrets.length === 0) {
      this.bytes += chunk.length;
      done(null, chunk);
      return;
    }
    const data = this.carry.length === 0 ? chunk : Buffer.concat([this.carry, chunk]);
    this.masked += maskInPlace(data, this.secrets);
    const hold = heldTail(data, this.secrets);
    this.carry = hold === 0 ? Buffer.alloc(0) : Buffer.from(data.subarray(data.length - hold));
    const out = hold === 0 ? data : data.subarray(0, data.length - hold);
    this.bytes += out.length;
    done(null, out.length === 0 ? undefined : out);
  }

  override _flush(done: TransformCallback): void {
    const rest = this.carry;
    this.carry = Buffer.alloc(0);
    this.bytes += rest.length;
    done(null, rest.length === 0 ? undefined : rest);
  }
}

function uniqueSecrets(secrets: readonly string[]): Buffer[] {
  const seen = new Set<string>();
  const out: Buffer[] = [];
  for (const s of secrets) {
    if (s.length < MIN_SECRET_LENGTH || seen.has(s)) continue;
    seen.add(s);
    out.push(Buffer.from(s, 'utf8'));
  }
  return out;
}

/** Overwrite each occurrence with '*'; returns how many were found. */
export function maskInPlace(data: Buffer, secrets: readonly Buffer[]): number {
  let found = 0;
  for (const secret of secrets) {
    let at = data.indexOf(secret);
    while (at >= 0) {
      data.fill(0x2a, at, at + secret.length);
      found++;
      at = data.indexOf(secret, at + secret.length);
    }
  }
  return found;
}

/** The longest tail of `data` that is a proper prefix of some secret (0 when none). */
export function heldTail(data: Buffer, secrets: readonly Buffer[]): number {
  let hold = 0;
  for (const secret of secrets) {
    const first = secret[0]!;
    const max = Math.min(secret.length - 1, data.length);
    // Candidate starts are where the secret's first byte occurs within the last `max` bytes; longest first.
    let at = data.indexOf(first, data.length - max);
    while (at >= 0) {
      const len = data.length - at;
      if (len <= hold) break;
      if (data.compare(secret, 0, len, at) === 0) {
        hold = len;
        break;
      }
      at = data.indexOf(first, at + 1);
    }
  }
  return hold;
}

/** A header value containing a secret (any of them). */
export function containsSecret(value: string, secrets: readonly string[]): boolean {
  return secrets.some((s) => s.length >= MIN_SECRET_LENGTH && value.includes(s));
}
