import { execFile, spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { isCredproxyError } from '../../src/errors.js';
import { ProxyServer, type ProxyServerOptions } from '../../src/server/server.js';
import { Policy } from '../../src/server/policy.js';
import { MemoryKeyStore, MemoryTokenStore } from '../support/memory-stores.js';
import { RawClient } from '../support/raw-client.js';
import { SimpleCredentials } from '../support/simple-credentials.js';
import { CAPABILITY, captureLogs, startHarness, tempDir, until, type Harness } from './helpers.js';

const here = dirname(fileURLToPath(import.meta.url));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const cleanups: Array<() => Promise<void> | void> = [];
let h: Harness | null = null;
afterEach(async () => {
  await h?.close();
  h = null;
  for (const c of cleanups.splice(0)) await c();
});

function bareServer(over: Partial<ProxyServerOptions>): ProxyServer {
  const tokens = new MemoryTokenStore();
  const s = new ProxyServer({
    tokens,
    keys: new MemoryKeyStore(),
    credentials: new SimpleCredentials(tokens),
    policy: Policy.from({ allow: [], keys: [], allowAll: true, readOnly: false, allowWrite: true }),
    logger: captureLogs().logger,
    ...over,
  });
  cleanups.push(() => s.stop());
  return s;
}

function scratch(): string {
  const d = tempDir();
  cleanups.push(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

async function expectStartError(server: ProxyServer, pattern: RegExp): Promise<void> {
  const err = await server.start().then(
    () => null,
    (e: unknown) => e,
  );
  expect(isCredproxyError(err)).toBe(true);
  expect((err as Error).message).toMatch(pattern);
}

/** Run node with a script; resolves with its stdout. */
function runNode(args: string[], options: { uid?: number; gid?: number } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, args, { cwd: '/', timeout: 10_000, ...options }, (err, stdout) => (err ? reject(err) : resolve(stdout)));
  });
}

describe('socket file', () => {
  it('is named credproxy-<pid>-<16 hex>.sock in a 0700 directory, with mode 0600, and removed on stop', async () => {
    h = await startHarness();
    const path = h.server.socketPath;
    expect(basename(path)).toMatch(new RegExp(`^credproxy-${process.pid}-[0-9a-f]{16}\\.sock$`));
    expect(statSync(dirname(path)).mode & 0o777).toBe(0o700);
    const st = statSync(path);
    expect(st.isSocket()).toBe(true);
    expect(st.mode & 0o777).toBe(0o600);
    await h.server.stop();
    expect(existsSync(path)).toBe(false);
    await expect(RawClient.connect(path)).rejects.toThrow();
    await h.server.stop(); // idempotent
  });

  it('two servers in one directory get different sockets', async () => {
    const dir = scratch();
    const a = bareServer({ socketDir: dir });
    const b = bareServer({ socketDir: dir });
    await a.start();
    await b.start();
    expect(a.socketPath).not.toBe(b.socketPath);
  });

  it('removes a stale socket left by a killed server before listening', async () => {
    const dir = scratch();
    const path = join(dir, 'stale.sock');
    // A server that dies by SIGKILL never unlinks its socket.
    await runNode(['-e', `require('net').createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, 'SIGKILL'))`]).catch(
      () => undefined,
    );
    expect(statSync(path).isSocket()).toBe(true);
    const s = bareServer({ socketPath: path, capabilityToken: CAPABILITY });
    await s.start();
    const c = await RawClient.connect(path);
    cleanups.push(() => c.close());
    expect(await c.handshake({ minVersion: 1, maxVersion: 1, capabilityToken: CAPABILITY })).toMatchObject({ ok: true });
  });

  it('refuses a socket someone still listens on, and a file that is not a socket', async () => {
    h = await startHarness();
    await expectStartError(bareServer({ socketPath: h.server.socketPath }), /another server is listening/);
    expect(await (await h.client()).request('list_providers')).toMatchObject({ ok: true });
    const dir = scratch();
    const file = join(dir, 'plain.sock');
    writeFileSync(file, 'keep me');
    await expectStartError(bareServer({ socketPath: file }), /not a socket/);
    expect(readFileSync(file, 'utf8')).toBe('keep me');
  });

  it('refuses a path longer than the platform allows, naming --socket-dir, before creating anything', async () => {
    const dir = scratch();
    const longDir = join(dir, 'd'.repeat(90));
    await expectStartError(bareServer({ socketDir: longDir }), /longer than the 107 bytes.*shorter --socket-dir/);
    expect(existsSync(longDir)).toBe(false);
  });

  it('accepts a path of exactly 107 bytes', async () => {
    const dir = scratch();
    const name = 'x'.repeat(107 - dir.length - 1);
    const s = bareServer({ socketPath: join(dir, name) });
    await s.start();
    expect(Buffer.byteLength(s.socketPath)).toBe(107);
  });

  it('refuses an existing socket directory others can enter, without changing it', async () => {
    const dir = scratch();
    const open = join(dir, 'open');
    mkdirSync(open, { mode: 0o755 });
    chmodSync(open, 0o755);
    await expectStartError(bareServer({ socketDir: open }), /must be 0700.*--socket-dir/);
    expect(statSync(open).mode & 0o777).toBe(0o755);
  });
});

