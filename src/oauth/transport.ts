import type { CustomFetch, CustomFetchOptions } from 'openid-client';
import { RefusedRequestError } from './errors.js';
import { isAllowedRequestUrl } from './url-policy.js';

/** SPEC §5: each provider network call gets 15 s. */
export const DEFAULT_PROVIDER_TIMEOUT_MS = 15_000;

export type FetchLike = (url: string, init: RequestInit) => Promise<Response>;

export interface TransportOptions {
  timeoutMs: number;
  /** The caller's cancellation (shutdown, overall budget). */
  signal?: AbortSignal;
  /** Send the parameters of POSTs to this URL (the token endpoint) as a JSON object instead of a form (Anthropic). */
  jsonBodyUrl?: string;
  /** Turn a 200 answer carrying `error` and no `access_token` into a 400 (GitHub). */
  errorsWithStatus200?: boolean;
  fetch?: FetchLike;
}

function toJsonBody(body: CustomFetchOptions['body']): string | undefined {
  if (body instanceof URLSearchParams) return JSON.stringify(Object.fromEntries(body));
  if (typeof body === 'string') return JSON.stringify(Object.fromEntries(new URLSearchParams(body)));
  return undefined;
}

async function normalizeErrorIn200(res: Response): Promise<Response> {
  if (res.status !== 200 || !(res.headers.get('content-type') ?? '').includes('json')) return res;
  const text = await res.text();
  let status = 200;
  try {
    const parsed: unknown = JSON.parse(text);
    if (parsed && typeof parsed === 'object' && 'error' in parsed && !('access_token' in parsed)) status = 400;
  } catch {
    // Not JSON after all: let the library report the malformed answer.
  }
  const headers = new Headers(res.headers);
  headers.delete('content-length');
  headers.delete('content-encoding');
  return new Response(text, { status, headers });
}

/**
 * The fetch openid-client uses for one provider call: refuses anything but
 * https or loopback http, applies the per-call timeout together with the
 * caller's signal, and papers over the two wire-format quirks providers have.
 * Response validation stays with the library.
 */
export function createTransport(options: TransportOptions): CustomFetch {
  const doFetch: FetchLike = options.fetch ?? ((url, init) => fetch(url, init));
  const jsonUrl = options.jsonBodyUrl === undefined ? undefined : new URL(options.jsonBodyUrl).href;
  return async (url, init) => {
    const target = new URL(url);
    if (!isAllowedRequestUrl(target)) throw new RefusedRequestError();
    const signals = [AbortSignal.timeout(options.timeoutMs)];
    if (init.signal) signals.push(init.signal);
    if (options.signal) signals.push(options.signal);
    const headers: Record<string, string> = { ...init.headers };
    let body: RequestInit['body'] = init.body as RequestInit['body'];
    if (jsonUrl !== undefined && target.href === jsonUrl && init.method === 'POST') {
      const json = toJsonBody(init.body);
      if (json !== undefined) {
        body = json;
        for (const name of Object.keys(headers)) if (name.toLowerCase() === 'content-type') delete headers[name];
        headers['content-type'] = 'application/json';
      }
    }
    const res = await doFetch(url, { method: init.method, headers, body, redirect: 'manual', signal: AbortSignal.any(signals) });
    return options.errorsWithStatus200 ? normalizeErrorIn200(res) : res;
  };
}
