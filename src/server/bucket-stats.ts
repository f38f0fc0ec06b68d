import type { BucketStatsData } from '../protocol/messages.js';

interface Usage {
  count: number;
  lastUsed: number;
}

/**
 * How often this server handed out each provider:bucket's token (SPEC §8
 * get_bucket_stats). Counted where a token is served to a client, not where
 * a store is read: refreshes, existence checks and renewal timers read the
 * store too and are nobody's request. Grows only with buckets that hold a
 * token and that the policy allows, since only those are ever served.
 */
export class BucketUsage {
  private readonly byProvider = new Map<string, Map<string, Usage>>();

  constructor(private readonly now: () => number = Date.now) {}

  noteServed(provider: string, bucket: string): void {
    let buckets = this.byProvider.get(provider);
    if (buckets === undefined) this.byProvider.set(provider, (buckets = new Map()));
    const u = buckets.get(bucket);
    if (u === undefined) buckets.set(bucket, { count: 1, lastUsed: this.now() });
    else {
      u.count++;
      u.lastUsed = this.now();
    }
  }

  /** percentage: this bucket's share of the provider's served requests, one decimal; 0 when none were served. */
  stats(provider: string, bucket: string): BucketStatsData {
    const buckets = this.byProvider.get(provider);
    const mine = buckets?.get(bucket);
    let total = 0;
    for (const u of buckets?.values() ?? []) total += u.count;
    const requestCount = mine?.count ?? 0;
    const percentage = total === 0 ? 0 : Math.round((requestCount / total) * 1000) / 10;
    return mine === undefined ? { bucket, requestCount, percentage } : { bucket, requestCount, percentage, lastUsed: mine.lastUsed };
  }

  /** A removed token starts from zero if it is stored again. */
  forget(provider: string, bucket: string): void {
    this.byProvider.get(provider)?.delete(bucket);
  }
}
