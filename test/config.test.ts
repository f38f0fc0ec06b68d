import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CONFIG_FILE_NAME, loadConfig, parseConfig } from '../src/config.js';
import { CredproxyError } from '../src/errors.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'credproxy-config-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function writeConfig(value: unknown): Promise<string> {
  const path = join(dir, CONFIG_FILE_NAME);
  await writeFile(path, typeof value === 'string' ? value : JSON.stringify(value));
  return path;
}

/** The CONFIG_INVALID message loadConfig produces for `value`. */
async function failure(value: unknown): Promise<string> {
  await writeConfig(value);
  try {
    await loadConfig(dir);
  } catch (err) {
    expect(err).toBeInstanceOf(CredproxyError);
    expect((err as CredproxyError).code).toBe('CONFIG_INVALID');
    return (err as Error).message;
  }
  throw new Error('config was accepted');
}

const corp = {
  flow: 'device_code',
  token_endpoint: 'https://id.example/token',
  device_authorization_endpoint: 'https://id.example/device',
  client_id: 'cli',
};

describe('loadConfig', () => {
  it('treats a missing file as an empty config', async () => {
    await expect(loadConfig(dir)).resolves.toEqual({ providers: {}, profiles: {}, keys: {} });
  });

  it('accepts the spec example and fills in defaults', async () => {
    await writeConfig({
      providers: {
        corp: { ...corp, issuer: 'https://id.example', client_secret: 's', scopes: ['openid', 'offline_access'], redirect_uri: 'https://id.example/cb' },
        local: { flow: 'browser_redirect', issuer: 'http://127.0.0.1:9999', client_id: 'x', redirect_uri: 'http://localhost:1455/cb' },
      },
      profiles: { work: { allow: ['anthropic', 'corp:ci', 'corp:*'], keys: ['openai'], readOnly: true }, bare: {} },
    });
    const config = await loadConfig(dir);
    expect(config.providers.corp!.scopes).toEqual(['openid', 'offline_access']);
    expect(config.providers.local!.flow).toBe('browser_redirect');
    expect(config.profiles.work).toEqual({ allow: ['anthropic', 'corp:ci', 'corp:*'], keys: ['openai'], readOnly: true, allowWrite: false, login: true });
    expect(config.profiles.bare).toEqual({ allow: [], keys: [], readOnly: false, allowWrite: false, login: true });
  });

  it('names the file and the field path of an invalid URL', async () => {
    const path = join(dir, CONFIG_FILE_NAME);
    const message = await failure({ providers: { corp: { ...corp, token_endpoint: 'not a url' } } });
    expect(message).toBe(`${path}: providers.corp.token_endpoint: Invalid URL`);
  });

  it('refuses plain http except on loopback IPs', async () => {
    expect(await failure({ providers: { corp: { ...corp, token_endpoint: 'http://id.example/token' } } })).toContain(
      'providers.corp.token_endpoint: must be an https URL',
    );
    expect(await failure({ providers: { corp: { ...corp, token_endpoint: 'http://localhost/token' } } })).toContain('providers.corp.token_endpoint');
    await writeConfig({ providers: { corp: { ...corp, token_endpoint: 'http://127.0.0.1:8080/token' } } });
    await expect(loadConfig(dir)).resolves.toBeTruthy();
  });

  it('reports an unknown flow, a missing endpoint and a bad provider name', async () => {
    expect(await failure({ providers: { corp: { ...corp, flow: 'implicit' } } })).toMatch(/providers\.corp\.flow: Invalid option/);
    const { token_endpoint: _t, ...noToken } = corp;
    expect(await failure({ providers: { corp: noToken } })).toContain('providers.corp.token_endpoint: required for every flow unless issuer is set');
    expect(await failure({ providers: { corp: { ...corp, flow: 'pkce_redirect' } } })).toContain('providers.corp.authorization_endpoint: required for flow pkce_redirect');
    expect(await failure({ providers: { 'bad/name': corp } })).toContain('providers.bad/name: invalid name');
  });

  it('reports unknown keys (typos) instead of ignoring them', async () => {
    expect(await failure({ providers: { corp: { ...corp, client_secrt: 'x' } } })).toContain('providers.corp: Unrecognized key: "client_secrt"');
    expect(await failure({ provider: {} })).toContain('(top level): Unrecognized key: "provider"');
  });

  it('checks cross-field rules', async () => {
    expect(
      await failure({ providers: { corp: { ...corp, flow: 'browser_redirect', authorization_endpoint: 'https://id.example/a', redirect_uri: 'https://id.example/cb' } } }),
    ).toContain('providers.corp.redirect_uri: must be an http URL on 127.0.0.1, [::1] or localhost for flow browser_redirect');
    expect(await failure({ providers: { corp: { ...corp, token_endpoint_auth_method: 'client_secret_basic' } } })).toContain(
      'providers.corp.client_secret: required by token_endpoint_auth_method client_secret_basic',
    );
    expect(await failure({ providers: { corp: { ...corp, authorization_params: { state: 'x' } } } })).toContain(
      'providers.corp.authorization_params.state: is set by credproxy',
    );
    expect(await failure({ providers: { corp: { ...corp, flow: 'pkce_redirect', authorization_endpoint: 'https://id.example/a', use_pkce: false } } })).toContain(
      'providers.corp.use_pkce: PKCE is always used',
    );
  });

  it('validates profiles', async () => {
    expect(await failure({ profiles: { work: { allow: ['corp:a:b'] } } })).toContain('profiles.work.allow.0: must be PROVIDER, PROVIDER:BUCKET or PROVIDER:*');
    expect(await failure({ profiles: { work: { keys: ['bad@key'] } } })).toContain('profiles.work.keys.0: invalid key name');
    expect(await failure({ profiles: { work: { readOnly: 'yes' } } })).toContain('profiles.work.readOnly: Invalid input: expected boolean');
  });

  it('never echoes values from the file, even for broken JSON', async () => {
    const canary = 'sekret-canary-4711';
    const bad = `{"providers": {"corp": {"client_secret": "${canary}", }}}`;
    const message = await failure(bad);
    expect(message).toMatch(/not valid JSON/);
    expect(message).not.toContain(canary);
    const invalid = await failure({ providers: { corp: { ...corp, client_secret: canary, token_endpoint: canary } } });
    expect(invalid).toContain('providers.corp.token_endpoint');
    expect(invalid).not.toContain(canary);
  });

  it('summarizes many problems', async () => {
    const providers = Object.fromEntries(Array.from({ length: 7 }, (_, i) => [`p${i}`, { ...corp, flow: 'nope' }]));
    expect(await failure({ providers })).toMatch(/\(and 2 more\)$/);
  });

  it('reports an unreadable file as CONFIG_INVALID', async () => {
    await mkdir(join(dir, CONFIG_FILE_NAME));
    await expect(loadConfig(dir)).rejects.toMatchObject({ code: 'CONFIG_INVALID', message: expect.stringContaining('cannot be read (EISDIR)') });
  });

  it('parseConfig uses the given source path', () => {
    expect(() => parseConfig('[]', '/x/config.json')).toThrow('/x/config.json: (top level): Invalid input: expected object');
  });
});
