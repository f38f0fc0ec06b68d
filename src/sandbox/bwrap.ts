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
 */
export function bwrapArgs(spec: SandboxSpec, infoFd: number): string[] {
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
  args.push('--cap-drop', 'ALL', '--die-with-parent', '--clearenv');
  const env = { ...spec.env, HOME: spec.home, CREDPROXY_SOCKET: socketPathInside(spec), CREDPROXY_TOKEN: spec.capabilityToken };
  for (const [k, v] of Object.entries(env)) args.push('--setenv', k, v);
  args.push('--info-fd', String(infoFd), '--', ...spec.command);
  return args;
}
