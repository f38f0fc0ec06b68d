import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { Writable } from 'node:stream';
import { join } from 'node:path';
import { pino, type Logger } from 'pino';
import type { CredentialService } from '../../src/refresh/types.js';
import { ProxyServer, type ProxyServerOptions } from '../../src/server/server.js';
import { Policy, type PolicyInput } from '../../src/server/policy.js';
import type { BucketStats, KeyStore, OAuthToken, RefreshLockOptions, TokenStore } from '../../src/store/types.js';
import { MemoryKeyStore, MemoryTokenStore } from '../support/memory-stores.js';
import { RawClient } from '../support/raw-client.js';
import { SimpleCredentials } from '../support/simple-credentials.js';

/** Short private temp dir: socket paths must stay under 107 bytes. */
export function tempDir(): string {
  return mkdtempSync('/tmp/cps-');
}

export interface LogCapture {
  logger: Logger;
  lines: string[];
  text(): string;
}

export function captureLogs(level = 'debug'): LogCapture {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(chunk.toString('utf8'));
      cb();
    },
  });
  return { logger: pino({ level }, sink), lines, text: () => lines.join('') };
}

/** Releasable barrier: calls for a held name wait until released. */
export class Gate {
  private readonly held = new Map<string, { promise: Promise<void>; release: () => void; entered: number }>();

  hold(name: string): void {
    let release!: () => void;
    const promise = new Promise<void>((r) => (release = r));
    this.held.set(name, { promise, release, entered: 0 });
  }

  release(name: string): void {
    const h = this.held.get(name);
    this.held.delete(name);
    h?.release();
  }

  releaseAll(): void {
    for (const name of [...this.held.keys()]) this.release(name);
  }

  entered(name: string): number {
    return this.held.get(name)?.entered ?? 0;
  }

  async pass(name: string): Promise<void> {
    const h = this.held.get(name);
    if (h === undefined) return;
    h.entered++;
    await h.promise;
  }
}

/** TokenStore that counts every call and can hold calls for a provider open. */
export class SpyTokenStore implements TokenStore {
  calls = 0;
  readonly inner = new MemoryTokenStore();
  readonly gate = new Gate();

  private async enter(provider: string): Promise<void> {
    this.calls++;
    await this.gate.pass(provider);
  }
  async saveToken(provider: string, token: OAuthToken, bucket?: string): Promise<void> {
    await this.enter(provider);
    return this.inner.saveToken(provider, token, bucket);
  }
  async getToken(provider: string, bucket?: string): Promise<OAuthToken | null> {
    await this.enter(provider);
    return this.inner.getToken(provider, bucket);
  }
  async removeToken(provider: string, bucket?: string): Promise<void> {
    await this.enter(provider);
    return this.inner.removeToken(provider, bucket);
  }
  async listProviders(): Promise<string[]> {
    await this.enter('*list*');
    return this.inner.listProviders();
  }
  async listBuckets(provider: string): Promise<string[]> {
    await this.enter(provider);
    return this.inner.listBuckets(provider);
  }
  async getBucketStats(provider: string, bucket: string): Promise<BucketStats | null> {
    await this.enter(provider);
    return this.inner.getBucketStats(provider, bucket);
  }
  async acquireRefreshLock(provider: string, options?: RefreshLockOptions): Promise<boolean> {
    await this.enter(provider);
    return this.inner.acquireRefreshLock(provider, options);
  }
  async releaseRefreshLock(provider: string, bucket?: string): Promise<void> {
    await this.enter(provider);
    return this.inner.releaseRefreshLock(provider, bucket);
  }
}

/** KeyStore that counts every call and can hold calls for a key name open. */
export class SpyKeyStore implements KeyStore {
  calls = 0;
  readonly inner = new MemoryKeyStore();
  readonly gate = new Gate();

  private async enter(name: string): Promise<void> {
    this.calls++;
    await this.gate.pass(name);
  }
  async getKey(name: string): Promise<string | null> {
    await this.enter(name);
    return this.inner.getKey(name);
  }
  async listKeys(): Promise<string[]> {
    await this.enter('*list*');
    return this.inner.listKeys();
  }
  async hasKey(name: string): Promise<boolean> {
    await this.enter(name);
    return this.inner.hasKey(name);
  }
  async saveKey(name: string, value: string): Promise<void> {
    await this.enter(name);
    return this.inner.saveKey(name, value);
  }
  async deleteKey(name: string): Promise<void> {
    await this.enter(name);
    return this.inner.deleteKey(name);
  }
}

export interface Harness {
  server: ProxyServer;
  tokens: SpyTokenStore;
  keys: SpyKeyStore;
  dir: string;
  auditPath: string;
  logs: LogCapture;
  /** Connect and complete the handshake. */
  client(): Promise<RawClient>;
  /** Connect without a handshake. */
  raw(): Promise<RawClient>;
  auditLines(): Promise<Array<Record<string, unknown>>>;
  close(): Promise<void>;
}

export const CAPABILITY = 'c0ffee'.repeat(10) + 'abcd';

export interface HarnessOptions extends Partial<Omit<ProxyServerOptions, 'policy' | 'tokens' | 'keys' | 'credentials'>> {
  policy?: Partial<PolicyInput>;
  /** Built over the harness's token store; SimpleCredentials by default. */
  credentials?: (tokens: SpyTokenStore) => CredentialService;
}

export async function startHarness(options: HarnessOptions = {}): Promise<Harness> {
  const dir = tempDir();
  const tokens = new SpyTokenStore();
  const keys = new SpyKeyStore();
  const logs = captureLogs();
  const auditPath = join(dir, 'state', 'audit.jsonl');
  const { policy, credentials, ...rest } = options;
  const server = new ProxyServer({
    tokens,
    keys,
    credentials: credentials ? credentials(tokens) : new SimpleCredentials(tokens),
    policy: Policy.from({ allow: [], keys: [], allowAll: true, readOnly: false, allowWrite: true, ...policy }),
    capabilityToken: CAPABILITY,
    socketDir: join(dir, 'run'),
    auditPath,
    logger: logs.logger,
    ...rest,
  });
  await server.start();
  const clients: RawClient[] = [];
  const raw = async (): Promise<RawClient> => {
    const c = await RawClient.connect(server.socketPath);
    clients.push(c);
    return c;
  };
  return {
    server,
    tokens,
    keys,
    dir,
    auditPath,
    logs,
    raw,
    async client() {
      const c = await raw();
      const hs = await c.handshake({ minVersion: 1, maxVersion: 1, capabilityToken: CAPABILITY });
      if (hs.ok !== true) throw new Error(`handshake failed: ${JSON.stringify(hs)}`);
      return c;
    },
    async auditLines() {
      let text = '';
      try {
        text = readFileSync(auditPath, 'utf8');
      } catch {
        return [];
      }
      return text
        .split('\n')
        .filter((l) => l.length > 0)
        .map((l) => JSON.parse(l) as Record<string, unknown>);
    },
    async close() {
      tokens.gate.releaseAll();
      keys.gate.releaseAll();
      for (const c of clients) c.close();
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Poll a condition outside any client (store gates, files). */
export async function until(pred: () => boolean, timeoutMs = 3000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
