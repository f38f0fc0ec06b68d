import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_KEYRING_PROBE_TIMEOUT_MS, KeyringBackend, probeKeyring } from '../../src/store/keyring.js';
import { startKeyringSession, type KeyringSession } from '../support/keyring-session.js';

const svc = (): string => `credproxy-kr-${randomBytes(6).toString('hex')}`;
const opened: KeyringBackend[] = [];
function backend(options: ConstructorParameters<typeof KeyringBackend>[0] = {}): KeyringBackend {
  const b = new KeyringBackend({ service: svc(), ...options });
  opened.push(b);
  return b;
}

function gone(pid: number | undefined): boolean {
  if (pid === undefined) return true;
  try {
    process.kill(pid, 0);
    return false;
  } catch {
    return true;
  }
}

// A "bus" that accepts connections and never answers: what a hung dbus-daemon looks like.
let silentDir: string;
let silent: Server;
const silentSockets: Socket[] = [];
beforeAll(async () => {
  silentDir = mkdtempSync('/tmp/cp-silentbus-');
  silent = createServer((s) => silentSockets.push(s));
  await new Promise<void>((r) => silent.listen(join(silentDir, 'bus'), r));
});
afterAll(async () => {
  for (const b of opened) b.close();
  for (const s of silentSockets) s.destroy();
  await new Promise((r) => silent.close(r));
  rmSync(silentDir, { recursive: true, force: true });
});
const hungBusEnv = (): NodeJS.ProcessEnv => ({ ...process.env, DBUS_SESSION_BUS_ADDRESS: `unix:path=${join(silentDir, 'bus')}` });

describe('keyring backend against a real gnome-keyring', () => {
  it('stores one Secret Service item per entry under the service name', async () => {
    const b = backend();
    await b.set('token:p:default', '{"access_token":"a","expiry":1}');
    await b.set('key:openai', 'sk-abc');
    const lookup = spawnSync('secret-tool', ['lookup', 'service', b.service, 'username', 'key:openai'], { encoding: 'utf8' });
    expect(lookup.status, lookup.stderr).toBe(0);
    expect(lookup.stdout).toBe('sk-abc');
    expect((await b.list()).sort()).toEqual(['key:openai', 'token:p:default']);
    expect(await b.delete('key:openai')).toBe(true);
    expect(await b.delete('key:openai')).toBe(false);
    expect(await b.get('key:openai')).toBeNull();
  });

  it('probes a usable keyring as ok and leaves no probe entry behind', async () => {
    const b = backend();
    expect(await b.probe()).toEqual({ ok: true });
    expect(await b.list()).toEqual([]);
    const search = spawnSync('secret-tool', ['search', '--all', 'service', b.service], { encoding: 'utf8' });
    expect(search.stdout + search.stderr).not.toContain('probe:');
  });

  it('an idle helper does not keep the process alive', () => {
    const service = svc();
    const script = `
      const { KeyringBackend } = await import(${JSON.stringify(new URL('../../src/store/keyring.ts', import.meta.url).href)});
      const b = new KeyringBackend({ service: ${JSON.stringify(service)} });
      await b.set('key:a', 'v1');
      process.stdout.write(String(await b.get('key:a')));`;
    const started = Date.now();
    const out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 15_000 });
    expect(out).toBe('v1');
    expect(Date.now() - started).toBeLessThan(10_000);
    spawnSync('secret-tool', ['clear', 'service', service, 'username', 'key:a']);
  });
});

