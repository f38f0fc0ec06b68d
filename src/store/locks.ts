import { randomBytes } from 'node:crypto';
import { readFileSync, readlinkSync } from 'node:fs';
import { readFile, rename, stat, unlink, utimes, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import lockfile from 'proper-lockfile';
import { CredproxyError } from '../errors.js';
import { assertBucketName, assertProviderName } from '../names.js';
import { ensurePrivateDir } from '../paths.js';
import { encodeBucket } from './entry-name.js';

/** A lock's file name; plain SPEC §2 names keep the name they always had. */
const lockName = (provider: string, bucket: string): string => `${provider}:${encodeBucket(bucket)}`;

/**
 * SPEC §3: a holder that died must not block others for longer than about
 * 30 s. Shorter than the 30 s refresh budget, so a refresh already waiting
 * when the holder dies (and no owner record names it) still gets the lock.
 */
export const DEFAULT_STALE_MS = 20_000;
/** Between attempts on a busy lock: short next to a refresh (hundreds of ms), cheap (one mkdir). */
const POLL_MS = 50;

export interface RefreshLocksOptions {
  /** Lock directories live here (`<state dir>/locks`). */
  dir: string;
  /** A lock not touched for this long belongs to a dead holder and is taken over. */
  staleMs?: number;
  logger?: { warn(obj: object, msg: string): void };
}

/**
 * Who holds a lock, written next to it (not inside: the lock is an empty
 * directory). `ino` ties the record to one incarnation of the lock
 * directory, so a record left by an earlier holder is never mistaken for
 * the current one.
 */
interface OwnerRecord {
  host: string;
  pidns: string;
  pid: number;
  ino: number;
}

function pidNamespace(): string {
  try {
    return readlinkSync('/proc/self/ns/pid');
  } catch {
    // No /proc (macOS): no pid namespaces either.
    return 'none';
  }
}

/** false only when the pid surely does not run (a zombie cannot touch its lock any more). */
function processRuns(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code !== 'ESRCH';
  }
  try {
    return !/^\d+ \(.*\) Z/s.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return true;
  }
}

/**
 * Cross-process refresh locks, one per provider:bucket (mkdir-based via
 * proper-lockfile). The holder touches its lock every staleMs/3, so a lock
 * whose holder was killed goes stale within staleMs and is taken over. A
 * waiter also reads the owner record: when the owner is a dead process on
 * this host and in this pid namespace, the lock is taken over at once.
 */
export class RefreshLocks {
  private readonly dir: string;
  private readonly staleMs: number;
  private readonly logger: RefreshLocksOptions['logger'];
  private readonly held = new Map<string, () => Promise<void>>();
  private readonly host = hostname();
  private readonly pidns = pidNamespace();
  private dirReady = false;
  private probed: Promise<void> | undefined;

  constructor(options: RefreshLocksOptions) {
    this.dir = options.dir;
    this.staleMs = options.staleMs ?? DEFAULT_STALE_MS;
    // proper-lockfile refuses stale times under 2 s.
    if (!Number.isFinite(this.staleMs) || this.staleMs < 2000) throw new CredproxyError('LOCK_FAILED', 'the lock stale time must be at least 2000 ms');
    this.logger = options.logger;
  }

  private target(name: string): string {
    return join(this.dir, name);
  }
  private lockDir(name: string): string {
    return `${this.target(name)}.lock`;
  }
  private ownerFile(name: string): string {
    return `${this.target(name)}.owner`;
  }

  private ensureDir(): void {
    if (this.dirReady) return;
    try {
      ensurePrivateDir(this.dir);
    } catch (err) {
      throw new CredproxyError('LOCK_FAILED', `cannot create the lock directory ${this.dir}: ${err instanceof Error ? err.message : 'unknown error'}`);
    }
    this.dirReady = true;
  }

