import { isIPv4, isIPv6 } from 'node:net';

export interface TcpThrottleOptions {
  /** Failed handshakes per source in the window answered without delay (default 5). */
  freePerSource?: number;
  /** Failures server-wide in the window before every failure gets the longest delay (default 100). */
  globalBudget?: number;
  /** Window over which failures are counted (default 60 s). */
  windowMs?: number;
  /** First delay past the free failures; it doubles with each further failure (default 250 ms). */
  baseDelayMs?: number;
  /** Longest delay (default 5 s). */
  maxDelayMs?: number;
  /** Sources remembered at most; the oldest are forgotten first (default 4096). */
  maxSources?: number;
  /** Failed connections held in the tarpit at once; beyond it they are answered at once (default 256). */
  maxHeld?: number;
  now?: () => number;
}

interface Failures {
  count: number;
  since: number;
}

/**
 * Failed handshakes on the TCP transport (SPEC §8): only failures are
 * throttled, and only by delaying their answer (a tarpit), so a holder of
 * the right token is never refused or slowed whatever others do from the
 * same address. Sources are grouped so that address rotation does not help:
 * all of 127.0.0.0/8 (and ::1) is one source, IPv4 by /24, IPv6 by /64. The
 * map of sources is bounded and swept; a global budget makes a distributed
 * flood slow for everyone failing.
 */
export class TcpThrottle {
  private readonly freePerSource: number;
  private readonly globalBudget: number;
  private readonly windowMs: number;
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly maxSources: number;
  private readonly maxHeld: number;
  private readonly now: () => number;
  /** Insertion order = order of last failure: the first entry is the stalest. */
  private readonly sources = new Map<string, Failures>();
  private globalTimes: number[] = [];
  private held = 0;

  constructor(options: TcpThrottleOptions = {}) {
    this.freePerSource = options.freePerSource ?? 5;
    this.globalBudget = options.globalBudget ?? 100;
    this.windowMs = options.windowMs ?? 60_000;
    this.baseDelayMs = options.baseDelayMs ?? 250;
    this.maxDelayMs = options.maxDelayMs ?? 5000;
    this.maxSources = options.maxSources ?? 4096;
    this.maxHeld = options.maxHeld ?? 256;
    this.now = options.now ?? Date.now;
  }

  /** Sources remembered now. */
  get size(): number {
    return this.sources.size;
  }

  /** Connections waiting in the tarpit now. */
  get heldCount(): number {
    return this.held;
  }

  /**
   * Record a failed handshake from `address`; returns how long its answer
   * is to be held back (0: answer now). A positive delay takes a tarpit
   * slot: call release() when the connection is gone.
   */
  failure(address: string): number {
    const now = this.now();
    this.sweep(now);
    const key = sourceKey(address);
    const prior = this.sources.get(key);
    const f = prior && now - prior.since <= this.windowMs ? prior : { count: 0, since: now };
    f.count++;
    // Re-inserted so the map stays ordered by last failure.
    this.sources.delete(key);
    this.sources.set(key, f);
    while (this.sources.size > this.maxSources) this.sources.delete(this.sources.keys().next().value!);
    this.globalTimes.push(now);

    let delay = 0;
    if (this.globalTimes.length > this.globalBudget) delay = this.maxDelayMs;
    else if (f.count > this.freePerSource) delay = Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** Math.min(20, f.count - this.freePerSource - 1));
    if (delay === 0 || this.held >= this.maxHeld) return 0;
    this.held++;
    return delay;
  }

  release(): void {
    if (this.held > 0) this.held--;
  }

  /** Forget failures older than the window. */
  sweep(now = this.now()): void {
    const cutoff = now - this.windowMs;
    let drop = 0;
    while (drop < this.globalTimes.length && this.globalTimes[drop]! < cutoff) drop++;
    if (drop > 0) this.globalTimes = this.globalTimes.slice(drop);
    for (const [key, f] of this.sources) {
      if (f.since >= cutoff) continue;
      this.sources.delete(key);
    }
  }
}

/** The group an address counts against. */
export function sourceKey(address: string): string {
  let a = address;
  if (a.startsWith('::ffff:') && isIPv4(a.slice(7))) a = a.slice(7);
  if (isIPv4(a)) {
    if (a.startsWith('127.')) return 'loopback';
    return `${a.split('.').slice(0, 3).join('.')}.0/24`;
  }
  if (isIPv6(a)) {
    if (a === '::1') return 'loopback';
    const full = expandIPv6(a);
    return `${full.slice(0, 4).join(':')}::/64`;
  }
  return a;
}

function expandIPv6(a: string): string[] {
  const [head, tail] = a.split('::') as [string, string | undefined];
  const h = head === '' ? [] : head.split(':');
  const t = tail === undefined || tail === '' ? [] : tail.split(':');
  const fill = tail === undefined ? [] : Array<string>(Math.max(0, 8 - h.length - t.length)).fill('0');
  return [...h, ...fill, ...t].map((g) => g.toLowerCase().replace(/^0+(?=.)/, ''));
}
