import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { layoutInput, type LayoutRequest } from '../../src/sandbox/layout.js';
import { checkBindRoot, planMounts, type MountInput } from '../../src/sandbox/mounts.js';
import { protectionsFor, scanGitEntries } from '../../src/sandbox/protect.js';

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

  it('holds the git dir a .git file points to when it lies in another read-write bind', () => {
    const dir = mkdtempSync(join(base, 'w-'));
    const other = mkdtempSync(join(base, 'o-'));
    mkdirSync(join(other, 'repo.git', 'hooks'), { recursive: true });
    writeFileSync(join(other, 'repo.git', 'config'), '');
    writeFileSync(join(dir, '.git'), `gitdir: ${join(other, 'repo.git')}\n`);
    const ro = (plan: ReturnType<typeof planMounts>): string[] => plan.ops.filter((o) => o.op === 'ro-bind').map((o) => o.dest);
    const bound = planMounts(input(dir, { toolDirs: [], binds: [{ path: other, mode: 'rw' }] }));
    expect(ro(bound)).toEqual(expect.arrayContaining([join(dir, '.git'), join(other, 'repo.git', 'config'), join(other, 'repo.git', 'hooks')]));
    // Not bound at all: nothing of it is mounted (it stays read-only or hidden as it was).
    expect(ro(planMounts(input(dir, { toolDirs: [] }))).filter((p) => p.startsWith(other))).toEqual([]);
  });

  it('refuses binds that are or contain hidden or credproxy dirs, accepts ones inside hidden dirs', () => {
    const guard = { homes: ['/home/u'], credproxyDirs: ['/home/u/.config/credproxy', '/srv/cp/data'] };
    for (const bad of ['/', '/tmp', '/home', '/home/u', '/srv/cp', '/srv/cp/data/x', '/var']) expect(() => checkBindRoot(bad, 'x', guard, 'hint')).toThrow(/refusing/);
    for (const ok of ['/tmp/scratch', '/home/u/project', '/srv/other']) expect(() => checkBindRoot(ok, 'x', guard, 'hint')).not.toThrow();
  });

  it('never shows a hidden dir again as a tool dir: node in ~/.local keeps only its own parts, a loose binary itself, an agent in the home is refused', () => {
    const home = mkdtempSync(join(base, 'h-'));
    const data = join(home, '.local', 'share', 'credproxy');
    mkdirSync(join(home, '.local', 'bin'), { recursive: true });
    mkdirSync(join(home, '.local', 'lib', 'node_modules', 'npm'), { recursive: true });
    mkdirSync(join(home, 'work'));
    for (const f of ['.local/bin/node', 'node']) writeFileSync(join(home, f), '');
    const req = (over: Partial<LayoutRequest>): LayoutRequest => ({
      cwd: join(home, 'work'),
      bindWorkdir: true,
      env: { HOME: home },
      dirs: { config: join(home, '.config', 'credproxy'), data, state: join(home, '.local', 'state', 'credproxy'), run: join(home, 'run') },
      roBinds: [],
      rwBinds: [],
      unprotect: [],
      packageRoot: join(home, 'work', 'node_modules', 'credproxy'),
      nodeBinary: join(home, '.local', 'bin', 'node'),
      ...over,
    });
    expect(layoutInput(req({})).toolDirs).toEqual([join(home, 'work', 'node_modules', 'credproxy'), join(home, '.local', 'bin'), join(home, '.local', 'lib', 'node_modules')]);
    expect(layoutInput(req({ nodeBinary: join(home, 'node') })).toolDirs).toContain(join(home, 'node'));
    expect(() => layoutInput(req({ agentDir: home }))).toThrow(/refusing to show the agent’s install dir .* it is .*, which the sandbox hides/);
    expect(() => layoutInput(req({ agentDir: join(home, '.local') }))).toThrow(/it contains .*credproxy/);
  });

  it('holds the hooks dir of a relative core.hooksPath from the user’s global config in each repository, and a bare include path names nothing', () => {
    const dir = mkdtempSync(join(base, 'g-'));
    execFileSync('git', ['init', '-q', dir]);
    mkdirSync(join(dir, '.githooks'));
    writeFileSync(join(dir, '.git', 'config'), '[include]\n\tpath\n', { flag: 'a' });
    const global = join(dir, '..', `global-${process.pid}.gitconfig`);
    writeFileSync(global, '[core]\n\thooksPath = .githooks\n');
    const saved = process.env.GIT_CONFIG_GLOBAL;
    process.env.GIT_CONFIG_GLOBAL = global;
    try {
      const held = protectionsFor(dir, []).protections.map((p) => `${p.kind} ${p.path}`);
      expect(held).toContain(`ro ${join(dir, '.githooks')}`);
      expect(held.filter((h) => h.endsWith(` ${dir}`) || h.endsWith(` ${join(dir, '.git')}`))).toEqual([`pin ${join(dir, '.git')}`]);
    } finally {
      if (saved === undefined) delete process.env.GIT_CONFIG_GLOBAL;
      else process.env.GIT_CONFIG_GLOBAL = saved;
    }
  });

  it('a scan that its limits cut short says so, so the after-run check cannot be passed by nesting deeper or padding with dirs', () => {
    const dir = mkdtempSync(join(base, 's-'));
    mkdirSync(join(dir, 'a', 'b', 'c', '.git'), { recursive: true });
    for (let i = 0; i < 5; i++) mkdirSync(join(dir, `pad${i}`));
    expect(scanGitEntries(dir, { depth: 8, dirs: 100 })).toEqual({ found: [join(dir, 'a', 'b', 'c', '.git')], complete: true });
    expect(scanGitEntries(dir, { depth: 2, dirs: 100 }).complete).toBe(false);
    expect(scanGitEntries(dir, { depth: 8, dirs: 4 }).complete).toBe(false);
  });

  it('hides the dirs the environment names as the user’s own (XDG dirs, agents’ configs, session-bus and ssh-agent sockets), never / or a relative one', () => {
    const home = mkdtempSync(join(base, 'e-'));
    mkdirSync(join(home, 'work'));
    const env = {
      HOME: home,
      XDG_RUNTIME_DIR: '/mnt/wslg/runtime-dir',
      XDG_CONFIG_HOME: 'relative/config',
      XDG_CACHE_HOME: '/',
      CODEX_HOME: '/srv/me/codex',
      DBUS_SESSION_BUS_ADDRESS: 'unix:abstract=/tmp/dbus-x,guid=1;unix:path=/var/lib/me%20bus/bus,guid=2',
      SSH_AUTH_SOCK: '/opt/agent/sock',
    };
    const input = layoutInput({ cwd: join(home, 'work'), bindWorkdir: true, env, dirs: { config: join(home, 'c'), data: join(home, 'd'), state: join(home, 's'), run: join(home, 'r') }, roBinds: [], rwBinds: [], unprotect: [], packageRoot: join(home, 'work', 'pkg'), nodeBinary: process.execPath });
    expect(input.privateDirs).toEqual(['/mnt/wslg/runtime-dir', '/srv/me/codex', '/var/lib/me bus', '/opt/agent']);
    const hidden = planMounts(input).ops.filter((o) => o.op === 'tmpfs').map((o) => o.dest);
    expect(hidden).toEqual(expect.arrayContaining(['/mnt/wslg/runtime-dir', '/srv/me/codex', '/var/lib/me bus', '/opt/agent']));
    expect(() => checkBindRoot('/srv/me', 'x', { homes: [home], credproxyDirs: [], privateDirs: input.privateDirs }, 'hint')).toThrow(/contains \/srv\/me\/codex/);
  });
});
