import { LLXPRT_SOCKET_ENV } from './llxprt.js';
import { SANDBOX_SOCKET_DIR, socketPathInside, type SandboxSpec } from './spec.js';
import { TOKEN_FILE_ENV, TOKEN_FILE_NAME } from '../client/capability-token.js';

export interface ContainerOptions {
  engine: 'docker' | 'podman';
  image: string;
  /**
   * 0600 env file, only for llxprt images (LLXPRT_CAPABILITY_TOKEN) and the
   * TCP transport (no socket mount to carry a token file); otherwise the
   * token is the 0400 file in the socket mount and no variable holds it.
   */
  envFile?: string;
  /** Where the engine writes the container id once created: the launcher removes envFile then. */
  cidFile: string;
  tty: boolean;
  uid: number;
  gid: number;
  engineArgs: string[];
  /** What the gateway/egress relay needs, mounted read-only (see gateway/sandbox.ts). */
  relayMounts?: Array<{ host: string; inside: string }>;
}

/** How a container reaches its host with --transport tcp (Docker Desktop / Podman machine name it so). */
export const HOST_ALIAS = { docker: 'host.docker.internal', podman: 'host.containers.internal' } as const;

/**
 * docker/podman `run` arguments: only the socket directory mounted, the
 * working directory at /work when given, no network unless --share-net
 * (or --transport tcp, where the network is how the proxy is reached),
 * the token through an env file, the container process as the user.
 */
export function containerArgs(spec: SandboxSpec, o: ContainerOptions): string[] {
  const args = ['run', '--rm', '-i'];
  if (o.tty) args.push('-t');
  args.push('--user', `${o.uid}:${o.gid}`);
  if (o.engine === 'podman' && o.uid !== 0) args.push('--userns=keep-id');
  args.push('--cap-drop', 'ALL', '--security-opt', 'no-new-privileges');
  let socket = socketPathInside(spec);
  if (spec.tcpPort !== null) {
    // A VM-based engine cannot carry a Unix socket: the container needs the network to reach the proxy.
    socket = `tcp://${HOST_ALIAS[o.engine]}:${spec.tcpPort}`;
    if (o.engine === 'docker') args.push('--add-host', `${HOST_ALIAS.docker}:host-gateway`);
  } else {
    if (!spec.shareNet) args.push('--network', 'none');
    // Read-only: connect() on a socket needs no write access to its directory, and the sandbox cannot replace the socket.
    args.push('-v', `${spec.socketDir}:${SANDBOX_SOCKET_DIR}:ro`);
  }
  for (const m of o.relayMounts ?? []) args.push('-v', `${m.host}:${m.inside}:ro`);
  if (spec.workdir !== null) args.push('-v', `${spec.workdir}:/work`, '-w', '/work');
  // llxprt images take the token from LLXPRT_CAPABILITY_TOKEN in the env file and put it on fd 3 themselves.
  args.push('--cidfile', o.cidFile);
  if (o.envFile !== undefined) args.push('--env-file', o.envFile);
  else args.push('-e', `${TOKEN_FILE_ENV}=${SANDBOX_SOCKET_DIR}/${TOKEN_FILE_NAME}`);
  args.push('-e', `${spec.llxprt ? LLXPRT_SOCKET_ENV : 'CREDPROXY_SOCKET'}=${socket}`);
  for (const name of ['TERM', 'LANG', 'TZ']) if (spec.env[name] !== undefined) args.push('-e', `${name}=${spec.env[name]}`);
  args.push(...o.engineArgs, o.image, ...spec.command);
  return args;
}
