import { join } from 'node:path';
import lockfile from 'proper-lockfile';
import { CredproxyError } from '../errors.js';
import { ensurePrivateDir } from '../paths.js';

/** SPEC §3: a holder that died must not block others for longer than about 30 s. */
export const DEFAULT_STALE_MS = 30_000;
const POLL_MS = 50;

export interface RefreshLocksOptions {
  /** Lock directories live here (`<state dir>/locks`). */
  dir: string;
  /** A lock not touched for this long belongs to a dead holder and is taken over. */
  staleMs?: number;
  logger?: { warn(obj: object, msg: string): void };
}

/**
 * Cross-process refresh locks, one per provider:bucket (mkdir-based via
 * proper-lockfile; the holder touches the lock every staleMs/3, so a killed
 * holder's lock goes stale within staleMs and is then taken over).
 */
export class RefreshLocks {
  private readonly dir: string;
  private readonly staleMs: number;
  private readonly logger: RefreshLocksOptions['logger'];
  private readonly held = new Map<string, () => Promise<void>>();
  private dirReady = false;

  constructor(options: RefreshLocksOptions) {
    this.dir = options.dir;
    this.staleMs = options.staleMs ?? DEFAULT_STALE_MS;
    this.logger = options.logger;
  }

  private pathOf(provider: string, bucket: string): string {
    return join(this.dir, `${provider}:${bucket}`);
  }

  /** Try to take the lock, waiting up to waitMs for another holder; false when it stays busy. */
  async acquire(provider: string, bucket: string, waitMs = 0): Promise<boolean> {
    const name = `${provider}:${bucket}`;
    if (!this.dirReady) {
      try {
        ensurePrivateDir(this.dir);
      } catch (err) {
        throw new CredproxyError('LOCK_FAILED', `cannot create the lock directory ${this.dir}: ${err instanceof Error ? err.message : 'unknown error'}`);
      }
      this.dirReady = true;
    }
    const deadline = Date.now() + waitMs;
    for (;;) {
      if (!this.held.has(name)) {
        try {
          const release = await lockfile.lock(this.pathOf(provider, bucket), {
            realpath: false,
            stale: this.staleMs,
            update: Math.max(1000, Math.floor(this.staleMs / 3)),
            retries: 0,
            onCompromised: () => {
              // Another process took it over as stale (we were stalled too long): forget it, never crash.
              this.held.delete(name);
              this.logger?.warn({ lock: name }, 'refresh lock was taken over as stale');
            },
          });
          this.held.set(name, release);
          return true;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ELOCKED') {
            throw new CredproxyError('LOCK_FAILED', `cannot take the refresh lock for ${name} (${(err as NodeJS.ErrnoException).code ?? 'unknown error'})`);
          }
        }
      }
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await new Promise((r) => setTimeout(r, Math.min(POLL_MS, left)));
    }
  }

  async release(provider: string, bucket: string): Promise<void> {
    const name = `${provider}:${bucket}`;
    const release = this.held.get(name);
    if (!release) return;
    this.held.delete(name);
    await release().catch(() => undefined);
  }

  /** Release everything this process holds (shutdown). */
  async releaseAll(): Promise<void> {
    const all = [...this.held.values()];
    this.held.clear();
    await Promise.all(all.map((r) => r().catch(() => undefined)));
  }
}
