import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

/** What this machine's bwrap can do beyond the options every supported version has. */
export interface BwrapFeatures {
  /**
   * `--unshare-user --disable-userns` (bubblewrap 0.8+, and user namespaces
   * available to us): the sandbox's own user namespace, closed to nested
   * ones. Without it the seccomp filter still refuses CLONE_NEWUSER.
   */
  disableUserns: boolean;
}

function sysctl(path: string): number | null {
  try {
    return Number(readFileSync(path, 'utf8').trim());
  } catch {
    return null;
  }
}

/** bubblewrap's version as [major, minor, patch], or null when it does not say. */
export function parseBwrapVersion(text: string): [number, number, number] | null {
  const m = /bubblewrap\s+(\d+)\.(\d+)(?:\.(\d+))?/.exec(text);
  return m ? [Number(m[1]), Number(m[2]), Number(m[3] ?? 0)] : null;
}

export function probeBwrap(path = 'bwrap'): BwrapFeatures {
  const out = spawnSync(path, ['--version'], { encoding: 'utf8', timeout: 5000 });
  const v = parseBwrapVersion(`${out.stdout ?? ''}`);
  const recent = v !== null && (v[0] > 0 || v[1] >= 8);
  const maxUserns = sysctl('/proc/sys/user/max_user_namespaces');
  // Debian's switch for unprivileged user namespaces; absent elsewhere (allowed).
  const unprivileged = sysctl('/proc/sys/kernel/unprivileged_userns_clone');
  const usernsOk = maxUserns !== 0 && (process.getuid?.() === 0 || unprivileged !== 0);
  return { disableUserns: recent && usernsOk };
}
