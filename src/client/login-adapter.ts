import { CredproxyError } from '../errors.js';
import type { OAuthInitiateData } from '../protocol/messages.js';
import type { SanitizedToken } from '../store/types.js';
import type { ProxySocketClient } from './socket-client.js';

export interface LoginIO {
  /** Show the user what to open / type (URL, user code). */
  show(info: OAuthInitiateData): void;
  /** Ask for the code the provider displayed (pkce_redirect). */
  promptCode(): Promise<string>;
  /** Called before each wait while polling. */
  waiting?(elapsedMs: number): void;
  /** Aborted on Ctrl+C: the session is cancelled on the host. */
  signal?: AbortSignal;
  /** For tests: the wait between polls (default: the server's advice). */
  sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
}

const defaultSleep = (ms: number, signal?: AbortSignal): Promise<void> =>
  new Promise((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(t);
      reject(new CredproxyError('INVALID_REQUEST', 'login cancelled'));
    }, { once: true });
  });

/**
 * SPEC §6 login adapter: oauth_initiate, then the code paste (oauth_exchange)
 * or the poll loop at the advised interval; oauth_cancel when aborted. The
 * host keeps every secret of the flow; this side only sees URLs, the user
 * code, the session id and finally the sanitized token.
 */
export async function loginThroughProxy(client: ProxySocketClient, provider: string, bucket: string, io: LoginIO): Promise<SanitizedToken> {
  const started = Date.now();
  const info = await client.request('oauth_initiate', { provider, bucket });
  const session_id = info.session_id;
  const cancel = (): void => {
    void client.request('oauth_cancel', { session_id }).catch(() => undefined);
  };
  io.signal?.addEventListener('abort', cancel, { once: true });
  try {
    io.show(info);
    if (info.flow_type === 'pkce_redirect') {
      const code = await io.promptCode();
      if (io.signal?.aborted) throw new CredproxyError('INVALID_REQUEST', 'login cancelled');
      return await client.request('oauth_exchange', { session_id, code });
    }
    const sleep = io.sleep ?? defaultSleep;
    let interval = info.pollIntervalMs ?? 5000;
    for (;;) {
      io.waiting?.(Date.now() - started);
      await sleep(interval, io.signal);
      const r = await client.request('oauth_poll', { session_id });
      if (r.status === 'pending') {
        interval = r.pollIntervalMs;
        continue;
      }
      if (r.status === 'error') throw new CredproxyError(r.code, r.error);
      const { status: _s, ...token } = r;
      return token as SanitizedToken;
    }
  } finally {
    io.signal?.removeEventListener('abort', cancel);
  }
}
