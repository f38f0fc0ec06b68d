import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config.js';
import { GATEWAY_AUDIT_FILE, startGateway } from '../../src/gateway/index.js';
import { createLogger } from '../../src/log.js';
import { ProviderRegistry } from '../../src/oauth/index.js';
import { MemoryCooldownStore } from '../../src/refresh/cooldown.js';
import { RefreshCoordinator } from '../../src/refresh/coordinator.js';
import { Policy } from '../../src/server/policy.js';
import { MemoryKeyStore, MemoryTokenStore } from '../support/memory-stores.js';

const PLACEHOLDER = 'f'.repeat(64);
const KEY = `sk-start-canary-${process.pid}`;

let upstream: http.Server;
let dir: string;
const seen: Array<string | undefined> = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'cpg-start-'));
  // Plain http on a loopback literal: what endpointUrlProblem allows, so no test CA is needed.
  upstream = http.createServer((req, res) => {
    seen.push(req.headers.authorization);
    res.end('pong');
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
});

afterAll(async () => {
  await new Promise((r) => upstream.close(r));
  rmSync(dir, { recursive: true, force: true });
});

function ask(socketPath: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, path: '/keys/openai/v1/models', headers: { authorization: `Bearer ${PLACEHOLDER}` }, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('startGateway', () => {
  it('listens on a Unix socket, writes gateway-audit.jsonl (0600) and rotates it at the cap config.json sets for every audit file', async () => {
    const config = parseConfig(JSON.stringify({ keys: { openai: { route: { api_base: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}/v1` } } } }), 'config.json');
    const keys = new MemoryKeyStore();
    await keys.saveKey('openai', KEY);
    const logger = createLogger({ level: 'silent' });
    const credentials = new RefreshCoordinator({ store: new MemoryTokenStore(), providers: new ProviderRegistry({ config }), cooldown: new MemoryCooldownStore(), logger });
    const path = join(dir, 'gateway.sock');
    const gateway = await startGateway({
      policy: Policy.from({ allow: [], keys: ['openai'], allowAll: false, readOnly: false }),
      config,
      credentials,
      keys,
      placeholder: PLACEHOLDER,
      logger,
      stateDir: dir,
      listen: [{ path }],
      exposeOnSocket: false,
      rotation: { maxFileBytes: 4096, keepFiles: 2 },
    });
    expect(gateway.addresses).toEqual([path]);
    for (let i = 0; i < 60; i++) expect(await ask(path)).toBe(200);
    await gateway.stop();
    await credentials.close();
    expect(seen).toHaveLength(60);
    expect(seen.every((h) => h === `Bearer ${KEY}`)).toBe(true);
    const file = join(dir, GATEWAY_AUDIT_FILE);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(existsSync(`${file}.1`)).toBe(true);
    expect(statSync(file).size).toBeLessThanOrEqual(4096);
    const lines = [file, `${file}.1`, `${file}.2`].filter(existsSync).flatMap((f) => readFileSync(f, 'utf8').trim().split('\n'));
    expect(lines.every((l) => (JSON.parse(l) as { kind: string }).kind === 'gateway')).toBe(true);
    expect(lines.join('\n')).not.toContain(KEY);
  });
});
