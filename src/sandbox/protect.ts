import { spawnSync } from 'node:child_process';
import { accessSync, constants, existsSync, lstatSync, readFileSync, readdirSync, type Stats } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { canonicalPath, isUnder } from './paths.js';

/**
 * Files the host runs code from when the user merely opens, enters or
 * reviews the project (relative to each read-write root). Each one that
 * exists is bound read-only inside the sandbox; `.git` is handled on its own.
 */
export const IMPLICIT_EXEC_FILES = [
  '.envrc', // direnv: sourced on cd
  '.vscode', // tasks.json runOn folderOpen, settings.json (interpreter and terminal paths)
  '.idea', // JetBrains run configurations and startup tasks
  '.devcontainer', // devcontainer.json initializeCommand runs on the host
  '.devcontainer.json', // the same, at the project's top
  '.zed', // settings.json: language-server binaries started when a file is opened
  '.mise.toml', // mise: env sourcing and hooks of a trusted project (trust can cover a whole dir, any file in it)
  'mise.toml',
  '.mise.local.toml',
  'mise.local.toml',
  '.mise', // .mise/config.toml
  '.config/mise.toml',
  '.config/mise', // .config/mise/config.toml
  'opencode.json', // opencode: MCP server commands
  'opencode.jsonc',
  '.opencode', // opencode: plugins it loads and runs at start
  '.claude/settings.json', // Claude Code hooks run shell commands
  '.claude/settings.local.json',
  '.gemini/settings.json', // MCP server commands
  '.qwen/settings.json',
  '.mcp.json',
  '.cursor/mcp.json',
] as const;

/**
 * Inside a git dir: what makes git execute something (config: core.fsmonitor,
 * core.hooksPath, core.pager, diff.external, filter drivers, sshCommand…;
 * hooks; submodules' and worktrees' own git dirs with their configs and
 * hooks). Missing ones become empty read-only placeholders, so nothing can be
 * created there. Objects, refs, logs and the index stay writable.
 */
const GIT_PLACEHOLDER_DIRS = ['hooks', 'modules', 'worktrees'] as const;

export interface Protection {
  path: string;
  /**
   * 'ro' binds an existing file or dir read-only; 'pin' binds a dir onto
   * itself read-write, so it cannot be renamed or removed (EBUSY);
   * 'placeholder' mounts an empty read-only dir where none exists.
   */
  kind: 'ro' | 'pin' | 'placeholder';
  why: string;
}

export interface ProtectionSet {
  protections: Protection[];
  /**
   * Paths that must not appear during the run but cannot be held by a
   * mount without breaking git (a `commondir` redirect, a new `.git` in a
   * root that had none when placeholders are unprotected): checked after the run.
   */
  watch: string[];
  /**
   * Watched paths that host git would read as its config if they appeared
   * (a `commondir`, an included config file): moved aside after the run.
   */
  aside: Array<{ path: string; why: string }>;
  /** The `.git` entries found at the root and below it. */
  gitEntries: string[];
  /** Protected names that are symlinks: the link itself cannot be held, only re-pointed by the sandbox. */
  warnings: string[];
}

/**
 * What to protect inside the read-write root `root` (canonical). `unprotected`
 * (canonical) drops every protection at or below each path.
 */
