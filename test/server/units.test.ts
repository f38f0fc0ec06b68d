import { sourceKey, TcpThrottle } from '../../src/server/tcp-throttle.js';
import { createServer, connect, type Socket } from 'node:net';
import { chmodSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { AuditLog, type AuditEntry } from '../../src/server/audit.js';
import { CapabilityCheck, generateCapabilityToken } from '../../src/server/capability.js';
import { ConnectionLimiter, resolveLimits } from '../../src/server/limits.js';
import { isPeerAllowed, loadPeerCredReader } from '../../src/server/peercred.js';
import { Policy } from '../../src/server/policy.js';
import { SecondTally } from '../../src/server/refusals.js';
import { assertSocketPathLength, maxSocketPathBytes, makeSocketPath } from '../../src/server/socket-path.js';
import { captureLogs, tempDir } from './helpers.js';

const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

describe('Policy', () => {
  const policy = (allow: string[], keys: string[] = [], allowAll = false, readOnly = false) => Policy.from({ allow, keys, allowAll, readOnly });

  it('PROVIDER means its default bucket, PROVIDER:BUCKET that bucket, PROVIDER:* every bucket', () => {
    const p = policy(['a', 'b:x', 'c:*']);
    expect(p.allowsToken('a')).toBe(true);
    expect(p.allowsToken('a', 'default')).toBe(true);
    expect(p.allowsToken('a', 'x')).toBe(false);
    expect(p.allowsToken('b', 'x')).toBe(true);
    expect(p.allowsToken('b')).toBe(false);
    expect(p.allowsToken('c', 'anything')).toBe(true);
    expect(p.allowsToken('d')).toBe(false);
    expect(p.allowsProvider('b')).toBe(true);
    expect(p.allowsProvider('d')).toBe(false);
    expect(p.filterProviders(['d', 'a', 'c'])).toEqual(['a', 'c']);
    expect(p.filterBuckets('b', ['default', 'x', 'y'])).toEqual(['x']);
  });

  it('keys are allowed by exact name; allowAll allows everything', () => {
    const p = policy([], ['openai']);
    expect(p.allowsKey('openai')).toBe(true);
    expect(p.allowsKey('openai2')).toBe(false);
    expect(p.filterKeys(['x', 'openai'])).toEqual(['openai']);
    const all = policy([], [], true);
    expect(all.allowsToken('any', 'thing')).toBe(true);
    expect(all.allowsKey('k')).toBe(true);
    expect(all.isEmpty).toBe(false);
  });

  it('nothing is served without a rule', () => {
    const p = policy([]);
    expect(p.isEmpty).toBe(true);
    fc.assert(
      fc.property(fc.stringMatching(/^[a-z0-9]{1,10}$/), fc.stringMatching(/^[a-z0-9]{1,10}$/), (a, b) => {
        expect(p.allowsToken(a, b)).toBe(false);
        expect(p.allowsKey(a)).toBe(false);
        expect(p.allowsProvider(a)).toBe(false);
      }),
    );
  });

  it('read-only forbids writes and logins only', () => {
    expect(policy(['a'], [], false, true).allowsWrite).toBe(false);
    expect(policy(['a'], [], false, true).allowsLogin).toBe(false);
    expect(policy(['a'], [], false, true).allowsToken('a')).toBe(true);
  });

  it('token writes are off unless allowed, logins on unless turned off, read-only wins over both', () => {
    expect(policy(['a']).allowsWrite).toBe(false);
    expect(policy(['a']).allowsLogin).toBe(true);
    expect(policy(['a']).readOnly).toBe(false);
    const writes = Policy.from({ allow: ['a'], keys: [], allowAll: false, readOnly: false, allowWrite: true });
    expect(writes.allowsWrite).toBe(true);
    const noLogin = Policy.from({ allow: ['a'], keys: [], allowAll: false, readOnly: false, login: false });
    expect(noLogin.allowsLogin).toBe(false);
    expect(noLogin.readOnly).toBe(true);
    const ro = Policy.from({ allow: ['a'], keys: [], allowAll: false, readOnly: true, allowWrite: true, login: true });
    expect([ro.allowsWrite, ro.allowsLogin]).toEqual([false, false]);
  });

  it('names the bad rule', () => {
    expect(() => policy(['ok', 'bad provider'])).toThrow(/invalid --allow rule "bad provider"/);
    expect(() => policy(['p:bad/bucket'])).toThrow(/"p:bad\/bucket".*bucket/);
    expect(() => policy(['*'])).toThrow(/--allow-all/);
    expect(() => policy([':x'])).toThrow(/":x"/);
    expect(() => policy([], ['a b'])).toThrow(/invalid --allow-key rule "a b"/);
    expect(() => policy([], ['x@y'])).toThrow(/--allow-key/);
    expect(() => Policy.from({ allow: 'a' as unknown as string[], keys: [], allowAll: false, readOnly: false })).toThrow(/allow must be a list/);
  });

  it('describes itself by names only', () => {
    expect(policy(['a', 'b:*'], ['k'], false, true).describe()).toEqual({ allowAll: false, readOnly: true, write: false, login: false, allow: ['a:default', 'b:*'], keys: ['k'] });
  });
});

describe('ConnectionLimiter', () => {
  it('costs memory for the requests made, not for the limit (a benchmark raises it to 1,000,000)', () => {
    const before = process.memoryUsage().heapUsed;
    const limiters = Array.from({ length: 1000 }, () => new ConnectionLimiter(resolveLimits({ requestsPerWindow: 1_000_000 }), () => 0));
    for (const l of limiters) expect(l.admit(false)).toEqual({ ok: true });
    // Preallocated, these would take 8 GB.
    expect(process.memoryUsage().heapUsed - before).toBeLessThan(64 * 1024 * 1024);
  });

  it('keeps an exact rolling window over many windows', () => {
    let now = 0;
    const l = new ConnectionLimiter(resolveLimits({ requestsPerWindow: 100, windowMs: 1000, maxInFlight: 1 }), () => now);
    for (let second = 0; second < 50; second++) {
      let admitted = 0;
      for (let i = 0; i < 150; i++) {
        now = second * 1000 + i * 5;
        if (l.admit(false).ok) admitted++;
      }
      expect(admitted).toBe(100);
    }
  });

  it('admits N per rolling window and counts only admitted requests', () => {
    let now = 0;
    const l = new ConnectionLimiter(resolveLimits({ requestsPerWindow: 3, windowMs: 1000, maxInFlight: 100 }), () => now);
    for (let i = 0; i < 3; i++) expect(l.admit(false)).toEqual({ ok: true });
    now = 500;
    expect(l.admit(false)).toEqual({ ok: false, retryAfter: 1 });
    expect(l.admit(false)).toEqual({ ok: false, retryAfter: 1 });
    now = 1000; // the first three leave the window; the refusals were never in it
    for (let i = 0; i < 3; i++) expect(l.admit(false)).toEqual({ ok: true });
    expect(l.admit(false).ok).toBe(false);
  });

  it('is a rolling window, not fixed buckets', () => {
    let now = 0;
    const l = new ConnectionLimiter(resolveLimits({ requestsPerWindow: 2, windowMs: 1000, maxInFlight: 100 }), () => now);
    l.admit(false); // t=0
    now = 900;
    l.admit(false); // t=900
    now = 1001;
    expect(l.admit(false).ok).toBe(true); // t=0 left
    expect(l.admit(false).ok).toBe(false); // t=900 still inside
    now = 1901;
    expect(l.admit(false).ok).toBe(true);
  });

  it('caps slots in flight; release frees one; a refused request takes no slot and no window place', () => {
    let now = 0;
    const l = new ConnectionLimiter(resolveLimits({ requestsPerWindow: 10, windowMs: 1000, maxInFlight: 2 }), () => now);
    expect(l.admit(true).ok).toBe(true);
    expect(l.admit(true).ok).toBe(true);
    expect(l.admit(true)).toEqual({ ok: false, retryAfter: 1 });
    expect(l.admit(false).ok).toBe(true); // cancel-like: no slot needed
    expect(l.inFlight).toBe(2);
    l.release();
    expect(l.admit(true).ok).toBe(true);
    // 4 admitted so far; 6 more fit in the window.
    for (let i = 0; i < 6; i++) expect(l.admit(false).ok).toBe(true);
    expect(l.admit(false).ok).toBe(false);
  });

  it('holds for any sequence: never more than N admitted inside any window', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 400 }), { minLength: 1, maxLength: 200 }), (gaps) => {
        let now = 0;
        const l = new ConnectionLimiter(resolveLimits({ requestsPerWindow: 5, windowMs: 1000, maxInFlight: 1000 }), () => now);
        const admitted: number[] = [];
        for (const g of gaps) {
          now += g;
          if (l.admit(false).ok) admitted.push(now);
        }
        for (let i = 5; i < admitted.length; i++) expect(admitted[i]! - admitted[i - 5]!).toBeGreaterThan(1000 - 1e-9);
      }),
    );
  });

  it('rejects nonsense limits', () => {
    expect(() => resolveLimits({ requestsPerWindow: 0 })).toThrow();
    expect(() => resolveLimits({ windowMs: 1.5 })).toThrow();
    expect(resolveLimits()).toEqual({ requestsPerWindow: 60, windowMs: 1000, maxInFlight: 16 });
  });
});

