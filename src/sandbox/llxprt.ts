import { basename } from 'node:path';
import { CredproxyError } from '../errors.js';

/**
 * llxprt-code's sandbox contract (SPEC §8): its sandboxed process finds the
 * proxy through LLXPRT_CREDENTIAL_SOCKET (a Unix socket path, never tcp://)
 * and takes the capability token only from the inherited descriptor named
 * by LLXPRT_CAPABILITY_FD, which must be 3 and hold exactly the 64
 * lowercase hex characters, a newline, then EOF. Its container images
 * instead read LLXPRT_CAPABILITY_TOKEN from the environment (an env file)
 * and move it onto fd 3 in their entrypoint.
 */
export const LLXPRT_SOCKET_ENV = 'LLXPRT_CREDENTIAL_SOCKET';
export const LLXPRT_FD_ENV = 'LLXPRT_CAPABILITY_FD';
export const LLXPRT_TOKEN_ENV = 'LLXPRT_CAPABILITY_TOKEN';
export const LLXPRT_CAPABILITY_FD = 3;

/** `auto`: on when the command is llxprt itself; `on`/`off`: --llxprt / --no-llxprt. */
export type LlxprtMode = 'auto' | 'on' | 'off';

const LLXPRT_COMMANDS = new Set(['llxprt', 'llxprt-code']);
const TOKEN_RE = /^[0-9a-f]{64}$/;

/** Commander gives true/false for --llxprt/--no-llxprt and undefined when neither was given. */
export function llxprtMode(flag: boolean | undefined): LlxprtMode {
  return flag === undefined ? 'auto' : flag ? 'on' : 'off';
}

export function llxprtWanted(mode: LlxprtMode, command: readonly string[]): boolean {
  if (mode !== 'auto') return mode === 'on';
  const first = command[0];
  return first !== undefined && LLXPRT_COMMANDS.has(basename(first));
}

/** What fd 3 carries: the token, one newline, nothing else. */
export function capabilityFdBytes(token: string): Buffer {
  if (!TOKEN_RE.test(token)) throw new CredproxyError('USAGE', 'llxprt-code needs a capability token of 64 lowercase hex characters');
  return Buffer.from(`${token}\n`, 'ascii');
}

/** The environment naming the socket and the descriptor (no secret in it). */
export function llxprtEnv(socketPath: string): Record<string, string> {
  if (socketPath.startsWith('tcp://')) {
    throw new CredproxyError('USAGE', 'llxprt-code reaches the proxy only through a Unix socket path; --transport tcp cannot serve it');
  }
  return { [LLXPRT_SOCKET_ENV]: socketPath, [LLXPRT_FD_ENV]: String(LLXPRT_CAPABILITY_FD) };
}
