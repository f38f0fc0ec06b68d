import { pino, type Logger } from 'pino';

/**
 * Paths pino censors wherever they appear in a log object. This is a second
 * line of defence: call sites must not pass secrets to the logger at all.
 */
const REDACT_PATHS = [
  'refresh_token', '*.refresh_token', '*.*.refresh_token',
  'access_token', '*.access_token', '*.*.access_token',
  'code_verifier', '*.code_verifier', 'device_code', '*.device_code',
  'auth_code', '*.auth_code', 'capabilityToken', '*.capabilityToken',
  'client_secret', '*.client_secret', 'password', 'passphrase',
  'session_id', '*.session_id', 'authorization', '*.authorization', 'headers', '*.headers',
];

export type { Logger };

/** Logs go to stderr as JSON lines; stdout carries only a command's data. */
export function createLogger(options: { level?: string; destination?: NodeJS.WritableStream | number } = {}): Logger {
  const level = options.level ?? process.env.CREDPROXY_LOG_LEVEL ?? 'info';
  const dest = options.destination ?? 2;
  return pino(
    { level, base: { pid: process.pid }, redact: { paths: REDACT_PATHS, censor: '[redacted]' } },
    typeof dest === 'number' ? pino.destination({ fd: dest, sync: false }) : dest,
  );
}

/** Debug logs may show at most the first 8 characters of a session id (SPEC §5). */
export function shortSessionId(id: string): string {
  return id.slice(0, 8);
}