describe('capability token', () => {
  it('is 32 random bytes in hex', () => {
    const a = generateCapabilityToken();
    expect(a).toMatch(/^[0-9a-f]{64}$/);
    expect(generateCapabilityToken()).not.toBe(a);
  });

  it('matches only the exact token and keeps no copy of it', () => {
    const token = generateCapabilityToken();
    const check = new CapabilityCheck(token);
    expect(check.matches(token)).toBe(true);
    expect(check.matches(token.slice(0, -1))).toBe(false);
    expect(check.matches(`${token}0`)).toBe(false);
    expect(check.matches(token.toUpperCase())).toBe(false);
    expect(check.matches(undefined)).toBe(false);
    expect(check.matches(42)).toBe(false);
    expect(check.matches('x'.repeat(5000))).toBe(false);
    const dump = JSON.stringify(check) + Object.values(check).map(String).join('');
    expect(dump).not.toContain(token);
  });

  it('refuses a token too short to be a secret', () => {
    expect(() => new CapabilityCheck('abc')).toThrow(/capability token/);
  });
});

describe('peer credentials', () => {
  it('reads the uid and pid of a real peer over a Unix socket', async () => {
    const loaded = await loadPeerCredReader();
    expect(loaded.ok).toBe(true);
    if (!loaded.ok) return;
    const dir = tempDir();
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 's.sock');
    const accepted = new Promise<Socket>((resolve) => {
      const server = createServer(resolve);
      server.listen(path);
      cleanups.push(() => server.close());
    });
    const client = connect(path);
    cleanups.push(() => client.destroy());
    const serverSide = await accepted;
    expect(loaded.reader.read(serverSide)).toEqual({ pid: process.pid, uid: process.getuid!(), gid: process.getgid!() });
    serverSide.destroy();
    expect(() => loaded.reader.read(serverSide)).toThrow();
  });

  it('explains why it is unavailable elsewhere', async () => {
    expect(await loadPeerCredReader('darwin')).toEqual({ ok: false, reason: 'SO_PEERCRED is not available on darwin' });
  });

  it('allows our own uid, and root only when asked', () => {
    expect(isPeerAllowed({ pid: 1, uid: 1000, gid: 1000 }, 1000, false)).toBe(true);
    expect(isPeerAllowed({ pid: 1, uid: 1001, gid: 1000 }, 1000, false)).toBe(false);
    expect(isPeerAllowed({ pid: 1, uid: 0, gid: 0 }, 1000, false)).toBe(false);
    expect(isPeerAllowed({ pid: 1, uid: 0, gid: 0 }, 1000, true)).toBe(true);
    expect(isPeerAllowed({ pid: 1, uid: 1001, gid: 0 }, 1000, true)).toBe(false);
  });
});

