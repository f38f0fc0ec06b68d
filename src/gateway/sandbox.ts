import { join } from 'node:path';
import type { SandboxKind } from '../sandbox/spec.js';
import { SANDBOX_SOCKET_DIR } from '../sandbox/spec.js';
import type { AgentEnvPlan } from './agents.js';
import { relayCommand, type RelayConfig } from './relay.js';
import type { GatewayListen } from './server.js';

/** The gateway's Unix socket, next to the proxy socket in the run's socket directory. */
export const GATEWAY_SOCKET_NAME = 'gateway.sock';
/** The egress proxy's Unix socket (issue 15), in the same directory. */
export const EGRESS_SOCKET_NAME = 'egress.sock';

export interface GatewayPlan {
  /** Where the host gateway listens (a relative path lands in the socket directory); undefined without the gateway. */
  listen: GatewayListen[] | undefined;
  /** Where the host egress proxy listens; undefined without --allow-host. */
  egressListen: GatewayListen[] | undefined;
  /** The command as the sandbox runs it (bwrap: behind the in-sandbox relay). */
  wrap(command: readonly string[]): string[];
  /** docker/podman: what the relay needs, to mount read-only (host path -> path inside). */
  relayMounts?: Array<{ host: string; inside: string }>;
}

/**
 * Where a container sees the relay: dist/gateway (the relay and its one
 * import, no node_modules) and, above it, the package.json that makes the
 * image's node load them as ES modules.
 */
const CONTAINER_RELAY_DIR = '/run/credproxy-relay';

/**
 * In a container the relay runs on the image's own node (the host's binary
 * may not match the image's libc); an image without one gets a clear word
 * and run's own failure status instead of a bare "not found".
 */
const NEEDS_NODE =
  'command -v node >/dev/null 2>&1 || { echo "credproxy: --gateway and --allow-host in a container run a small relay on the image\'s node, and this image has no node on PATH" >&2; exit 125; }; exec node "$@"';

/**
 * How `run` places the gateway and the egress proxy for a sandbox kind:
 * `none` shares the host's loopback; bwrap has no network, so each listens
 * on a socket in the run's socket directory and the relay inside carries
 * connections to it; docker/podman (no network) likewise, with the relay
 * mounted read-only and run by the image's node. null: not supported for
 * that kind and transport yet.
 */
export function gatewayPlan(kind: SandboxKind, packageRoot: string, node: string, agent?: AgentEnvPlan, want: { gateway: boolean; egress: boolean; fd3?: boolean; tcp?: boolean } = { gateway: true, egress: false }): GatewayPlan | null {
  if (kind === 'none') {
    const loopback = [{ host: '127.0.0.1', port: 0 }];
    return { listen: want.gateway ? loopback : undefined, egressListen: want.egress ? loopback : undefined, wrap: (c) => [...c] };
  }
  if (kind === 'docker' || kind === 'podman') {
    // Over --transport tcp the container has a network, not our socket directory: not carried yet.
    if (want.tcp) return null;
    const config = relayConfig(agent, want);
    return {
      listen: want.gateway ? [{ path: GATEWAY_SOCKET_NAME }] : undefined,
      egressListen: want.egress ? [{ path: EGRESS_SOCKET_NAME }] : undefined,
      wrap: (command) => ['/bin/sh', '-c', NEEDS_NODE, 'sh', `${CONTAINER_RELAY_DIR}/gateway/relay.js`, JSON.stringify(config), '--', ...command],
      relayMounts: [
        { host: join(packageRoot, 'package.json'), inside: `${CONTAINER_RELAY_DIR}/package.json` },
        { host: join(packageRoot, 'dist', 'gateway'), inside: `${CONTAINER_RELAY_DIR}/gateway` },
      ],
    };
  }
  if (kind === 'bwrap') {
    const relayScript = join(packageRoot, 'dist', 'gateway', 'relay.js');
    const config: RelayConfig = { ...relayConfig(agent, want), ...(want.fd3 ? { fd3: true } : {}) };
    return {
      listen: want.gateway ? [{ path: GATEWAY_SOCKET_NAME }] : undefined,
      egressListen: want.egress ? [{ path: EGRESS_SOCKET_NAME }] : undefined,
      wrap: (command) => relayCommand({ node, relayScript, config, command }),
    };
  }
  return null;
}

function relayConfig(agent: AgentEnvPlan | undefined, want: { gateway: boolean; egress: boolean }): RelayConfig {
  return {
    ...(want.gateway ? { gateway: `${SANDBOX_SOCKET_DIR}/${GATEWAY_SOCKET_NAME}` } : {}),
    ...(want.egress ? { egress: `${SANDBOX_SOCKET_DIR}/${EGRESS_SOCKET_NAME}` } : {}),
    ...(agent === undefined ? {} : { plan: agent }),
  };
}
