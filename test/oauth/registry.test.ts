import { describe, expect, it } from 'vitest';
import { ProviderConfigSchema, type ProviderConfig } from '../../src/config.js';
import { isCredproxyError } from '../../src/errors.js';
import { BUILTIN_PRESETS, ProviderRegistry } from '../../src/oauth/index.js';
import { endpointUrlProblem, isLoopbackIp } from '../../src/oauth/url-policy.js';

describe('built-in presets', () => {
  it('are the five spec providers with their flows', () => {
    const flows = Object.fromEntries(Object.entries(BUILTIN_PRESETS).map(([name, p]) => [name, p.flow]));
    expect(flows).toEqual({ anthropic: 'pkce_redirect', gemini: 'pkce_redirect', qwen: 'device_code', codex: 'browser_redirect', github: 'device_code' });
    expect(BUILTIN_PRESETS.qwen!.use_pkce).toBe(true);
  });

  it('each passes the config schema and uses only https endpoints', () => {
    for (const [name, preset] of Object.entries(BUILTIN_PRESETS)) {
      const parsed = ProviderConfigSchema.safeParse(preset);
      expect(parsed.success, `${name}: ${JSON.stringify(parsed.error?.issues)}`).toBe(true);
      for (const field of ['issuer', 'authorization_endpoint', 'token_endpoint', 'device_authorization_endpoint', 'revocation_endpoint'] as const) {
        const url = preset[field];
        if (url !== undefined) expect(new URL(url).protocol, `${name}.${field}`).toBe('https:');
      }
    }
  });

  it('record the provider quirks', () => {
    expect(BUILTIN_PRESETS.anthropic!.token_request_format).toBe('json');
    expect(BUILTIN_PRESETS.github!.errors_with_status_200).toBe(true);
    expect(BUILTIN_PRESETS.github!.revoked_error_codes).toContain('bad_refresh_token');
    expect(BUILTIN_PRESETS.gemini!.authorization_params).toMatchObject({ access_type: 'offline' });
    expect(new URL(BUILTIN_PRESETS.codex!.redirect_uri!).port).toBe('1455');
  });
});

describe('ProviderRegistry', () => {
  const corp: ProviderConfig = { flow: 'device_code', issuer: 'https://id.example', client_id: 'corp-cli' };

  it('serves presets and config providers, config winning by name', () => {
    const override: ProviderConfig = { flow: 'pkce_redirect', issuer: 'https://claude.example', client_id: 'my-own-client' };
    const registry = new ProviderRegistry({ config: { providers: { corp, anthropic: override } } });
    expect(registry.names()).toEqual(['anthropic', 'codex', 'corp', 'gemini', 'github', 'qwen']);
    expect(registry.get('anthropic').settings.client_id).toBe('my-own-client');
    expect(registry.get('anthropic').settings.token_request_format).toBeUndefined();
    expect(registry.source('anthropic')).toBe('config');
    expect(registry.source('gemini')).toBe('preset');
    expect(registry.get('corp').flow).toBe('device_code');
    expect(registry.get('corp')).toBe(registry.get('corp'));
  });

  it('answers PROVIDER_NOT_FOUND for an unknown name', () => {
    const registry = new ProviderRegistry();
    expect(registry.has('nope')).toBe(false);
    let caught: unknown;
    try {
      registry.get('nope');
    } catch (err) {
      caught = err;
    }
    expect(isCredproxyError(caught, 'PROVIDER_NOT_FOUND')).toBe(true);
    expect((caught as Error).message).toContain('"nope"');
    // A name that is not even valid is not echoed.
    expect(() => registry.get('<script>')).toThrow(/no OAuth provider with that name/);
  });
});

describe('URL policy', () => {
  it('allows http only for loopback IP literals', () => {
    expect(isLoopbackIp('127.0.0.1')).toBe(true);
    expect(isLoopbackIp('127.255.1.2')).toBe(true);
    expect(isLoopbackIp('[::1]')).toBe(true);
    expect(isLoopbackIp('localhost')).toBe(false);
    expect(isLoopbackIp('127.0.0.1.evil.example')).toBe(false);
    expect(isLoopbackIp('127.0.0.300')).toBe(false);
    expect(endpointUrlProblem('http://[::1]:8080/token')).toBeNull();
    expect(endpointUrlProblem('https://user:pw@id.example/token')).toBe('must not contain credentials');
    expect(endpointUrlProblem('ftp://id.example/')).toMatch(/https/);
  });
});