describe('shutdown', () => {
  it('waits for in-flight work, answers it, then closes', async () => {
    h = await startHarness();
    await h.keys.inner.saveKey('k', 'v');
    h.keys.gate.hold('k');
    const c = await h.client();
    c.fire('get_api_key', { name: 'k' }, 'inflight');
    await until(() => h!.keys.gate.entered('k') === 1);
    let stopped = false;
    const stopping = h.server.stop().then(() => (stopped = true));
    await sleep(100);
    expect(stopped).toBe(false);
    // No new connections while stopping.
    await expect(RawClient.connect(h.server.socketPath)).rejects.toThrow();
    h.keys.gate.release('k');
    expect(await c.answerFor('inflight')).toMatchObject({ ok: true, data: { key: 'v' } });
    await stopping;
    await c.closed;
    expect(existsSync(h.server.socketPath)).toBe(false);
  });

  it('gives stuck work only the grace period', async () => {
    h = await startHarness({ timeouts: { shutdownGraceMs: 200 } });
    await h.keys.inner.saveKey('k', 'v');
    h.keys.gate.hold('k');
    const c = await h.client();
    c.fire('get_api_key', { name: 'k' }, 'stuck');
    await until(() => h!.keys.gate.entered('k') === 1);
    const t0 = Date.now();
    await h.server.stop();
    expect(Date.now() - t0).toBeGreaterThanOrEqual(180);
    expect(Date.now() - t0).toBeLessThan(2000);
    await c.closed;
    expect(c.frames.some((f) => f.id === 'stuck')).toBe(false);
  });

  it('SIGTERM and SIGINT stop the server, remove the socket and exit with 128+signal', async () => {
    for (const [signal, code] of [
      ['SIGTERM', 143],
      ['SIGINT', 130],
    ] as const) {
      const dir = scratch();
      const child = spawn(process.execPath, ['--import', 'tsx', join(here, 'fixtures', 'serve-child.ts'), dir], {
        cwd: join(here, '..', '..'),
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      await until(() => out.includes('\n'), 15_000, 'the child server');
      const { socketPath } = JSON.parse(out) as { socketPath: string };
      const c = await RawClient.connect(socketPath);
      expect(await c.handshake()).toMatchObject({ ok: true });
      const exited = new Promise<number | null>((resolve) => child.once('exit', (status) => resolve(status)));
      child.kill(signal);
      expect(await exited).toBe(code);
      expect(existsSync(socketPath)).toBe(false);
      await c.closed;
    }
  }, 30_000);
});

/** Open the filesystem path to the socket so that only the peer check stands in the way. */
function openUp(harness: Harness): void {
  chmodSync(harness.dir, 0o711);
  chmodSync(dirname(harness.server.socketPath), 0o711);
  chmodSync(harness.server.socketPath, 0o666);
}

describe('peer check', () => {
  it('is active on Linux and records the peer pid and uid in the audit', async () => {
    h = await startHarness();
    expect(h.server.peerCheckActive).toBe(true);
    const out = JSON.parse(await runNode([join(here, 'fixtures', 'peer-child.cjs'), h.server.socketPath, CAPABILITY])) as Record<string, unknown>;
    expect(out).toMatchObject({ answered: true });
    expect(out.pid).not.toBe(process.pid);
    await h.server.stop();
    const lines = await h.auditLines();
    expect(lines).toContainEqual(expect.objectContaining({ op: 'handshake', result: 'OK', peerPid: out.pid, peerUid: process.getuid!() }));
  });

  it('refuses a peer running as another uid without answering it', async () => {
    h = await startHarness();
    openUp(h);
    const out = JSON.parse(
      await runNode([join(here, 'fixtures', 'peer-child.cjs'), h.server.socketPath, CAPABILITY], { uid: 65534, gid: 65534 }),
    ) as Record<string, unknown>;
    expect(out).toMatchObject({ uid: 65534, answered: false, bytes: 0 });
    await h.server.stop();
    expect(await h.auditLines()).toContainEqual(expect.objectContaining({ op: 'connect', result: 'UNAUTHORIZED', peerUid: 65534, peerPid: out.pid }));
    expect(h.logs.text()).toContain('refused a peer running as another user');
  });

  it('with peerCheck off the same foreign peer gets through (the refusal above is the peer check)', async () => {
    h = await startHarness({ peerCheck: 'off' });
    expect(h.server.peerCheckActive).toBe(false);
    openUp(h);
    const out = JSON.parse(
      await runNode([join(here, 'fixtures', 'peer-child.cjs'), h.server.socketPath, CAPABILITY], { uid: 65534, gid: 65534 }),
    ) as Record<string, unknown>;
    expect(out).toMatchObject({ answered: true });
    await h.server.stop();
    expect(await h.auditLines()).toContainEqual(expect.objectContaining({ op: 'handshake', result: 'OK', peerPid: null, peerUid: null }));
  });
});

describe('audit', () => {
  it('writes one line per request with names and codes, never a secret, to a 0600 file', async () => {
    h = await startHarness();
    const secrets = ['RT-SECRET-value', 'AT-SECRET-value', 'SK-SECRET-value', 'FORGED-RT-value', CAPABILITY, '0123456789abcdef0123456789abcdef', 'PASTED-CODE'];
    await h.tokens.inner.saveToken('anthropic', { access_token: 'AT-SECRET-value', expiry: 2e9, refresh_token: 'RT-SECRET-value' }, 'work');
    await h.keys.inner.saveKey('openai', 'SK-SECRET-value');
    const c = await h.client();
    await c.request('get_token', { provider: 'anthropic', bucket: 'work' });
    await c.request('save_token', { provider: 'anthropic', bucket: 'work', token: { access_token: 'AT-SECRET-value', expiry: 2e9, refresh_token: 'FORGED-RT-value' } });
    await c.request('get_api_key', { name: 'openai' });
    await c.request('get_api_key', { name: 'missing' });
    await c.request('oauth_exchange', { session_id: '0123456789abcdef0123456789abcdef', code: 'PASTED-CODE' });
    await c.request('get_token', { provider: 'RT-SECRET-value is not a name!' });
    c.send({ v: 1, id: 'x', op: 'SK-SECRET-value', payload: {} });
    await c.answerFor('x');
    const bad = await h.raw();
    await bad.handshake({ minVersion: 1, maxVersion: 1, capabilityToken: 'AT-SECRET-value-guess' });
    await h.server.stop();
    const text = readFileSync(h.auditPath, 'utf8');
    for (const s of [...secrets, 'AT-SECRET-value-guess']) expect(text).not.toContain(s);
    expect(h.logs.text()).not.toMatch(/SECRET|PASTED|0123456789abcdef0123/);
    expect(statSync(h.auditPath).mode & 0o777).toBe(0o600);
    const lines = await h.auditLines();
    for (const l of lines) {
      expect(Object.keys(l).sort()).toEqual(
        expect.arrayContaining(['conn', 'durationMs', 'op', 'peerPid', 'peerUid', 'result', 'time']),
      );
      expect(new Date(l.time as string).toISOString()).toBe(l.time);
      expect(typeof l.durationMs).toBe('number');
    }
    const summary = lines.map((l) => [l.op, l.provider ?? l.key ?? null, l.bucket ?? null, l.result]);
    expect(summary).toEqual([
      ['handshake', null, null, 'OK'],
      ['get_token', 'anthropic', 'work', 'OK'],
      ['save_token', 'anthropic', 'work', 'OK'],
      ['get_api_key', 'openai', null, 'OK'],
      ['get_api_key', 'missing', null, 'NOT_FOUND'],
      ['oauth_exchange', null, null, 'INTERNAL_ERROR'],
      // Refused before any store: one line per connection and second, with counts.
      ['refused', null, null, 'REFUSED'],
      ['refused', null, null, 'REFUSED'],
    ]);
    expect(lines[0]).toMatchObject({ conn: 1, peerPid: process.pid, peerUid: process.getuid!() });
    expect(lines[6]).toMatchObject({ conn: 1, refused: { INVALID_REQUEST: 2 }, ops: { get_token: 1, unknown: 1 } });
    // Failed handshakes are counted server-wide (connection 0).
    expect(lines[7]).toMatchObject({ conn: 0, refused: { UNAUTHORIZED: 1 }, ops: { handshake: 1 } });
  });
});

describe('start and stop', () => {
  it('a stop racing start waits for it and leaves nothing behind; a second start is refused', async () => {
    const dir = scratch();
    const s = bareServer({ socketDir: dir });
    const started = s.start();
    await s.stop();
    await started;
    expect(existsSync(s.socketPath)).toBe(false);
    await expect(RawClient.connect(s.socketPath)).rejects.toThrow();
    await expect(s.start()).rejects.toThrow(/only once/);
  });
});

describe('options', () => {
  it('needs exactly one of socketDir and socketPath', () => {
    expect(() => bareServer({})).toThrow(/exactly one/);
    expect(() => bareServer({ socketDir: '/tmp/a', socketPath: '/tmp/a/b.sock' })).toThrow(/exactly one/);
  });

  it('rejects a weak capability token and bad limits', () => {
    expect(() => bareServer({ socketDir: '/tmp/x', capabilityToken: 'short' })).toThrow(/capability token/);
    expect(() => bareServer({ socketDir: '/tmp/x', limits: { maxInFlight: 0 } })).toThrow(/maxInFlight/);
    expect(() => bareServer({ socketDir: '/tmp/x', timeouts: { frameMs: -1 } })).toThrow(/frameMs/);
  });
});
