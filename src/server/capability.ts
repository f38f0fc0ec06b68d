import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { CredproxyError } from '../errors.js';

/** 32 random bytes, hex: what the launcher hands to the sandbox. */
export function generateCapabilityToken(): string {
  return randomBytes(32).toString('hex');
}

const MIN_TOKEN_CHARS = 16;
const MAX_TOKEN_CHARS = 1024;

function digest(value: string): Buffer {
  return createHash('sha256').update(value, 'utf8').digest();
}

/**
 * Holds only the SHA-256 of the capability token. Comparing digests of equal
 * length with timingSafeEqual keeps both the content and the length of the
 * real token out of the timing of a failed handshake.
 */
export class CapabilityCheck {
  private readonly hash: Buffer;

  constructor(rawToken: string) {
    if (typeof rawToken !== 'string' || rawToken.length < MIN_TOKEN_CHARS || rawToken.length > MAX_TOKEN_CHARS) {
      throw new CredproxyError('USAGE', `capability token must be ${MIN_TOKEN_CHARS} to ${MAX_TOKEN_CHARS} characters`);
    }
    this.hash = digest(rawToken);
  }

  matches(candidate: unknown): boolean {
    if (typeof candidate !== 'string' || candidate.length > MAX_TOKEN_CHARS) return false;
    return timingSafeEqual(this.hash, digest(candidate));
  }
}
