import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgentHost, type AgentHost } from '../support/agent-run.js';
import type { FakeUpstream } from '../support/fake-upstream.js';
import { runCli, type HostEnv } from '../support/cli.js';
import { AGENTS_BIN, checkRun, EGRESS_PROBE, egressAudit, NODE22, requireInstalled, sweepScript, type AgentRun } from './agent-run.js';

/**
 * The real Qwen Code (installed by scripts/agents-install), which needs
 * Node 22. The sandbox's PATH starts with the directory of the Node
 * credproxy runs on (Node 20 here), so the script puts Node 22's first for
 * qwen's `#!/usr/bin/env node`; Node 22 lives under the package root, which
 * the sandbox shows read-only.
 *
 * credproxy itself stays on Node 20: on Node 22 the gateway's streamed
 * responses end early (the response pump calls res.end() while the
 * response is corked, and Node 22 then sends the terminating zero-length
 * chunk before the corked bytes), which Qwen Code reports as "Model stream
 * ended without a finish reason". That is the gateway's to fix
 * (src/gateway/server.ts); see the hand-over notes.
 */
const QWEN_KEY = `sk-dashscope-canary-${process.pid}-81f0`;
const OPENAI_KEY = `sk-proj-canary-${process.pid}-9d2e4a`;

let agentHost: AgentHost;
let fake: FakeUpstream;
let host: HostEnv;

beforeAll(async () => {
  requireInstalled([join(AGENTS_BIN, 'qwen'), NODE22]);
  agentHost = await startAgentHost({ binDir: AGENTS_BIN, config: (url) => ({ keys: { qwen: { route: { api_base: `${url}/compatible-mode/v1`, header: 'authorization' } }, openai: { route: { api_base: `${url}/v1`, header: 'authorization' } } } }), keys: { qwen: QWEN_KEY, openai: OPENAI_KEY } });
  ({ fake, host } = agentHost);
});

afterAll(async () => {
  await agentHost?.close(['keys/qwen', 'keys/openai'], [QWEN_KEY, OPENAI_KEY]);
});

/**
 * Qwen Code resolves HOME with realpath and stops when it is missing. The
 * test's HOME is under /tmp (makeHostEnv: short socket paths), which the
 * sandbox covers with its own empty tmpfs, so it is made first; a real home
 * is masked by a tmpfs of its own and is there.
 */
async function qwen(policy: string[], model?: string): Promise<AgentRun> {
  const before = fake.requests.length;
  const r = await runCli(['run', '--sandbox', 'bwrap', '--no-workdir', '--agent', 'qwen', ...policy, '--', 'sh', '-c', sweepScript(`mkdir -p "$HOME" && PATH=${dirname(NODE22)}:$PATH qwen -p "say hi"${model === undefined ? '' : ` -m ${model}`}`)], {
    env: host.env,
    timeoutMs: 240_000,
  });
  const run = checkRun(r, fake, before, [QWEN_KEY, OPENAI_KEY]);
  expect(run.stdout).toMatch(new RegExp(`QWEN_HOME=(${host.home}|/tmp)/\\.credproxy-agent-\\w+\\n`));
  expect(run.stdout).toContain('"selectedType": "openai"');
  expect(run.stdout).toMatch(/OPENAI_API_KEY=[0-9a-f]{64}\n/);
  expect(existsSync(join(host.home, '.qwen'))).toBe(false);
  return run;
}

describe('run --agent qwen with the real Qwen Code (Node 22) in bwrap', () => {
  it('--allow-key qwen (route from config.json): qwen -p gets the fake answer; the API sees the real key', async () => {
    const { answer, requests, stdout } = await qwen(['--allow-key', 'qwen']);
    expect(answer).toMatch(/fake answer #\d+/);
    expect(stdout).toMatch(/OPENAI_BASE_URL=http:\/\/127\.0\.0\.1:\d+\/keys\/qwen\n/);
    const chats = requests.filter((q) => q.url === '/compatible-mode/v1/chat/completions');
    expect(chats.length).toBeGreaterThan(0);
    for (const q of chats) expect(JSON.parse(q.bodyText).model).toBe('qwen3-coder-plus');
    for (const q of requests) expect(q.headers.authorization).toBe(`Bearer ${QWEN_KEY}`);
  });

  it('--allow-key openai with -m: the OpenAI API sees the real key and the model asked for; no other host', async () => {
    const { answer, requests } = await qwen(['--allow-key', 'openai', ...EGRESS_PROBE], 'gpt-fake-model');
    // With an egress proxy in the sandbox, Qwen Code tried no host besides the gateway.
    expect(egressAudit(host.home)).toBe('');
    expect(answer).toMatch(/fake answer #\d+/);
    const chats = requests.filter((q) => q.url === '/v1/chat/completions');
    expect(chats.length).toBeGreaterThan(0);
    for (const q of chats) expect(JSON.parse(q.bodyText).model).toBe('gpt-fake-model');
    for (const q of requests) expect(q.headers.authorization).toBe(`Bearer ${OPENAI_KEY}`);
  });

  it('refuses the Qwen OAuth login (the client itself refuses it) and says to use an API key', async () => {
    const r = await runCli(['run', '--sandbox', 'bwrap', '--no-workdir', '--agent', 'qwen', '--allow', 'qwen', '--', 'qwen', '-p', 'x'], { env: host.env });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('free tier is discontinued');
    expect(r.stderr).toContain('--allow-key qwen');
  });
});
