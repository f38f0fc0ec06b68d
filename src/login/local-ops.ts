import type { LoginOps } from '../client/login-adapter.js';
import type { OAuthInitiateData, OAuthPollData } from '../protocol/messages.js';
import type { LoginPort, PeerIdentity } from '../server/context.js';

/** Asking an in-process session manager costs nothing, so the host CLI need not wait a full provider interval. */
export const LOCAL_MAX_POLL_MS = 1000;

/** This process as the owner of its own login sessions. */
export function selfPeer(): PeerIdentity {
  return { connectionId: 0, pid: process.pid, uid: typeof process.getuid === 'function' ? process.getuid() : null };
}

function capStart(data: OAuthInitiateData): OAuthInitiateData {
  return data.pollIntervalMs === undefined ? data : { ...data, pollIntervalMs: Math.min(data.pollIntervalMs, LOCAL_MAX_POLL_MS) };
}

function capPoll(data: OAuthPollData): OAuthPollData {
  return data.status === 'pending' ? { ...data, pollIntervalMs: Math.min(data.pollIntervalMs, LOCAL_MAX_POLL_MS) } : data;
}

/**
 * The login operations run in this process (the host CLI): the same session
 * manager and flows `serve` uses, without the socket. `signal` aborts the
 * provider calls of initiate and exchange.
 */
export function localLoginOps(port: LoginPort, signal: AbortSignal, peer: PeerIdentity = selfPeer()): LoginOps {
  return {
    initiate: async (provider, bucket) => capStart(await port.initiate(provider, bucket, peer, signal)),
    exchange: (sessionId, code) => port.exchange(sessionId, code, peer, signal),
    poll: async (sessionId) => capPoll(await port.poll(sessionId, peer, signal)),
    cancel: (sessionId) => port.cancel(sessionId, peer),
  };
}
