import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkRun, startAgentHost, sweepScript, type AgentHost, type AgentRun } from '../support/agent-run.js';
import type { FakeUpstream } from '../support/fake-upstream.js';
import { runCli, type HostEnv } from '../support/cli.js';

/** The real Gemini CLI (a devDependency pinned to an exact version that runs on Node 20). */
const BIN_DIR = fileURLToPath(new URL('../../node_modules/.bin', import.meta.url));
const TOKEN = `ya29.canary-gemini-${process.pid}-7d1e4c2b9a`;
const KEY = `AIzaSy-canary-${process.pid}-0f3b6e`;

let agentHost: AgentHost;
let fake: FakeUpstream;
let host: HostEnv;

beforeAll(async () => {
  expect(existsSync(join(BIN_DIR, 'gemini')), 'npm ci installs @google/gemini-cli').toBe(true);
  agentHost = await startAgentHost({ binDir: BIN_DIR, config: (url) => ({ providers: { gemini: { api_base: url } }, keys: { gemini: { route: { api_base: url, header: 'x-goog-api-key' } } } }), tokens: { gemini: { access_token: TOKEN, expiry: Math.floor(Date.now() / 1000) + 3600 } }, keys: { gemini: KEY } });
  ({ fake, host } = agentHost);
});

afterAll(async () => {
  await agentHost?.close(['gemini', 'keys/gemini'], [TOKEN, KEY]);
});

/**
 * `gemini -p` inside `run --agent gemini` (real bwrap); then everything in the
 * sandbox's writable places (its tmpfs home with the agent's config
 * directory, /tmp) and its environment go to stdout for the sweep. The run
 * exits with gemini's own status.
 */
async function gemini(policy: string[]): Promise<AgentRun> {
  const before = fake.requests.length;
  const r = await runCli(['run', '--sandbox', 'bwrap', '--no-workdir', '--agent', 'gemini', ...policy, '--', 'sh', '-c', sweepScript('gemini -p "say hi"')], { env: host.env, timeoutMs: 180_000 });
  // The canary sweep: the real credentials never reached the sandbox (env, files, output) nor the run's own output.
  const run = checkRun(r, fake, before, [TOKEN, KEY]);
  expect(r.stdout).toContain('GEMINI_CLI_TRUST_WORKSPACE=true');
  // The config directory is a fresh one on the sandbox's home, with side traffic off; the user's ~/.gemini is untouched.
  // (HOME is under /tmp here, which the sandbox covers with its own tmpfs: the relay then uses that /tmp.)
  expect(r.stdout).toMatch(new RegExp(`GEMINI_CLI_HOME=(${host.home}|/tmp)/\\.credproxy-agent-\\w+\\n`));
  expect(r.stdout).toContain('"usageStatisticsEnabled": false');
  expect(existsSync(join(host.home, '.gemini'))).toBe(false);
  return run;
}

