/**
 * In-process single-flight: concurrent callers with the same key share one
 * execution of the work and its outcome. The key is free again once the
 * work settles.
 */
export class SingleFlight<T> {
  private readonly inflight = new Map<string, Promise<T>>();

  run(key: string, work: () => Promise<T>): Promise<T> {
    const existing = this.inflight.get(key);
    if (existing) return existing;
    const p = (async () => {
      try {
        return await work();
      } finally {
        this.inflight.delete(key);
      }
    })();
    this.inflight.set(key, p);
    return p;
  }

  has(key: string): boolean {
    return this.inflight.has(key);
  }

  /** Settles when everything in flight right now has settled (never rejects). */
  async drain(): Promise<void> {
    await Promise.allSettled([...this.inflight.values()]);
  }
}
