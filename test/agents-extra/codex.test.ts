import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgentHost, type AgentHost } from '../support/agent-run.js';
import type { FakeUpstream } from '../support/fake-upstream.js';
import { runCli, type HostEnv } from '../support/cli.js';
import { AGENTS_BIN, checkRun, EGRESS_PROBE, egressAudit, requireInstalled, sweepScript, type AgentRun } from './agent-run.js';

/** The real Codex CLI (installed by scripts/agents-install): `codex exec` one-shot, inside `run --agent codex`. */
const TOKEN = `codex-access-canary-${process.pid}-5be19f0d`;
const ACCOUNT = `acct-canary-${process.pid}`;
const KEY = `sk-proj-canary-${process.pid}-c3a7e1`;
const b64 = (o: object): string => Buffer.from(JSON.stringify(o)).toString('base64url');
const ID_TOKEN = `${b64({ alg: 'RS256' })}.${b64({ email: 'u@example.com', 'https://api.openai.com/auth': { chatgpt_account_id: ACCOUNT, chatgpt_plan_type: 'plus' } })}.sig-canary-${process.pid}`;

let agentHost: AgentHost;
let fake: FakeUpstream;
let host: HostEnv;

beforeAll(async () => {
  requireInstalled([join(AGENTS_BIN, 'codex')]);
  agentHost = await startAgentHost({ binDir: AGENTS_BIN, config: (url) => ({ providers: { codex: { api_base: url } }, keys: { openai: { route: { api_base: url, header: 'authorization' } } } }), tokens: { codex: { access_token: TOKEN, id_token: ID_TOKEN, expiry: Math.floor(Date.now() / 1000) + 3600 } }, keys: { openai: KEY } });
  ({ fake, host } = agentHost);
});

afterAll(async () => {
  await agentHost?.close(['codex', 'keys/openai'], [TOKEN, KEY, ACCOUNT, ID_TOKEN]);
});

async function codex(policy: string[]): Promise<AgentRun> {
  const before = fake.requests.length;
  const r = await runCli(['run', '--sandbox', 'bwrap', '--no-workdir', '--agent', 'codex', ...policy, '--', 'sh', '-c', sweepScript('codex exec --skip-git-repo-check "say hi"')], {
    env: host.env,
    timeoutMs: 240_000,
  });
  const run = checkRun(r, fake, before, [TOKEN, KEY, ACCOUNT, ID_TOKEN]);
  expect(run.stdout).toMatch(new RegExp(`CODEX_HOME=(${host.home}|/tmp)/\\.credproxy-agent-\\w+\\n`));
  expect(run.stdout).toContain('model_provider = "credproxy"');
  expect(existsSync(join(host.home, '.codex'))).toBe(false);
  return run;
}

describe('run --agent codex with the real Codex CLI in bwrap', () => {
  it('ChatGPT login: codex exec gets the fake answer; the API sees the real token and account id, never a refresh, no other host', async () => {
    const { answer, errors, requests, stdout } = await codex(['--allow', 'codex', ...EGRESS_PROBE]);
    expect(answer).toMatch(/^fake answer #\d+\n$/);
    // Codex did not even try to refresh (it logs "Failed to refresh token" when it does).
    expect(errors).not.toMatch(/refresh/i);
    // The placeholder auth.json the preset wrote, as codex left it: the placeholder as access token, no real one.
    expect(stdout).toMatch(/"access_token": "[0-9a-f]{64}"/);
    const responses = requests.filter((q) => q.method === 'POST' && q.url === '/responses');
    expect(responses.length).toBeGreaterThan(0);
    for (const q of requests) {
      expect(q.headers.authorization).toBe(`Bearer ${TOKEN}`);
      expect(q.headers['chatgpt-account-id']).toBe(ACCOUNT);
    }
    // Nothing reached a token endpoint (the gateway refuses the refresh path; the fake never saw one).
    expect(requests.some((q) => q.url.includes('oauth/token'))).toBe(false);
    // With an egress proxy in the sandbox, codex tried no host besides the gateway (analytics, plugins, apps off).
    expect(egressAudit(host.home)).toBe('');
  });

  it('after a 401, the refresh codex tries itself stays in the sandbox: the gateway refuses it (no route), no other host is tried', async () => {
    const before = fake.requests.length;
    fake.accept = () => false;
    try {
      const script = 'codex exec --skip-git-repo-check "say hi" </dev/null >/dev/null 2>/tmp/codex.err; echo "codex status $?"; cat /tmp/codex.err';
      const r = await runCli(['run', '--sandbox', 'bwrap', '--no-workdir', '--agent', 'codex', '--allow', 'codex', ...EGRESS_PROBE, '--', 'sh', '-c', script], { env: host.env, timeoutMs: 240_000 });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/codex status [1-9]/);
      // codex's own refresh went to CODEX_REFRESH_TOKEN_URL_OVERRIDE, a gateway path with no route (404), not to auth.openai.com.
      expect(r.stdout).toMatch(/Failed to refresh token status=404/);
      for (const secret of [TOKEN, KEY, ACCOUNT, ID_TOKEN]) expect(r.stdout + r.stderr).not.toContain(secret);
    } finally {
      fake.accept = (c) => c !== null;
    }
    const audit = readFileSync(join(host.home, 'state', 'gateway-audit.jsonl'), 'utf8');
    expect(audit).toMatch(/"kind":"gateway_refused","refused":\{[^}]*"no_route":\d+/);
    expect(egressAudit(host.home)).toBe('');
    const requests = fake.requests.slice(before);
    expect(requests.length).toBeGreaterThan(0);
    expect(requests.some((q) => q.url.includes('oauth/token'))).toBe(false);
    for (const q of requests) expect(q.credential).toBe(TOKEN);
  });

  it('API key (--allow-key openai): the Responses API sees the real key as Bearer, no account id', async () => {
    const { answer, requests, stdout } = await codex(['--allow-key', 'openai']);
    expect(answer).toMatch(/^fake answer #\d+\n$/);
    expect(stdout).toMatch(/OPENAI_API_KEY=[0-9a-f]{64}\n/);
    const responses = requests.filter((q) => q.method === 'POST' && q.url === '/responses');
    expect(responses.length).toBeGreaterThan(0);
    for (const q of requests) {
      expect(q.headers.authorization).toBe(`Bearer ${KEY}`);
      expect(q.headers['chatgpt-account-id']).toBeUndefined();
    }
  });
});
