import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeHostEnv, runCli, startServe, type HostEnv, type ServeProcess } from '../support/cli.js';
import { frameOf, RawClient } from '../support/raw-client.js';

/**
 * Issue 11 §2 against a real `serve`: a second connection floods while a
 * legitimate one is served. Every request that was served has its audit
 * line (nothing dropped), refused ones are aggregated per connection and
 * second, the flooder is slowed and then cut off, and the file rotates at
 * its cap.
 */
type Line = Record<string, unknown>;

function auditLines(home: string): Line[] {
  const dir = join(home, 'state');
  const files = readdirSync(dir).filter((f) => f.startsWith('audit.jsonl'));
  return files.flatMap((f) =>
    readFileSync(join(dir, f), 'utf8')
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as Line),
  );
}

function writeConfig(home: string, audit: object): void {
  mkdirSync(join(home, 'config'), { recursive: true });
  writeFileSync(join(home, 'config', 'config.json'), JSON.stringify({ audit }));
}

/** `n` get_api_key frames in one buffer: what a flooding sandbox writes. */
function burst(n: number, name: string, tag: string): Buffer {
  return Buffer.concat(Array.from({ length: n }, (_, i) => frameOf({ v: 1, id: `${tag}-${i}`, op: 'get_api_key', payload: { name } })));
}

describe('audit log under a flood (real serve)', () => {
  let host: HostEnv;
  const serves: ServeProcess[] = [];
  const raws: RawClient[] = [];

  async function connect(s: ServeProcess): Promise<RawClient> {
    const c = await RawClient.connect(s.socket);
    raws.push(c);
    expect(await c.handshake({ minVersion: 1, maxVersion: 1, capabilityToken: s.token })).toMatchObject({ ok: true });
    return c;
  }

  beforeAll(async () => {
    host = makeHostEnv({ CREDPROXY_LOG_LEVEL: 'info' });
    const r = await runCli(['key', 'set', 'k'], { env: host.env, input: 'sk-audit-value' });
    expect(r.code, r.stderr).toBe(0);
  });
  afterAll(async () => {
    for (const c of raws) c.close();
    for (const s of serves) await s.stop();
    host?.cleanup();
  });

  it('every served request has its line while another connection floods; refusals are aggregated; the flooder is cut off', async () => {
    writeConfig(host.home, { maxFileBytes: 4 * 1024 * 1024, keepFiles: 3 });
    const s = await startServe(['--allow-key', 'k'], host.env);
    serves.push(s);
    const legit = await connect(s);
    const flood = await connect(s);
    // The flooder writes thousands of requests at a time, far past the 60/s limit, until it is cut off.
    let batches = 0;
    const flooding = (async () => {
      const deadline = Date.now() + 30_000;
      while (!flood.isClosed && Date.now() < deadline) {
        flood.sendRaw(burst(2000, batches % 2 === 0 ? 'k' : 'not-allowed', `f${batches}`));
        batches++;
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    // Meanwhile the legitimate client asks 40 times, paced under the limit.
    for (let i = 0; i < 40; i++) {
      expect(await legit.request('get_api_key', { name: 'k' }, `legit-${i}`)).toMatchObject({ ok: true, data: { key: 'sk-audit-value' } });
      await new Promise((r) => setTimeout(r, 20));
    }
    await flooding;
    expect(flood.isClosed).toBe(true);
    await s.stop();

    const lines = auditLines(host.home);
    const served = (c: RawClient): number => c.frames.filter((f) => typeof f.id === 'string' && f.ok === true).length;
    const okLines = (conn: number): number => lines.filter((l) => l.conn === conn && l.op === 'get_api_key' && l.result === 'OK').length;
    // The legitimate client connected first (connection 1), the flooder second.
    expect(lines.filter((l) => l.op === 'handshake' && l.result === 'OK').map((l) => l.conn)).toEqual([1, 2]);
    // Served == audited, for both connections: nothing was dropped.
    expect(okLines(1)).toBe(40);
    expect(served(legit)).toBe(40);
    expect(okLines(2)).toBe(served(flood));
    expect(served(flood)).toBeGreaterThan(0);
    // Refused requests (rate limit, policy) are counted, one line per connection and second.
    const refusedAnswers = flood.frames.filter((f) => f.ok === false).length;
    expect(refusedAnswers).toBeGreaterThan(1000);
    const refusedLines = lines.filter((l) => l.conn === 2 && l.op === 'refused');
    const counted = refusedLines.reduce((n, l) => n + Object.values(l.refused as Record<string, number>).reduce((a, b) => a + b, 0), 0);
    expect(counted).toBe(refusedAnswers);
    expect(refusedLines.length).toBeLessThan(40);
    expect(lines.filter((l) => l.conn === 2).length).toBeLessThan(served(flood) + 50);
    // Slowed, then disconnected, and that is on record.
    expect(lines).toContainEqual(expect.objectContaining({ conn: 2, op: 'disconnect', result: 'RATE_LIMITED' }));
    expect(s.stderr()).toContain('disconnected a client that kept exceeding the rate limit');
    // Bytes on disk per refused request: a small fraction of a line each.
    const bytes = readdirSync(join(host.home, 'state')).filter((f) => f.startsWith('audit.jsonl')).reduce((n, f) => n + statSync(join(host.home, 'state', f)).size, 0);
    expect(bytes / refusedAnswers).toBeLessThan(20);
  }, 60_000);

  it('rotates at the configured cap and keeps only the configured number of files', async () => {
    // A home of its own: the flood above left large files behind.
    host.cleanup();
    host = makeHostEnv({ CREDPROXY_LOG_LEVEL: 'info' });
    expect((await runCli(['key', 'set', 'k'], { env: host.env, input: 'sk-audit-value' })).code).toBe(0);
    writeConfig(host.home, { maxFileBytes: 8192, keepFiles: 2 });
    const s = await startServe(['--allow-key', 'k'], host.env);
    serves.push(s);
    const c = await connect(s);
    for (let i = 0; i < 16; i++) {
      // 16 at once (the in-flight limit), well under 60 a second: each served and audited.
      c.sendRaw(burst(16, 'k', `rot${i}`));
      await c.waitUntil(() => c.frames.filter((f) => typeof f.id === 'string' && f.id.startsWith(`rot${i}-`)).length === 16, 10_000, `batch ${i}`);
      await new Promise((r) => setTimeout(r, 600));
    }
    expect(c.frames.filter((f) => f.ok === false)).toEqual([]);
    await s.stop();
    const dir = join(host.home, 'state');
    const files = readdirSync(dir).filter((f) => f.startsWith('audit.jsonl')).sort();
    expect(files).toEqual(['audit.jsonl', 'audit.jsonl.1', 'audit.jsonl.2']);
    for (const f of files) expect(statSync(join(dir, f)).size).toBeLessThanOrEqual(8192);
    expect(existsSync(join(dir, 'audit.jsonl.3'))).toBe(false);
    // The newest lines survive: the last batch is complete in what is kept.
    const last = auditLines(host.home).filter((l) => l.op === 'get_api_key' && l.result === 'OK' && l.conn === 1);
    expect(last.length).toBeGreaterThanOrEqual(16);
    expect(last.length).toBeLessThan(16 * 16);
  }, 60_000);
});
