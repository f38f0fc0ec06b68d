import { mkdtempSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { resolveDirs } from '../../src/paths.js';
import { openHostStores, storeChoiceFrom, type HostStores } from '../../src/store/open.js';

const homes: string[] = [];
const opened: HostStores[] = [];
function dirs() {
  const home = mkdtempSync('/tmp/cp-open-');
  homes.push(home);
  return resolveDirs({ CREDPROXY_HOME: home });
}
afterAll(async () => {
  for (const s of opened) await s.close();
  for (const h of homes) rmSync(h, { recursive: true, force: true });
});
async function open(options: Parameters<typeof openHostStores>[0]): Promise<HostStores> {
  const s = await openHostStores(options);
  opened.push(s);
  return s;
}

const service = (): string => `cp-open-${randomBytes(4).toString('hex')}`;
const noBus = { ...process.env, DBUS_SESSION_BUS_ADDRESS: 'unix:path=/nonexistent/credproxy-bus' };

describe('store selection', () => {
  it('auto picks the keyring when one answers, without a notice', async () => {
    expect(process.env.CREDPROXY_TEST_DBUS_ADDRESS, 'the keyring globalSetup must have started a bus').toBeTruthy();
    const notices: string[] = [];
    const s = await open({ choice: 'auto', dirs: dirs(), service: service(), notice: (l) => notices.push(l) });
    expect(s.backend).toBe('keyring');
    expect(s.reason).toMatch(/keyring answered/);
    expect(notices).toEqual([]);
    await s.keys.saveKey('k', 'v');
    expect(await s.keys.getKey('k')).toBe('v');
  });

  it('auto falls back to the file store with one notice naming the backend and the reason', async () => {
    const notices: string[] = [];
    const d = dirs();
    const s = await open({ choice: 'auto', dirs: d, env: noBus, service: service(), notice: (l) => notices.push(l) });
    expect(s.backend).toBe('file');
    expect(notices).toHaveLength(1);
    expect(notices[0]).not.toContain('\n');
    expect(notices[0]).toContain('encrypted file store');
    expect(notices[0]).toContain(d.data);
    expect(notices[0]).toMatch(/no usable OS keyring \(OS keyring search failed: .*connect/);
    await s.tokens.saveToken('p', { access_token: 'a', expiry: 1 });
    expect(await s.tokens.getToken('p')).toMatchObject({ access_token: 'a' });
  });

  it('an explicit keyring choice never falls back', async () => {
    const d = dirs();
    const err = await openHostStores({ choice: 'keyring', dirs: d, env: noBus, service: service() }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'STORE_UNAVAILABLE', message: expect.stringMatching(/connect.*--store file/) });
    const ok = await open({ choice: 'keyring', dirs: d, service: service() });
    expect(ok.backend).toBe('keyring');
  });

  it('reads the choice from the flag, then CREDPROXY_STORE, default auto', () => {
    expect(storeChoiceFrom(undefined, {})).toBe('auto');
    expect(storeChoiceFrom(undefined, { CREDPROXY_STORE: 'file' })).toBe('file');
    expect(storeChoiceFrom('keyring', { CREDPROXY_STORE: 'file' })).toBe('keyring');
    expect(() => storeChoiceFrom('vault', {})).toThrow(/unknown store backend/);
  });

  it('a wrong passphrase is one clear error and changes nothing', async () => {
    const d = dirs();
    const s = await open({ choice: 'file', dirs: d, env: { CREDPROXY_PASSPHRASE: 'right' } });
    await s.keys.saveKey('k', 'v');
    await expect(openHostStores({ choice: 'file', dirs: d, env: { CREDPROXY_PASSPHRASE: 'wrong' } })).rejects.toMatchObject({ code: 'BAD_PASSPHRASE' });
    const again = await open({ choice: 'file', dirs: d, env: { CREDPROXY_PASSPHRASE: 'right' } });
    expect(again.backend).toBe('file');
    expect(await again.keys.getKey('k')).toBe('v');
  });

  it('the token store takes its refresh locks in the state dir', async () => {
    const d = dirs();
    const a = await open({ choice: 'file', dirs: d });
    const b = await open({ choice: 'file', dirs: d });
    expect(await a.tokens.acquireRefreshLock('p', { bucket: 'x' })).toBe(true);
    expect(await b.tokens.acquireRefreshLock('p', { bucket: 'x', waitMs: 100 })).toBe(false);
    await a.close(); // releases what it holds
    expect(await b.tokens.acquireRefreshLock('p', { bucket: 'x', waitMs: 1000 })).toBe(true);
    await b.tokens.releaseRefreshLock('p', 'x');
  });
});
