import { CredproxyError } from '../errors.js';

/** Streams a command talks to; injectable so commands can be driven in-process. */
export interface CliIO {
  stdin: NodeJS.ReadableStream & { isTTY?: boolean };
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  env: NodeJS.ProcessEnv;
}

export function processIO(): CliIO {
  return { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr, env: process.env };
}

/** Bad command-line input: exit 2 with a usage message. */
export class UsageError extends CredproxyError {
  constructor(message: string) {
    super('USAGE', message);
  }
}

/** Read all of stdin, refusing more than `limit` bytes (secrets and tokens are small). */
export async function readAll(stream: NodeJS.ReadableStream, limit = 1024 * 1024): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream as AsyncIterable<Buffer | string>) {
    const buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    size += buf.length;
    if (size > limit) throw new CredproxyError('INVALID_REQUEST', `input larger than ${limit} bytes`);
    chunks.push(buf);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** `key set` reads the value from stdin; exactly one trailing newline is not part of it. */
export function stripOneNewline(s: string): string {
  if (s.endsWith('\r\n')) return s.slice(0, -2);
  if (s.endsWith('\n')) return s.slice(0, -1);
  return s;
}

export function writeLine(stream: NodeJS.WritableStream, line = ''): void {
  stream.write(`${line}\n`);
}

export function writeJson(stream: NodeJS.WritableStream, value: unknown): void {
  stream.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** One notice or warning line on stderr. */
export function notice(io: CliIO, line: string): void {
  io.stderr.write(`credproxy: ${line}\n`);
}
