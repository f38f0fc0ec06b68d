import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeHostEnv, runCli, type HostEnv } from '../support/cli.js';

/**
 * What a newcomer meets first: a run allowing a provider nothing is stored
 * for yet. The launcher says so once at start, and the NOT_FOUND the tool
 * inside gets says what to do.
 */
describe('first run with nothing stored', () => {
  let host: HostEnv;
  beforeAll(() => {
    host = makeHostEnv();
  });
  afterAll(() => host.cleanup());

  const count = (text: string, part: string): number => text.split(part).length - 1;

  it('run --allow P warns once at start for each empty entry; the tool inside is told how to log in', async () => {
    const inside = 'credproxy token get acme; echo "inside exit $?"';
    const first = await runCli(['run', '--sandbox', 'none', '--no-workdir', '--allow', 'acme', '--allow', 'other:*', '--allow-key', 'nokey', '--', 'sh', '-c', inside], { env: host.env, cwd: host.home });
    expect(first.code, first.stderr).toBe(0);
    expect(count(first.stderr, 'credproxy: nothing is stored for acme:default yet, so its requests will fail: run `credproxy login acme` (or, on the host, pipe a token JSON to `credproxy token import acme`)')).toBe(1);
    expect(count(first.stderr, 'nothing is stored for other (any bucket) yet')).toBe(1);
    expect(count(first.stderr, 'no API key named nokey is stored yet: set it on the host with `credproxy key set nokey`')).toBe(1);
    // The tool inside the sandbox: NOT_FOUND with the way out.
    expect(first.stdout).toContain('inside exit 1');
    expect(first.stderr).toContain('NOT_FOUND: no token stored for acme:default; run `credproxy login acme`');

    const token = JSON.stringify({ access_token: 'at-first-run', expiry: Math.floor(Date.now() / 1000) + 3600, token_type: 'Bearer' });
    expect((await runCli(['token', 'import', 'acme'], { env: host.env, input: token })).code).toBe(0);
    expect((await runCli(['token', 'import', 'other', '--bucket', 'work'], { env: host.env, input: token })).code).toBe(0);
    expect((await runCli(['key', 'set', 'nokey'], { env: host.env, input: 'sk-first-run' })).code).toBe(0);
    const later = await runCli(['run', '--sandbox', 'none', '--no-workdir', '--allow', 'acme', '--allow', 'other:*', '--allow-key', 'nokey', '--', 'sh', '-c', inside], { env: host.env, cwd: host.home });
    expect(later.code, later.stderr).toBe(0);
    expect(later.stdout).toContain('at-first-run');
    expect(later.stderr).not.toContain('nothing is stored');
    expect(later.stderr).not.toContain('no API key named');
  });
});
