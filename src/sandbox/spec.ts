/** Where the socket directory appears inside a sandbox. */
export const SANDBOX_SOCKET_DIR = '/run/credproxy';

export type SandboxKind = 'bwrap' | 'docker' | 'podman' | 'none';

/** Everything a launcher needs to build its command line; plain data, no I/O. */
export interface SandboxSpec {
  /** Host directory holding only the proxy's socket; the one thing shared with the sandbox (unused with tcpPort). */
  socketDir: string;
  /** The socket's file name inside socketDir. */
  socketName: string;
  /** With `--transport tcp`: the proxy's port on the host, reached over the network instead of a shared socket. */
  tcpPort: number | null;
  capabilityToken: string;
  command: string[];
  /** Host directory bound read-write at its own path, or null (--no-workdir). */
  workdir: string | null;
  shareNet: boolean;
  /** The user's home directory: HOME inside (hidden behind an empty tmpfs in bwrap, see mounts.ts). */
  home: string;
  /** The harmless environment (see sandboxEnv). */
  env: Record<string, string>;
}

/** The only host variables that cross into a sandbox; never CREDPROXY_PASSPHRASE or other secrets. */
export const PASSED_ENV = ['PATH', 'TERM', 'LANG', 'LC_ALL', 'TZ', 'USER', 'LOGNAME', 'COLORTERM'] as const;

export function sandboxEnv(host: NodeJS.ProcessEnv, extraPath: string[] = []): Record<string, string> {
  const env: Record<string, string> = {};
  for (const name of PASSED_ENV) {
    const v = host[name];
    if (v !== undefined) env[name] = v;
  }
  const path = [...extraPath, ...(env.PATH ?? '/usr/local/bin:/usr/bin:/bin').split(':')];
  env.PATH = [...new Set(path.filter(Boolean))].join(':');
  return env;
}

export function socketPathInside(spec: Pick<SandboxSpec, 'socketName'>): string {
  return `${SANDBOX_SOCKET_DIR}/${spec.socketName}`;
}

/**
 * The engine CLI (docker/podman) needs the host environment (DOCKER_HOST,
 * CONTAINERS_CONF, XDG_RUNTIME_DIR…), but an engine configured to copy it
 * into containers (podman's env_host) must not find credproxy's own there.
 */
export function engineEnv(host: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(host).filter(([name]) => !name.startsWith('CREDPROXY_')));
}
