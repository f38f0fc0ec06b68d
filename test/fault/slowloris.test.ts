import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ProxySocketClient } from '../../src/client/socket-client.js';
import { makeHostEnv, runCli, startServe, type HostEnv, type ServeProcess } from '../support/cli.js';

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

describe('fault: slowloris and absurd length prefixes against a real serve process', () => {
  let host: HostEnv;
  let serve: ServeProcess;
  beforeAll(async () => {
    host = makeHostEnv();
    expect((await runCli(['key', 'set', 'k'], { env: host.env, input: 'v' })).code).toBe(0);
    serve = await startServe(['--allow-key', 'k'], host.env);
  });
  afterAll(async () => {
    await serve?.stop();
    host?.cleanup();
  });

  it('closes 500 header-only connections at about 5 s while a real client keeps its latency', async () => {
    const client = new ProxySocketClient({ socket: serve.socket, capabilityToken: serve.token });
    const baseline: number[] = [];
    for (let i = 0; i < 20; i++) {
      const t0 = performance.now();
      await client.request('get_api_key', { name: 'k' });
      baseline.push(performance.now() - t0);
      await new Promise((r) => setTimeout(r, 20));
    }
    const started = performance.now();
    const closedAt: number[] = [];
    const sockets: Socket[] = [];
    await Promise.all(
      Array.from({ length: 500 }, () =>
        new Promise<void>((resolve, reject) => {
          const s = connect(serve.socket, () => {
            s.write(Buffer.from([0, 0, 0, 100])); // a header announcing 100 bytes that never come
            resolve();
          });
          s.on('error', () => undefined);
          s.once('close', () => closedAt.push(performance.now() - started));
          s.once('error', reject);
          sockets.push(s);
        }),
      ),
    );
    const during: number[] = [];
    while (performance.now() - started < 4000) {
      const t0 = performance.now();
      expect((await client.request('get_api_key', { name: 'k' })).key).toBe('v');
      during.push(performance.now() - t0);
      await new Promise((r) => setTimeout(r, 20));
    }
    const deadline = performance.now() + 5000;
    while (closedAt.length < 500 && performance.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(closedAt.length).toBe(500);
    closedAt.sort((a, b) => a - b);
    expect(closedAt[0]!).toBeGreaterThan(4500); // the partial-frame timer, not an early cut
    expect(closedAt[499]!).toBeLessThan(7000);
    baseline.sort((a, b) => a - b);
    during.sort((a, b) => a - b);
    // Same client, same server, same run: the median stays within a small multiple (noisy shared VM).
    expect(percentile(during, 50)).toBeLessThan(Math.max(5 * percentile(baseline, 50), 10));
    await client.close();
    for (const s of sockets) s.destroy();
  }, 30_000);

  it('closes a connection announcing a 4 GiB frame without the server growing', async () => {
    const rss = (): number => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${serve.proc.pid}/status`, 'utf8'))![1]);
    const before = rss();
    for (let i = 0; i < 20; i++) {
      await new Promise<void>((resolve) => {
        const s = connect(serve.socket, () => s.write(Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3])));
        s.on('error', () => undefined);
        s.once('close', () => resolve());
      });
    }
    expect(rss() - before).toBeLessThan(10 * 1024); // KiB: no 4 GiB (or even 64 MiB) buffer was ever allocated
    const client = new ProxySocketClient({ socket: serve.socket, capabilityToken: serve.token });
    expect((await client.request('get_api_key', { name: 'k' })).key).toBe('v');
    await client.close();
  });
});
