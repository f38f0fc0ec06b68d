interface Pending {
  deadline: number;
  reject(err: Error): void;
  error(): Error;
}

/**
 * Bounds many promises in time with one coarse timer instead of a timer and
 * a Promise.race per request: on the get_token path those cost more than the
 * cached store read itself. A bound fires between `ms` and `ms + tickMs`.
 * The timer runs only while something is pending, and never keeps the
 * process alive.
 */
export class Deadlines {
  private readonly pending = new Set<Pending>();
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly tickMs: number,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /**
   * Settles like `work`, or rejects with `error()` once `ms` have passed.
   * The losing work cannot be aborted; it finishes in the background and its
   * result is dropped.
   */
  bound<T>(work: Promise<T>, ms: number, error: () => Error): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const entry: Pending = { deadline: this.now() + ms, reject, error };
      this.pending.add(entry);
      if (this.timer === null) {
        this.timer = setInterval(() => this.sweep(), this.tickMs);
        this.timer.unref();
      }
      work.then(
        (value) => {
          this.pending.delete(entry);
          resolve(value);
        },
        (err: unknown) => {
          this.pending.delete(entry);
          reject(err);
        },
      );
    });
  }

  get size(): number {
    return this.pending.size;
  }

  private sweep(): void {
    const now = this.now();
    for (const entry of this.pending) {
      if (entry.deadline > now) continue;
      this.pending.delete(entry);
      entry.reject(entry.error());
    }
    if (this.pending.size === 0 && this.timer !== null) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }
}
