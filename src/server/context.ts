import type { OAuthInitiateData, OAuthPollData } from '../protocol/messages.js';
import type { SanitizedToken } from '../store/types.js';

/**
 * Who is on the other end of a connection. pid/uid are null when peer
 * checks are off or unavailable on this platform.
 */
export interface PeerIdentity {
  connectionId: number;
  pid: number | null;
  uid: number | null;
}

/** What a handler gets besides its validated payload. */
export interface RequestContext {
  peer: PeerIdentity;
  /** The protocol version agreed on this connection; requests may carry any `v` from 1 up to it. */
  version: number;
  /** Aborted when the request is cancelled or its connection closes. */
  signal: AbortSignal;
  /** Cancel another request of the same connection; false when it is not in flight. */
  cancel(targetId: string): boolean;
}

/**
 * The login-session service (SPEC §5 "Login sessions"), plugged into the
 * server when available. Sessions belong to `owner`; another owner must get
 * SESSION_NOT_FOUND. Errors are CredproxyErrors with wire codes.
 */
export interface LoginPort {
  initiate(provider: string, bucket: string, owner: PeerIdentity, signal: AbortSignal): Promise<OAuthInitiateData>;
  exchange(sessionId: string, code: string, owner: PeerIdentity, signal: AbortSignal): Promise<SanitizedToken>;
  poll(sessionId: string, owner: PeerIdentity, signal: AbortSignal): Promise<OAuthPollData>;
  cancel(sessionId: string, owner: PeerIdentity): Promise<void>;
  /** A connection closed: logins whose owner is gone stop their background work. */
  connectionClosed?(peer: PeerIdentity): void;
}