export function protectionsFor(root: string, unprotected: string[]): ProtectionSet {
  const set: ProtectionSet = { protections: [], watch: [], aside: [], gitEntries: gitEntries(root), warnings: [] };
  const add = (p: Protection): void => {
    // A symlink planted by an earlier run (`.vscode -> ~/.ssh`) must not make bwrap bind its target: only what
    // really lies in the root is held; a link that leaves it points at something read-only or hidden already.
    const real = canonicalPath(p.path);
    if (real !== p.path && lstatOrNull(p.path)?.isSymbolicLink() && !unprotected.some((u) => isUnder(p.path, u))) {
      set.warnings.push(`${p.path} is a symlink: the sandbox can point it elsewhere (${p.why}); replace it with the real file or dir to have it held read-only`);
    }
    if (real !== p.path) {
      if (!isUnder(real, root) || real === root) return;
      p = { ...p, path: real };
    }
    if (unprotected.some((u) => isUnder(p.path, u))) return;
    // Where we cannot create a placeholder, neither can the sandbox (same uid) create anything there.
    if (p.kind === 'placeholder' && !writable(dirname(p.path))) return;
    set.protections.push(p);
  };
  for (const rel of IMPLICIT_EXEC_FILES) {
    const path = join(root, rel);
    if (exists(path)) add({ path, kind: 'ro', why: 'runs code on the host when the project is opened' });
    else if (isUnder(canonicalPath(path), root)) set.watch.push(path);
  }
  const dotGit = join(root, '.git');
  if (lstatOrNull(dotGit) === null) {
    // A `.git` created inside would make host git in this directory read the sandbox's config.
    add({ path: dotGit, kind: 'placeholder', why: 'no repository here: none can be created inside' });
    set.watch.push(dotGit);
  }
  // The root's own repository and those already below it (several checkouts in one dir, vendored repos, submodules).
  const userFiles = userConfigFiles();
  for (const entry of set.gitEntries) protectGitEntry(entry, add, set, userFiles);
  return set;
}

function protectGitEntry(dotGit: string, add: (p: Protection) => void, set: ProtectionSet, userFiles: string[]): void {
  const st = lstatOrNull(dotGit);
  if (st === null) return;
  const worktree = dirname(dotGit);
  if (st.isDirectory()) {
    protectGitDir(dotGit, worktree, add, set, userFiles);
  } else if (st.isFile()) {
    add({ path: dotGit, kind: 'ro', why: 'gitfile: where the repository lives' });
    const target = gitfileTarget(dotGit);
    // Held wherever it is: the plan keeps only what lies in some read-write root (this one or a --bind).
    if (target) protectGitDir(target, worktree, add, set, userFiles);
  } else {
    add({ path: dotGit, kind: 'ro', why: 'not a regular .git: held as it is' });
  }
}

/** How far below a root existing repositories are looked for, and how many dirs at most (start-up stays quick). */
export interface ScanLimits {
  depth: number;
  dirs: number;
}
const BEFORE_RUN_SCAN: ScanLimits = { depth: 4, dirs: 4000 };
/**
 * After the run the whole tree is looked through: a repository the sandbox
 * made deeper than the start-up scan reaches (or behind as many empty dirs
 * as its budget) would otherwise go unreported.
 */
export const AFTER_RUN_SCAN: ScanLimits = { depth: 64, dirs: 100_000 };
const GIT_SCAN_SKIP = new Set(['node_modules', '.git', '.hg', '.svn', 'target', '.venv', 'venv', '__pycache__', '.cache']);

/** `.git` entries (dirs or files) at `root` and below it; `complete` is false when the limits left dirs unvisited. */
export function scanGitEntries(root: string, limits: ScanLimits): { found: string[]; complete: boolean } {
  const found: string[] = [];
  let budget = limits.dirs;
  let complete = true;
  const walk = (dir: string, depth: number): void => {
    if (budget-- <= 0) {
      complete = false;
      return;
    }
    let entries;
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    if (entries.some((e) => e.name === '.git')) found.push(join(dir, '.git'));
    const subdirs = entries.filter((e) => e.isDirectory() && !GIT_SCAN_SKIP.has(e.name));
    if (depth >= limits.depth) {
      if (subdirs.length > 0) complete = false;
      return;
    }
    for (const e of subdirs) walk(join(dir, e.name), depth + 1);
  };
  walk(root, 0);
  return { found, complete };
}

/** The `.git` entries that start-up protects: bounded, so a large tree starts quickly. */
export function gitEntries(root: string): string[] {
  return scanGitEntries(root, BEFORE_RUN_SCAN).found;
}