describe('socket path rules', () => {
  it('limits are 107 bytes on Linux and 103 on macOS', () => {
    expect(maxSocketPathBytes('linux')).toBe(107);
    expect(maxSocketPathBytes('darwin')).toBe(103);
    const p104 = `/${'a'.repeat(103)}`;
    expect(() => assertSocketPathLength(p104, 'linux')).not.toThrow();
    expect(() => assertSocketPathLength(p104, 'darwin')).toThrow(/104 bytes, longer than the 103 bytes.*--socket-dir/);
  });

  it('counts bytes, not characters', () => {
    const p = `/${'é'.repeat(54)}`; // 55 characters, 109 bytes
    expect(() => assertSocketPathLength(p, 'linux')).toThrow(/109 bytes/);
  });

  it('makes fresh random names', () => {
    const a = makeSocketPath('/run/x', 42);
    expect(a).toMatch(/^\/run\/x\/credproxy-42-[0-9a-f]{16}\.sock$/);
    expect(makeSocketPath('/run/x', 42)).not.toBe(a);
  });
});

describe('AuditLog', () => {
  const entry = (n: number): AuditEntry => ({
    time: new Date(0).toISOString(),
    conn: n,
    peerPid: 1,
    peerUid: 2,
    op: 'get_token',
    provider: 'p',
    bucket: 'default',
    result: 'OK',
    durationMs: 0.5,
  });

  it('queues without touching the file, appends in batches, and flushes on close', async () => {
    const dir = tempDir();
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'state', 'audit.jsonl');
    const log = new AuditLog({ path, logger: captureLogs().logger, flushDelayMs: 60_000 });
    await log.open();
    for (let i = 0; i < 5; i++) log.record(entry(i));
    expect(readFileSync(path, 'utf8')).toBe('');
    await log.flush();
    expect(readFileSync(path, 'utf8').trim().split('\n')).toHaveLength(5);
    log.record(entry(5));
    await log.close();
    const lines = readFileSync(path, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as AuditEntry);
    expect(lines.map((l) => l.conn)).toEqual([0, 1, 2, 3, 4, 5]);
    log.record(entry(6)); // after close: ignored, no throw
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, 'state')).mode & 0o777).toBe(0o700);
  });

  it('writes at once, in order, when 1,000 entries are queued, without waiting for the delay', async () => {
    const dir = tempDir();
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'audit.jsonl');
    const log = new AuditLog({ path, logger: captureLogs().logger, flushDelayMs: 60_000 });
    await log.open();
    const lines = (): string[] => readFileSync(path, 'utf8').split('\n').filter(Boolean);
    for (let i = 0; i < 999; i++) log.record(entry(i));
    await new Promise((r) => setTimeout(r, 50));
    expect(lines()).toHaveLength(0); // below a batch: waits for the delay
    for (let i = 999; i < 2500; i++) log.record(entry(i));
    for (let i = 0; i < 50 && lines().length < 2500; i++) await new Promise((r) => setTimeout(r, 10));
    expect(lines().map((l) => (JSON.parse(l) as AuditEntry).conn)).toEqual(Array.from({ length: 2500 }, (_, i) => i));
    await log.close();
  });

  it('flushes by itself after the delay', async () => {
    const dir = tempDir();
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'audit.jsonl');
    const log = new AuditLog({ path, logger: captureLogs().logger, flushDelayMs: 20 });
    await log.open();
    log.record(entry(1));
    await new Promise((r) => setTimeout(r, 150));
    expect(readFileSync(path, 'utf8')).toContain('"conn":1');
    await log.close();
  });

  it('appends to an existing file and tightens its mode', async () => {
    const dir = tempDir();
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'audit.jsonl');
    writeFileSync(path, '{"old":true}\n');
    chmodSync(path, 0o644);
    const log = new AuditLog({ path, logger: captureLogs().logger });
    await log.open();
    log.record(entry(1));
    await log.close();
    expect(readFileSync(path, 'utf8').split('\n')[0]).toBe('{"old":true}');
    expect(statSync(path).mode & 0o777).toBe(0o600);
  });

  it('never drops an entry: past its high-water mark it reports congestion until the queue drains', async () => {
    const dir = tempDir();
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'audit.jsonl');
    const log = new AuditLog({ path, logger: captureLogs().logger, flushDelayMs: 60_000, highWater: 3 });
    await log.open();
    for (let i = 0; i < 10; i++) log.record(entry(i));
    expect(log.congested).toBe(true);
    const drained = log.whenDrained();
    void log.flush();
    await drained;
    expect(log.congested).toBe(false);
    await log.close();
    expect(readFileSync(path, 'utf8').trim().split('\n')).toHaveLength(10);
  });

  it('rotates at the size cap and keeps only the newest N files', async () => {
    const dir = tempDir();
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'audit.jsonl');
    const log = new AuditLog({ path, logger: captureLogs().logger, flushDelayMs: 60_000, rotation: { maxFileBytes: 4096, keepFiles: 2 } });
    await log.open();
    for (let i = 0; i < 400; i++) {
      log.record(entry(i));
      if (i % 20 === 19) await log.flush();
    }
    await log.close();
    expect(readdirSync(dir).sort()).toEqual(['audit.jsonl', 'audit.jsonl.1', 'audit.jsonl.2']);
    for (const f of readdirSync(dir)) expect(statSync(join(dir, f)).size).toBeLessThanOrEqual(4096);
    // The newest entry is in the live file; nothing is half-written.
    const live = readFileSync(path, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { conn: number });
    expect(live[live.length - 1]!.conn).toBe(399);
  });
});

