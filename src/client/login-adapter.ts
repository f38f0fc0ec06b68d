import { CredproxyError } from '../errors.js';
import type { OAuthInitiateData, OAuthPollData } from '../protocol/messages.js';
import type { SanitizedToken } from '../store/types.js';
import type { ProxySocketClient } from './socket-client.js';

/**
 * The four login operations, wherever the session lives: on the host behind
 * the socket (proxyLoginOps) or in this very process (the host CLI).
 */
export interface LoginOps {
  initiate(provider: string, bucket: string): Promise<OAuthInitiateData>;
  exchange(sessionId: string, code: string): Promise<SanitizedToken>;
  poll(sessionId: string): Promise<OAuthPollData>;
  cancel(sessionId: string): Promise<void>;
}

/** The login operations through the proxy socket (SPEC §4 oauth_*). */
export function proxyLoginOps(client: ProxySocketClient): LoginOps {
  return {
    initiate: (provider, bucket) => client.request('oauth_initiate', { provider, bucket }),
    exchange: (session_id, code) => client.request('oauth_exchange', { session_id, code }),
    poll: (session_id) => client.request('oauth_poll', { session_id }),
    cancel: async (session_id) => {
      await client.request('oauth_cancel', { session_id });
    },
  };
}

export interface LoginOutput {
  write(text: string): unknown;
  isTTY?: boolean;
}

export interface LoginIO {
  /** Where the instructions and the waiting indicator go (stderr in the CLI). */
  output: LoginOutput;
  /** Ask the user for the code the provider's page shows (pkce_redirect); should give up when `signal` aborts. */
  prompt(question: string, signal: AbortSignal): Promise<string>;
  /** Aborting it (Ctrl+C) cancels the session on the host and rejects with CANCELLED. */
  signal?: AbortSignal;
  /** Called once the session exists and its instructions are printed (the host CLI opens a browser here). */
  onStart?(info: OAuthInitiateData): void;
  /** The wait between polls; defaults to a real timer. */
  sleep?(ms: number, signal: AbortSignal): Promise<void>;
  now?: () => number;
}

/** Bounds on the host's advice, so a confused answer can neither spin nor stall the loop. */
const MIN_POLL_MS = 100;
const MAX_POLL_MS = 60_000;
/** How long a cancelled login waits for the host to acknowledge oauth_cancel. */
const CANCEL_WAIT_MS = 5000;
const SPINNER_MS = 250;
const PLAIN_PROGRESS_MS = 30_000;

function cancelledError(): CredproxyError {
  return new CredproxyError('CANCELLED', 'login cancelled');
}

function realSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(cancelledError());
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(cancelledError());
    };
    // Ref'd on purpose: this wait is what keeps a CLI login alive.
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** `work`, or CANCELLED as soon as `signal` aborts (the work itself is abandoned). */
function unlessCancelled<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) {
    work.catch(() => undefined);
    return Promise.reject(cancelledError());
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(cancelledError());
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

function withinMs<T>(work: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), ms);
    timer.unref();
  });
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}

/**
 * "Waiting..." while the user finishes in the browser: a spinner with the
 * elapsed time on a terminal, a plain line now and then otherwise (logs of
 * agents stay readable).
 */
class WaitingIndicator {
  private timer: NodeJS.Timeout | null = null;
  private frame = 0;
  private readonly started: number;

  constructor(
    private readonly out: LoginOutput,
    private readonly now: () => number,
  ) {
    this.started = now();
  }

  start(): void {
    const tty = this.out.isTTY === true;
    if (!tty) this.out.write('credproxy: waiting for the login to finish in the browser...\n');
    else this.draw();
    this.timer = setInterval(() => (tty ? this.draw() : this.plain()), tty ? SPINNER_MS : PLAIN_PROGRESS_MS);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer === null) return;
    clearInterval(this.timer);
    this.timer = null;
    if (this.out.isTTY === true) this.out.write('\r\x1b[2K');
  }

  private seconds(): number {
    return Math.round((this.now() - this.started) / 1000);
  }

  private draw(): void {
    const frames = ['|', '/', '-', '\\'];
    this.out.write(`\r${frames[this.frame++ % frames.length]} waiting for the login to finish in the browser (${this.seconds()} s, Ctrl+C to cancel)`);
  }

  private plain(): void {
    this.out.write(`credproxy: still waiting for the login (${this.seconds()} s)\n`);
  }
}

