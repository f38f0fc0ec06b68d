import { readFileSync } from 'node:fs';
import { CredproxyError } from '../errors.js';

/** Where a container finds its capability token: a 0400 file in the read-only socket mount (SPEC §8). */
export const TOKEN_FILE_ENV = 'CREDPROXY_TOKEN_FILE';
/** The file's name inside the socket directory. */
export const TOKEN_FILE_NAME = 'token';

/**
 * The capability token from CREDPROXY_TOKEN, else from the file named by
 * CREDPROXY_TOKEN_FILE. Containers get the file: a variable would stay in
 * the container's configuration, which `docker/podman inspect` shows.
 */
export function capabilityTokenFromEnv(env: NodeJS.ProcessEnv): string | undefined {
  const direct = env.CREDPROXY_TOKEN;
  if (direct) return direct;
  const file = env[TOKEN_FILE_ENV];
  if (!file) return undefined;
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new CredproxyError('CONFIG_INVALID', `${TOKEN_FILE_ENV} names ${file}, which cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  const token = text.trim();
  return token === '' ? undefined : token;
}
