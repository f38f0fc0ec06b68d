import { existsSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { CredproxyError } from '../errors.js';
import { between, canonicalPath, isUnder } from './paths.js';
import { credentialLooking, firstSocket, protectionsFor, type Protection } from './protect.js';
import { SANDBOX_SOCKET_DIR } from './spec.js';

/** One bwrap filesystem operation, in the order bwrap applies them (a later one covers an earlier one). */
export interface MountOp {
  op: 'ro-bind' | 'bind' | 'tmpfs' | 'dev' | 'proc' | 'placeholder';
  src?: string;
  dest: string;
  why: string;
}

export interface UserBind {
  path: string;
  mode: 'ro' | 'rw';
}

/** Everything the plan depends on; every path canonical (see canonicalPath). */
export interface MountInput {
  workdir: string | null;
  /** $HOME and the account's home from the password database. */
  homes: string[];
  /** The user's dirs that the environment names outside the homes (XDG dirs, the session bus's): hidden like them. */
  privateDirs?: string[];
  /** credproxy's config, data, state and run dirs. */
  credproxyDirs: string[];
  /** Host directory holding the proxy's socket, or null before the proxy exists (--explain). */
  socketDir: string | null;
  /** The package root and node's install dir: read-only inside wherever they are. */
  toolDirs: string[];
  binds: UserBind[];
  unprotect: string[];
}

export interface MountPlan {
  ops: MountOp[];
  /** Placeholder dirs bwrap creates on the host (removed after the run when still empty). */
  placeholders: string[];
  /** Paths that must not appear during the run (reported after it). */
  watch: string[];
  /** Watched paths that host git would read as config: moved aside when they appear. */
  aside: Array<{ path: string; why: string }>;
  /** Read-write roots and the `.git` entries found in them before the run: new ones are reported after it. */
  rwRoots: string[];
  gitEntries: string[];
  /** When the plan was made (ms): a `.git` changed since then, beyond the start-up scan, is new. */
  plannedAt: number;
  warnings: string[];
}

/** Host dirs full of other programs' sockets and files: hidden behind empty tmpfs. */
export const SYSTEM_MASKS = ['/tmp', '/var/tmp', '/run'] as const;

function describeMask(dir: string, homes: string[]): string {
  return homes.includes(dir) ? `${dir} (your home directory)` : dir;
}

/**
 * A directory bound into the sandbox (the workdir or a --bind/--ro-bind)
 * may lie inside a hidden dir (only it comes back, the rest stays hidden),
 * but may not be one or contain one: that would expose everything the host
 * keeps there (session-bus, X11, ssh-agent sockets, other projects).
 * credproxy's own dirs may not overlap it either way.
 */
export function checkBindRoot(path: string, what: string, input: Pick<MountInput, 'homes' | 'credproxyDirs' | 'privateDirs'>, hint: string): void {
  const masks = [...SYSTEM_MASKS.map((m) => canonicalPath(m)), ...input.homes, ...(input.privateDirs ?? [])];
  const refuse = (why: string): never => {
    throw new CredproxyError('USAGE', `refusing to bind ${what} ${path} into the sandbox: ${why}; ${hint}`);
  };
  if (path === '/') refuse('it is the root directory');
  for (const own of input.credproxyDirs) {
    if (isUnder(path, own)) refuse(`it lies inside credproxy's own ${own}`);
    if (isUnder(own, path)) refuse(`it contains credproxy's own ${own}`);
  }
  for (const m of masks) {
    if (path === m) refuse(`it is ${describeMask(m, input.homes)}, which the sandbox hides`);
    if (isUnder(m, path)) refuse(`it contains ${describeMask(m, input.homes)}, which the sandbox hides`);
  }
  if (SYSTEM_MASKS.some((m) => isUnder(path, canonicalPath(m)))) {
    const socket = firstSocket(path);
    if (socket) refuse(`it holds the socket ${socket} of another program (the sandbox hides those)`);
  }
}

/**
 * The filesystem of a bwrap sandbox: read-only root, private /dev and /proc,
 * hidden dirs, then the read-write roots, then everything that must stay
 * read-only inside them — tool dirs and the files that make the host run
 * code — last, so no read-write bind can reopen them. A protected path
 * below a read-write root has every dir between pinned (bound onto itself),
 * so it cannot be side-stepped by renaming a parent.
 */
export function planMounts(input: MountInput): MountPlan {
  const warnings: string[] = [];
  const ops: MountOp[] = [
    { op: 'ro-bind', src: '/', dest: '/', why: 'host root, read-only' },
    { op: 'dev', dest: '/dev', why: 'private /dev' },
    { op: 'proc', dest: '/proc', why: 'private /proc' },
  ];
  const masks: Array<[string, string]> = [];
  const addMask = (dir: string, why: string): void => {
    if (!masks.some(([m]) => isUnder(dir, m))) masks.push([dir, why]);
  };
  for (const m of SYSTEM_MASKS) addMask(canonicalPath(m), 'other programs’ sockets and files');
  for (const h of input.homes) addMask(h, 'home directory');
  for (const d of input.privateDirs ?? []) addMask(d, 'your own dir, named by the environment (configs, logins, sockets)');
  for (const d of input.credproxyDirs) addMask(d, 'credproxy’s own dir');
  for (const [dest, why] of masks) ops.push({ op: 'tmpfs', dest, why: `hidden: ${why}` });

  const rwRoots: string[] = [];
  if (input.workdir !== null) {
    ops.push({ op: 'bind', src: input.workdir, dest: input.workdir, why: 'working directory, read-write' });
    rwRoots.push(input.workdir);
    // A dir reached through a link (`cd packages/api`, planted as `-> ~/.claude`) is the workdir all the same.
    // Not a project's own .npmrc (registry settings) or key-looking fixtures: those would make it say so on every run.
    const creds = credentialLooking(input.workdir).filter((c) => c !== '.npmrc' && !c.startsWith('*'));
    if (creds.length) warnings.push(`the working directory ${input.workdir} holds what looks like credentials (${creds.join(', ')}); the sandbox can read and change them`);
  }
  for (const b of input.binds) {
    ops.push({ op: b.mode === 'rw' ? 'bind' : 'ro-bind', src: b.path, dest: b.path, why: `--${b.mode === 'rw' ? 'bind' : 'ro-bind'}` });
    if (b.mode === 'rw') rwRoots.push(b.path);
    const creds = credentialLooking(b.path);
    if (creds.length) warnings.push(`${b.path} holds what looks like credentials (${creds.join(', ')}); the sandbox can ${b.mode === 'rw' ? 'read and change' : 'read'} them`);
  }
  if (input.socketDir !== null) ops.push({ op: 'ro-bind', src: input.socketDir, dest: SANDBOX_SOCKET_DIR, why: 'the proxy socket (connect() works read-only)' });

  const hidden = masks.map(([m]) => m);
  const bound: UserBind[] = [...(input.workdir === null ? [] : [{ path: input.workdir, mode: 'rw' as const }]), ...input.binds];
  /** The innermost bind showing `p`: a read-only one already protects it, a read-write one is the root to pin from. */
  const rootOf = (p: string): string | undefined => {
    const inner = bound.filter((b) => isUnder(p, b.path)).sort((a, b) => b.path.length - a.path.length)[0];
    return inner?.mode === 'rw' ? inner.path : undefined;
  };
  const readOnlyAlready = (p: string): boolean => bound.some((b) => isUnder(p, b.path)) && rootOf(p) === undefined;
  const late: MountOp[] = [];
  const pinned = new Set<string>(rwRoots);
  const pin = (root: string, path: string): void => {
    for (const d of between(root, path)) {
      if (pinned.has(d)) continue;
      pinned.add(d);
      late.push({ op: 'bind', src: d, dest: d, why: `pinned: holds ${path.slice(root.length + 1)}` });
    }
  };

  for (const tool of input.toolDirs) {
    const root = rootOf(tool);
    if (readOnlyAlready(tool)) continue;
    if (!root && !hidden.some((m) => isUnder(tool, m))) continue; // visible and read-only through the root already
    if (root) pin(root, tool);
    late.push({ op: 'ro-bind', src: tool, dest: tool, why: 'tool dir (credproxy, node), read-only' });
    for (const r of rwRoots) if (isUnder(r, tool)) warnings.push(`${r} lies inside the tool dir ${tool}, which is read-only inside the sandbox`);
    // `npx credproxy` and npm scripts run node_modules/.bin/credproxy, a link the sandbox could point elsewhere.
    const bin = join(dirname(tool), '.bin');
    if (root && basename(dirname(tool)) === 'node_modules' && existsSync(bin)) {
      pin(root, bin);
      late.push({ op: 'ro-bind', src: bin, dest: bin, why: 'node_modules/.bin of a project that installs credproxy' });
    }
  }

  const placeholders: string[] = [];
  const watch: string[] = [];
  const aside: Array<{ path: string; why: string }> = [];
  const found: string[] = [];
  for (const root of rwRoots) {
    const set = protectionsFor(root, input.unprotect);
    watch.push(...set.watch.filter((w) => rootOf(w) !== undefined));
    aside.push(...set.aside.filter((a) => rootOf(a.path) !== undefined));
    warnings.push(...set.warnings);
    found.push(...set.gitEntries);
    for (const p of set.protections) {
      const inRoot = rootOf(p.path);
      if (!inRoot) continue; // outside every read-write root: read-only or hidden already
      pin(inRoot, p.path);
      late.push(toOp(p));
      if (p.kind === 'pin') pinned.add(p.path);
      if (p.kind === 'placeholder') placeholders.push(p.path);
    }
  }
  // Pins first, then read-only binds: a pin is a read-write bind and would reopen a read-only one beneath it.
  ops.push(...late.filter((o) => o.op === 'bind'), ...late.filter((o) => o.op !== 'bind'));
  return { ops, placeholders, watch: [...new Set(watch)], aside, warnings, rwRoots, gitEntries: found, plannedAt: Date.now() };
}

function toOp(p: Protection): MountOp {
  if (p.kind === 'placeholder') return { op: 'placeholder', dest: p.path, why: p.why };
  return { op: p.kind === 'pin' ? 'bind' : 'ro-bind', src: p.path, dest: p.path, why: p.why };
}

/** bwrap arguments for the plan's operations. */
export function mountArgs(ops: MountOp[]): string[] {
  const args: string[] = [];
  for (const o of ops) {
    if (o.op === 'dev' || o.op === 'proc' || o.op === 'tmpfs') args.push(`--${o.op}`, o.dest);
    else if (o.op === 'placeholder') args.push('--tmpfs', o.dest, '--remount-ro', o.dest);
    else args.push(`--${o.op}`, o.src!, o.dest);
  }
  return args;
}

/** The mount table for `run --explain`, one line per operation. */
export function formatPlan(ops: MountOp[]): string[] {
  const w = Math.max(...ops.map((o) => o.dest.length));
  const label: Record<MountOp['op'], string> = { 'ro-bind': 'read-only', bind: 'read-write', tmpfs: 'hidden', dev: 'dev', proc: 'proc', placeholder: 'empty, r-o' };
  return ops.map((o) => `${o.dest.padEnd(w)}  ${label[o.op].padEnd(10)}  ${o.src && o.src !== o.dest ? `from ${o.src}; ` : ''}${o.why}`);
}
