import { llxprtEnv } from './llxprt.js';
import { SANDBOX_SOCKET_DIR, socketPathInside, type SandboxSpec } from './spec.js';

function isUnder(path: string, dir: string): boolean {
  return path === dir || path.startsWith(dir.endsWith('/') ? dir : `${dir}/`);
}

/**
 * bubblewrap arguments (SPEC §7): read-only root, private /proc and /dev,
 * tmpfs over home, /tmp, /var/tmp and /run (the host's session bus and
 * keyring sockets live under /run/user) and over credproxy's own dirs,
 * only the socket directory bound (read-only: connect() still works), the
 * working directory read-write, every namespace unshared, no capabilities.
 * `infoFd` receives bwrap's JSON with the child pid (for signal forwarding).
 *
 * `--new-session`: without it the command shares the user's controlling
 * terminal and can push keystrokes into the user's shell with TIOCSTI
 * (the kernel allows it on one's own controlling terminal, and
 * dev.tty.legacy_tiocsti is still 1 on many systems). The price, no job
 * control on that terminal inside, is paid back by the launcher, which is
 * the terminal's foreground job and relays ^C, ^\, ^Z, fg and resizes.
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

export function bwrapArgs(spec: SandboxSpec, fds: { info: number; args: number }): BwrapInvocation {
  const args = ['--ro-bind', '/', '/', '--dev', '/dev', '--proc', '/proc'];
  const masked = ['/tmp', '/var/tmp', '/run', spec.home];
  for (const dir of masked) args.push('--tmpfs', dir);
  for (const dir of spec.hidden) {
    if (!masked.some((m) => isUnder(dir, m))) args.push('--tmpfs', dir);
  }
  // Tools living under a masked path (a checkout in $HOME, node from nvm) come back read-only.
  for (const dir of spec.toolDirs) {
    if ([...masked, ...spec.hidden].some((m) => isUnder(dir, m))) args.push('--ro-bind', dir, dir);
  }
  args.push('--ro-bind', spec.socketDir, SANDBOX_SOCKET_DIR);
  if (spec.workdir !== null) args.push('--bind', spec.workdir, spec.workdir, '--chdir', spec.workdir);
  else args.push('--chdir', '/');
  args.push('--unshare-all');
  if (spec.shareNet) args.push('--share-net');
  args.push('--cap-drop', 'ALL', '--die-with-parent', '--new-session', '--clearenv');
  // llxprt: the token travels on fd 3 (inherited through bwrap), never in the environment.
  const proxyEnv = spec.llxprt ? llxprtEnv(socketPathInside(spec)) : { CREDPROXY_SOCKET: socketPathInside(spec) };
  const env = { ...spec.env, HOME: spec.home, ...proxyEnv };
  for (const [k, v] of Object.entries(env)) args.push('--setenv', k, v);
  args.push('--args', String(fds.args), '--info-fd', String(fds.info), '--', ...spec.command);
  return { argv: args, fdArgs: spec.llxprt ? [] : ['--setenv', 'CREDPROXY_TOKEN', spec.capabilityToken] };
}

/** The `--args` stream: every argument NUL-terminated. */
export function encodeFdArgs(args: string[]): Buffer {
  return Buffer.from(args.map((a) => `${a}\0`).join(''), 'utf8');
}
