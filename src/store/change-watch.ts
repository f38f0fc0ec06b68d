import { watch, type FSWatcher } from 'node:fs';

/**
 * Remembers which files of one directory were checked against the disk
 * (stat) since the last change the kernel reported for them (inotify via
 * fs.watch), so a hot read can skip its stat. Any doubt — no watcher, a
 * watcher error, an event without a file name — means "check again".
 *
 * Events arrive asynchronously: a change made by another process is seen
 * here a moment after it happened. Callers use this only where such a
 * moment does not matter (serving a still-valid cached token); reads that
 * must see the latest write (under the refresh lock) always stat.
 */
export class ChangeWatch {
  private readonly verified = new Set<string>();
  private watcher: FSWatcher | null = null;

  constructor(dir: string) {
    try {
      this.watcher = watch(dir, { persistent: false }, (_event, name) => {
        if (typeof name === 'string' && name.length > 0) this.verified.delete(name);
        else this.verified.clear();
      });
      this.watcher.on('error', () => this.close());
    } catch {
      this.watcher = null;
    }
  }

  /** True while no change to `name` was reported since markVerified(name). */
  isVerified(name: string): boolean {
    return this.watcher !== null && this.verified.has(name);
  }

  markVerified(name: string): void {
    if (this.watcher !== null) this.verified.add(name);
  }

  forget(name: string): void {
    this.verified.delete(name);
  }

  get active(): boolean {
    return this.watcher !== null;
  }

  close(): void {
    this.watcher?.close();
    this.watcher = null;
    this.verified.clear();
  }
}
