import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { closeSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { constants as osConstants } from 'node:os';

/** What a terminal or a supervisor sends that the command, not its launcher, should act on. */
export const RELAYED_SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGWINCH'];

/** The ones a terminal sends to its whole foreground process group by itself. */
const TERMINAL_SIGNALS: ReadonlySet<NodeJS.Signals> = new Set(['SIGINT', 'SIGQUIT', 'SIGWINCH']);

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

/** O_CLOEXEC as /proc/PID/fdinfo shows it in `flags:` (octal; the same on x86_64 and aarch64). */
const O_CLOEXEC = 0o2000000;

/**
 * Closes every descriptor above stdio that a child would inherit (those
 * without close-on-exec). Node marks 0-15 close-on-exec at start-up and stops
 * at the first gap after them, so one that the launcher's own parent leaked
 * at a higher number (a terminal's, an IDE's, a supervisor's) went on through
 * bwrap into the sandbox, where a directory handle opens the host's files
 * through /proc/self/fd past every mount. The launcher itself never uses one.
 */
export function closeInheritableFds(): void {
  for (const name of readdirSync('/proc/self/fdinfo')) {
    const fd = Number(name);
    if (!(fd > 2)) continue;
    let flags: RegExpExecArray | null;
    try {
      flags = /^flags:\s*([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
    } catch {
      continue; // the listing's own handle, closed again by now
    }
    if (flags && (parseInt(flags[1]!, 8) & O_CLOEXEC) === 0) closeSync(fd);
  }
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

/** The mount namespace of a process (`mnt:[N]`), or null once it is gone. */
export function mountNamespace(pid: number): string | null {
  try {
    return readlinkSync(`/proc/${pid}/ns/mnt`);
  } catch {
    return null;
  }
}

/** Fields of /proc/self/stat after the command name: [state, ppid, pgrp, session, tty_nr, tpgid, …]. */
function ownStat(): string[] {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

/** True when this process belongs to the foreground job of its controlling terminal. */
export function inTerminalForeground(): boolean {
  try {
    const f = ownStat();
    return Number(f[4]) !== 0 && f[5] === f[2];
  } catch {
    return false;
  }
}

export interface SignalRelayOptions {
  /** The process to signal, or null while it does not exist yet: signals then wait for it. */
  target: () => number | null;
  /**
   * ^Z: stop the target's process group (SIGSTOP: a group in a session of
   * its own is orphaned, and the kernel discards SIGTSTP's default action
   * there), then the launcher itself; SIGCONT (`fg`) continues both.
   */
  jobControl: boolean;
  /**
   * The target shares our process group and terminal: when we are that
   * terminal's foreground job, ^C, ^\ and resizes already reached it, and
   * relaying them again would deliver each one twice.
   */
  sharesTerminal: boolean;
  retryMs?: number;
}

/**
 * Relays RELAYED_SIGNALS (and ^Z/fg with jobControl) to the target process
 * until stopped. A signal that arrives before the target exists is held and
 * delivered as soon as it does, instead of being lost or killing the launcher.
 */
export class SignalRelay {
  private readonly pending: NodeJS.Signals[] = [];
  private retry: NodeJS.Timeout | undefined;
  private readonly handlers = new Map<NodeJS.Signals, () => void>();

  constructor(private readonly o: SignalRelayOptions) {}

  start(): this {
    for (const s of RELAYED_SIGNALS) this.listen(s, () => this.relay(s));
    if (this.o.jobControl) {
      this.listen('SIGTSTP', () => this.suspend());
      this.listen('SIGCONT', () => this.signalGroup('SIGCONT'));
    }
    return this;
  }

  stop(): void {
    for (const [s, h] of this.handlers) process.off(s, h);
    this.handlers.clear();
    clearTimeout(this.retry);
    this.retry = undefined;
    this.pending.length = 0;
  }

  private listen(signal: NodeJS.Signals, handler: () => void): void {
    this.handlers.set(signal, handler);
    process.on(signal, handler);
  }

  private relay(signal: NodeJS.Signals): void {
    if (this.o.sharesTerminal && TERMINAL_SIGNALS.has(signal) && inTerminalForeground()) return;
    this.pending.push(signal);
    if (this.retry === undefined) this.flush();
  }

  private flush(): void {
    this.retry = undefined;
    const pid = this.o.target();
    if (pid === null) {
      // Unref'd: the child being waited for keeps the process alive, not this.
      this.retry = setTimeout(() => this.flush(), this.o.retryMs ?? 20).unref();
      return;
    }
    for (const s of this.pending.splice(0)) kill(pid, s);
  }

  private suspend(): void {
    this.signalGroup('SIGSTOP');
    process.kill(process.pid, 'SIGSTOP');
  }

  private signalGroup(signal: NodeJS.Signals): void {
    const pid = this.o.target();
    if (pid === null) return;
    // The command leads its own group (bwrap --new-session, a detached child); a command that left it is still reached directly.
    if (!kill(-pid, signal)) kill(pid, signal);
  }
}

function kill(pid: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(pid, signal);
    return true;
  } catch {
    return false;
  }
}
