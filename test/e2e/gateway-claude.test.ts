import { chmodSync, existsSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAgentHost, type AgentHost } from '../support/agent-run.js';
import type { FakeUpstream } from '../support/fake-upstream.js';
import { runCli, type HostEnv } from '../support/cli.js';

/** The real Claude Code CLI (a devDependency; its native binary comes with the platform package). */
const CLAUDE_BIN_DIR = fileURLToPath(new URL('../../node_modules/.bin', import.meta.url));
const TOKEN = `sk-ant-oat01-canary-${process.pid}-4b7e0c9d1a`;
const KEY = `sk-ant-api03-canary-${process.pid}-e2c81f`;

let agentHost: AgentHost;
let fake: FakeUpstream;
let host: HostEnv;

beforeAll(async () => {
  expect(existsSync(join(CLAUDE_BIN_DIR, 'claude')), 'npm ci installs @anthropic-ai/claude-code').toBe(true);
  agentHost = await startAgentHost({ binDir: CLAUDE_BIN_DIR, config: (url) => ({ providers: { anthropic: { api_base: url } }, keys: { anthropic: { route: { api_base: url } } } }), tokens: { anthropic: { access_token: TOKEN, expiry: Math.floor(Date.now() / 1000) + 3600 } }, keys: { anthropic: KEY } });
  ({ fake, host } = agentHost);
});

afterAll(async () => {
  await agentHost?.close(['anthropic', 'keys/anthropic'], [TOKEN, KEY]);
});

async function claude(policy: string[]): Promise<{ stdout: string; placeholderSeen: boolean; requests: typeof fake.requests }> {
  const before = fake.requests.length;
  // After the answer, everything Claude Code wrote in the sandbox's writable places and its environment go to stdout, for the sweep below.
  // The dump goes through a Node copier, which waits out EAGAIN: on Node 24 and on a loaded machine the
  // run's stdio socket was found O_NONBLOCK after claude ran (even with claude's own stdio redirected;
  // the process that sets it is not found yet), and a plain `env` writing to it failed with EAGAIN.
  // Files of 1 MiB or more (Claude Code's own binary when installed under the home) are left out of
  // the dump: whole, they make hundreds of MiB of output, past what the test can hold as a string.
  const script = '{ claude -p "say hi" </dev/null >/tmp/claude.out 2>/tmp/claude.err && cat /tmp/claude.out && find "$HOME" /tmp -type f -size -1024k -exec cat {} + 2>/dev/null; env; } | node -e "process.stdin.pipe(process.stdout)"';
  const r = await runCli(['run', '--sandbox', 'bwrap', '--no-workdir', '--agent', 'claude', ...policy, '--', 'sh', '-c', script], { env: host.env, timeoutMs: 120_000 });
  expect(r.code, r.stderr).toBe(0);
  expect(r.stdout).toContain('CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1');
  for (const secret of [TOKEN, KEY]) {
    expect(r.stdout).not.toContain(secret);
    expect(r.stderr).not.toContain(secret);
  }
  const requests = fake.requests.slice(before);
  // The placeholder is 64 hex characters; the upstream must never see one as a credential.
  const placeholderSeen = requests.some((q) => /^[0-9a-f]{64}$/.test(q.credential ?? ''));
  return { stdout: r.stdout, placeholderSeen, requests };
}

describe('run --agent claude with the real Claude Code in bwrap', () => {
  it('OAuth mode: claude -p gets the fake answer; the API sees the real token and the oauth beta', async () => {
    const { stdout, placeholderSeen, requests } = await claude(['--allow', 'anthropic']);
    expect(stdout).toMatch(/fake answer #\d+/);
    expect(placeholderSeen).toBe(false);
    const messages = requests.filter((q) => q.url.startsWith('/v1/messages'));
    expect(messages.length).toBeGreaterThan(0);
    for (const q of messages) {
      expect(q.headers.authorization).toBe(`Bearer ${TOKEN}`);
      expect(String(q.headers['anthropic-beta']).split(',')).toContain('oauth-2025-04-20');
    }
  });

  it('key mode (--allow-key anthropic): the API sees the real key in x-api-key', async () => {
    const { stdout, placeholderSeen, requests } = await claude(['--allow-key', 'anthropic']);
    expect(stdout).toMatch(/fake answer #\d+/);
    expect(placeholderSeen).toBe(false);
    const messages = requests.filter((q) => q.url.startsWith('/v1/messages'));
    expect(messages.length).toBeGreaterThan(0);
    for (const q of messages) {
      expect(q.headers['x-api-key']).toBe(KEY);
      expect(q.headers.authorization).toBeUndefined();
    }
  });

  it('finds a claude installed under the (masked) home through PATH and binds its directory read-only', async () => {
    const install = join(host.home, '.local', 'share', 'claude', 'versions', '9.9.9');
    const bin = join(host.home, '.local', 'bin');
    mkdirSync(install, { recursive: true });
    mkdirSync(bin, { recursive: true });
    writeFileSync(
      join(install, 'claude'),
      '#!/bin/sh\necho "base=$ANTHROPIC_BASE_URL quiet=$CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC same=$([ "$CLAUDE_CODE_OAUTH_TOKEN" = "$CREDPROXY_TOKEN" ] && echo yes) args=$*"\ntouch "$0.written" 2>/dev/null && echo writable || echo read-only\n',
    );
    chmodSync(join(install, 'claude'), 0o755);
    symlinkSync(join(install, 'claude'), join(bin, 'claude'));
    const r = await runCli(['run', '--sandbox', 'bwrap', '--no-workdir', '--agent', 'claude', '--allow', 'anthropic', '--', 'claude', '-p', 'hi'], {
      env: { ...host.env, PATH: `${bin}:${host.env.PATH}` },
      timeoutMs: 60_000,
    });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^base=http:\/\/127\.0\.0\.1:\d+\/anthropic quiet=1 same=yes args=-p hi\nread-only\n$/);
  });

  it('refuses --agent claude without an Anthropic credential in the policy', async () => {
    const r = await runCli(['run', '--sandbox', 'bwrap', '--no-workdir', '--agent', 'claude', '--allow', 'github', '--', 'claude', '-p', 'x'], { env: host.env });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--allow anthropic');
  });
});
