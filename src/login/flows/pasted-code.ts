import { CredproxyError } from '../../errors.js';
import { safeErrorCode } from '../../oauth/errors.js';

/** What the user pasted back from the provider's page, taken apart. */
export interface PastedCode {
  code: string;
  /** Present when the page showed `code#state` (Anthropic) or the user pasted the whole callback URL. */
  state?: string;
}

const CODE_RE = /^[\x21-\x7e]{1,4096}$/;

/**
 * Accepts the three forms users paste: the bare code, `code#state`, or the
 * callback URL from the address bar. Errors never echo the input.
 */
export function parsePastedCode(pasted: string): PastedCode {
  const text = pasted.trim();
  if (/^https?:\/\//i.test(text) && URL.canParse(text)) {
    const params = new URL(text).searchParams;
    const error = params.get('error');
    if (error !== null) throw new CredproxyError('EXCHANGE_FAILED', `the provider answered the login with ${safeErrorCode(error)}`);
    const code = params.get('code');
    if (code === null || !CODE_RE.test(code)) throw new CredproxyError('EXCHANGE_FAILED', 'the pasted URL holds no authorization code');
    const state = params.get('state');
    return state === null ? { code } : { code, state };
  }
  const hash = text.indexOf('#');
  const code = hash === -1 ? text : text.slice(0, hash);
  if (!CODE_RE.test(code)) throw new CredproxyError('EXCHANGE_FAILED', 'the pasted text is not an authorization code');
  return hash === -1 ? { code } : { code, state: text.slice(hash + 1) };
}
