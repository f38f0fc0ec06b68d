import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeUpstream } from '../support/fake-upstream.js';
import { BIN, makeHostEnv, runCli, type HostEnv } from '../support/cli.js';
import { createTestCa, type TestCa } from '../support/test-ca.js';

const BIN_DIR = fileURLToPath(new URL('../../node_modules/.bin', import.meta.url));
const KEY = `AIzaSy-canary-none-${process.pid}-5a0c`;

let ca: TestCa;
let fake: FakeUpstream;
let host: HostEnv;

beforeAll(async () => {
  ca = createTestCa();
  fake = await FakeUpstream.start(ca);
  host = makeHostEnv({ NODE_EXTRA_CA_CERTS: ca.caPath, PATH: `${BIN_DIR}:${process.env.PATH}` });
  mkdirSync(join(host.home, 'config'), { recursive: true, mode: 0o700 });
  writeFileSync(join(host.home, 'config', 'config.json'), JSON.stringify({ keys: { gemini: { route: { api_base: fake.url, header: 'x-goog-api-key' } } } }));
  const k = await runCli(['key', 'set', 'gemini'], { env: host.env, input: `${KEY}\n` });
  expect(k.code, k.stderr).toBe(0);
});

afterAll(async () => {
  await fake?.close();
  ca?.remove();
  host?.cleanup();
});

describe('agent presets outside bwrap, --explain and providers', () => {
  it('--sandbox none: the agent config directory is a private directory under the run dir, removed with it; the real gemini answers', async () => {
    const script = 'echo "dir=$GEMINI_CLI_HOME"; stat -c "mode=%a" "$GEMINI_CLI_HOME"; gemini -p "say hi" </dev/null';
    const r = await runCli(['run', '--sandbox', 'none', '--no-workdir', '--agent', 'gemini', '--allow-key', 'gemini', '--', 'sh', '-c', script], { env: host.env, timeoutMs: 120_000 });
    expect(r.code, r.stderr).toBe(0);
    const dir = /dir=(\S+)/.exec(r.stdout)?.[1] ?? '';
    expect(dir).toMatch(new RegExp(`^${join(host.home, 'run')}/s-\\d+-[0-9a-f]{8}/\\.credproxy-agent-\\w+$`));
    expect(r.stdout).toContain('mode=700');
    expect(r.stdout).toMatch(/fake answer #\d+/);
    expect(existsSync(dir)).toBe(false);
    expect(existsSync(join(host.home, '.gemini'))).toBe(false);
    expect(r.stdout).not.toContain(KEY);
    expect(fake.requests.at(-1)?.headers['x-goog-api-key']).toBe(KEY);
  });

  it('--sandbox none: a launcher killed with SIGKILL leaves its agent directory, and the next run sweeps it', async () => {
    const child = spawn(process.execPath, [BIN, 'run', '--sandbox', 'none', '--no-workdir', '--agent', 'gemini', '--allow-key', 'gemini', '--', 'sh', '-c', 'echo "pid=$$ dir=$GEMINI_CLI_HOME"; exec sleep 60'], { env: host.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const [pid, dir] = await new Promise<[number, string]>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no dir line: ${out}`)), 60_000);
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString('utf8');
        const m = /pid=(\d+) dir=(\S+)\n/.exec(out);
        if (m) {
          clearTimeout(timer);
          resolve([Number(m[1]), m[2]!]);
        }
      });
    });
    const runDir = dirname(dir);
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
    // The command runs in a session of its own and outlives the launcher; it holds nothing the sweep needs.
    process.kill(pid, 'SIGKILL');
    expect(existsSync(join(dir, '.gemini', 'settings.json'))).toBe(true);
    const r = await runCli(['run', '--sandbox', 'none', '--no-workdir', '--agent', 'gemini', '--allow-key', 'gemini', '--', 'sh', '-c', 'exit 0'], { env: host.env, timeoutMs: 60_000 });
    expect(r.code, r.stderr).toBe(0);
    expect(existsSync(runDir)).toBe(false);
    expect(readdirSync(join(host.home, 'run')).filter((n) => n.startsWith('s-'))).toEqual([]);
  });

  it('--explain for codex (ChatGPT login) names CODEX_HOME, both files and the refused refresh path', async () => {
    const r = await runCli(['run', '--sandbox', 'bwrap', '--no-workdir', '--agent', 'codex', '--allow', 'codex', '--explain', '--', 'sh'], { env: host.env });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('agent codex: ChatGPT login (--allow codex)');
    expect(r.stdout).toMatch(/\n {2}CODEX_HOME=<fresh 0700 directory on the sandbox's tmpfs home> {2}\(.+~\/\.codex.+\)\n/);
    expect(r.stdout).toMatch(/\n {2}file config\.toml {2}\(.*requires_openai_auth.*\)\n/);
    expect(r.stdout).toMatch(/\n {2}file auth\.json {2}\(.*placeholder.*\)\n/);
    expect(r.stdout).toMatch(/\n {2}CODEX_REFRESH_TOKEN_URL_OVERRIDE=<gateway>\/credproxy-no-refresh\/oauth\/token {2}\(.*never to auth\.openai\.com\)\n/);
  });

  it('--explain for qwen says API keys only, and refuses --allow qwen with the reason', async () => {
    const ok = await runCli(['run', '--sandbox', 'bwrap', '--no-workdir', '--agent', 'qwen', '--allow-key', 'openai', '--explain', '--', 'sh'], { env: host.env });
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toContain('agent qwen: API key openai (--allow-key openai), OpenAI-compatible');
    expect(ok.stdout).toMatch(/\n {2}OPENAI_API_KEY=<placeholder> {2}\(.+\)\n/);
    const refused = await runCli(['run', '--sandbox', 'bwrap', '--no-workdir', '--agent', 'qwen', '--allow', 'qwen', '--explain', '--', 'sh'], { env: host.env });
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('free tier is discontinued');
  });

  it('credproxy providers says qwen is served by --agent qwen with API keys only', async () => {
    const text = await runCli(['providers'], { env: host.env });
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toMatch(/^qwen +device_code +preset {2}\(.*API keys only.*\)$/m);
    const json = await runCli(['providers', '--json'], { env: host.env });
    const rows = JSON.parse(json.stdout) as Array<{ name: string; note?: string }>;
    expect(rows.find((r) => r.name === 'qwen')?.note).toContain('free tier discontinued');
    expect(rows.find((r) => r.name === 'anthropic')?.note).toBeUndefined();
  });
});
