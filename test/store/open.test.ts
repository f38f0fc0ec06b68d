import { mkdtempSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { resolveDirs } from '../../src/paths.js';
import { openHostStores, storeChoiceFrom } from '../../src/store/open.js';

const homes: string[] = [];
function dirs() {
  const home = mkdtempSync('/tmp/cp-open-');
  homes.push(home);
  return resolveDirs({ CREDPROXY_HOME: home });
}
afterAll(() => {
  for (const h of homes) rmSync(h, { recursive: true, force: true });
});

const bus = process.env.CREDPROXY_TEST_DBUS_ADDRESS;

describe('store selection', () => {
  it('auto picks the keyring when one answers, without a notice', async () => {
    expect(bus, 'the keyring globalSetup must have started a bus').toBeTruthy();
    const notices: string[] = [];
    const s = await openHostStores({ choice: 'auto', dirs: dirs(), service: `cp-open-${randomBytes(4).toString('hex')}`, notice: (l) => notices.push(l) });
    expect(s.backend).toBe('keyring');
    expect(notices).toEqual([]);
    await s.keys.saveKey('k', 'v');
    expect(await s.keys.getKey('k')).toBe('v');
  });

  it('auto falls back to the file store with one notice naming the reason when no keyring answers', async () => {
    const saved = process.env.DBUS_SESSION_BUS_ADDRESS;
    process.env.DBUS_SESSION_BUS_ADDRESS = 'unix:path=/nonexistent/credproxy-bus';
    try {
      const notices: string[] = [];
      const d = dirs();
      const s = await openHostStores({ choice: 'auto', dirs: d, notice: (l) => notices.push(l) });
      expect(s.backend).toBe('file');
      expect(notices).toHaveLength(1);
      expect(notices[0]).toContain('encrypted file store');
      expect(notices[0]).toContain(d.data);
      expect(notices[0]).toMatch(/keyring/i);
      // An explicit keyring choice never falls back.
      await expect(openHostStores({ choice: 'keyring', dirs: dirs() })).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE', message: expect.stringMatching(/--store file/) });
    } finally {
      process.env.DBUS_SESSION_BUS_ADDRESS = saved;
    }
  });

  it('reads the choice from the flag, then CREDPROXY_STORE, default auto', () => {
    expect(storeChoiceFrom(undefined, {})).toBe('auto');
    expect(storeChoiceFrom(undefined, { CREDPROXY_STORE: 'file' })).toBe('file');
    expect(storeChoiceFrom('keyring', { CREDPROXY_STORE: 'file' })).toBe('keyring');
    expect(() => storeChoiceFrom('vault', {})).toThrow(/unknown store backend/);
  });

  it('a wrong passphrase is one clear error and changes nothing', async () => {
    const d = dirs();
    const s = await openHostStores({ choice: 'file', dirs: d, env: { CREDPROXY_PASSPHRASE: 'right' } });
    await s.keys.saveKey('k', 'v');
    await expect(openHostStores({ choice: 'file', dirs: d, env: { CREDPROXY_PASSPHRASE: 'wrong' } })).rejects.toMatchObject({ code: 'BAD_PASSPHRASE' });
    const again = await openHostStores({ choice: 'file', dirs: d, env: { CREDPROXY_PASSPHRASE: 'right' } });
    expect(await again.keys.getKey('k')).toBe('v');
  });
});