describe('keyring read cache (stamp file)', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync('/tmp/cp-krstamp-');
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const storeValue = (service: string, entry: string, value: string): void => {
    const r = spawnSync('secret-tool', ['store', '--label', 'x', 'service', service, 'username', entry], { input: value, encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
  };

  it('serves repeated reads from memory and sees a write by another credproxy process through the stamp', async () => {
    const stampPath = join(dir, `a-${randomBytes(4).toString('hex')}.stamp`);
    const reader = backend({ stampPath, cacheMaxAgeMs: 60_000 });
    const writer = new KeyringBackend({ service: reader.service, stampPath });
    opened.push(writer);
    await writer.set('key:k', 'v1');
    expect(await reader.get('key:k')).toBe('v1');
    // Changed behind credproxy's back: the cache still answers (that is the point of it)...
    storeValue(reader.service, 'key:k', 'outside');
    expect(await reader.get('key:k')).toBe('v1');
    // ...and a credproxy write replaces the stamp, so the next read goes to the keyring.
    await writer.set('key:k', 'v2');
    expect(await reader.get('key:k')).toBe('v2');
    await writer.delete('key:k');
    expect(await reader.get('key:k')).toBeNull();
  });

  it('trusts a cached value no longer than cacheMaxAgeMs, so outside edits show up', async () => {
    const stampPath = join(dir, `b-${randomBytes(4).toString('hex')}.stamp`);
    const b = backend({ stampPath, cacheMaxAgeMs: 200 });
    await b.set('key:k', 'v1');
    expect(await b.get('key:k')).toBe('v1');
    storeValue(b.service, 'key:k', 'outside');
    await new Promise((r) => setTimeout(r, 250));
    expect(await b.get('key:k')).toBe('outside');
  });

  it('re-reads an entry in use in the background past half its age, so a steady reader never waits', async () => {
    const stampPath = join(dir, `c-${randomBytes(4).toString('hex')}.stamp`);
    const b = backend({ stampPath, cacheMaxAgeMs: 600 });
    await b.set('key:k', 'v1');
    expect(await b.get('key:k')).toBe('v1');
    storeValue(b.service, 'key:k', 'outside');
    await new Promise((r) => setTimeout(r, 350));
    // Still the cached value, answered at once; the background read starts now.
    expect(b.peek('key:k')).toBe('v1');
    for (let i = 0; i < 50 && b.peek('key:k') !== 'outside'; i++) await new Promise((r) => setTimeout(r, 20));
    expect(b.peek('key:k')).toBe('outside');
  });

  it('peek answers only from a cache it can vouch for', async () => {
    const stampPath = join(dir, `d-${randomBytes(4).toString('hex')}.stamp`);
    const b = backend({ stampPath, cacheMaxAgeMs: 60_000 });
    expect(b.peek('key:k')).toBeUndefined();
    await b.set('key:k', 'v1');
    expect(b.peek('key:k')).toBeUndefined();
    expect(await b.get('key:k')).toBe('v1');
    expect(b.peek('key:k')).toBe('v1');
    const other = new KeyringBackend({ service: b.service, stampPath });
    opened.push(other);
    await other.set('key:k', 'v2');
    // The other writer's new stamp is reported by the kernel a moment later.
    for (let i = 0; i < 50 && b.peek('key:k') !== undefined; i++) await new Promise((r) => setTimeout(r, 10));
    expect(b.peek('key:k')).toBeUndefined();
    expect(await b.get('key:k')).toBe('v2');
  });

  it('without a stamp path every read asks the keyring', async () => {
    const b = backend();
    await b.set('key:k', 'v1');
    expect(await b.get('key:k')).toBe('v1');
    storeValue(b.service, 'key:k', 'outside');
    expect(await b.get('key:k')).toBe('outside');
  });
});

describe('keyring failures', () => {
  it('no session bus: STORE_UNAVAILABLE saying how to fix it, never echoing the value', async () => {
    const b = backend({ env: { ...process.env, DBUS_SESSION_BUS_ADDRESS: 'unix:path=/nonexistent/credproxy-bus' } });
    const err = await b.set('key:x', 'SECRET-VALUE-123').catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'STORE_UNAVAILABLE' });
    expect((err as Error).message).toMatch(/OS keyring write failed: .*--store file/);
    expect((err as Error).message).not.toContain('SECRET-VALUE-123');
    expect(await b.probe()).toMatchObject({ ok: false, reason: expect.stringMatching(/connect/i) });
  });

  it('a hung bus is cut off at the call timeout while the event loop keeps running', async () => {
    const b = backend({ env: hungBusEnv(), callTimeoutMs: 600 });
    let ticks = 0;
    const ticker = setInterval(() => ticks++, 20);
    const started = Date.now();
    const err = await b.get('key:x').catch((e: unknown) => e);
    const took = Date.now() - started;
    clearInterval(ticker);
    expect(err).toMatchObject({ code: 'STORE_UNAVAILABLE', message: expect.stringMatching(/did not answer within 0.6 s/) });
    expect(took).toBeGreaterThanOrEqual(590);
    expect(took).toBeLessThan(3000);
    // The library blocks its thread inside D-Bus connect; only the helper was stuck, not us.
    expect(ticks).toBeGreaterThan(took / 20 / 3);
    // The stuck helper was killed; the next call starts a fresh one (and is bounded too).
    const first = b.helperPid;
    expect(first).toBeUndefined();
    const next = b.list().catch((e: unknown) => e);
    const second = b.helperPid;
    expect(second).toBeDefined();
    expect(await next).toMatchObject({ code: 'STORE_UNAVAILABLE' });
    await new Promise((r) => setTimeout(r, 100));
    expect(gone(second)).toBe(true);
  });

  it('probeKeyring answers within ~2 s (the default) when the bus hangs', async () => {
    expect(DEFAULT_KEYRING_PROBE_TIMEOUT_MS).toBe(2000);
    const started = Date.now();
    const probe = await probeKeyring(svc(), { env: hungBusEnv() });
    const took = Date.now() - started;
    expect(probe).toMatchObject({ ok: false, reason: expect.stringMatching(/did not answer/) });
    expect(took).toBeGreaterThanOrEqual(1900);
    expect(took).toBeLessThan(3500);
  });

  describe('a locked collection', () => {
    let session: KeyringSession;
    beforeAll(async () => {
      session = await startKeyringSession();
    });
    afterAll(async () => {
      await session?.stop();
    });

    it('is not usable: the probe says so and reads of stored items fail', async () => {
      const service = svc();
      const b = backend({ service, env: session.env });
      const empty = backend({ env: session.env });
      await b.set('key:stored', 'v');
      const lock = spawnSync(
        'dbus-send',
        ['--session', '--print-reply', '--dest=org.freedesktop.secrets', '/org/freedesktop/secrets', 'org.freedesktop.Secret.Service.Lock', 'array:objpath:/org/freedesktop/secrets/collection/login'],
        { env: session.env, encoding: 'utf8' },
      );
      expect(lock.status, lock.stderr).toBe(0);
      expect(await b.probe()).toMatchObject({ ok: false, reason: expect.stringMatching(/locked/i) });
      // Nothing of ours stored: a missing entry reads as null even when locked, so the probe must write.
      expect(await empty.probe()).toMatchObject({ ok: false });
      await expect(b.get('key:stored')).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE' });
    });
  });
});
