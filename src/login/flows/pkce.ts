import { timingSafeEqual } from 'node:crypto';
import * as oidc from 'openid-client';

/** One login's PKCE pair (RFC 7636, S256) and its `state`. The verifier and state stay on the host. */
export interface PkcePair {
  verifier: string;
  challenge: string;
  state: string;
}

export async function createPkce(): Promise<PkcePair> {
  const verifier = oidc.randomPKCECodeVerifier();
  return { verifier, challenge: await oidc.calculatePKCECodeChallenge(verifier), state: oidc.randomState() };
}

/** Compare a returned state with ours without leaking how much of it matched. */
export function sameState(returned: string, expected: string): boolean {
  const a = Buffer.from(returned, 'utf8');
  const b = Buffer.from(expected, 'utf8');
  return a.length === b.length && timingSafeEqual(a, b);
}