describe('run --agent gemini with the real Gemini CLI in bwrap', () => {
  it('Google login (Code Assist): gemini -p gets the fake answer; the API sees the real token as Bearer', async () => {
    const { stdout, answer, requests } = await gemini(['--allow', 'gemini']);
    expect(answer).toMatch(/^fake answer #\d+\n$/);
    expect(stdout).toContain('GOOGLE_GENAI_USE_GCA=true');
    expect(stdout).toMatch(/CODE_ASSIST_ENDPOINT=http:\/\/127\.0\.0\.1:\d+\/gemini\n/);
    // GOOGLE_CLOUD_ACCESS_TOKEN holds the placeholder (the run's capability token), never the real token.
    // The line of the env dump (the checkout may lie under /tmp, which the dump also prints: its sources name the variable too).
    const held = /^GOOGLE_CLOUD_ACCESS_TOKEN=(\S+)$/m.exec(stdout)?.[1];
    expect(held).toMatch(/^[0-9a-f]{64}$/);
    expect(stdout).toContain(`CREDPROXY_TOKEN=${held}`);
    const paths = requests.map((q) => q.url.split('?')[0]);
    expect(paths).toContain('/v1internal:loadCodeAssist');
    expect(paths).toContain('/v1internal:streamGenerateContent');
    for (const q of requests) {
      expect(q.headers.authorization).toBe(`Bearer ${TOKEN}`);
      expect(q.headers['accept-encoding']).toBe('identity');
    }
  });

  it('API key (--allow-key gemini): the Gemini API sees the real key in x-goog-api-key', async () => {
    const { stdout, answer, requests } = await gemini(['--allow-key', 'gemini']);
    expect(answer).toMatch(/^fake answer #\d+\n$/);
    expect(stdout).toMatch(/GOOGLE_GEMINI_BASE_URL=http:\/\/127\.0\.0\.1:\d+\/keys\/gemini\n/);
    expect(stdout).toContain('"selectedType": "gemini-api-key"');
    const held = /^GEMINI_API_KEY=(\S+)$/m.exec(stdout)?.[1];
    expect(held).toMatch(/^[0-9a-f]{64}$/);
    const streams = requests.filter((q) => /^\/v1beta\/models\/[^/]+:streamGenerateContent\?alt=sse$/.test(q.url));
    expect(streams.length).toBeGreaterThan(0);
    for (const q of requests) {
      expect(q.headers['x-goog-api-key']).toBe(KEY);
      expect(q.headers.authorization).toBeUndefined();
    }
  });

  it('with --allow-host: the gateway stays direct (NO_PROXY); the one other host it tries (userinfo, with the placeholder) is refused and it still answers', async () => {
    const before = fake.requests.length;
    const r = await runCli(['run', '--sandbox', 'bwrap', '--no-workdir', '--agent', 'gemini', '--allow', 'gemini', '--allow-host', 'example.invalid', '--', 'sh', '-c', 'gemini -p "say hi" </dev/null'], {
      env: host.env,
      timeoutMs: 180_000,
    });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^fake answer #\d+\n$/);
    for (const secret of [TOKEN, KEY]) expect(r.stdout + r.stderr).not.toContain(secret);
    const requests = fake.requests.slice(before);
    expect(requests.map((q) => q.url.split('?')[0])).toContain('/v1internal:streamGenerateContent');
    for (const q of requests) expect(q.headers.authorization).toBe(`Bearer ${TOKEN}`);
    const egress = readFileSync(join(host.home, 'state', 'egress-audit.jsonl'), 'utf8');
    // Nothing of the model traffic reached the egress proxy: only the refused userinfo call.
    expect(egress).toContain('"www.googleapis.com:443"');
    expect(egress).not.toContain('127.0.0.1');
    expect(egress).not.toMatch(/"result":"(ok|allowed)"/);
  });

  it('--explain prints what the preset sets and why, without starting anything', async () => {
    const r = await runCli(['run', '--sandbox', 'bwrap', '--no-workdir', '--agent', 'gemini', '--allow', 'gemini', '--explain', '--', 'gemini', '-p', 'x'], { env: host.env });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('agent gemini: Google login (--allow gemini)');
    expect(r.stdout).toMatch(/ {2}CODE_ASSIST_ENDPOINT=<gateway>\/gemini {2}\(.+\)/);
    expect(r.stdout).toMatch(/ {2}GOOGLE_CLOUD_ACCESS_TOKEN=<placeholder> {2}\(.*never refreshed.*\)/);
    expect(r.stdout).toMatch(/ {2}GEMINI_CLI_HOME=<fresh 0700 directory on the sandbox's tmpfs home> {2}\(.+\)/);
    expect(r.stdout).toContain('  file .gemini/settings.json');
  });

  it('refuses --agent gemini without a Google credential in the policy', async () => {
    const r = await runCli(['run', '--sandbox', 'bwrap', '--no-workdir', '--agent', 'gemini', '--allow', 'anthropic', '--', 'gemini', '-p', 'x'], { env: host.env });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--allow gemini');
    expect(r.stderr).toContain('--allow-key gemini');
  });
});