describe('TcpThrottle', () => {
  it('groups 127/8 and ::1 as one source, IPv4 by /24 and IPv6 by /64', () => {
    expect(sourceKey('127.0.0.1')).toBe('loopback');
    expect(sourceKey('127.200.3.4')).toBe('loopback');
    expect(sourceKey('::ffff:127.0.0.5')).toBe('loopback');
    expect(sourceKey('::1')).toBe('loopback');
    expect(sourceKey('10.1.2.3')).toBe(sourceKey('10.1.2.200'));
    expect(sourceKey('10.1.2.3')).not.toBe(sourceKey('10.1.3.3'));
    expect(sourceKey('fd00:1:2:3::1')).toBe(sourceKey('fd00:1:2:3:ffff::9'));
  });

  it('delays only failures past the free ones, doubling to a cap, and the global budget slows everyone failing', () => {
    let now = 0;
    const t = new TcpThrottle({ freePerSource: 2, baseDelayMs: 100, maxDelayMs: 400, globalBudget: 10, now: () => now });
    expect([t.failure('127.0.0.1'), t.failure('127.0.0.2'), t.failure('127.0.0.3'), t.failure('127.9.9.9'), t.failure('127.1.1.1'), t.failure('127.1.1.2')]).toEqual([0, 0, 100, 200, 400, 400]);
    for (let i = 0; i < 4; i++) t.release();
    // Eleven failures server-wide in the window: a fresh source starts at the longest delay.
    for (let i = 0; i < 4; i++) t.failure(`10.0.${i}.1`);
    expect(t.failure('10.9.9.9')).toBe(400);
    now += 61_000;
    expect(t.failure('127.0.0.1')).toBe(0);
  });

  it('remembers a bounded number of sources and forgets them after the window', () => {
    let now = 0;
    const t = new TcpThrottle({ maxSources: 100, globalBudget: 1e9, now: () => now });
    for (let i = 0; i < 180_000; i++) t.failure(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`);
    expect(t.size).toBeLessThanOrEqual(100);
    now += 120_000;
    t.sweep();
    expect(t.size).toBe(0);
  });
});

describe('SecondTally', () => {
  it('hands over one second of counts at a time, caps the client-chosen keys, and counts "__proto__" as a name like any other', () => {
    let now = 10_000;
    const flushed: Array<{ at: number; first: Record<string, number>; second: Record<string, number>; overflow: number }> = [];
    const tally = new SecondTally((at, first, second, overflow) => flushed.push({ at, first: { ...first }, second: { ...second }, overflow }), () => now, 3);
    for (const host of ['a', 'b', '__proto__', 'c', 'd', 'a']) tally.note('not_allowed', host);
    tally.note('blocked', 'b');
    expect(flushed).toEqual([]);
    now += 1000; // the next note falls in a later second: the first second's counts go out first
    tally.note('blocked', 'e');
    tally.flush();
    expect(flushed).toEqual([
      { at: 10_000, first: { not_allowed: 6, blocked: 1 }, second: { a: 2, b: 2, ['__proto__']: 1 }, overflow: 2 },
      { at: 11_000, first: { blocked: 1 }, second: { e: 1 }, overflow: 0 },
    ]);
    expect(Object.getPrototypeOf(flushed[0]!.second)).toBe(Object.prototype); // the spread copy: "__proto__" stayed data
    tally.flush();
    expect(flushed).toHaveLength(2);
  });
});
