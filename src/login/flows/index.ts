import type { OAuthProvider } from '../../oauth/types.js';
import { startBrowserRedirect } from './browser-redirect.js';
import { startDeviceCode } from './device-code.js';
import { startPkceRedirect } from './pkce-redirect.js';
import type { FlowContext, RunningFlow } from './types.js';

export type { FlowContext, FlowOutcome, FlowStart, FlowStarter, FlowTiming, RunningFlow } from './types.js';
export { BROWSER_POLL_MS, DEFAULT_DEVICE_POLL_MS, SLOW_DOWN_STEP_MS } from './types.js';
export { parsePastedCode, type PastedCode } from './pasted-code.js';

/** Start the login flow the provider is configured for (SPEC §5 "Flows"). */
export function startFlow(provider: OAuthProvider, ctx: FlowContext): Promise<RunningFlow> {
  switch (provider.flow) {
    case 'pkce_redirect':
      return startPkceRedirect(provider, ctx);
    case 'device_code':
      return startDeviceCode(provider, ctx);
    case 'browser_redirect':
      return startBrowserRedirect(provider, ctx);
  }
}