/** Provider-supplied text goes to a terminal: no control characters (escape sequences) get through. */
function printable(value: string | undefined): string {
  return (value ?? '').replace(/[^\x20-\x7e]/g, '?');
}

function describeStart(out: LoginOutput, provider: string, info: OAuthInitiateData): void {
  if (info.flow_type === 'device_code') {
    out.write(`credproxy: to log in to ${provider}, open ${printable(info.verification_url)} and enter the code: ${printable(info.user_code)}\n`);
    return;
  }
  out.write(`credproxy: open this URL in your browser to log in to ${provider}:\n\n  ${printable(info.auth_url)}\n\n`);
}

function tokenFromPoll(r: Extract<OAuthPollData, { status: 'complete' }>): SanitizedToken {
  const { status: _status, ...token } = r;
  if (typeof token.access_token !== 'string' || typeof token.expiry !== 'number') {
    throw new CredproxyError('INTERNAL_ERROR', 'the proxy answered the login with a malformed token');
  }
  return token as SanitizedToken;
}

async function pollUntilDone(ops: LoginOps, sessionId: string, firstInterval: number, io: LoginIO, signal: AbortSignal): Promise<SanitizedToken> {
  const sleep = io.sleep ?? realSleep;
  const indicator = new WaitingIndicator(io.output, io.now ?? Date.now);
  indicator.start();
  try {
    let interval = firstInterval;
    for (;;) {
      await sleep(Math.min(Math.max(interval, MIN_POLL_MS), MAX_POLL_MS), signal);
      const r = await unlessCancelled(ops.poll(sessionId), signal);
      switch (r.status) {
        case 'pending':
          interval = r.pollIntervalMs;
          continue;
        case 'complete':
          return tokenFromPoll(r);
        case 'error':
          throw new CredproxyError(r.code, r.error);
        default:
          throw new CredproxyError('INTERNAL_ERROR', 'the proxy answered the login poll with an unknown status');
      }
    }
  } finally {
    indicator.stop();
  }
}

/**
 * SPEC §6 login adapter: oauth_initiate, then either the pasted code
 * (oauth_exchange) or the poll loop at the interval the host advises; on
 * abort (Ctrl+C) the session is cancelled on the host before this rejects
 * with CANCELLED. The host keeps every secret of the flow: this side only
 * sees URLs, the user code, the session id and finally the sanitized token.
 */
export async function runLogin(ops: LoginOps, provider: string, bucket: string, io: LoginIO): Promise<SanitizedToken> {
  const signal = io.signal ?? new AbortController().signal;
  if (signal.aborted) throw cancelledError();
  const initiating = ops.initiate(provider, bucket);
  let info: OAuthInitiateData;
  try {
    info = await unlessCancelled(initiating, signal);
  } catch (err) {
    if (signal.aborted) {
      // The host may still be creating the session: cancel it if it shows up soon.
      const late = await withinMs(initiating.catch(() => undefined), CANCEL_WAIT_MS);
      if (late) await withinMs(ops.cancel(late.session_id).catch(() => undefined), CANCEL_WAIT_MS);
    }
    throw err;
  }
  const sessionId = info.session_id;
  try {
    describeStart(io.output, provider, info);
    io.onStart?.(info);
    switch (info.flow_type) {
      case 'pkce_redirect': {
        const code = await unlessCancelled(io.prompt('credproxy: paste the code the page shows you, then press Enter: ', signal), signal);
        return await unlessCancelled(ops.exchange(sessionId, code), signal);
      }
      case 'device_code':
      case 'browser_redirect':
        return await pollUntilDone(ops, sessionId, info.pollIntervalMs ?? 5000, io, signal);
      default:
        throw new CredproxyError('INTERNAL_ERROR', 'the proxy started a login flow this client does not know');
    }
  } catch (err) {
    // Whatever ended the login early, the host should not keep a listener or a poll running for it.
    await withinMs(ops.cancel(sessionId).catch(() => undefined), CANCEL_WAIT_MS);
    throw signal.aborted ? cancelledError() : err;
  }
}

/** The sandbox side: the whole flow runs on the host, driven through `client`. */
export function loginThroughProxy(client: ProxySocketClient, provider: string, bucket: string, io: LoginIO): Promise<SanitizedToken> {
  return runLogin(proxyLoginOps(client), provider, bucket, io);
}