  /** Take the lock, waiting up to waitMs while another holder has it; false when it stays busy. */
  async acquire(provider: string, bucket: string, waitMs = 0): Promise<boolean> {
    assertProviderName(provider);
    assertBucketName(bucket);
    const name = lockName(provider, bucket);
    this.ensureDir();
    await this.probeMtimePrecision();
    const deadline = Date.now() + Math.max(0, waitMs);
    for (;;) {
      if (!this.held.has(name) && (await this.tryLock(name))) return true;
      if (!this.held.has(name) && (await this.ownerIsDead(name))) {
        // Age the lock so proper-lockfile's own stale path removes and retakes it.
        await utimes(this.lockDir(name), 0, 0).catch(() => undefined);
        if (await this.tryLock(name)) return true;
      }
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await new Promise((r) => setTimeout(r, Math.min(POLL_MS, left)));
    }
  }

  /**
   * proper-lockfile's first lock in a process probes the file system's mtime
   * precision by setting THAT lock's mtime to the next whole second + 5 ms,
   * up to 1 s in the future; only later locks carry their real time. A holder
   * killed right after its first lock (every one-shot CLI refresh, every
   * freshly started serve) thus left a lock that went stale up to staleMs + 1 s
   * after it died, later than a refresh that waits for it within its own
   * 30 s budget can use. Probe once on a private scratch lock instead, so
   * every real lock is stamped with the time it was taken.
   */
  private probeMtimePrecision(): Promise<void> {
    this.probed ??= (async () => {
      try {
        const release = await lockfile.lock(join(this.dir, `.probe-${process.pid}-${randomBytes(4).toString('hex')}`), {
          realpath: false,
          stale: this.staleMs,
          retries: 0,
          onCompromised: () => undefined,
        });
        await release();
      } catch {
        // Then the probe happens on the first real lock, as before.
      }
    })();
    return this.probed;
  }

  private async tryLock(name: string): Promise<boolean> {
    let release: () => Promise<void>;
    try {
      release = await lockfile.lock(this.target(name), {
        realpath: false,
        stale: this.staleMs,
        update: Math.max(1000, Math.floor(this.staleMs / 3)),
        retries: 0,
        onCompromised: () => {
          // Taken over as stale (this process stalled longer than staleMs, or the lock vanished):
          // forget it rather than throw from a timer.
          this.held.delete(name);
          this.logger?.warn({ lock: name }, 'refresh lock was lost (taken over as stale or removed)');
        },
      });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ELOCKED') return false;
      throw new CredproxyError('LOCK_FAILED', `cannot take the refresh lock for ${name} (${code ?? 'unknown error'})`);
    }
    this.held.set(name, release);
    await this.writeOwner(name);
    return true;
  }

  private async writeOwner(name: string): Promise<void> {
    try {
      const st = await stat(this.lockDir(name));
      const record: OwnerRecord = { host: this.host, pidns: this.pidns, pid: process.pid, ino: st.ino };
      const tmp = `${this.ownerFile(name)}.${randomBytes(4).toString('hex')}.tmp`;
      await writeFile(tmp, JSON.stringify(record), { mode: 0o600 });
      await rename(tmp, this.ownerFile(name));
    } catch {
      // Without a record a dead holder is still recovered, just after staleMs.
    }
  }

  private async ownerIsDead(name: string): Promise<boolean> {
    try {
      const [st, text] = await Promise.all([stat(this.lockDir(name)), readFile(this.ownerFile(name), 'utf8')]);
      const o = JSON.parse(text) as Partial<OwnerRecord>;
      if (o.ino !== st.ino || o.host !== this.host || o.pidns !== this.pidns) return false;
      if (typeof o.pid !== 'number' || !Number.isInteger(o.pid) || o.pid <= 0 || o.pid === process.pid) return false;
      return !processRuns(o.pid);
    } catch {
      return false;
    }
  }

  async release(provider: string, bucket: string): Promise<void> {
    await this.releaseName(lockName(provider, bucket));
  }

  private async releaseName(name: string): Promise<void> {
    const release = this.held.get(name);
    if (!release) return;
    this.held.delete(name);
    await unlink(this.ownerFile(name)).catch(() => undefined);
    await release().catch(() => undefined);
  }

  /** Release everything this process holds (shutdown). */
  async releaseAll(): Promise<void> {
    await Promise.all([...this.held.keys()].map((name) => this.releaseName(name)));
  }
}
