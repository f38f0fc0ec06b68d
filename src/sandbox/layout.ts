import { existsSync, lstatSync, readdirSync, readFileSync, readlinkSync, renameSync, rmdirSync } from 'node:fs';
import { userInfo } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { CredproxyError } from '../errors.js';
import type { CredproxyDirs } from '../paths.js';
import { checkBindRoot, planMounts, SYSTEM_MASKS, type MountInput, type MountPlan, type UserBind } from './mounts.js';
import { canonicalPath, isUnder, overlaps } from './paths.js';
import { AFTER_RUN_SCAN, appeared, scanGitEntries } from './protect.js';

export interface LayoutRequest {
  cwd: string;
  bindWorkdir: boolean;
  env: NodeJS.ProcessEnv;
  dirs: CredproxyDirs;
  /** As given on the command line or in a profile: absolute, `~/…`, or relative to cwd. */
  roBinds: string[];
  rwBinds: string[];
  unprotect: string[];
  packageRoot: string;
  nodeBinary: string;
  /** `--agent`: the agent's own install, often under the masked home; shown read-only like credproxy's. */
  agentDir?: string;
}

/** The account's home from the password database, which `HOME=/elsewhere` does not move. */
function passwdHome(): string | null {
  try {
    return userInfo().homedir || null;
  } catch {
    return null;
  }
}

/**
 * Where node is installed: its prefix (…/bin's parent) when the binary sits
 * in a `bin` dir, so npm next to it keeps working, never a system dir that
 * the read-only root already shows. A prefix inside or around a hidden dir
 * is often shared (a tarball unpacked into ~/.local, whose share/ holds
 * credproxy's own store and other tools' logins): of it only node's own
 * parts come back, its bin dir and the global packages (npm among them).
 */
function nodeDirs(binary: string, hidden: string[]): string[] {
  const real = canonicalPath(binary);
  const dir = dirname(real);
  const prefix = dirname(dir);
  // A binary loose in a hidden dir itself (~/node) is shown alone.
  const own = hidden.some((h) => isUnder(h, dir)) ? real : dir;
  if (basename(dir) !== 'bin' || ['/', '/usr', '/usr/local'].includes(prefix)) return [own];
  if (!hidden.some((h) => overlaps(prefix, h))) return [prefix];
  const parts = [join(prefix, 'lib', 'node_modules'), join(prefix, 'include', 'node')].filter((d) => existsSync(d) && !hidden.some((h) => isUnder(h, d)));
  return [own, ...parts];
}

/** A tool dir is shown whole: one that is or holds a hidden dir would show that dir's contents again. */
function checkToolDir(dir: string, what: string, hidden: string[]): string {
  const h = hidden.find((m) => isUnder(m, dir));
  if (h !== undefined) throw new CredproxyError('USAGE', `refusing to show ${what} ${dir} inside the sandbox: it ${h === dir ? 'is' : 'contains'} ${h}, which the sandbox hides; install it in a directory of its own`);
  return dir;
}

/** Variables that name a dir of the user's own; the agents' ones point at their real logins. */
const PRIVATE_DIR_VARS = ['XDG_RUNTIME_DIR', 'XDG_CONFIG_HOME', 'XDG_DATA_HOME', 'XDG_STATE_HOME', 'XDG_CACHE_HOME', 'CLAUDE_CONFIG_DIR', 'CODEX_HOME'] as const;

/**
 * The user's own dirs that the environment names, wherever they are: the
 * XDG base dirs (other tools' configs and logins; the runtime dir full of
 * sockets, the keyring's session bus among them), the agents' config dirs,
 * and the dirs of the session-bus and ssh-agent sockets. Below the home or
 * /run they are hidden already, but WSLg keeps the runtime dir in
 * /mnt/wslg and clusters put XDG dirs on scratch space, which the
 * read-only root would show (and connect() works through it).
 */
function privateDirs(env: NodeJS.ProcessEnv): string[] {
  const dirs: string[] = PRIVATE_DIR_VARS.map((v) => env[v] ?? '');
  // D-Bus addresses: `unix:path=/x/bus,guid=…;unix:abstract=…` (abstract ones are out of reach without the network).
  for (const m of (env.DBUS_SESSION_BUS_ADDRESS ?? '').matchAll(/(?:^|;)unix:[^;]*?\bpath=([^,;]+)/g)) dirs.push(dirname(decodeURIComponent(m[1]!)));
  if (env.SSH_AUTH_SOCK) dirs.push(dirname(env.SSH_AUTH_SOCK));
  return [...new Set(dirs.filter((d) => d.startsWith('/')).map((d) => canonicalPath(d)))].filter((d) => d !== '/');
}

