import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { DEFAULT_STALE_MS, RefreshLocks } from '../../src/store/locks.js';

const CHILD = fileURLToPath(new URL('../support/lock-child.ts', import.meta.url));
const dirs: string[] = [];
const children: ChildProcess[] = [];
afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tmp(): string {
  const d = mkdtempSync('/tmp/cp-locks-');
  dirs.push(d);
  return d;
}

function holder(dir: string, staleMs: number, waitMs = 0): Promise<{ child: ChildProcess; state: string; lines: AsyncIterator<string> }> {
  const child = spawn(process.execPath, ['--import', 'tsx', CHILD, dir, 'prov', 'default', String(staleMs), String(waitMs)], { stdio: ['pipe', 'pipe', 'inherit'] });
  children.push(child);
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  return lines.next().then((r) => ({ child, state: String(r.value).split(' ')[0]!, lines }));
}

describe('cross-process refresh locks', () => {
  it('defaults to a ~30 s stale time', () => {
    expect(DEFAULT_STALE_MS).toBe(30_000);
  });

  it('excludes another process, and hands over on release', async () => {
    const dir = join(tmp(), 'locks');
    const first = await holder(dir, 30_000);
    expect(first.state).toBe('locked');
    const mine = new RefreshLocks({ dir });
    expect(await mine.acquire('prov', 'default', 0)).toBe(false);
    expect(await mine.acquire('prov', 'other', 0)).toBe(true); // other buckets are independent
    const second = await holder(dir, 30_000, 0);
    expect(second.state).toBe('busy');
    // Waiting works: release the child's lock while we wait for it.
    const waiting = mine.acquire('prov', 'default', 5000);
    first.child.stdin!.write('release\n');
    expect(await waiting).toBe(true);
    await mine.releaseAll();
  });

  it('recovers the lock of a SIGKILLed holder within the stale time', async () => {
    const dir = join(tmp(), 'locks');
    const staleMs = 2000;
    const dead = await holder(dir, staleMs);
    expect(dead.state).toBe('locked');
    dead.child.kill('SIGKILL');
    await new Promise((r) => dead.child.once('exit', r));
    const killedAt = Date.now();
    const mine = new RefreshLocks({ dir, staleMs });
    expect(await mine.acquire('prov', 'default', 0)).toBe(false); // not yet stale
    expect(await mine.acquire('prov', 'default', staleMs * 2)).toBe(true);
    const waited = Date.now() - killedAt;
    expect(waited).toBeLessThan(staleMs * 2);
    await mine.release('prov', 'default');
  });

  it('a live holder keeps its lock past the stale time (it refreshes it)', async () => {
    const dir = join(tmp(), 'locks');
    const staleMs = 1500;
    const live = await holder(dir, staleMs);
    expect(live.state).toBe('locked');
    await new Promise((r) => setTimeout(r, staleMs * 2));
    const mine = new RefreshLocks({ dir, staleMs });
    expect(await mine.acquire('prov', 'default', 0)).toBe(false);
    live.child.kill('SIGKILL');
  });
});
