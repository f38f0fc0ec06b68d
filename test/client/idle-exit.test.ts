import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterEach, expect, it } from 'vitest';
import { FakeProxy } from '../support/fake-proxy.js';
import { expectValidClientFrames } from './client-frames.js';

const CHILD = fileURLToPath(new URL('./fixtures/idle-child.ts', import.meta.url));
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const ANSWER_DELAY_MS = 700;

let proxy: FakeProxy | null = null;
afterEach(async () => {
  if (proxy !== null) {
    expectValidClientFrames(proxy);
    await proxy.close();
  }
  proxy = null;
});

it('a real child process waits for its pending answer, then exits on its own while idle', async () => {
  proxy = await FakeProxy.start({
    capabilityToken: 'feedface',
    handler: async () => {
      // The child must stay alive for this answer: a pending request holds the event loop.
      await new Promise((r) => setTimeout(r, ANSWER_DELAY_MS));
      return { data: { key: 'value-for-child' } };
    },
  });
  const child = spawn(process.execPath, ['--import', 'tsx', CHILD], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', CREDPROXY_SOCKET: proxy.address, CREDPROXY_TOKEN: 'feedface' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  let printedAt = 0;
  child.stdout.on('data', (b: Buffer) => {
    stdout += b.toString();
    printedAt = Date.now();
  });
  child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
  // Default idle timeout is 5 minutes: an exit within seconds proves the idle client holds nothing.
  const killer = setTimeout(() => child.kill('SIGKILL'), 20_000);
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.once('exit', (c, s) => resolve([c, s])));
  const exitedAt = Date.now();
  clearTimeout(killer);

  expect(signal, stderr).toBeNull();
  expect(code, stderr).toBe(0);
  expect(stdout).toBe('{"key":"value-for-child"}\n');
  expect(exitedAt - printedAt).toBeLessThan(2000);
  const conn = proxy.connections[0]!;
  await conn.closed;
  // The child never closed its connection itself; it ended because the process did.
  expect(conn.requests.map((f) => f.op)).toEqual(['get_api_key']);
  expect(proxy.connections).toHaveLength(1);
});
