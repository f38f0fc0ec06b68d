import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ProxySocketClient } from '../../src/client/socket-client.js';
import { makeHostEnv, runCli, startServe } from '../support/cli.js';

describe('profiles from config.json', () => {
  it('serve --profile applies the profile’s policy; an unknown profile is a usage error', async () => {
    const host = makeHostEnv();
    try {
      mkdirSync(join(host.home, 'config'), { recursive: true });
      writeFileSync(
        join(host.home, 'config', 'config.json'),
        JSON.stringify({ profiles: { work: { allow: ['acme:ci'], keys: ['openai'], readOnly: true } } }),
      );
      expect((await runCli(['key', 'set', 'openai'], { env: host.env, input: 'sk-1' })).code).toBe(0);
      expect((await runCli(['key', 'set', 'other'], { env: host.env, input: 'sk-2' })).code).toBe(0);
      const unknown = await runCli(['serve', '--profile', 'home'], { env: host.env });
      expect(unknown.code).toBe(2);
      expect(unknown.stderr).toMatch(/no profile 'home'.*known: work/);

      const serve = await startServe(['--profile', 'work', '--allow-key', 'other'], host.env);
      const c = new ProxySocketClient({ socket: serve.socket, capabilityToken: serve.token });
      try {
        expect((await c.request('get_api_key', { name: 'openai' })).key).toBe('sk-1');
        expect((await c.request('get_api_key', { name: 'other' })).key).toBe('sk-2'); // flags add to the profile
        await expect(c.request('get_token', { provider: 'acme' })).rejects.toMatchObject({ code: 'UNAUTHORIZED' });
        expect(await c.request('get_token', { provider: 'acme', bucket: 'ci' }).catch((e: { code: string }) => e.code)).toBe('NOT_FOUND');
        // readOnly from the profile
        await expect(c.request('save_token', { provider: 'acme', bucket: 'ci', token: { access_token: 'a', expiry: 1 } })).rejects.toMatchObject({ code: 'UNAUTHORIZED' });
      } finally {
        await c.close();
        await serve.stop();
      }
    } finally {
      host.cleanup();
    }
  });
});