/**
 * Canonical inputs of the bwrap mount plan, with every bound dir checked:
 * refused (exit 2) when it is, contains or lies in credproxy's own dirs, or
 * is or contains a hidden dir.
 */
export function layoutInput(req: LayoutRequest): MountInput {
  const home = req.env.HOME || passwdHome() || '/';
  const homes = [...new Set([home, passwdHome()].filter((h): h is string => Boolean(h)).map((h) => canonicalPath(h)))].filter((h) => h !== '/');
  const credproxyDirs = [req.dirs.config, req.dirs.data, req.dirs.state, req.dirs.run].map((d) => canonicalPath(d));
  const own = privateDirs(req.env);
  const guard = { homes, credproxyDirs, privateDirs: own };
  const hidden = [...SYSTEM_MASKS.map((m) => canonicalPath(m)), ...homes, ...own, ...credproxyDirs];
  const cwd = canonicalPath(req.cwd);
  if (req.bindWorkdir) checkBindRoot(cwd, 'the working directory', guard, 'cd into a project directory (a subdirectory of /tmp works: only it is bound), or pass --no-workdir');
  const expand = (p: string): string => (p === '~' || p.startsWith('~/') ? home + p.slice(1) : p);
  const binds: UserBind[] = [];
  const rwRoots = req.bindWorkdir ? [cwd] : [];
  // Read-write ones first: a link planted in one of them must not choose what a read-only bind shows.
  for (const [list, mode] of [[req.rwBinds, 'rw'], [req.roBinds, 'ro']] as const) {
    for (const raw of list) {
      const flag = `--${mode === 'ro' ? 'ro-bind' : 'bind'}`;
      const abs = resolve(cwd, expand(raw));
      if (!existsSync(abs)) throw new CredproxyError('USAGE', `${flag} ${raw}: no such file or directory`);
      const link = plantedLink(abs, rwRoots);
      if (link !== null) {
        throw new CredproxyError('USAGE', `refusing ${flag} ${raw}: ${link} is a link out of ${rwRoots.find((r) => isUnder(canonicalPath(dirname(link)), r))}, which a sandbox can write (an earlier run may have planted it); name the target itself if you mean it`);
      }
      const path = canonicalPath(abs);
      checkBindRoot(path, flag, guard, 'name a directory below it instead');
      if (mode === 'rw') rwRoots.push(path);
      binds.push({ path, mode });
    }
  }
  // bwrap applies them in the order given: read-only ones first, as before.
  binds.sort((a, b) => (a.mode === b.mode ? 0 : a.mode === 'ro' ? -1 : 1));
  return {
    workdir: req.bindWorkdir ? cwd : null,
    homes,
    privateDirs: own,
    credproxyDirs,
    socketDir: null, // known once the proxy has started
    toolDirs: [
      ...new Set([
        checkToolDir(canonicalPath(req.packageRoot), 'credproxy’s package', hidden),
        ...nodeDirs(req.nodeBinary, hidden),
        ...(req.agentDir === undefined ? [] : [checkToolDir(canonicalPath(req.agentDir), 'the agent’s install dir', hidden)]),
      ]),
    ],
    binds,
    unprotect: req.unprotect.map((raw) => {
      const abs = resolve(cwd, expand(raw));
      // Any link will do here: `.vscode -> .git` stays in the project and would unprotect the repository.
      const link = plantedLink(abs, rwRoots, true);
      if (link !== null) throw new CredproxyError('USAGE', `refusing --unprotect ${raw}: ${link} is a link in ${rwRoots.find((r) => isUnder(link, r))}, which a sandbox can write (an earlier run may have planted it); name what it points to if you mean that`);
      return canonicalPath(abs);
    }),
  };
}

/** Which placeholders bwrap will have to create (they did not exist before the run). */
export function missingPlaceholders(plan: MountPlan): string[] {
  return plan.placeholders.filter((p) => !existsSync(p));
}

/**
 * After the run: remove the empty placeholder dirs bwrap created on the
 * host, move aside a git `commondir` or an included config file that
 * appeared (host git would read config the sandbox wrote), and warn about every other
 * watched path that appeared (a `.git`, an editor task file) for the user
 * to review. `ownNamespaces`: this run's sandbox, whose mounts may linger
 * for a moment after bwrap exits. Returns the warnings.
 */
