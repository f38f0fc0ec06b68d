import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { EncryptedFileBackend } from '../../src/store/file.js';
import { HostKeyStore, HostTokenStore } from '../../src/store/host-stores.js';
import { KeyringBackend } from '../../src/store/keyring.js';
import { RefreshLocks } from '../../src/store/locks.js';
import type { SecretBackend } from '../../src/store/backend.js';

const dirs: string[] = [];
function tmp(): string {
  const d = mkdtempSync('/tmp/cp-store-');
  dirs.push(d);
  return d;
}
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const keyrings: KeyringBackend[] = [];
afterAll(() => {
  for (const k of keyrings) k.close();
});

const backends: Array<[string, () => SecretBackend]> = [
  ['file', () => new EncryptedFileBackend({ dir: join(tmp(), 'data') })],
  // A real gnome-keyring on the private bus started by test/support/keyring-session.ts.
  [
    'keyring',
    () => {
      const k = new KeyringBackend({ service: `credproxy-test-${randomBytes(6).toString('hex')}` });
      keyrings.push(k);
      return k;
    },
  ],
];

describe.each(backends)('%s backend: TokenStore and KeyStore contract', (_name, make) => {
  const backend = make();
  const tokens = new HostTokenStore(backend, new RefreshLocks({ dir: join(tmp(), 'locks') }));
  const keys = new HostKeyStore(backend);

  it('saves, reads, lists and removes tokens, keeping extra fields', async () => {
    const t = { access_token: 'at', expiry: 123, refresh_token: 'rt', id_token: 'idt', account_id: 'acc' };
    await tokens.saveToken('p1', t);
    await tokens.saveToken('p1', { access_token: 'at2', expiry: 5 }, 'work');
    await tokens.saveToken('p2@x', { access_token: 'at3', expiry: 6 }, 'b.c');
    expect(await tokens.getToken('p1')).toEqual({ ...t, token_type: 'Bearer' });
    expect(await tokens.getToken('p1', 'default')).toEqual({ ...t, token_type: 'Bearer' });
    expect(await tokens.getToken('p1', 'none')).toBeNull();
    expect(await tokens.listProviders()).toEqual(['p1', 'p2@x']);
    expect(await tokens.listBuckets('p1')).toEqual(['default', 'work']);
    await tokens.removeToken('p1', 'work');
    expect(await tokens.getToken('p1', 'work')).toBeNull();
    expect(await tokens.listBuckets('p1')).toEqual(['default']);
    await tokens.removeToken('p1', 'work'); // absent: silent
  });

  it('replaces a token on save (merging is the caller’s job)', async () => {
    await tokens.saveToken('rep', { access_token: 'a', expiry: 1, refresh_token: 'r', scope: 's' });
    await tokens.saveToken('rep', { access_token: 'b', expiry: 2 });
    expect(await tokens.getToken('rep')).toEqual({ access_token: 'b', expiry: 2, token_type: 'Bearer' });
  });

  it('reads a token without token_type as "Bearer" (SPEC §2) and keeps any other type', async () => {
    await tokens.saveToken('tt', { access_token: 'a', expiry: 1 });
    await tokens.saveToken('tt', { access_token: 'a', expiry: 1, token_type: 'DPoP' }, 'dpop');
    expect((await tokens.getToken('tt'))?.token_type).toBe('Bearer');
    expect((await tokens.getToken('tt', 'dpop'))?.token_type).toBe('DPoP');
  });

  it('rejects bad names and bad tokens before storing anything', async () => {
    await expect(tokens.saveToken('a/b', { access_token: 'a', expiry: 1 })).rejects.toMatchObject({ code: 'INVALID_REQUEST' });
    await expect(tokens.getToken('p', 'b/b')).rejects.toMatchObject({ code: 'INVALID_REQUEST' });
    await expect(tokens.saveToken('ok', { expiry: 1 } as never)).rejects.toMatchObject({ code: 'INVALID_REQUEST' });
    await expect(keys.saveKey('a@b', 'v')).rejects.toMatchObject({ code: 'INVALID_REQUEST' });
    expect(await tokens.listProviders()).not.toContain('ok');
  });

  it('counts usage per bucket for getBucketStats', async () => {
    await tokens.saveToken('st', { access_token: 'a', expiry: 1 }, 'one');
    await tokens.saveToken('st', { access_token: 'a', expiry: 1 }, 'two');
    await tokens.getToken('st', 'one');
    await tokens.getToken('st', 'one');
    await tokens.getToken('st', 'one');
    await tokens.getToken('st', 'two');
    const one = await tokens.getBucketStats('st', 'one');
    expect(one).toMatchObject({ bucket: 'one', requestCount: 3, percentage: 75 });
    expect(typeof one?.lastUsed).toBe('number');
    expect(await tokens.getBucketStats('st', 'missing')).toBeNull();
  });

  it('reports a corrupt token entry instead of "not found", and leaves it in place', async () => {
    await backend.set('token:bad:default', '{"access_token": 12');
    await backend.set('token:bad:shape', '{"expiry": 1}');
    await expect(tokens.getToken('bad')).rejects.toMatchObject({ code: 'CORRUPT_ENTRY', message: expect.stringContaining('token:bad:default') });
    await expect(tokens.getToken('bad', 'shape')).rejects.toMatchObject({ code: 'CORRUPT_ENTRY' });
    expect(await tokens.listBuckets('bad')).toEqual(['default', 'shape']);
    expect(await backend.get('token:bad:default')).toBe('{"access_token": 12');
  });

  it('hands out read-only tokens: changing a returned token throws and does not change the store', async () => {
    await tokens.saveToken('copy', { access_token: 'a', expiry: 1, extra: { nested: 'x' } });
    const t = await tokens.getToken('copy');
    expect(() => {
      (t!.extra as { nested: string }).nested = 'changed';
    }).toThrow(TypeError);
    expect(() => {
      t!.access_token = 'changed';
    }).toThrow(TypeError);
    expect(await tokens.getToken('copy')).toEqual({ access_token: 'a', expiry: 1, token_type: 'Bearer', extra: { nested: 'x' } });
  });

  it('stores keys', async () => {
    await keys.saveKey('openai', 'sk-1\n');
    await keys.saveKey('other.key', 'v2');
    expect(await keys.getKey('openai')).toBe('sk-1\n');
    expect(await keys.hasKey('openai')).toBe(true);
    expect(await keys.hasKey('nope')).toBe(false);
    expect(await keys.listKeys()).toEqual(['openai', 'other.key']);
    await keys.deleteKey('openai');
    expect(await keys.getKey('openai')).toBeNull();
    expect(await keys.listKeys()).toEqual(['other.key']);
    // keys and tokens do not see each other
    expect(await tokens.listProviders()).not.toContain('other.key');
  });
});
