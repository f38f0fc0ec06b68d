import { afterEach, describe, expect, it } from 'vitest';
import { ProxyKeyStore, ProxySocketClient, ProxyTokenStore } from '../../src/client/index.js';
import { CAPABILITY, startHarness, type Harness } from '../server/helpers.js';

const MiB = 1024 * 1024;
const FAR = 2_000_000_000;

let h: Harness | null = null;
let client: ProxySocketClient | null = null;
afterEach(async () => {
  await client?.close();
  client = null;
  await h?.close();
  h = null;
});

async function setUp(options: Parameters<typeof startHarness>[0] = {}): Promise<{ tokens: ProxyTokenStore; keys: ProxyKeyStore; harness: Harness }> {
  h = await startHarness(options);
  client = new ProxySocketClient({ socket: h.server.socketPath, capabilityToken: CAPABILITY });
  return { tokens: new ProxyTokenStore(client), keys: new ProxyKeyStore(client), harness: h };
}

describe('the client against a version-2 server', () => {
  it('agrees 2, saves a 1 MiB token and reads it back on one connection', async () => {
    const { tokens, harness } = await setUp();
    expect(await client!.protocolVersion()).toBe(2);
    const idToken = 'k'.repeat(MiB);
    await tokens.saveToken('anthropic', { access_token: 'at-1', expiry: FAR, id_token: idToken }, 'big');
    expect(await tokens.getToken('anthropic', 'big')).toMatchObject({ access_token: 'at-1', id_token: idToken });
    expect(harness.server.connectionCount).toBe(1);
  });

  it('getBucketStats answers the server’s counters through get_bucket_stats; null when nothing is stored', async () => {
    const { tokens, harness } = await setUp();
    await harness.tokens.inner.saveToken('gemini', { access_token: 'g', expiry: FAR });
    await harness.tokens.inner.saveToken('gemini', { access_token: 'w', expiry: FAR }, 'work');
    for (let i = 0; i < 3; i++) await tokens.getToken('gemini', 'work');
    await tokens.getToken('gemini');
    const stats = await tokens.getBucketStats('gemini', 'work');
    expect(stats).toMatchObject({ bucket: 'work', requestCount: 3, percentage: 75 });
    expect(stats?.lastUsed).toEqual(expect.any(Number));
    await expect(tokens.getBucketStats('gemini', 'none')).resolves.toBeNull();
    await harness.server.stop();
    const ops = (await harness.auditLines()).map((l) => l.op);
    expect(ops.filter((o) => o === 'get_bucket_stats')).toHaveLength(2);
  });

  it('hasKey asks has_api_key and moves no key value; outside the policy it is refused', async () => {
    const { keys, harness } = await setUp({ policy: { allowAll: false, keys: ['openai', 'missing'] } });
    await harness.keys.inner.saveKey('openai', 'sk-value-1');
    await expect(keys.hasKey('openai')).resolves.toBe(true);
    await expect(keys.hasKey('missing')).resolves.toBe(false);
    await expect(keys.hasKey('other')).rejects.toMatchObject({ code: 'UNAUTHORIZED' });
    await harness.server.stop();
    const lines = await harness.auditLines();
    const ops = lines.map((l) => l.op);
    // Two served lines; the refusal is counted in the per-second aggregate.
    expect(ops.filter((o) => o === 'has_api_key')).toHaveLength(2);
    expect(lines.filter((l) => l.op === 'refused').reduce((n, l) => n + ((l as { ops?: Record<string, number> }).ops?.has_api_key ?? 0), 0)).toBe(1);
    expect(ops).not.toContain('list_api_keys');
    expect(ops).not.toContain('get_api_key');
  });

  it('falls back to version 1 against a server that speaks only 1: 64 KiB frames, stats from get_token', async () => {
    const { tokens, keys, harness } = await setUp({ maxProtocolVersion: 1 });
    expect(await client!.protocolVersion()).toBe(1);
    await harness.tokens.inner.saveToken('gemini', { access_token: 'g', expiry: FAR });
    await tokens.getToken('gemini');
    await expect(tokens.getBucketStats('gemini', 'default')).resolves.toEqual({ bucket: 'default', requestCount: 0, percentage: 0 });
    await expect(keys.hasKey('nope')).resolves.toBe(false);
    await expect(tokens.saveToken('gemini', { access_token: 'x', expiry: FAR, id_token: 'k'.repeat(70_000) })).rejects.toMatchObject({ code: 'INVALID_REQUEST' });
    // Refused before sending: the connection is still good.
    await expect(tokens.getToken('gemini')).resolves.toMatchObject({ access_token: 'g' });
  });
});
