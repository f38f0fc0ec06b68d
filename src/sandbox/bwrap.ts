import type { BwrapFeatures } from './bwrap-features.js';
import { mountArgs, type MountOp } from './mounts.js';
import { socketPathInside, type SandboxSpec } from './spec.js';

/**
 * bubblewrap arguments (SPEC §7, §8): the filesystem from the mount plan
 * (see mounts.ts), every namespace unshared including the user namespace,
 * which is then closed to the command (`--disable-userns`: no nested
 * user namespaces), no capabilities, the seccomp filter from `fds.seccomp`.
 * `fds.status` receives bwrap's JSON status: the child pid first (for signal
 * forwarding), an exit-code record only if the command itself ran.
 *
 * `--new-session`: without it the command shares the user's controlling
 * terminal and can push keystrokes into the user's shell with TIOCSTI
 * (the kernel allows it on one's own controlling terminal, and
 * dev.tty.legacy_tiocsti is still 1 on many systems); the seccomp filter
 * refuses TIOCSTI as well. The price, no job control on that terminal
 * inside, is paid back by the launcher, which is the terminal's foreground
 * job and relays ^C, ^\, ^Z, fg and resizes.
 */
export interface BwrapInvocation {
  argv: string[];
  /**
   * Arguments bwrap reads NUL-separated from `fds.args` (`--args FD`): the
   * capability token's --setenv, kept off the command line, which every
   * local user can read in /proc/PID/cmdline.
   */
  fdArgs: string[];
}

export interface BwrapFds {
  status: number;
  args: number;
  seccomp: number;
}

export function bwrapArgs(spec: SandboxSpec, mounts: MountOp[], fds: BwrapFds, features: BwrapFeatures = { disableUserns: true }): BwrapInvocation {
  const args = mountArgs(mounts);
  args.push('--chdir', spec.workdir ?? '/');
  args.push('--unshare-all');
  if (features.disableUserns) args.push('--unshare-user', '--disable-userns');
  if (spec.shareNet) args.push('--share-net');
  args.push('--cap-drop', 'ALL', '--die-with-parent', '--new-session', '--clearenv');
  const env = sandboxEnvironment(spec);
  for (const [k, v] of Object.entries(env)) args.push('--setenv', k, v);
  args.push('--seccomp', String(fds.seccomp), '--args', String(fds.args), '--json-status-fd', String(fds.status), '--', ...spec.command);
  return { argv: args, fdArgs: ['--setenv', 'CREDPROXY_TOKEN', spec.capabilityToken] };
}

/** The variables the command sees, except CREDPROXY_TOKEN (sent over `--args`). */
export function sandboxEnvironment(spec: Pick<SandboxSpec, 'env' | 'home' | 'socketName'>): Record<string, string> {
  return { ...spec.env, HOME: spec.home, CREDPROXY_SOCKET: socketPathInside(spec) };
}

/** The `--args` stream: every argument NUL-terminated. */
export function encodeFdArgs(args: string[]): Buffer {
  return Buffer.from(args.map((a) => `${a}\0`).join(''), 'utf8');
}

/**
 * bwrap writes `{"exit-code": N}` on its status fd only when the command
 * itself ran and exited; a failed setup (a mount, the seccomp filter) ends
 * bwrap with status 1 and no such record, which `run` reports as its own
 * failure (125), not as the command's status.
 */
export function commandExited(status: string): boolean {
  return /"exit-code"\s*:/.test(status);
}
