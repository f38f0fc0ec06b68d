import { randomBytes } from 'node:crypto';
import { readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ensurePrivateDir } from '../paths.js';
import { encodeBucket } from '../store/entry-name.js';

/**
 * When each provider:bucket was last refreshed successfully. The refresh
 * cooldown (SPEC §5: one refresh per 30 s) holds across every process that
 * shares the store, so the production implementation lives on disk.
 */
export interface CooldownStore {
  /** ms since the epoch, or null when unknown. */
  lastRefresh(provider: string, bucket: string): Promise<number | null>;
  recordRefresh(provider: string, bucket: string, atMs: number): Promise<void>;
  clear(provider: string, bucket: string): Promise<void>;
}

/** For a single process (and unit tests). */
export class MemoryCooldownStore implements CooldownStore {
  private readonly times = new Map<string, number>();

  async lastRefresh(provider: string, bucket: string): Promise<number | null> {
    return this.times.get(`${provider}:${bucket}`) ?? null;
  }
  async recordRefresh(provider: string, bucket: string, atMs: number): Promise<void> {
    this.times.set(`${provider}:${bucket}`, atMs);
  }
  async clear(provider: string, bucket: string): Promise<void> {
    this.times.delete(`${provider}:${bucket}`);
  }
}

/** Sub-directory of the state dir holding one small file per provider:bucket. */
export const COOLDOWN_DIR_NAME = 'refresh-times';

/**
 * One file per provider:bucket holding the epoch ms of the last refresh,
 * replaced atomically (temp file + rename) so readers never see half a
 * number. Only written by the holder of that credential's refresh lock.
 */
export class FileCooldownStore implements CooldownStore {
  private readonly dir: string;
  private dirReady = false;

  constructor(dir: string) {
    this.dir = dir;
  }

  static inStateDir(stateDir: string): FileCooldownStore {
    return new FileCooldownStore(join(stateDir, COOLDOWN_DIR_NAME));
  }

  private file(provider: string, bucket: string): string {
    // '~' cannot occur in a provider name, so the first one splits the pair; the bucket is
    // encoded (a plain SPEC §2 name stays as it was, so its record is still found).
    return join(this.dir, `${provider}~${encodeBucket(bucket)}.last-refresh`);
  }

  async lastRefresh(provider: string, bucket: string): Promise<number | null> {
    let text: string;
    try {
      text = await readFile(this.file(provider, bucket), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
    const value = Number(text.trim());
    // A damaged file only loses the rate limit for one refresh; treat it as unknown.
    return Number.isSafeInteger(value) && value > 0 ? value : null;
  }

  async recordRefresh(provider: string, bucket: string, atMs: number): Promise<void> {
    if (!this.dirReady) {
      ensurePrivateDir(this.dir);
      this.dirReady = true;
    }
    const target = this.file(provider, bucket);
    const tmp = `${target}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    await writeFile(tmp, String(Math.floor(atMs)), { mode: 0o600 });
    try {
      await rename(tmp, target);
    } catch (err) {
      await unlink(tmp).catch(() => undefined);
      throw err;
    }
  }

  async clear(provider: string, bucket: string): Promise<void> {
    await unlink(this.file(provider, bucket)).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
  }
}
