export {
  LoginSessionManager,
  sessionTimeoutFromEnv,
  DEFAULT_SESSION_TIMEOUT_MS,
  DEFAULT_SWEEP_INTERVAL_MS,
  DEFAULT_MAX_SESSIONS,
  DEFAULT_MAX_SESSIONS_PER_OWNER,
  type LoginSessionManagerOptions,
} from './session-manager.js';
export { localLoginOps, selfPeer } from './local-ops.js';
export { ownerKey, procStartTime, type ProcessStartTime } from './owner.js';
export { startFlow, parsePastedCode, type FlowContext, type FlowOutcome, type FlowStart, type FlowStarter, type FlowTiming, type RunningFlow } from './flows/index.js';