function protectGitDir(gitDir: string, worktree: string, add: (p: Protection) => void, set: ProtectionSet, userFiles: string[], depth = 0): void {
  // A bind of the git dir onto itself: renaming or removing it (to `git init` a fresh one) fails with EBUSY.
  add({ path: gitDir, kind: 'pin', why: 'git dir: cannot be renamed or replaced' });
  const worktreeConfig = join(gitDir, 'config.worktree');
  if (exists(worktreeConfig)) add({ path: worktreeConfig, kind: 'ro', why: 'git per-worktree config' });
  else watchConfig(set, worktreeConfig, 'git reads it as config where extensions.worktreeConfig is on, as sparse-checkout sets it');
  const commondir = join(gitDir, 'commondir');
  if (exists(commondir)) {
    // A linked worktree's admin dir (<common>/worktrees/<name>): its commondir names where config and hooks live.
    add({ path: commondir, kind: 'ro', why: 'git commondir: where config and hooks are read from' });
    const common = readCommondir(gitDir);
    if (common && depth === 0 && existsSync(common)) protectGitDir(common, worktree, add, set, userFiles, depth + 1);
    return;
  }
  // A commondir file would redirect config reads; an empty mount there would break git, so it is checked after the run.
  set.watch.push(commondir);
  set.aside.push({ path: commondir, why: 'it redirects where git reads its config from' });
  const config = join(gitDir, 'config');
  if (exists(config)) add({ path: config, kind: 'ro', why: 'git config: core.fsmonitor, hooksPath, pager, diff.external, filters, sshCommand' });
  else watchConfig(set, config, 'the repository’s config');
  for (const d of GIT_PLACEHOLDER_DIRS) {
    const p = join(gitDir, d);
    add({ path: p, kind: exists(p) ? 'ro' : 'placeholder', why: d === 'hooks' ? 'git hooks' : `git ${d}: their own configs and hooks` });
  }
  // The user's global and system configs count as well: a relative hooksPath there, or an include of a file in the project.
  const refs = [config, ...userFiles].map((f) => configReferences(f, worktree));
  for (const hooks of refs.flatMap((r) => r.hooksPaths)) {
    const why = 'core.hooksPath: the hooks git runs';
    if (exists(hooks)) add({ path: hooks, kind: 'ro', why });
    else if (exists(dirname(hooks))) add({ path: hooks, kind: 'placeholder', why });
    else set.watch.push(canonicalPath(hooks));
  }
  for (const file of refs.flatMap((r) => r.includes)) {
    if (exists(file)) {
      add({ path: file, kind: 'ro', why: 'git config included by the repository’s config' });
    } else {
      watchConfig(set, file, 'the repository’s config includes it');
    }
  }
}

/** A config file cannot be held where none exists: one created inside is moved aside after the run, like a commondir. */
function watchConfig(set: ProtectionSet, file: string, why: string): void {
  const path = canonicalPath(file);
  set.watch.push(path);
  set.aside.push({ path, why });
}

/**
 * What a git config file names for git to run or to read as more
 * config: `core.hooksPath` (relative to the worktree; husky points it into
 * the project at `.husky/_`, which nothing tracks) and the files of
 * `include.path` and `includeIf.*.path` (relative to the including file),
 * under any condition, since the sandbox can switch branches; followed
 * through the included files.
 */
function configReferences(config: string, worktree: string): { hooksPaths: string[]; includes: string[] } {
  const hooksPaths: string[] = [];
  const includes: string[] = [];
  const queue = [config];
  const seen = new Set<string>();
  while (queue.length > 0 && seen.size < 32) {
    const file = queue.shift()!;
    if (seen.has(file)) continue;
    seen.add(file);
    for (const [key, value] of gitConfigEntries(['--file', file], /^(core\.hookspath|include\.path|includeif\..*\.path)$/)) {
      const path = value.startsWith('~/') ? join(homedir(), value.slice(2)) : value;
      if (key === 'core.hookspath') {
        hooksPaths.push(resolve(worktree, path));
      } else {
        const included = resolve(dirname(file), path);
        includes.push(included);
        if (exists(included)) queue.push(included);
      }
    }
  }
  return { hooksPaths, includes };
}

/** The user's global and system config files, which git reads in every repository. */
function userConfigFiles(): string[] {
  const files = new Set<string>();
  for (const scope of ['--global', '--system']) {
    const out = spawnSync('git', ['config', scope, '--list', '--show-origin', '-z'], { encoding: 'utf8', timeout: 5000, stdio: ['ignore', 'pipe', 'ignore'] });
    if (out.status !== 0 || typeof out.stdout !== 'string') continue;
    // `file:PATH\0key\nvalue\0` per entry.
    const parts = out.stdout.split('\0');
    for (let i = 0; i + 1 < parts.length; i += 2) if (parts[i]!.startsWith('file:')) files.add(parts[i]!.slice('file:'.length));
  }
  return [...files];
}

