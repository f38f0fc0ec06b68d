import { join } from 'node:path';
import type { SandboxKind } from '../sandbox/spec.js';
import { SANDBOX_SOCKET_DIR } from '../sandbox/spec.js';
import type { AgentEnvPlan } from './agents.js';
import { relayCommand } from './relay.js';
import type { GatewayListen } from './server.js';

/** The gateway's Unix socket, next to the proxy socket in the run's socket directory. */
export const GATEWAY_SOCKET_NAME = 'gateway.sock';

export interface GatewayPlan {
  /** Where the host gateway listens (a relative path lands in the socket directory). */
  listen: GatewayListen[];
  /** The command as the sandbox runs it (bwrap: behind the in-sandbox relay). */
  wrap(command: readonly string[]): string[];
}

/**
 * How `run` places the gateway for a sandbox kind: `none` shares the host's
 * loopback; bwrap has no network, so the gateway listens on a socket in the
 * run's socket directory and the relay inside carries connections to it.
 * null: not supported for that kind yet.
 */
export function gatewayPlan(kind: SandboxKind, packageRoot: string, node: string, agent?: AgentEnvPlan): GatewayPlan | null {
  if (kind === 'none') return { listen: [{ host: '127.0.0.1', port: 0 }], wrap: (c) => [...c] };
  if (kind === 'bwrap') {
    const relayScript = join(packageRoot, 'dist', 'gateway', 'relay.js');
    const socketPath = `${SANDBOX_SOCKET_DIR}/${GATEWAY_SOCKET_NAME}`;
    return {
      listen: [{ path: GATEWAY_SOCKET_NAME }],
      wrap: (command) => relayCommand({ node, relayScript, socketPath, command, ...(agent === undefined ? {} : { plan: agent }) }),
    };
  }
  return null;
}
