import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';
import { makeHostEnv, runCli, type CliResult, type HostEnv } from './cli.js';
import { FakeUpstream, type SeenRequest } from './fake-upstream.js';
import { createTestCa, type TestCa } from './test-ca.js';

/**
 * What the real-agent end-to-end tests share (Gemini CLI in the suite; Codex
 * and Qwen Code in `npm run test:agents`): the in-sandbox script that dumps
 * everything for the canary sweep, the checks on a finished run, and the
 * audit files.
 */

/**
 * The sandbox script: the agent's one-shot command with its output kept,
 * then its answer and its stderr between markers, everything
 * in the sandbox's writable places (the tmpfs home with the agent's config
 * directory, /tmp) and its environment, for the canary sweep. The run exits
 * with the agent's own status.
 */
export function sweepScript(agentCommand: string): string {
  return [
    `${agentCommand} </dev/null >/tmp/agent.out 2>/tmp/agent.err; echo $? >/tmp/agent.status`,
    '{ echo "--- answer"; cat /tmp/agent.out; echo "--- end"; echo "--- stderr"; cat /tmp/agent.err; echo "--- stderr end"; find "$HOME" /tmp -type f -size -1024k -exec cat {} + 2>/dev/null; env; } | node -e "process.stdin.pipe(process.stdout)"',
    'exit "$(cat /tmp/agent.status)"',
  ].join('\n');
}

export interface AgentRun {
  stdout: string;
  answer: string;
  /** What the agent wrote on stderr. */
  errors: string;
  requests: SeenRequest[];
}

/** Checks a finished run: exit 0, no canary anywhere it printed, the upstream never saw a placeholder. */
export function checkRun(r: CliResult, fake: FakeUpstream, before: number, secrets: string[]): AgentRun {
  expect(r.code, `${r.stderr}\n${r.stdout.slice(0, 6000)}`).toBe(0);
  for (const secret of secrets) {
    expect(r.stdout).not.toContain(secret);
    expect(r.stderr).not.toContain(secret);
  }
  const requests = fake.requests.slice(before);
  // The placeholder is 64 hex characters; the upstream must never see one as a credential.
  expect(requests.some((q) => /^[0-9a-f]{64}$/.test(q.credential ?? ''))).toBe(false);
  const answer = /--- answer\n([\s\S]*?)--- end/.exec(r.stdout)?.[1] ?? '';
  const errors = /--- stderr\n([\s\S]*?)--- stderr end/.exec(r.stdout)?.[1] ?? '';
  return { stdout: r.stdout, answer, errors, requests };
}

/**
 * With `--allow-host example.invalid` the sandbox has an egress proxy, so a
 * call the agent makes outside the gateway would show up in the egress
 * audit (refused): none may.
 */
export const EGRESS_PROBE = ['--allow-host', 'example.invalid'];

export function egressAudit(home: string): string {
  const path = join(home, 'state', 'egress-audit.jsonl');
  return existsSync(path) ? readFileSync(path, 'utf8') : '';
}

/** The gateway's audit after the runs: a line for each route the agent used, and no secret in it. */
export function checkGatewayAudit(home: string, routes: string[], secrets: string[]): void {
  const path = join(home, 'state', 'gateway-audit.jsonl');
  const audit = existsSync(path) ? readFileSync(path, 'utf8') : '';
  for (const route of routes) expect(audit).toContain(`"route":"${route}"`);
  for (const secret of secrets) expect(audit).not.toContain(secret);
}

export interface AgentHost {
  ca: TestCa;
  fake: FakeUpstream;
  host: HostEnv;
  /** Close the fake API, remove the CA, check the gateway audit (routes used, no secret), remove the home. */
  close(routes: string[], secrets: string[]): Promise<void>;
}

/**
 * The host side of a real-agent test: the fake API behind a throwaway CA
 * that only the host trusts (NODE_EXTRA_CA_CERTS), a home with the agent's
 * directory first on PATH, config.json built from the fake's URL, and the
 * credentials stored through the real CLI (`token import`, `key set`).
 */
export async function startAgentHost(o: { binDir: string; config: (fakeUrl: string) => object; tokens?: Record<string, object>; keys?: Record<string, string> }): Promise<AgentHost> {
  const ca = createTestCa();
  const fake = await FakeUpstream.start(ca);
  const host = makeHostEnv({ NODE_EXTRA_CA_CERTS: ca.caPath, PATH: `${o.binDir}:${process.env.PATH}` });
  mkdirSync(join(host.home, 'config'), { recursive: true, mode: 0o700 });
  writeFileSync(join(host.home, 'config', 'config.json'), JSON.stringify(o.config(fake.url)));
  for (const [provider, token] of Object.entries(o.tokens ?? {})) {
    const t = await runCli(['token', 'import', provider], { env: host.env, input: JSON.stringify(token) });
    expect(t.code, t.stderr).toBe(0);
  }
  for (const [name, value] of Object.entries(o.keys ?? {})) {
    const k = await runCli(['key', 'set', name], { env: host.env, input: `${value}\n` });
    expect(k.code, k.stderr).toBe(0);
  }
  return {
    ca,
    fake,
    host,
    async close(routes, secrets) {
      await fake.close();
      ca.remove();
      checkGatewayAudit(host.home, routes, secrets);
      host.cleanup();
    },
  };
}
