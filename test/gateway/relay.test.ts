import { spawnSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import type { AgentEnvPlan } from '../../src/gateway/agent-env.js';

// The relay as it runs inside the sandbox: the built file, on its own, in a child process.
const RELAY = fileURLToPath(new URL('../../dist/gateway/relay.js', import.meta.url));

const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

function socketDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'relay-test-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

describe('the in-sandbox relay', () => {
  it('refuses to write an agent config without a placeholder (it would hold an empty key), before the command runs', () => {
    const dir = socketDir();
    const plan: AgentEnvPlan = { route: 'openai', set: {}, fromGatewayUrl: {}, placeholder: ['OPENAI_API_KEY'], configDir: { env: { CODEX_HOME: '' }, files: [{ path: 'auth.json', template: '{"OPENAI_API_KEY":"{{CREDPROXY_PLACEHOLDER}}"}' }] } };
    const marker = join(dir, 'ran');
    const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: dir };
    const r = spawnSync(process.execPath, [RELAY, JSON.stringify({ gateway: join(dir, 'gateway.sock'), plan }), '--', process.execPath, '-e', `require('fs').writeFileSync(${JSON.stringify(marker)}, '')`], { env, encoding: 'utf8' });
    expect(r.status).toBe(125);
    expect(r.stderr).toMatch(/no placeholder/);
    expect(spawnSync('ls', ['-A', dir], { encoding: 'utf8' }).stdout.trim()).toBe('');
  });

  it('a client that ends its side still gets the answer, and the host side sees that end', async () => {
    const dir = socketDir();
    const socketPath = join(dir, 'gateway.sock');
    // The host side answers only once the client has finished sending (as an upload's end would).
    const server: Server = createServer({ allowHalfOpen: true }, (c) => {
      let n = 0;
      c.on('data', (d: Buffer) => (n += d.length));
      c.on('end', () => c.end(`got ${n} bytes after the end`));
    });
    await new Promise<void>((r) => server.listen(socketPath, () => r()));
    cleanups.push(() => server.close());
    const client = `const u = new URL(process.env.CREDPROXY_GATEWAY_URL);
      const s = require('net').connect(Number(u.port), u.hostname, () => s.end('hello'));
      let got = ''; s.on('data', (d) => (got += d)); s.on('end', () => process.stdout.write(got));`;
    const child = spawn(process.execPath, [RELAY, JSON.stringify({ gateway: socketPath }), '--', process.execPath, '-e', client], { env: { PATH: process.env.PATH }, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const code = await new Promise<number | null>((r) => child.once('exit', r));
    expect(code).toBe(0);
    expect(out).toBe('got 5 bytes after the end');
  });
});
