import { readdirSync, readFileSync, statSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeHostEnv, runCli, type HostEnv } from '../support/cli.js';

const RT = `host-cli-rt-${process.pid}-c0ffee`;
const SECRET = `sk-host-cli-${process.pid}-beef`;

describe('host CLI (file store)', () => {
  let host: HostEnv;
  beforeAll(() => {
    host = makeHostEnv();
  });
  afterAll(() => host.cleanup());

  const cli = (args: string[], input?: string) => runCli(args, { env: host.env, ...(input === undefined ? {} : { input }) });

  it('stores a key from stdin with one trailing newline stripped, and never echoes it', async () => {
    const set = await cli(['key', 'set', 'openai'], `${SECRET}\n\n`);
    expect(set.code, set.stderr).toBe(0);
    expect(set.stdout).toBe('');
    expect(set.stderr).not.toContain(SECRET);
    const get = await cli(['key', 'get', 'openai']);
    expect(get.stdout).toBe(`${SECRET}\n\n`); // the value kept its own newline; `get` adds one
    expect((await cli(['key', 'list'])).stdout).toBe('openai\n');
    expect(JSON.parse((await cli(['key', 'list', '--json'])).stdout)).toEqual(['openai']);
    const rm = await cli(['key', 'rm', 'openai']);
    expect(rm.code).toBe(0);
    const gone = await cli(['key', 'get', 'openai']);
    expect(gone.code).toBe(1);
    expect(gone.stderr).toMatch(/no key named 'openai'/);
    expect((await cli(['key', 'rm', 'openai'])).code).toBe(1);
  });

  it('keeps the data dir private and the entries encrypted', async () => {
    await cli(['key', 'set', 'k1'], SECRET);
    const dataDir = join(host.home, 'data');
    expect(statSync(dataDir).mode & 0o777).toBe(0o700);
    for (const f of readdirSync(dataDir, { recursive: true }) as string[]) {
      const p = join(dataDir, f);
      if (statSync(p).isFile()) {
        expect(statSync(p).mode & 0o777).toBe(0o600);
        expect(readFileSync(p).toString('latin1')).not.toContain(SECRET);
      }
    }
  });

  it('imports a token from stdin and reports it in status without secrets', async () => {
    const expiry = Math.floor(Date.now() / 1000) + 7200;
    const imp = await cli(['token', 'import', 'acme', '--bucket', 'work'], JSON.stringify({ access_token: 'at-1', expiry, refresh_token: RT, scope: 's' }));
    expect(imp.code, imp.stderr).toBe(0);
    expect(imp.stderr).not.toContain(RT);
    const get = await cli(['token', 'get', 'acme', '--bucket', 'work']);
    expect(get.stdout).toBe('at-1\n');
    const json = JSON.parse((await cli(['token', 'get', 'acme', '--bucket', 'work', '--json'])).stdout);
    expect(json).toEqual({ access_token: 'at-1', expiry, scope: 's', token_type: 'Bearer' });
    const status = await cli(['status', '--json']);
    expect(status.code, status.stderr).toBe(0);
    expect(status.stdout).not.toContain(RT);
    expect(status.stdout).not.toContain('at-1');
    expect(status.stdout).not.toContain(SECRET);
    const report = JSON.parse(status.stdout);
    expect(report.backend).toBe('file');
    expect(report.tokens).toContainEqual(expect.objectContaining({ provider: 'acme', bucket: 'work', expiry, canRefresh: false }));
    expect(report.keys).toContain('k1');
    const text = await cli(['status']);
    expect(text.stdout).toMatch(/acme:work\s+expires .* \(in \d+ s\)/);
  });

  it('answers exit 1 for bad input data and 2 for usage errors', async () => {
    const notJson = await cli(['token', 'import', 'acme'], '{not json');
    expect(notJson.code).toBe(1);
    expect(notJson.stderr).toMatch(/not valid JSON/);
    const noAccess = await cli(['token', 'import', 'acme'], JSON.stringify({ expiry: 1, refresh_token: RT }));
    expect(noAccess.code).toBe(1);
    expect(noAccess.stderr).toMatch(/access_token/);
    expect(noAccess.stderr).not.toContain(RT);
    expect((await cli(['key', 'set', 'a/b'], 'v')).code).toBe(2);
    expect((await cli(['token', 'get', 'acme', '--bucket', 'bad bucket'])).code).toBe(2);
    expect((await cli(['key', 'frobnicate'])).code).toBe(2);
    expect((await cli(['--no-such-flag'])).code).toBe(2);
    expect((await cli(['key', 'get'])).code).toBe(2);
    expect((await cli(['key', 'set', 'empty'], '')).code).toBe(1);
    const missing = await cli(['token', 'get', 'nobody']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('no token stored for nobody:default; run `credproxy login nobody` (or, on the host, pipe a token JSON to `credproxy token import nobody`)');
  });

  it('refuses an invalid config file naming the file and the field', async () => {
    const env = makeHostEnv();
    try {
      mkdirSync(join(env.home, 'config'), { recursive: true });
      writeFileSync(join(env.home, 'config', 'config.json'), JSON.stringify({ providers: { corp: { flow: 'device_code', client_id: 'x', token_endpoint: 'not a url' } } }));
      const r = await runCli(['providers'], { env: env.env });
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(join(env.home, 'config', 'config.json'));
      expect(r.stderr).toMatch(/providers\.corp\.token_endpoint/);
    } finally {
      env.cleanup();
    }
  });

  it('lists the built-in providers', async () => {
    const r = await cli(['providers', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const names = (JSON.parse(r.stdout) as Array<{ name: string; flow: string }>).map((p) => `${p.name}:${p.flow}`);
    expect(names).toEqual(
      expect.arrayContaining(['anthropic:pkce_redirect', 'gemini:pkce_redirect', 'qwen:device_code', 'codex:browser_redirect', 'github:device_code']),
    );
  });
});
