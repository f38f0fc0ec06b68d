import { join } from 'node:path';
import type { Logger } from '../log.js';
import { AuditLog } from '../server/audit.js';
import { listenAll } from '../server/http-listener.js';
import type { AuditRotation } from '../server/audit-rotate.js';
import { EGRESS_AUDIT_FILE, type EgressAuditEntry } from './audit.js';
import type { HostRule } from './hosts.js';
import { EgressProxy, type EgressListen, type EgressProxyOptions } from './proxy.js';

export { EgressProxy } from './proxy.js';
export { EGRESS_AUDIT_FILE } from './audit.js';
export { proxyEnv } from './env.js';

export interface StartEgressOptions {
  rules: readonly HostRule[];
  logger: Logger;
  stateDir: string;
  listen: EgressListen[];
  /** The audit file's size cap and retention (config.json `audit`, shared with the other audit files). */
  rotation?: Partial<AuditRotation>;
  /** Tests and the bench: timeouts, resolver. */
  tuning?: Omit<EgressProxyOptions, 'rules' | 'logger' | 'audit'>;
}

export interface RunningEgress {
  proxy: EgressProxy;
  /** One entry per `listen`: the http:// URL or the socket path. */
  addresses: string[];
  stop(): Promise<void>;
}

/** Start the egress proxy for `run`: audit file, listeners. Any failure leaves nothing running. */
export async function startEgress(o: StartEgressOptions): Promise<RunningEgress> {
  const audit = new AuditLog<EgressAuditEntry>({ path: join(o.stateDir, EGRESS_AUDIT_FILE), logger: o.logger, ...(o.rotation ? { rotation: o.rotation } : {}) });
  await audit.open();
  const proxy = new EgressProxy({ ...o.tuning, rules: o.rules, logger: o.logger, audit });
  return { proxy, ...(await listenAll(proxy, audit, o.listen)) };
}
