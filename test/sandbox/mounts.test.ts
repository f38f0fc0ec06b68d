import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { checkBindRoot, planMounts, type MountInput } from '../../src/sandbox/mounts.js';

const base = mkdtempSync('/tmp/cpmu-');
afterAll(() => rmSync(base, { recursive: true, force: true }));

function project(): string {
  const dir = mkdtempSync(join(base, 'p-'));
  mkdirSync(join(dir, '.git', 'hooks'), { recursive: true });
  writeFileSync(join(dir, '.git', 'config'), '');
  mkdirSync(join(dir, 'node_modules', 'credproxy'), { recursive: true });
  return dir;
}

const input = (dir: string, over: Partial<MountInput> = {}): MountInput => ({
  workdir: dir,
  homes: ['/home/u'],
  credproxyDirs: ['/home/u/.config/credproxy'],
  socketDir: '/run/user/1/credproxy/s',
  toolDirs: [join(dir, 'node_modules', 'credproxy')],
  binds: [],
  unprotect: [],
  ...over,
});

describe('mount plan', () => {
  it('puts every read-only protection after every read-write bind that could cover it', () => {
    const dir = project();
    const plan = planMounts(input(dir, { binds: [{ path: join(dir, 'node_modules'), mode: 'rw' }] }));
    const lastRw = plan.ops.map((o) => o.op).lastIndexOf('bind');
    const ro = (p: string): number => plan.ops.findIndex((o) => o.op === 'ro-bind' && o.dest === p);
    for (const p of [join(dir, '.git', 'config'), join(dir, '.git', 'hooks'), join(dir, 'node_modules', 'credproxy')]) expect(ro(p)).toBeGreaterThan(lastRw);
    expect(plan.ops.find((o) => o.op === 'bind' && o.dest === join(dir, '.git'))).toBeDefined(); // pinned
  });

  it('does not reopen a read-only --ro-bind with a pin, and drops what --unprotect names', () => {
    const dir = project();
    const plan = planMounts(input(dir, { binds: [{ path: join(dir, 'node_modules'), mode: 'ro' }], unprotect: [join(dir, '.git')] }));
    expect(plan.ops.filter((o) => o.op === 'bind').map((o) => o.dest)).toEqual([dir]);
    expect(plan.ops.some((o) => o.dest.startsWith(join(dir, '.git')))).toBe(false);
  });

  it('refuses binds that are or contain hidden or credproxy dirs, accepts ones inside hidden dirs', () => {
    const guard = { homes: ['/home/u'], credproxyDirs: ['/home/u/.config/credproxy', '/srv/cp/data'] };
    for (const bad of ['/', '/tmp', '/home', '/home/u', '/srv/cp', '/srv/cp/data/x', '/var']) expect(() => checkBindRoot(bad, 'x', guard, 'hint')).toThrow(/refusing/);
    for (const ok of ['/tmp/scratch', '/home/u/project', '/srv/other']) expect(() => checkBindRoot(ok, 'x', guard, 'hint')).not.toThrow();
  });
});
