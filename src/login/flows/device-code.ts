import * as oidc from 'openid-client';
import { CredproxyError } from '../../errors.js';
import type { OAuthProvider } from '../../oauth/types.js';
import { scopeParam } from './authorization-url.js';
import { cancelledOutcome, flowFailure } from './failure.js';
import { createPkce } from './pkce.js';
import { sleepUnlessStopped } from './sleep.js';
import {
  DEFAULT_DEVICE_POLL_MS,
  MAX_DEVICE_POLL_MS,
  MIN_DEVICE_POLL_MS,
  SLOW_DOWN_STEP_MS,
  type FlowContext,
  type FlowOutcome,
  type RunningFlow,
} from './types.js';

const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';

/**
 * device_code (RFC 8628): request a device code, answer the verification
 * URL and user code, and poll the token endpoint in the background. The
 * loop is ours rather than the library's so that cancel stops it between
 * two requests, the current interval (grown by `slow_down`) can be reported,
 * and the device code's own lifetime is enforced locally.
 */
export async function startDeviceCode(provider: OAuthProvider, ctx: FlowContext): Promise<RunningFlow> {
  const now = ctx.timing?.now ?? Date.now;
  const slowDownStep = ctx.timing?.slowDownStepMs ?? SLOW_DOWN_STEP_MS;
  const config = await provider.configuration(ctx.signal);
  // Qwen binds the device code to a PKCE challenge; the verifier goes with every poll.
  const pkce = provider.settings.use_pkce === true ? await createPkce() : null;
  const params: Record<string, string> = { ...scopeParam(provider) };
  if (pkce) {
    params.code_challenge = pkce.challenge;
    params.code_challenge_method = 'S256';
  }
  let device: oidc.DeviceAuthorizationResponse;
  try {
    device = await oidc.initiateDeviceAuthorization(config, params);
  } catch (err) {
    throw new CredproxyError('INTERNAL_ERROR', provider.toError('device authorization', err, ctx.signal).message);
  }

  let interval = typeof device.interval === 'number' && device.interval > 0
    ? Math.max(MIN_DEVICE_POLL_MS, device.interval * 1000)
    : (ctx.timing?.devicePollMs ?? DEFAULT_DEVICE_POLL_MS);
  const deadline = now() + device.expires_in * 1000;
  const grantParams: Record<string, string> = { device_code: device.device_code };
  if (pkce) grantParams.code_verifier = pkce.verifier;
  const expired: FlowOutcome = { ok: false, code: 'SESSION_EXPIRED', error: `the ${provider.name} device code expired; start the login again` };

  const poll = async (): Promise<FlowOutcome> => {
    for (;;) {
      const left = deadline - now();
      if (left <= 0) return expired;
      try {
        await sleepUnlessStopped(Math.min(interval, left), ctx.stop);
        await ctx.pollTurn?.(interval, ctx.stop);
      } catch {
        return cancelledOutcome();
      }
      if (deadline - now() <= 0) return expired;
      try {
        const cfg = await provider.configuration(ctx.stop);
        return { ok: true, token: provider.tokenFromResponse(await oidc.genericGrantRequest(cfg, DEVICE_GRANT, grantParams)) };
      } catch (err) {
        if (ctx.stop.aborted) return cancelledOutcome();
        const e = provider.toError('device poll', err, ctx.stop);
        if (e.oauthError === 'authorization_pending') continue;
        if (e.oauthError === 'slow_down') {
          interval += slowDownStep;
          continue;
        }
        // RFC 8628 §3.5: after a connection failure, poll less often rather than give up.
        if (e.kind === 'transient') {
          interval = Math.min(interval * 2, MAX_DEVICE_POLL_MS);
          continue;
        }
        return flowFailure(provider, 'device poll', e);
      }
    }
  };

  return {
    // The plain verification_uri, not verification_uri_complete: the user types the code at the
    // provider's own page, which is RFC 8628 §5.4's check against a code relayed from elsewhere.
    start: { flow_type: 'device_code', verification_url: device.verification_uri, user_code: device.user_code, pollIntervalMs: interval },
    pollIntervalMs: () => interval,
    // Nothing in the loop should throw; if something does, it is still a failed login, not a crash.
    outcome: poll().catch((err: unknown) => flowFailure(provider, 'device poll', err)),
  };
}