/** `git config <where> --get-regexp` as [key, value] pairs; none when git is missing (then nothing runs hooks either). */
function gitConfigEntries(where: string[], key: RegExp): Array<[string, string]> {
  const out = spawnSync('git', ['config', ...where, '-z', '--get-regexp', key.source], { encoding: 'utf8', timeout: 5000, stdio: ['ignore', 'pipe', 'ignore'] });
  if (out.status !== 0 || typeof out.stdout !== 'string') return [];
  return out.stdout
    .split('\0')
    .filter(Boolean)
    .map((entry): [string, string] => {
      const nl = entry.indexOf('\n');
      return nl < 0 ? [entry, ''] : [entry.slice(0, nl), entry.slice(nl + 1)];
    })
    .filter(([, v]) => v !== ''); // a bare `path` names nothing (it would resolve to the dir it is taken in)
}

function readCommondir(gitDir: string): string | null {
  try {
    const text = readFileSync(join(gitDir, 'commondir'), 'utf8').trim();
    return text ? canonicalPath(resolve(gitDir, text)) : null;
  } catch {
    return null;
  }
}

/** `gitdir: PATH` of a `.git` file, canonical. */
export function gitfileTarget(file: string): string | null {
  try {
    const m = /^gitdir:\s*(.+?)\s*$/m.exec(readFileSync(file, 'utf8'));
    return m ? canonicalPath(resolve(dirname(file), m[1]!)) : null;
  } catch {
    return null;
  }
}

function lstatOrNull(path: string): Stats | null {
  try {
    return lstatSync(path);
  } catch {
    return null;
  }
}

function writable(dir: string): boolean {
  try {
    accessSync(dir, constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

function exists(path: string): boolean {
  return lstatOrNull(path) !== null;
}

/** Watched paths that appeared during the run. */
export function appeared(watch: string[]): string[] {
  return watch.filter((p) => exists(p));
}

/**
 * The first Unix socket at most `depth` levels below `dir`: a dir inside
 * /tmp or /run that holds one (an X11, ssh-agent, tmux or session-bus dir)
 * is not a project, and binding it would hand the socket to the sandbox.
 */
export function firstSocket(dir: string, depth = 2, budget = { dirs: 500 }): string | null {
  if (budget.dirs-- <= 0) return null;
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return null;
  }
  for (const e of entries) if (e.isSocket()) return join(dir, e.name);
  if (depth === 0) return null;
  for (const e of entries) {
    if (!e.isDirectory() || e.name === 'node_modules' || e.name === '.git') continue;
    const found = firstSocket(join(dir, e.name), depth - 1, budget);
    if (found) return found;
  }
  return null;
}

/** Directory names that look like credentials; a bind of a dir holding one gets a warning. */
export const CREDENTIAL_LOOKING = [
  '.ssh', '.aws', '.gnupg', '.config/gcloud', '.azure', '.kube', '.docker/config.json', '.netrc', '.git-credentials', '.npmrc', '.pypirc', '.password-store', '.local/share/keyrings', '.config/gh/hosts.yml', 'id_rsa', 'id_ed25519',
  // The agents' own logins, in their config dirs or at the top of one.
  '.claude/.credentials.json', '.claude.json', '.codex/auth.json', '.gemini/oauth_creds.json', '.qwen/oauth_creds.json', '.credentials.json', 'oauth_creds.json',
];

export function credentialLooking(dir: string): string[] {
  const found = CREDENTIAL_LOOKING.filter((rel) => exists(join(dir, rel)));
  // The dir itself may be one of them (--bind ~/.ssh).
  const base = dir.split('/').pop() ?? '';
  if (['.ssh', '.aws', '.gnupg', '.kube', 'keyrings', 'gcloud', '.password-store', '.claude', '.codex', '.gemini', '.qwen'].includes(base)) found.unshift('.');
  try {
    if (readdirSync(dir).some((n) => /^(credentials|.*\.pem|.*\.key)$/.test(n))) found.push('*.pem/*.key/credentials');
  } catch {
    /* a file, or unreadable */
  }
  return found;
}
