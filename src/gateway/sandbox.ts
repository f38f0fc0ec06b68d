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
}

/**
 * How `run` places the gateway and the egress proxy for a sandbox kind:
 * `none` shares the host's loopback; bwrap has no network, so each listens
 * on a socket in the run's socket directory and the relay inside carries
 * connections to it. null: not supported for that kind yet.
 */
export function gatewayPlan(kind: SandboxKind, packageRoot: string, node: string, agent?: AgentEnvPlan, want: { gateway: boolean; egress: boolean; fd3?: boolean } = { gateway: true, egress: false }): GatewayPlan | null {
  if (kind === 'none') {
    const loopback = [{ host: '127.0.0.1', port: 0 }];
    return { listen: want.gateway ? loopback : undefined, egressListen: want.egress ? loopback : undefined, wrap: (c) => [...c] };
  }
  if (kind === 'bwrap') {
    const relayScript = join(packageRoot, 'dist', 'gateway', 'relay.js');
    const config: RelayConfig = {
      ...(want.gateway ? { gateway: `${SANDBOX_SOCKET_DIR}/${GATEWAY_SOCKET_NAME}` } : {}),
      ...(want.egress ? { egress: `${SANDBOX_SOCKET_DIR}/${EGRESS_SOCKET_NAME}` } : {}),
      ...(agent === undefined ? {} : { plan: agent }),
      ...(want.fd3 ? { fd3: true } : {}),
    };
    return {
      listen: want.gateway ? [{ path: GATEWAY_SOCKET_NAME }] : undefined,
      egressListen: want.egress ? [{ path: EGRESS_SOCKET_NAME }] : undefined,
      wrap: (command) => relayCommand({ node, relayScript, config, command }),
    };
  }
  return null;
}