export function afterRun(created: string[], plan: MountPlan, ownNamespaces: string[] = []): string[] {
  const busy = mountedElsewhere(created, ownNamespaces);
  for (const p of created) {
    if (busy.has(p)) continue; // the other run holds it as an existing dir, and leaves it as such
    try {
      rmdirSync(p);
    } catch {
      /* not empty or already gone: leave it */
    }
  }
  const before = new Set(plan.gitEntries);
  const warnings: string[] = [];
  const scans = plan.rwRoots.map((r) => ({ root: r, ...scanGitEntries(r, AFTER_RUN_SCAN) }));
  // Beyond the start-up scan's reach a repository that was there before is told apart by its change time.
  const newRepos = scans.flatMap((s) => s.found).filter((g) => !before.has(g) && !plan.watch.includes(g) && changedSince(g, plan.plannedAt));
  for (const s of scans) {
    if (!s.complete) warnings.push(`${s.root} has more than ${AFTER_RUN_SCAN.dirs} directories (or nests deeper than ${AFTER_RUN_SCAN.depth}): a repository created inside may have gone unnoticed; look for new .git entries before running git there`);
  }
  for (const p of [...appeared(plan.watch), ...newRepos]) {
    const config = plan.aside.find((a) => a.path === p);
    // Its dir was canonical when planned: one the sandbox swapped for a link would have the rename act outside the project.
    if (config && canonicalPath(dirname(p)) === dirname(p)) {
      const aside = `${p}.from-sandbox-${Date.now()}`;
      try {
        renameSync(p, aside);
        warnings.push(`${p} was created inside the sandbox (${config.why}); moved aside to ${aside}`);
        continue;
      } catch {
        /* fall through to the plain warning */
      }
    }
    // Beyond the start-up scan a repository that was there may have been moved or written to rather than made.
    const how = newRepos.includes(p) && !createdSince(p, plan.plannedAt) ? 'moved there or changed' : 'created';
    warnings.push(`${p} was ${how} inside the sandbox and can make the host run code (a repository's config, editor tasks): review it before opening the project`);
  }
  return warnings;
}

/** The file system stamps times from a clock a tick (a few ms) behind Date.now(). */
const CLOCK_SLACK_MS = 50;

/** Created, renamed or changed at or after `ms` (ctime: a rename moves it too, and nothing inside can set it back). */
function changedSince(path: string, ms: number): boolean {
  try {
    return lstatSync(path).ctimeMs >= ms - CLOCK_SLACK_MS;
  } catch {
    return false;
  }
}

/** Made at or after `ms`, where the file system records a birth time (0 where it does not). */
function createdSince(path: string, ms: number): boolean {
  try {
    return lstatSync(path).birthtimeMs >= ms - CLOCK_SLACK_MS;
  } catch {
    return false;
  }
}

/**
 * The first symlink on the way to `abs` that lies in a read-write root and
 * leads out of it (with `anyLink`: any symlink in one), or null. A sandbox
 * can replace anything in such a root with a link (`vendor -> ~/.claude`),
 * and a later `--ro-bind vendor` would follow it into the hidden home.
 */
function plantedLink(abs: string, rwRoots: string[], anyLink = false): string | null {
  let cur = '/';
  for (const part of abs.split('/').filter(Boolean)) {
    const next = join(cur, part);
    let isLink: boolean;
    try {
      isLink = lstatSync(next).isSymbolicLink();
    } catch {
      return null;
    }
    const target = canonicalPath(next);
    if (isLink) {
      const root = rwRoots.find((r) => isUnder(next, r) && next !== r);
      if (root !== undefined && (anyLink || !isUnder(target, root))) return next;
    }
    cur = target;
  }
  return null;
}

/**
 * Which of `paths` a mount namespace other than ours has a mount on: a
 * second sandbox started in the same project while this one ran binds our
 * placeholder as an existing dir. Removing it on the host would detach that
 * mount there (Linux allows rmdir of another namespace's mount point), and
 * the other sandbox could then create what it held (`.git/modules/x/config`).
 */
function mountedElsewhere(paths: string[], own: string[]): Set<string> {
  const found = new Set<string>();
  if (paths.length === 0) return found;
  const wanted = new Set(paths);
  const seen = new Set<string>(own);
  try {
    seen.add(readlinkSync('/proc/self/ns/mnt'));
  } catch {
    return found;
  }
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    let info: string;
    try {
      const ns = readlinkSync(`/proc/${pid}/ns/mnt`); // another user's process: not ours to look into, nor a sandbox of ours
      if (seen.has(ns)) continue;
      seen.add(ns);
      info = readFileSync(`/proc/${pid}/mountinfo`, 'utf8');
    } catch {
      continue;
    }
    for (const line of info.split('\n')) {
      // Field 5 is the mount point, with space, tab, newline and backslash written as octal escapes.
      const point = line.split(' ')[4]?.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
      if (point !== undefined && wanted.has(point)) found.add(point);
    }
  }
  return found;
}
