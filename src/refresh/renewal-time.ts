/**
 * SPEC §5 renewal timing, as pure functions of a token's lifetime.
 * lifetime = expiry - the time the token was obtained (or first seen).
 */

/** lead = min(max(300, floor(0.1 * lifetime)), floor(lifetime / 2)), all in seconds. */
export function renewalLeadSeconds(lifetimeSeconds: number): number {
  const l = Math.max(0, lifetimeSeconds);
  return Math.min(Math.max(300, Math.floor(0.1 * l)), Math.floor(l / 2));
}

/** Jitter is 0–30 s but never more than a tenth of the lifetime. */
export function maxJitterMs(lifetimeSeconds: number): number {
  return Math.min(30_000, (Math.max(0, lifetimeSeconds) * 1000) / 10);
}

/**
 * When the renewal timer should fire (ms since epoch): expiry - lead - jitter,
 * with `random` in [0, 1) choosing the jitter.
 */
export function renewalFireAt(expirySeconds: number, obtainedAtMs: number, random: number): number {
  const expiryMs = expirySeconds * 1000;
  const lifetimeSeconds = Math.max(0, (expiryMs - obtainedAtMs) / 1000);
  const lead = renewalLeadSeconds(lifetimeSeconds) * 1000;
  const jitter = Math.floor(Math.min(Math.max(random, 0), 0.999999) * maxJitterMs(lifetimeSeconds));
  return expiryMs - lead - jitter;
}
