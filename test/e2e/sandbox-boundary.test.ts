import { execFileSync, spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { chmodSync, chownSync, closeSync, cpSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, makeHostEnv, runCli, type CliResult, type HostEnv } from '../support/cli.js';

/**
 * Issue 10: what a hostile command inside `credproxy run` (real bwrap) tries
 * in order to reach the host: git metadata the host executes, the credproxy
 * it runs next time, hidden dirs unmasked by the choice of workdir, the
 * store through a symlinked home, the kernel keyrings and nested user
 * namespaces. Each check is done as root and, where the kernel treats them
 * differently, as an unprivileged user.
 */

const REPO = join(BIN, '..', '..');
const GIT_ID = ['-c', 'user.email=agent@example.invalid', '-c', 'user.name=agent'];
const git = (cwd: string, ...args: string[]): string => execFileSync('git', ['-c', 'safe.directory=*', ...args], { cwd, encoding: 'utf8', env: { PATH: process.env.PATH, HOME: cwd, GIT_CONFIG_NOSYSTEM: '1' } });

/** An unprivileged account for the checks where root and a user differ (created once; CI runs as root). */
const USER = 'cpx10';
function unprivilegedUid(): number {
  if (process.getuid!() !== 0) return process.getuid!();
  if (spawnSync('id', ['-u', USER]).status !== 0) execFileSync('useradd', ['-m', '-d', `/home/${USER}`, '-s', '/bin/sh', USER]);
  return Number(execFileSync('id', ['-u', USER], { encoding: 'utf8' }).trim());
}

/** `fds`: descriptors the launcher inherits, at the given numbers (as a parent that leaks them would hand them on). */
function runAs(args: string[], o: { env: NodeJS.ProcessEnv; cwd: string; uid?: number; bin?: string; node?: string; fds?: Record<number, number>; timeoutMs?: number }): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const ids = o.uid === undefined ? {} : { uid: o.uid, gid: o.uid };
    const stdio: Array<'ignore' | 'pipe' | number> = ['ignore', 'pipe', 'pipe'];
    for (const [n, fd] of Object.entries(o.fds ?? {})) {
      while (stdio.length < Number(n)) stdio.push('ignore');
      stdio[Number(n)] = fd;
    }
    const child = spawn(o.node ?? process.execPath, [o.bin ?? BIN, ...args], { env: o.env, cwd: o.cwd, stdio, ...ids }) as ChildProcessWithoutNullStreams;
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 40_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

function makeRepo(dir: string): void {
  git(dir, 'init', '-q', '-b', 'main');
  writeFileSync(join(dir, 'README'), 'hello\n');
  mkdirSync(join(dir, '.vscode'));
  writeFileSync(join(dir, '.vscode', 'tasks.json'), '{"tasks": []}\n');
  git(dir, 'add', '.');
  git(dir, ...GIT_ID, 'commit', '-q', '-m', 'start');
}

/**
 * What the attacker tries, each line printing a tag only when it worked.
 * Then the routine work an agent must still be able to do.
 */
const ATTACK = [
  `git config core.fsmonitor 'touch "$PWD/PWNED"' 2>/dev/null && echo HIT-config`,
  `echo 'touch PWNED' >> .git/config 2>/dev/null && echo HIT-config-append`,
  `(echo '#!/bin/sh'; echo 'touch PWNED') > .git/hooks/post-checkout 2>/dev/null && echo HIT-hook`,
  `mkdir -p .git/modules/evil 2>/dev/null && echo HIT-modules`,
  `mv .git .git-away 2>/dev/null && echo HIT-rename-git`,
  `rmdir .git/hooks 2>/dev/null; mv .git/hooks .git/h2 2>/dev/null && echo HIT-rename-hooks`,
  `echo '{"tasks":[{"runOptions":{"runOn":"folderOpen"}}]}' > .vscode/tasks.json 2>/dev/null && echo HIT-vscode`,
  `mv .vscode .vscode-away 2>/dev/null && echo HIT-rename-vscode`,
  `echo 'touch PWNED' > .envrc`, // cannot be held in place: reported after the run
  // Keyrings, nested user namespaces, terminal injection (the last on /dev/null: EPERM from the filter, ENOTTY without it).
  `perl -e '$r = syscall(250, 0, -3, 0); print "keyctl=", ($r < 0 ? "$!" : "ok"), "\\n"'`,
  `perl -e '$r = syscall(435, 0, 0); print "clone3=", ($! + 0), "\\n"'`,
  `unshare -Ur true 2>/dev/null && echo HIT-userns`,
  // The kernel reads the request as 32 bits: bit 32 set must not slip past (flatpak's CVE-2019-10063).
  `perl -e 'open(my $f, "<", "/dev/null"); my $b = "x"; for my $req (0x5412, 0x100005412) { ioctl($f, $req, $b) or print "tiocsti=", ($! + 0), "\\n" }'`,
  // Routine agent work.
  `echo change >> README && git add README && git ${GIT_ID.join(' ')} commit -q -m inside && echo OK-commit`,
  `git checkout -q -b agent-branch && echo OK-branch`,
  `echo wip >> README && git stash -q && echo OK-stash`,
  `echo /tmp/evil > .git/commondir`, // a git redirect cannot be held in place either: moved aside after the run
].join('\n');

function expectContained(r: CliResult, dir: string): void {
  expect(r.code, r.stderr).toBe(0);
  expect(r.stdout).not.toMatch(/HIT-/);
  expect(r.stdout).toContain('keyctl=Operation not permitted');
  expect(r.stdout).toContain('clone3=38'); // ENOSYS: libc falls back to clone, whose flags the filter sees
  expect(r.stdout.match(/tiocsti=\d+/g)).toEqual(['tiocsti=1', 'tiocsti=1']); // EPERM both times
  for (const ok of ['OK-commit', 'OK-branch', 'OK-stash']) expect(r.stdout).toContain(ok);
  // Back on the host: git runs nothing planted, and the agent's work is there.
  expect(git(dir, 'status', '--porcelain')).toBe('?? .envrc\n');
  expect(existsSync(join(dir, 'PWNED'))).toBe(false);
  expect(readFileSync(join(dir, '.git', 'config'), 'utf8')).not.toMatch(/fsmonitor|PWNED/);
  expect(readFileSync(join(dir, '.vscode', 'tasks.json'), 'utf8')).toBe('{"tasks": []}\n');
  expect(existsSync(join(dir, '.git', 'hooks', 'post-checkout'))).toBe(false);
  expect(existsSync(join(dir, '.git', 'modules'))).toBe(false); // the placeholder is gone again
  expect(git(dir, 'log', '--format=%s', 'agent-branch')).toMatch(/^inside\n/);
  expect(git(dir, 'stash', 'list')).toMatch(/stash@\{0\}/);
  expect(r.stderr).toMatch(/warning: .*\.envrc was created inside the sandbox/);
  expect(r.stderr).toMatch(/warning: .*\.git\/commondir was created inside the sandbox .*moved aside/);
  expect(existsSync(join(dir, '.git', 'commondir'))).toBe(false);
}

describe('the bwrap sandbox is a boundary (issue 10)', () => {
  let host: HostEnv;
  const scratch: string[] = [];
  const tmp = (prefix: string): string => {
    const d = mkdtempSync(`/tmp/${prefix}`);
    scratch.push(d);
    return d;
  };

  beforeAll(() => {
    host = makeHostEnv();
  });
  afterAll(() => {
    host?.cleanup();
    for (const d of scratch) rmSync(d, { recursive: true, force: true });
  });

  it('git metadata, editor tasks, keyrings and user namespaces are out of reach; commit, branch and stash still work (root)', async () => {
    const dir = tmp('cpg-');
    makeRepo(dir);
    writeFileSync('/tmp/cpg-host-socket-stand-in', ''); // what the host keeps in /tmp must stay hidden
    scratch.push('/tmp/cpg-host-socket-stand-in');
    const r = await runAs(['run', '--', 'sh', '-c', `${ATTACK}\ntest -e /tmp/cpg-host-socket-stand-in && echo HIT-tmp; true`], { env: host.env, cwd: dir });
    expectContained(r, dir);
  });

  it('the same as an unprivileged user, whose password-database home stays hidden when HOME points elsewhere', async () => {
    const uid = unprivilegedUid();
    const base = tmp('cpu-');
    chmodSync(base, 0o755);
    const dir = join(base, 'project');
    const home = join(base, 'home');
    mkdirSync(dir);
    mkdirSync(home);
    makeRepo(dir);
    execFileSync('chown', ['-R', `${uid}:${uid}`, dir, home]);
    const pwHome = execFileSync('sh', ['-c', `getent passwd ${uid} | cut -d: -f6`], { encoding: 'utf8' }).trim();
    const marker = join(pwHome, `.cpx10-marker-${process.pid}`);
    writeFileSync(marker, 'x');
    chownSync(marker, uid, uid);
    try {
      const env = { PATH: process.env.PATH, HOME: home, LANG: 'C.UTF-8', CREDPROXY_HOME: join(home, 'cp'), CREDPROXY_STORE: 'file' };
      const r = await runAs(['run', '--', 'sh', '-c', `${ATTACK}\ntest -e ${marker} && echo HIT-pwhome; true`], { env, cwd: dir, uid });
      expectContained(r, dir);
      expect(r.stdout).not.toContain('HIT-userns'); // an unprivileged user could nest user namespaces before
    } finally {
      rmSync(marker, { force: true });
    }
  });

  it('a repository whose .git is a file keeps both the file and its git dir read-only; a project without one gets none', async () => {
    const dir = tmp('cpf-');
    mkdirSync(join(dir, 'meta'));
    git(dir, 'init', '-q', '--separate-git-dir', join(dir, 'meta', 'repo.git'));
    writeFileSync(join(dir, 'f'), '1');
    git(dir, 'add', 'f');
    git(dir, ...GIT_ID, 'commit', '-q', '-m', 'start');
    const gitfile = readFileSync(join(dir, '.git'), 'utf8');
    const nested = join(dir, 'vendor', 'lib');
    mkdirSync(nested, { recursive: true });
    git(nested, 'init', '-q');
    const plain = tmp('cpn-');
    const script = [
      `echo 'gitdir: evil' > .git 2>/dev/null && echo HIT-gitfile`,
      `git config core.fsmonitor 'touch PWNED' 2>/dev/null && echo HIT-config`,
      `mv meta meta2 2>/dev/null && echo HIT-rename-parent`,
      `git -C vendor/lib config core.pager 'touch PWNED' 2>/dev/null && echo HIT-nested-config`,
      `mv vendor vendor2 2>/dev/null && echo HIT-rename-nested`,
      `mkdir fresh && git init -q fresh && echo OK-new-repo`, // possible, and named after the run
      `git ${GIT_ID.join(' ')} commit -q --allow-empty -m inside && echo OK-commit`,
      `cd ${plain} && git init -q 2>/dev/null && echo HIT-init; ls -A ${plain}`,
    ].join('\n');
    const r = await runAs(['run', '--bind', plain, '--', 'sh', '-c', script], { env: host.env, cwd: dir });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).not.toMatch(/HIT-/);
    expect(r.stdout).toContain('OK-commit');
    expect(r.stderr).toMatch(/warning: .*fresh\/\.git was created inside the sandbox/);
    expect(readFileSync(join(nested, '.git', 'config'), 'utf8')).not.toMatch(/pager/);
    expect(readFileSync(join(dir, '.git'), 'utf8')).toBe(gitfile);
    expect(readFileSync(join(dir, 'meta', 'repo.git', 'config'), 'utf8')).not.toMatch(/fsmonitor/);
    expect(existsSync(join(plain, '.git'))).toBe(false); // the empty placeholder is removed after the run
    // --unprotect gives the choice back to the user.
    const u = await runAs(['run', '--unprotect', '.git', '--', 'sh', '-c', 'git init -q && echo INIT-OK'], { env: host.env, cwd: plain });
    expect(u.stdout).toContain('INIT-OK');
    expect(u.stderr).toMatch(/\.git was created inside the sandbox/);
  });

  it('hooks and config that the repository’s config points to in the project (core.hooksPath as husky sets it, include.path) stay out of reach', async () => {
    const dir = tmp('cpk-');
    makeRepo(dir);
    mkdirSync(join(dir, '.husky', '_'), { recursive: true });
    writeFileSync(join(dir, '.husky', '_', 'pre-commit'), '#!/bin/sh\nexit 0\n', { mode: 0o755 });
    writeFileSync(join(dir, 'shared.gitconfig'), '[alias]\n\tst = status\n');
    git(dir, 'config', 'core.hooksPath', '.husky/_');
    git(dir, 'config', 'include.path', '../shared.gitconfig');
    // Not there yet, and read only on a branch the sandbox can switch to: it cannot be held, so it is moved aside after the run.
    git(dir, 'config', 'includeIf.onbranch:agent/**.path', '../branch.gitconfig');
    const fsmonitor = `printf '[core]\\n\\tfsmonitor = touch PWNED\\n'`;
    const script = [
      `echo 'touch PWNED' >> .husky/_/pre-commit 2>/dev/null && echo HIT-hook`,
      `(echo '#!/bin/sh'; echo 'touch PWNED') > .husky/_/post-checkout 2>/dev/null && echo HIT-new-hook`,
      `mv .husky .husky-away 2>/dev/null && echo HIT-rename`,
      `${fsmonitor} >> shared.gitconfig 2>/dev/null && echo HIT-include`,
      `${fsmonitor} > branch.gitconfig`,
      `echo change >> README && git add README && git ${GIT_ID.join(' ')} commit -q -m inside && echo OK-commit`,
    ].join('\n');
    const r = await runAs(['run', '--', 'sh', '-c', script], { env: host.env, cwd: dir });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).not.toMatch(/HIT-/);
    expect(r.stdout).toContain('OK-commit');
    expect(r.stderr).toMatch(/warning: .*branch\.gitconfig was created inside the sandbox .*moved aside/);
    // Back on the host: a branch the include is conditioned on, a commit, a status; nothing planted runs.
    git(dir, 'checkout', '-q', '-b', 'agent/x');
    git(dir, ...GIT_ID, 'commit', '-q', '--allow-empty', '-m', 'host');
    git(dir, 'status', '--porcelain');
    expect(existsSync(join(dir, 'PWNED'))).toBe(false);
    expect(readFileSync(join(dir, 'shared.gitconfig'), 'utf8')).not.toMatch(/fsmonitor/);
  });

  it('the user’s runtime, config and data dirs and the session bus stay hidden where they live outside the home and /run (WSLg’s /mnt/wslg/runtime-dir, clusters’ scratch)', async () => {
    const dir = tmp('cpy-');
    const outside = mkdtempSync('/srv/cpy-');
    scratch.push(outside);
    const runtime = join(outside, 'runtime');
    const config = join(outside, 'config');
    const busDir = join(outside, 'dbus');
    for (const d of [runtime, join(config, 'gh'), busDir]) mkdirSync(d, { recursive: true, mode: 0o700 });
    writeFileSync(join(config, 'gh', 'hosts.yml'), 'oauth_token: GH-TOKEN\n');
    const servers = [createServer((c) => c.end('KEYRING-BUS\n')), createServer((c) => c.end('SESSION-BUS\n'))];
    await Promise.all([new Promise<void>((r) => servers[0]!.listen(join(runtime, 'bus'), r)), new Promise<void>((r) => servers[1]!.listen(join(busDir, 'bus'), r))]);
    try {
      const env = { ...host.env, XDG_RUNTIME_DIR: runtime, XDG_CONFIG_HOME: config, DBUS_SESSION_BUS_ADDRESS: `unix:path=${join(busDir, 'bus')},guid=0` };
      const talk = (socket: string): string => `node -e 'require("net").connect(process.argv[1]).on("data", (d) => process.stdout.write(d)).on("error", () => {})' ${socket}`;
      const script = [talk(join(runtime, 'bus')), talk(join(busDir, 'bus')), `cat ${join(config, 'gh', 'hosts.yml')} 2>/dev/null`, 'echo OK-ran'].join('; ');
      const r = await runAs(['run', '--', 'sh', '-c', script], { env, cwd: dir });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toContain('OK-ran');
      expect(r.stdout).not.toMatch(/KEYRING-BUS|SESSION-BUS|GH-TOKEN/);
    } finally {
      for (const s of servers) s.close();
    }
  });

  it('files other tools run code from when the project is opened, made inside, are named after the run', async () => {
    const dir = tmp('cpx-');
    makeRepo(dir);
    const made = ['.devcontainer.json', '.zed/settings.json', '.mise.local.toml', '.config/mise/config.toml', 'opencode.json', '.opencode/plugin/p.js'];
    const script = made.map((f) => `mkdir -p "$(dirname ${f})" && echo x > ${f}`).join(' && ');
    const r = await runAs(['run', '--', 'sh', '-c', `${script} && echo OK-made`], { env: host.env, cwd: dir });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('OK-made');
    for (const f of ['.devcontainer.json', '.zed', '.mise.local.toml', '.config/mise', 'opencode.json', '.opencode']) {
      expect(r.stderr).toContain(`warning: ${join(dir, f)} was created inside the sandbox`);
    }
  });

  it('a config file that the user’s global git config includes from the project (includeIf gitdir: ~/work/) stays read-only', async () => {
    const h = makeHostEnv();
    try {
      const dir = tmp('cpgi-');
      makeRepo(dir);
      writeFileSync(join(dir, 'team.gitconfig'), '[alias]\n\tst = status\n');
      writeFileSync(join(h.home, '.gitconfig'), `[includeIf "gitdir:${dir}/"]\n\tpath = ${join(dir, 'team.gitconfig')}\n`);
      const r = await runAs(['run', '--', 'sh', '-c', `printf '[core]\\n\\tfsmonitor = touch PWNED\\n' >> team.gitconfig 2>/dev/null && echo HIT-include; echo OK-ran`], { env: h.env, cwd: dir });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toContain('OK-ran');
      expect(r.stdout).not.toContain('HIT-include');
      execFileSync('git', ['-c', 'safe.directory=*', 'status', '--porcelain'], { cwd: dir, env: { PATH: process.env.PATH, HOME: h.home, GIT_CONFIG_NOSYSTEM: '1' } });
      expect(existsSync(join(dir, 'PWNED'))).toBe(false);
    } finally {
      h.cleanup();
    }
  });

  it('a placeholder that a second run in the same project has bound in is left in place, or that run could create what it held', async () => {
    const dir = tmp('cpcc-');
    makeRepo(dir); // no .git/modules: the first run makes a placeholder there
    const until = async (f: string): Promise<void> => {
      for (let i = 0; i < 400 && !existsSync(join(dir, f)); i++) await new Promise((r) => setTimeout(r, 25));
    };
    const first = runAs(['run', '--', 'sh', '-c', 'touch a-up; while [ ! -e b-up ]; do sleep 0.05; done'], { env: host.env, cwd: dir });
    await until('a-up');
    const second = runAs(['run', '--', 'sh', '-c', 'touch b-up; while [ ! -e a-done ]; do sleep 0.05; done; mkdir -p .git/modules/evil 2>/dev/null && echo HIT-modules; true'], { env: host.env, cwd: dir });
    expect((await first).code).toBe(0);
    writeFileSync(join(dir, 'a-done'), '');
    const r = await second;
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).not.toContain('HIT-modules');
    expect(existsSync(join(dir, '.git', 'modules', 'evil'))).toBe(false);
  });

  it('a per-worktree config created inside (read where extensions.worktreeConfig is on) is moved aside after the run', async () => {
    const dir = tmp('cpq-');
    makeRepo(dir);
    git(dir, 'config', 'core.repositoryformatversion', '1');
    git(dir, 'config', 'extensions.worktreeConfig', 'true');
    const r = await runAs(['run', '--', 'sh', '-c', `printf '[core]\\n\\tfsmonitor = touch PWNED\\n' > .git/config.worktree && echo OK-written`], { env: host.env, cwd: dir });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('OK-written');
    expect(r.stderr).toMatch(/warning: .*\.git\/config\.worktree was created inside the sandbox .*moved aside/);
    git(dir, 'status', '--porcelain');
    expect(existsSync(join(dir, 'PWNED'))).toBe(false);
  });

  it('a --bind or --ro-bind inside the project that an earlier run turned into a link out of it is refused, not followed into the hidden home', async () => {
    const dir = tmp('cpj-');
    mkdirSync(join(dir, 'vendor'));
    const claude = join(host.home, '.claude');
    mkdirSync(claude, { recursive: true });
    writeFileSync(join(claude, '.credentials.json'), 'CLAUDE-LOGIN');
    const plant = await runAs(['run', '--', 'sh', '-c', `rmdir vendor && ln -s ${claude} vendor && echo OK-planted`], { env: host.env, cwd: dir });
    expect(plant.stdout).toContain('OK-planted');
    for (const flag of ['--ro-bind', '--bind']) {
      const r = await runAs(['run', flag, 'vendor', '--', 'sh', '-c', 'cat vendor/.credentials.json; echo STARTED'], { env: host.env, cwd: dir });
      expect(r.stdout).not.toContain('CLAUDE-LOGIN');
      expect(r.stdout).not.toContain('STARTED');
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/vendor is a link .*out of/);
    }
  });

  it('a working directory that holds an agent’s login (a project dir an earlier run made a link to ~/.claude) is named before the command starts', async () => {
    const dir = tmp('cpcl-');
    const claude = join(dir, 'home', '.claude');
    mkdirSync(claude, { recursive: true });
    writeFileSync(join(claude, '.credentials.json'), '{}');
    mkdirSync(join(dir, 'proj', 'packages'), { recursive: true });
    symlinkSync(claude, join(dir, 'proj', 'packages', 'api'));
    const r = await runAs(['run', '--', 'true'], { env: host.env, cwd: join(dir, 'proj', 'packages', 'api') });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/warning: the working directory .*\.claude holds what looks like credentials \(\., \.credentials\.json\)/);
  });

  it('--unprotect of a name an earlier run turned into a link (.vscode -> .git) does not unprotect what the link points to', async () => {
    const dir = tmp('cpu2-');
    makeRepo(dir);
    const plant = await runAs(['run', '--unprotect', '.vscode', '--', 'sh', '-c', 'rm -r .vscode && ln -s .git .vscode && echo OK-planted'], { env: host.env, cwd: dir });
    expect(plant.stdout).toContain('OK-planted');
    const r = await runAs(['run', '--unprotect', '.vscode', '--', 'sh', '-c', `git config core.fsmonitor 'touch PWNED' 2>/dev/null && echo HIT-config; echo STARTED`], { env: host.env, cwd: dir });
    expect(r.stdout).not.toContain('HIT-config');
    expect(r.stdout).not.toContain('STARTED');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/\.vscode is a link/);
    expect(readFileSync(join(dir, '.git', 'config'), 'utf8')).not.toMatch(/fsmonitor/);
  });

  it('moving aside a config file that appeared never follows a dir the sandbox replaced with a link out of the project', async () => {
    const dir = tmp('cpv-');
    makeRepo(dir);
    mkdirSync(join(dir, 'conf'));
    git(dir, 'config', 'include.path', '../conf/extra.gitconfig'); // not there yet: moved aside if it appears
    const users = tmp('cpw-');
    writeFileSync(join(users, 'extra.gitconfig'), '[user]\n\tname = me\n');
    const r = await runAs(['run', '--', 'sh', '-c', `rmdir conf && ln -s ${users} conf && echo OK-linked`], { env: host.env, cwd: dir });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('OK-linked');
    expect(readFileSync(join(users, 'extra.gitconfig'), 'utf8')).toBe('[user]\n\tname = me\n');
    expect(r.stderr).toMatch(/warning: .*conf\/extra\.gitconfig was created inside the sandbox/);
  });

  it('a repository created inside is reported however deep it lies (host git run there would use its config)', async () => {
    const dir = tmp('cpr-');
    makeRepo(dir);
    const deep = 'src/main/java/com/example';
    const script = `mkdir -p ${deep} && git init -q ${deep} && git -C ${deep} config core.fsmonitor 'touch PWNED' && echo OK-planted`;
    const r = await runAs(['run', '--', 'sh', '-c', script], { env: host.env, cwd: dir });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('OK-planted');
    expect(r.stderr).toContain(`warning: ${join(dir, deep, '.git')} was created inside the sandbox`);
    // Nested repositories that were there before and that the sandbox did not touch are not reported.
    const again = await runAs(['run', '--', 'true'], { env: host.env, cwd: dir });
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).not.toMatch(/was created inside the sandbox/);
  });

  it('a credproxy installed in the project stays read-only, even under a later --bind and a renamed parent', async () => {
    const dir = tmp('cpt-');
    const pkg = join(dir, 'node_modules', 'credproxy');
    mkdirSync(pkg, { recursive: true });
    for (const part of ['bin', 'dist', 'package.json']) cpSync(join(REPO, part), join(pkg, part), { recursive: true });
    const deps = realpathSync(join(REPO, 'node_modules'));
    symlinkSync(deps, join(pkg, 'node_modules'));
    mkdirSync(join(dir, 'node_modules', '.bin'));
    symlinkSync('../credproxy/bin/credproxy', join(dir, 'node_modules', '.bin', 'credproxy'));
    const main = join(pkg, 'dist', 'cli', 'main.js');
    const before = readFileSync(main, 'utf8');
    const script = [
      `echo 'process.exit(99)' >> node_modules/credproxy/dist/cli/main.js 2>/dev/null && echo HIT-package`,
      `mv node_modules/credproxy node_modules/cp2 2>/dev/null && echo HIT-rename-package`,
      `mv node_modules nm2 2>/dev/null && echo HIT-rename-parent`,
      `ln -sf /bin/false node_modules/.bin/credproxy 2>/dev/null && echo HIT-bin-link`,
      `credproxy --version >/dev/null && echo OK-runs`,
    ].join('\n');
    // The copied package's dependencies are the checkout's own; shown read-only, wherever the checkout lives (CI clones under /tmp, which the sandbox replaces).
    const r = await runAs(['run', '--bind', join(dir, 'node_modules'), '--ro-bind', deps, '--', 'sh', '-c', script], { env: host.env, cwd: dir, bin: join(pkg, 'bin', 'credproxy') });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).not.toMatch(/HIT-/);
    expect(r.stdout).toContain('OK-runs');
    expect(readFileSync(main, 'utf8')).toBe(before);
  });

  it('node unpacked into ~/.local runs inside, without its prefix showing ~/.local/share: credproxy’s store and other tools’ logins', async () => {
    const home = tmp('cpo-');
    const bin = join(home, '.local', 'bin');
    mkdirSync(bin, { recursive: true });
    const node = join(bin, 'node');
    cpSync(realpathSync(process.execPath), node); // a copy: a link would resolve to the system's node
    const other = join(home, '.local', 'share', 'other-agent');
    mkdirSync(other, { recursive: true });
    writeFileSync(join(other, 'auth.json'), 'OTHER-AGENT-LOGIN');
    const dir = join(home, 'project');
    mkdirSync(dir);
    // No CREDPROXY_HOME: the store lives in the default XDG data dir, ~/.local/share/credproxy.
    const env = { PATH: process.env.PATH, HOME: home, LANG: 'C.UTF-8', CREDPROXY_STORE: 'file' };
    const set = spawnSync(node, [BIN, 'key', 'set', 'demo'], { env, input: 'KEY-VALUE\n', encoding: 'utf8' });
    expect(set.status, set.stderr).toBe(0);
    const store = join(home, '.local', 'share', 'credproxy');
    expect(existsSync(join(store, 'master.key'))).toBe(true);
    const script = `ls -A ${store} 2>/dev/null | sed 's/^/SEEN-/'; cat ${join(other, 'auth.json')} 2>/dev/null; node -e 'console.log("OK-" + "node")'`;
    const r = await runAs(['run', '--', 'sh', '-c', script], { env, cwd: dir, node });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('OK-node');
    expect(r.stdout).not.toContain('SEEN-');
    expect(r.stdout).not.toContain('OTHER-AGENT-LOGIN');
  });

  it('a descriptor the launcher inherited does not reach the command: through /proc it opens the host’s files past every mount', async () => {
    const dir = tmp('cpd-');
    writeFileSync(join(host.home, 'stand-in-secret'), 'HOST-SECRET');
    // Node marks fds 0-15 close-on-exec at start-up and stops at the first gap after them: a higher one went through.
    const fd = openSync(host.home, 'r');
    try {
      const script = `cat /proc/self/fd/40/stand-in-secret 2>/dev/null; echo; ls /proc/self/fd | tr '\\n' ' '`;
      const r = await runAs(['run', '--', 'sh', '-c', script], { env: host.env, cwd: dir, fds: { 40: fd } });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).not.toContain('HOST-SECRET');
      expect(r.stdout.trim()).toBe('0 1 2 3'); // stdio and ls's own handle on the listed dir
    } finally {
      closeSync(fd);
    }
  });

  it('refuses a workdir that is or contains a hidden dir, and credproxy dirs reached through a symlink (exit 2, nothing started)', async () => {
    const refused = async (cwd: string, env: NodeJS.ProcessEnv, why: RegExp, extra: string[] = []): Promise<void> => {
      const r = await runAs(['run', ...extra, '--', 'sh', '-c', 'echo STARTED'], { env, cwd });
      expect(r.code, `${cwd}: ${r.stderr}`).toBe(2);
      expect(r.stdout).not.toContain('STARTED');
      expect(r.stderr).toMatch(why);
    };
    // credproxy's own dirs elsewhere, so the refusal is about /tmp itself.
    await refused('/tmp', { ...host.env, CREDPROXY_HOME: `/nonexistent/cp-${process.pid}` }, /\/tmp, which the sandbox hides/);
    await refused('/var', host.env, /contains \/var\/tmp/);
    // A dir below /tmp that holds another program's socket (ssh-agent-, tmux-, X11-like) is not a project.
    const sockDir = tmp('cps-');
    mkdirSync(join(sockDir, 'agent'));
    const server = createServer();
    await new Promise<void>((r) => server.listen(join(sockDir, 'agent', 'agent.sock'), r));
    try {
      await refused(sockDir, host.env, /holds the socket .*agent\/agent\.sock/);
    } finally {
      server.close();
    }
    const base = tmp('cpl-');
    const real = join(base, 'real');
    mkdirSync(join(real, 'data', 'sub'), { recursive: true });
    mkdirSync(join(base, 'users', 'me'), { recursive: true });
    symlinkSync(real, join(base, 'link'));
    const env = { ...host.env, HOME: join(base, 'users', 'me'), CREDPROXY_HOME: join(base, 'link') };
    await refused(join(base, 'users'), env, /contains .*users\/me \(your home directory\)/);
    await refused(join(real, 'data'), env, /credproxy's own .*real\/data/);
    await refused(join(real, 'data', 'sub'), env, /lies inside credproxy's own .*real\/data/);
    await refused(base, { ...env, CREDPROXY_HOME: 'relative/home' }, /CREDPROXY_HOME must be an absolute path/);
    await refused(join(base, 'users', 'me'), env, /credproxy's own|which the sandbox hides/, ['--no-workdir', '--ro-bind', real]);
  });

  it('--ro-bind (here from a profile) shows a dir from the hidden home read-only; --bind warns about credential-looking contents; --explain shows the boundary', async () => {
    const dir = tmp('cpb-');
    const tools = join(host.home, 'tools');
    mkdirSync(tools, { recursive: true });
    writeFileSync(join(tools, 'agent'), 'agent-binary');
    // A link planted by an earlier run where a protected name belongs must not make bwrap bind its target in.
    const secretDir = join(host.home, 'secret-dir');
    mkdirSync(secretDir);
    writeFileSync(join(secretDir, 'id'), 'SECRET-IN-HOME');
    symlinkSync(secretDir, join(dir, '.vscode'));
    symlinkSync(secretDir, join(dir, '.envrc'));
    const creds = tmp('cpc-');
    mkdirSync(join(creds, '.ssh'));
    const script = `cat ${tools}/agent; echo; echo x > ${tools}/agent 2>/dev/null && echo HIT-ro; touch ${creds}/ok && echo OK-rw; cat .vscode/id .envrc/id 2>/dev/null; true`;
    // The read-only bind comes from a profile (`~/` is the user's HOME), the read-write one from the command line.
    mkdirSync(join(host.home, 'config'), { recursive: true });
    writeFileSync(join(host.home, 'config', 'config.json'), JSON.stringify({ profiles: { agent: { roBind: ['~/tools'] } } }));
    const r = await runAs(['run', '--profile', 'agent', '--bind', creds, '--', 'sh', '-c', script], { env: host.env, cwd: dir });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('agent-binary');
    expect(r.stdout).not.toContain('HIT-');
    expect(r.stdout).toContain('OK-rw');
    expect(r.stdout).not.toContain('SECRET-IN-HOME');
    expect(r.stderr).toMatch(/warning: .*\.vscode is a symlink: the sandbox can point it elsewhere/);
    expect(r.stderr).toMatch(new RegExp(`warning: ${creds} holds what looks like credentials \\(\\.ssh\\)`));
    const e = await runAs(['run', '--explain', '--', 'agent'], { env: host.env, cwd: dir });
    expect(e.code, e.stderr).toBe(0);
    expect(e.stdout).toMatch(new RegExp(`${dir}/\\.git\\s+empty, r-o`));
    expect(e.stdout).toMatch(/\/tmp\s+hidden/);
    expect(e.stdout).toMatch(/CREDPROXY_SOCKET CREDPROXY_TOKEN HOME/);
    expect(e.stdout).toMatch(/keyctl/);
    expect(existsSync(join(host.home, 'run')) ? execFileSync('ls', [join(host.home, 'run')], { encoding: 'utf8' }) : '').toBe(''); // nothing started
  });

  it('npm install of a local package and the project’s tests run inside (--share-net)', async () => {
    const base = tmp('cpm-');
    const dep = join(base, 'dep');
    const proj = join(base, 'proj');
    mkdirSync(dep);
    mkdirSync(proj);
    writeFileSync(join(dep, 'package.json'), JSON.stringify({ name: 'cp-local-dep', version: '1.0.0', main: 'index.js' }));
    writeFileSync(join(dep, 'index.js'), 'module.exports = () => 42;\n');
    execFileSync('npm', ['pack', '--silent', '--pack-destination', proj], { cwd: dep, env: { PATH: process.env.PATH, HOME: base } });
    writeFileSync(join(proj, 'package.json'), JSON.stringify({ name: 'proj', version: '1.0.0', scripts: { test: "node -e \"process.exit(require('cp-local-dep')() === 42 ? 0 : 1)\"" } }));
    git(proj, 'init', '-q');
    const script = 'npm install --offline --no-audit --no-fund ./cp-local-dep-1.0.0.tgz >/dev/null && npm test >/dev/null && echo OK-test';
    const r = await runAs(['run', '--share-net', '--', 'sh', '-c', script], { env: host.env, cwd: proj, timeoutMs: 120_000 });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('OK-test');
    expect(existsSync(join(proj, 'node_modules', 'cp-local-dep', 'index.js'))).toBe(true);
  }, 150_000);

  it('a bwrap that cannot start exits 125; a closed stdout ends a command quietly', async () => {
    const dir = tmp('cpe-');
    const r = await runAs(['run', '--', '/nonexistent/command'], { env: host.env, cwd: dir });
    expect(r.code).toBe(125);
    expect(r.stderr).toMatch(/bwrap could not set up the sandbox/);
    const child = spawn(process.execPath, [BIN, 'providers'], { env: host.env, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.destroy(); // the reader is gone before the first line (`credproxy providers | head -0`)
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise<number | null>((res) => child.on('close', (c) => res(c)));
    expect(stderr).toBe('');
    expect(code).toBe(0);
  });

  it('--sandbox none as root at a terminal says that the command can type into it', async () => {
    const dir = tmp('cpz-');
    const r = spawnSync('script', ['-qec', `${process.execPath} ${BIN} run --sandbox none -- true`, '/dev/null'], { env: host.env, cwd: dir, encoding: 'utf8', timeout: 30_000 });
    expect(r.status).toBe(0);
    if (process.getuid!() === 0) expect(r.stdout).toMatch(/--sandbox none as root: the command can push keystrokes into this terminal \(TIOCSTI\)/);
    else expect(r.stdout).not.toMatch(/TIOCSTI/);
  });

  it('refuses a config that another user could change, naming the file and the fix', async () => {
    const h = makeHostEnv();
    try {
      const dir = join(h.home, 'config');
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, 'config.json'), '{}');
      chmodSync(join(dir, 'config.json'), 0o666);
      const loose = await runCli(['providers'], { env: h.env });
      expect(loose.code).toBe(1);
      expect(loose.stderr).toContain(`${join(dir, 'config.json')} is writable by every user`);
      expect(loose.stderr).toContain(`chmod go-w ${join(dir, 'config.json')}`);
      chmodSync(join(dir, 'config.json'), 0o600);
      chownSync(dir, 4242, 4242);
      const foreign = await runCli(['providers'], { env: h.env });
      expect(foreign.code).toBe(1);
      expect(foreign.stderr).toContain(`${dir} is owned by uid 4242`);
      chownSync(dir, process.getuid!(), process.getgid!());
      expect((await runCli(['providers'], { env: h.env })).code).toBe(0);
    } finally {
      h.cleanup();
    }
  });
});
