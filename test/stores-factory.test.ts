import { mkdtempSync, rmSync } from 'node:fs';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ProxyKeyStore } from '../src/client/proxy-key-store.js';
import { ProxyTokenStore } from '../src/client/proxy-token-store.js';

const saved = { ...process.env };
afterEach(() => {
  process.env = { ...saved };
  vi.resetModules();
});

describe('createTokenStore / createKeyStore (SPEC §1 mode detection)', () => {
  it('returns the proxy-backed stores when CREDPROXY_SOCKET is set, one shared instance each', async () => {
    process.env.CREDPROXY_SOCKET = '/nonexistent/credproxy.sock';
    const { createKeyStore, createTokenStore } = await import('../src/stores.js');
    const t = createTokenStore();
    expect(t).toBeInstanceOf(ProxyTokenStore);
    expect(createTokenStore()).toBe(t);
    expect(createKeyStore()).toBeInstanceOf(ProxyKeyStore);
    expect(createKeyStore()).toBe(createKeyStore());
    // Nothing was connected: the client connects lazily, and a missing proxy is a clear error.
    await expect(t.getToken('acme')).rejects.toMatchObject({ code: 'CONNECTION_LOST' });
  });

  it('returns the host stores otherwise, opened on first use', async () => {
    delete process.env.CREDPROXY_SOCKET;
    const home = mkdtempSync('/tmp/cp-factory-');
    process.env.CREDPROXY_HOME = home;
    process.env.CREDPROXY_STORE = 'file';
    try {
      const { createKeyStore, createTokenStore } = await import('../src/stores.js');
      const keys = createKeyStore();
      expect(keys).not.toBeInstanceOf(ProxyKeyStore);
      await keys.saveKey('k', 'v');
      expect(await createKeyStore().getKey('k')).toBe('v');
      await createTokenStore().saveToken('p', { access_token: 'a', expiry: 1 });
      expect(await createTokenStore().listProviders()).toEqual(['p']);
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });
});
