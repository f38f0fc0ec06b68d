import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';
import type { CliResult } from './cli.js';
import type { FakeUpstream, SeenRequest } from './fake-upstream.js';

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
