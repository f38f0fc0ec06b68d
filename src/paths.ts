import { mkdirSync, chmodSync, realpathSync, statSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { CredproxyError } from './errors.js';

/** SPEC §3 directory layout. Every directory is created 0700 on demand. */
export interface CredproxyDirs {
  config: string;
  data: string;
  state: string;
  /** Parent of per-run socket directories. */
  run: string;
}

export function resolveDirs(env: NodeJS.ProcessEnv = process.env): CredproxyDirs {
  const home = env.CREDPROXY_HOME;
  if (home && !home.startsWith('/')) {
    // Relative, it would name a different store in every directory (and the sandbox checks compare canonical paths).
    throw new CredproxyError('USAGE', `CREDPROXY_HOME must be an absolute path (got ${JSON.stringify(home)})`);
  }
  if (home) {
    return { config: join(home, 'config'), data: join(home, 'data'), state: join(home, 'state'), run: join(home, 'run') };
  }
  const userHome = env.HOME || homedir();
  const xdg = (name: string, fallback: string): string => {
    const v = env[name];
    // XDG says relative paths are invalid and must be ignored.
    return v && v.startsWith('/') ? v : fallback;
  };
  const uid = typeof process.getuid === 'function' ? process.getuid() : 0;
  const runtime = env.XDG_RUNTIME_DIR && env.XDG_RUNTIME_DIR.startsWith('/') ? join(env.XDG_RUNTIME_DIR, 'credproxy') : join(realpathSync(tmpdir()), `credproxy-${uid}`);
  return {
    config: join(xdg('XDG_CONFIG_HOME', join(userHome, '.config')), 'credproxy'),
    data: join(xdg('XDG_DATA_HOME', join(userHome, '.local', 'share')), 'credproxy'),
    state: join(xdg('XDG_STATE_HOME', join(userHome, '.local', 'state')), 'credproxy'),
    run: runtime,
  };
}

/**
 * Create `dir` (and parents) and make sure the leaf is 0700 and owned by us.
 * A pre-existing leaf with looser permissions is tightened, not trusted blindly.
 */
export function ensurePrivateDir(dir: string): string {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = statSync(dir);
  if (!st.isDirectory()) throw new Error(`${dir} exists and is not a directory`);
  const uid = typeof process.getuid === 'function' ? process.getuid() : st.uid;
  if (st.uid !== uid) throw new Error(`${dir} is owned by uid ${st.uid}, not by the current user (${uid})`);
  if ((st.mode & 0o077) !== 0) chmodSync(dir, 0o700);
  return dir;
}
