import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import net, { type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.js';
import { EGRESS_AUDIT_FILE, startEgress } from '../../src/egress/index.js';
import { parseHostRules } from '../../src/egress/hosts.js';

let upstream: net.Server;
let port = 0;
let dir: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'cpe-start-'));
  upstream = net.createServer((s) => s.end('pong'));
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.2', r));
  port = (upstream.address() as AddressInfo).port;
});

afterAll(async () => {
  await new Promise((r) => upstream.close(r));
  rmSync(dir, { recursive: true, force: true });
});

function tunnel(proxyPath: string): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect(proxyPath);
    let text = '';
    s.on('data', (d: Buffer) => (text += d.toString()));
    s.on('close', () => resolve(text));
    s.on('error', () => undefined);
    s.write(`CONNECT 127.0.0.2:${port} HTTP/1.1\r\n\r\n`);
  });
}

describe('startEgress', () => {
  it('listens on a Unix socket, writes egress-audit.jsonl (0600) and rotates it at the configured cap', async () => {
    const path = join(dir, 'egress.sock');
    const egress = await startEgress({ rules: parseHostRules([`127.0.0.2:${port}`]), logger: createLogger({ level: 'silent' }), stateDir: dir, listen: [{ path }], rotation: { maxFileBytes: 4096, keepFiles: 2 } });
    expect(egress.addresses).toEqual([path]);
    for (let i = 0; i < 60; i++) expect(await tunnel(path)).toMatch(/^HTTP\/1\.1 200 [^]*pong$/);
    await egress.stop();
    const file = join(dir, EGRESS_AUDIT_FILE);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(existsSync(`${file}.1`)).toBe(true);
    expect(statSync(file).size).toBeLessThanOrEqual(4096);
    const lines = [file, `${file}.1`, `${file}.2`].filter(existsSync).flatMap((f) => readFileSync(f, 'utf8').trim().split('\n'));
    expect(lines.every((l) => JSON.parse(l).type === 'connect')).toBe(true);
    expect(existsSync(path)).toBe(false);
  });
});
