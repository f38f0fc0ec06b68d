import { realpathSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';

/**
 * The canonical form of `path`: symlinks resolved in the longest prefix that
 * exists, the rest appended as is. Every comparison between the workdir,
 * masks and credproxy's own dirs is made on these, so a symlinked
 * CREDPROXY_HOME or a workdir reached through a link cannot slip past it.
 */
export function canonicalPath(path: string, base = process.cwd()): string {
  const abs = resolve(base, path);
  const missing: string[] = [];
  let cur = abs;
  for (;;) {
    try {
      return join(realpathSync(cur), ...missing.reverse());
    } catch {
      const parent = dirname(cur);
      if (parent === cur) return abs;
      missing.push(basename(cur));
      cur = parent;
    }
  }
}

/** `path` is `dir` or lies below it (both canonical). */
export function isUnder(path: string, dir: string): boolean {
  return path === dir || dir === '/' || path.startsWith(dir.endsWith('/') ? dir : `${dir}/`);
}

/** Either contains the other. */
export function overlaps(a: string, b: string): boolean {
  return isUnder(a, b) || isUnder(b, a);
}

/** The directories strictly between `root` and `path` (path below root), outermost first. */
export function between(root: string, path: string): string[] {
  const out: string[] = [];
  for (let d = dirname(path); d !== root && isUnder(d, root) && d !== dirname(d); d = dirname(d)) out.unshift(d);
  return out;
}
