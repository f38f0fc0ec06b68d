import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { BIN, makeHostEnv, runCli, startServe, type HostEnv } from '../support/cli.js';

async function waitFor(pred: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** llxprt-code's side of the contract, played by our own client (test/e2e/fixtures). */
const CLIENT = fileURLToPath(new URL('./fixtures/llxprt-style-client.mjs', import.meta.url));
const TOKEN = `at-llx-${process.pid}`;
const WORK_TOKEN = `at-llx-work-${process.pid}`;
const KEY = `sk-llx-${process.pid}`;
const MiB = 1024 * 1024;

interface ClientReport {
  env: Record<string, string | null>;
  fd3: string | null;
  handshake: { ok: boolean; data?: { version: number } } | null;
  results: Array<{ op: string; ok?: boolean; code?: string; data?: Record<string, unknown>; lost?: boolean }>;
  alive: boolean | null;
  tokenVisible?: string[];
  error?: string;
}

const STEPS = [
  ['get_token', { provider: 'acme' }],
  ['get_token', { provider: 'acme', bucket: 'my work' }],
  ['get_token', { provider: 'acme', bucket: 'my work' }],
  ['get_bucket_stats', { provider: 'acme', bucket: 'my work' }],
  ['get_bucket_stats', { provider: 'acme', bucket: 'nothing here' }],
  ['has_api_key', { name: 'openai' }],
  ['has_api_key', { name: 'hidden' }],
  ['get_api_key', { name: 'openai' }],
  ['save_token', { provider: 'acme', bucket: 'team+ci', token: { access_token: 'at-big', expiry: 4102444800, id_token: { $bytes: MiB } } }],
  ['get_token', { provider: 'acme', bucket: 'team+ci' }],
  ['remove_token', { provider: 'acme', bucket: 'user@example.com' }],
  ['list_buckets', { provider: 'acme' }],
];

function parse(stdout: string): ClientReport {
  return JSON.parse(stdout) as ClientReport;
}

/** `tokenHidden`: nothing the command can read shows the token (false where its parent holds it by design). */
function expectFullContract(r: { code: number | null; stdout: string; stderr: string }, tokenHidden = true): void {
  expect(r.code, `${r.stderr}\n${r.stdout}`).toBe(0);
  const report = parse(r.stdout);
  expect(report.error).toBeUndefined();
  expect(report.fd3).toBe('ok');
  if (tokenHidden) expect(report.tokenVisible).toEqual([]);
  // Only llxprt's names: no CREDPROXY_* for llxprt to hand on to the tools it runs, no token in any variable.
  expect(report.env).toMatchObject({ LLXPRT_CAPABILITY_FD: '3', CREDPROXY_SOCKET: null, CREDPROXY_TOKEN: null, LLXPRT_CAPABILITY_TOKEN: null });
  expect(report.env.LLXPRT_CREDENTIAL_SOCKET).toMatch(/\.sock$/);
  expect(report.handshake).toMatchObject({ ok: true, data: { version: 2 } });
  const [tok, work, , stats, noStats, hasKey, hidden, key, save, big, removeMissing, buckets] = report.results;
  expect(tok).toMatchObject({ ok: true, data: { access_token: TOKEN } });
  expect(work).toMatchObject({ ok: true, data: { access_token: WORK_TOKEN } });
  expect(stats).toMatchObject({ ok: true, data: { bucket: 'my work', requestCount: 2, percentage: 66.7, lastUsed: expect.any(Number) } });
  expect(noStats).toMatchObject({ ok: false, code: 'NOT_FOUND' });
  expect(hasKey).toMatchObject({ ok: true, data: { exists: true } });
  expect(hidden).toMatchObject({ ok: false, code: 'UNAUTHORIZED' });
  expect(key).toMatchObject({ ok: true, data: { key: KEY } });
  expect(save).toMatchObject({ ok: true, data: {} });
  expect(big).toMatchObject({ ok: true, data: { access_token: 'at-big' } });
  expect(big!.data!.bytes).toBeGreaterThan(MiB);
  expect(removeMissing).toMatchObject({ ok: true, data: {} });
  expect(buckets).toMatchObject({ ok: true, data: { buckets: expect.arrayContaining(['default', 'my work', 'team+ci']) } });
  expect(report.alive).toBe(true);
  expect(r.stdout).not.toContain('rt-llx');
}

describe('llxprt-code contract through credproxy run', () => {
  let host: HostEnv;
  let work: string;
  let llxprt: string;

  const run = (args: string[], command: string[]) =>
    runCli(['run', '--allow', 'acme:*', '--allow-key', 'openai', '--allow-write', ...args, '--', ...command], { env: host.env, cwd: work, timeoutMs: 60_000 });

  beforeAll(async () => {
    host = makeHostEnv();
    work = mkdtempSync('/tmp/cpl-');
    const imp = (bucket: string, at: string) =>
      runCli(['token', 'import', 'acme', '--bucket', bucket], { env: host.env, input: JSON.stringify({ access_token: at, expiry: 4102444800, refresh_token: 'rt-llx' }) });
    expect((await imp('default', TOKEN)).code).toBe(0);
    expect((await imp('my work', WORK_TOKEN)).code).toBe(0);
    expect((await runCli(['key', 'set', 'openai'], { env: host.env, input: KEY })).code).toBe(0);
    expect((await runCli(['key', 'set', 'hidden'], { env: host.env, input: 'sk-hidden' })).code).toBe(0);
    // A command named llxprt switches the contract on by itself.
    llxprt = join(work, 'llxprt');
    writeFileSync(llxprt, `#!/bin/sh\nexec node ${CLIENT} "$@"\n`);
    chmodSync(llxprt, 0o755);
  });
  afterAll(() => {
    host?.cleanup();
    rmSync(work, { recursive: true, force: true });
  });

  for (const sandbox of ['bwrap', 'none'] as const) {
    it(`${sandbox}: a command named llxprt finds the proxy from LLXPRT_CREDENTIAL_SOCKET + fd 3 alone; tokens, keys, stats, has_api_key, a 1 MiB save on v2`, async () => {
      expectFullContract(await run(['--sandbox', sandbox], [llxprt, JSON.stringify(STEPS)]));
    });
  }

  it('bwrap: --llxprt turns it on for any command; --no-llxprt turns it off for llxprt', async () => {
    const on = await run(['--sandbox', 'bwrap', '--llxprt'], ['node', CLIENT, JSON.stringify(STEPS.slice(0, 1))]);
    expect(on.code, on.stderr).toBe(0);
    expect(parse(on.stdout).results[0]).toMatchObject({ ok: true, data: { access_token: TOKEN } });
    const off = await run(['--sandbox', 'bwrap', '--no-llxprt'], [llxprt, '[]']);
    expect(off.code).toBe(3);
    expect(parse(off.stdout)).toMatchObject({ error: 'no usable LLXPRT_CREDENTIAL_SOCKET', env: { CREDPROXY_TOKEN: 'set' } });
  });

  it('other commands keep the CREDPROXY_* contract, with nothing on fd 3 and no LLXPRT_* variable', async () => {
    for (const sandbox of ['bwrap', 'none']) {
      const r = await run(['--sandbox', sandbox], ['sh', '-c', '[ -e /dev/fd/3 ] && echo FD3-OPEN; echo "${LLXPRT_CREDENTIAL_SOCKET:-no-llxprt} ${CREDPROXY_TOKEN:+token-set}"; credproxy token get acme']);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toBe(`no-llxprt token-set\n${TOKEN}\n`);
    }
  });

  it('credproxy exec --llxprt inside a sandbox started with the CREDPROXY_* contract sets llxprt up for its child only', async () => {
    const script = `credproxy exec --llxprt -- node ${CLIENT} '${JSON.stringify(STEPS)}'; echo; echo "after=\${CREDPROXY_TOKEN:+still-set}"`;
    const r = await run(['--sandbox', 'bwrap', '--no-llxprt'], ['sh', '-c', script]);
    const [json, after] = r.stdout.trim().split('\n');
    // The shell and `credproxy exec` were started with CREDPROXY_TOKEN: only llxprt's own environment is clean here.
    expectFullContract({ code: r.code, stdout: json!, stderr: r.stderr }, false);
    expect(parse(json!).tokenVisible).not.toContain('environ');
    expect(after).toBe('after=still-set');
  });

  it('refuses --transport tcp for llxprt (it speaks only Unix sockets), as a usage error', async () => {
    const r = await run(['--sandbox', 'none', '--transport', 'tcp'], [llxprt, '[]']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('Unix socket');
  });

  it('serve prints LLXPRT_CREDENTIAL_SOCKET, and with --shell how to pass fd 3', async () => {
    const serve = await startServe(['--allow', 'acme'], host.env);
    try {
      await waitFor(() => serve.stdout().includes('LLXPRT_'), 'the LLXPRT line');
      expect(serve.stdout()).toContain(`LLXPRT_CREDENTIAL_SOCKET=${serve.socket}\n`);
    } finally {
      await serve.stop();
    }
    const shell = spawn(process.execPath, [BIN, 'serve', '--allow', 'acme', '--shell'], { env: host.env, stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    shell.stdout.on('data', (d: Buffer) => (out += d.toString()));
    try {
      await waitFor(() => out.includes('# llxprt'), 'the --shell hint');
      expect(out).toMatch(/^export LLXPRT_CREDENTIAL_SOCKET='\/.*\.sock'$/m);
      expect(out).toMatch(/^# llxprt-code takes the token only on fd 3: LLXPRT_CAPABILITY_FD=3 llxprt 3<<<"\$CREDPROXY_TOKEN"/m);
    } finally {
      shell.kill('SIGTERM');
      await new Promise((r) => shell.once('exit', r));
    }
  });
});
