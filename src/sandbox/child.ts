import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { constants as osConstants } from 'node:os';

export const FORWARDED_SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

export interface ChildRun {
  child: ChildProcess;
  /** Resolves with the exit status as a shell reports it: code, or 128+signal. */
  status: Promise<number>;
}

export function statusOf(code: number | null, signal: NodeJS.Signals | null): number {
  if (code !== null) return code;
  return 128 + (signal ? (osConstants.signals[signal] ?? 0) : 0);
}

export function spawnChild(file: string, args: string[], options: SpawnOptions): ChildRun {
  const child = spawn(file, args, options);
  const status = new Promise<number>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code, signal) => resolve(statusOf(code, signal)));
  });
  return { child, status };
}

/** The command bwrap started: the child of bwrap's own pid-1 helper, which ignores signals from outside. */
export function bwrapCommandPid(infoPid: number): number | null {
  try {
    const first = readFileSync(`/proc/${infoPid}/task/${infoPid}/children`, 'utf8').trim().split(/\s+/)[0];
    return first ? Number(first) : null;
  } catch {
    return null;
  }
}

/**
 * Forward SIGINT/SIGTERM/SIGHUP received by the launcher to `target()` (the
 * command itself) until `done` settles. Returns the uninstall function.
 */
export function forwardSignals(target: () => number | null): () => void {
  const handler = (signal: NodeJS.Signals): void => {
    const pid = target();
    if (pid === null) return;
    try {
      process.kill(pid, signal);
    } catch {
      /* already gone */
    }
  };
  for (const s of FORWARDED_SIGNALS) process.on(s, handler);
  return () => {
    for (const s of FORWARDED_SIGNALS) process.off(s, handler);
  };
}
