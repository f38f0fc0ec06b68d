import type { WireErrorCode } from '../../errors.js';
import type { OAuthProvider } from '../../oauth/types.js';
import type { FlowType } from '../../protocol/messages.js';
import type { OAuthToken } from '../../store/types.js';

/** SPEC §5 poll intervals and RFC 8628 §3.5 back-off. */
export const DEFAULT_DEVICE_POLL_MS = 5000;
export const SLOW_DOWN_STEP_MS = 5000;
export const BROWSER_POLL_MS = 2000;
/** A provider advising less than this is not taken literally (a hot loop helps nobody). */
export const MIN_DEVICE_POLL_MS = 1000;
/** Ceiling for the back-off after network failures while polling. */
export const MAX_DEVICE_POLL_MS = 60_000;

/** Timing knobs; the defaults are the spec's numbers, tests shorten them. */
export interface FlowTiming {
  /** device_code: interval when the provider advises none. */
  devicePollMs?: number;
  /** device_code: added to the interval on every `slow_down`. */
  slowDownStepMs?: number;
  /** browser_redirect: how often the client is told to poll. */
  browserPollMs?: number;
  /** Wall clock in ms (device-code deadline). */
  now?: () => number;
}

export interface FlowContext {
  /** Aborts the start only (the oauth_initiate request's own signal). */
  signal: AbortSignal;
  /**
   * Aborted when the session ends for any reason (used, cancelled, expired,
   * server stopping): background polling stops and the loopback listener
   * closes at once.
   */
  stop: AbortSignal;
  timing?: FlowTiming;
  /**
   * device_code: waits before each poll of the token endpoint for this
   * provider's turn, shared by every session (rejects when `stop` aborts).
   */
  pollTurn?: (intervalMs: number, stop: AbortSignal) => Promise<void>;
}

/** What the user is shown; never a verifier, state, device code or auth code. */
export interface FlowStart {
  flow_type: FlowType;
  auth_url?: string;
  verification_url?: string;
  user_code?: string;
  pollIntervalMs?: number;
}

export type FlowOutcome = { ok: true; token: OAuthToken } | { ok: false; code: WireErrorCode; error: string };

/**
 * One running login. Its secrets (verifier, state, device code, auth code)
 * live only in this object's closures, inside the host process.
 */
export interface RunningFlow {
  readonly start: FlowStart;
  /** The interval the client should poll at now (device_code grows it on `slow_down`). */
  pollIntervalMs(): number;
  /** pkce_redirect only: exchange what the user pasted. Rejects with EXCHANGE_FAILED. */
  exchange?(pasted: string, signal: AbortSignal): Promise<OAuthToken>;
  /** device_code / browser_redirect: settles once when the host side of the flow ends (never rejects). */
  readonly outcome?: Promise<FlowOutcome>;
}

export type FlowStarter = (provider: OAuthProvider, ctx: FlowContext) => Promise<RunningFlow>;
