import { join } from 'node:path';
import type { CredproxyConfig } from '../config.js';
import type { Logger } from '../log.js';
import type { CredentialService } from '../refresh/types.js';
import { AuditLog } from '../server/audit.js';
import type { AuditRotation } from '../server/audit-rotate.js';
import { listenAll } from '../server/http-listener.js';
import type { Policy } from '../server/policy.js';
import type { KeyStore } from '../store/types.js';
import type { GatewayAuditEntry, GatewayRefusedEntry } from './audit.js';
import { buildRoutes, type Route } from './routes.js';
import { GatewayServer, type GatewayListen } from './server.js';

export { GatewayServer } from './server.js';
export { buildRoutes } from './routes.js';

/** The gateway's own audit file in the state dir, next to the socket's audit.jsonl. */
export const GATEWAY_AUDIT_FILE = 'gateway-audit.jsonl';

export interface StartGatewayOptions {
  policy: Policy;
  config: Pick<CredproxyConfig, 'providers' | 'keys'>;
  credentials: CredentialService;
  keys: KeyStore;
  placeholder: string;
  logger: Logger;
  stateDir: string;
  listen: GatewayListen[];
  /** Leave get_token/refresh_token/get_api_key open on the socket for gateway-served credentials. */
  exposeOnSocket: boolean;
  /** The audit file's size cap and retention (config.json `audit`, shared with the other audit files). */
  rotation?: Partial<AuditRotation>;
}

export interface RunningGateway {
  server: GatewayServer;
  /** One entry per `listen`: the http:// base URL or the socket path. */
  addresses: string[];
  routes: ReadonlyMap<string, Route>;
  stop(): Promise<void>;
}

/**
 * Start the gateway for `serve`/`run`: routes from the policy, the audit
 * file, the listeners; and, unless asked otherwise, the socket stops handing
 * out what the gateway serves. Any failure leaves nothing running.
 */
export async function startGateway(o: StartGatewayOptions): Promise<RunningGateway> {
  const storedKeys = o.policy.allowAll ? await o.keys.listKeys() : [];
  const table = buildRoutes({ policy: o.policy, config: o.config, storedKeys });
  for (const why of table.skipped) o.logger.warn({ reason: why }, 'gateway: no route for an allowed credential');
  if (!o.exposeOnSocket) o.policy.reserveForGateway(table.providers, table.keys);
  const audit = new AuditLog<GatewayAuditEntry | GatewayRefusedEntry>({ path: join(o.stateDir, GATEWAY_AUDIT_FILE), logger: o.logger, ...(o.rotation ? { rotation: o.rotation } : {}) });
  await audit.open();
  const server = new GatewayServer({ routes: table.routes, placeholder: o.placeholder, credentials: o.credentials, keys: o.keys, logger: o.logger, audit });
  return { server, routes: table.routes, ...(await listenAll(server, audit, o.listen)) };
}
