import { DEFAULT_BUCKET } from '../names.js';

/** `credproxy login P [--bucket B]`, the command that fills this entry. */
export function loginCommand(provider: string, bucket: string = DEFAULT_BUCKET): string {
  return `credproxy login ${provider}${bucket === DEFAULT_BUCKET ? '' : ` --bucket ${bucket}`}`;
}

/**
 * What to do about an empty entry, for the first error a newcomer meets.
 * Names only commands that exist: login works on the host and inside a
 * sandbox; token import is a host command.
 */
export function howToStore(provider: string, bucket: string = DEFAULT_BUCKET): string {
  return `run \`${loginCommand(provider, bucket)}\` (or, on the host, pipe a token JSON to \`credproxy token import ${provider}${bucket === DEFAULT_BUCKET ? '' : ` --bucket ${bucket}`}\`)`;
}

/** NOT_FOUND text for a token: what is missing, then what to do. */
export function noTokenMessage(provider: string, bucket: string = DEFAULT_BUCKET): string {
  return `no token stored for ${provider}:${bucket}; ${howToStore(provider, bucket)}`;
}
