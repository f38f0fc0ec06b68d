import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { ensurePrivateDir } from '../paths.js';

const DIR_RE = /^s-(\d+)-[0-9a-f]{8}$/;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * A fresh 0700 directory under the run dir holding one proxy's socket and
 * nothing else, so a sandbox can bind exactly it. Directories left by a
 * killed launcher are removed here once their owner pid is gone.
 */
export function createSocketDir(runDir: string): string {
  ensurePrivateDir(runDir);
  for (const name of readdirSync(runDir)) {
    const m = DIR_RE.exec(name);
    if (m && !alive(Number(m[1]))) rmSync(join(runDir, name), { recursive: true, force: true });
  }
  const dir = join(runDir, `s-${process.pid}-${randomBytes(4).toString('hex')}`);
  mkdirSync(dir, { mode: 0o700 });
  return dir;
}

export function removeSocketDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}
