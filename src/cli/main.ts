import { CommanderError } from 'commander';
import { isCredproxyError } from '../errors.js';
import { buildProgram } from './program.js';
import { processIO, type CliIO } from './io.js';

/** Map a failure to SPEC §7 exit codes: 2 for usage errors, 1 for everything else. */
export function exitCodeFor(err: unknown): number {
  if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : 2;
  if (isCredproxyError(err, 'USAGE')) return 2;
  return 1;
}

/**
 * A reader that went away (`credproxy status | head`) ends the output, not
 * the command: EPIPE on stdout or stderr is dropped quietly instead of
 * surfacing as an unhandled 'error' event with a stack trace.
 */
function quietOnClosedPipe(stream: NodeJS.WritableStream): void {
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err;
  });
}

export async function main(argv: string[], io: CliIO = processIO()): Promise<number> {
  quietOnClosedPipe(io.stdout);
  quietOnClosedPipe(io.stderr);
  const program = buildProgram(io);
  try {
    const code = await program.run(argv);
    return code;
  } catch (err) {
    const code = exitCodeFor(err);
    if (err instanceof CommanderError) return code; // commander already printed its message
    io.stderr.write(`credproxy: ${describe(err)}\n`);
    if (code === 2) io.stderr.write(`Run 'credproxy --help' for usage.\n`);
    return code;
  } finally {
    await program.close();
  }
}

/** Only our own error messages are printed; anything else is reduced to its name. */
function describe(err: unknown): string {
  // The stable code first: scripts can match on it; USAGE is said by the exit status.
  if (isCredproxyError(err)) return err.code === 'USAGE' ? err.message : `${err.code}: ${err.message}`;
  // System errors (EACCES, ENOSPC...) name a path and a syscall, never a secret.
  if (err instanceof Error && 'syscall' in err) return err.message;
  if (err instanceof Error) return `unexpected ${err.name}${'code' in err && typeof err.code === 'string' ? ` (${err.code})` : ''}`;
  return 'unexpected failure';
}
