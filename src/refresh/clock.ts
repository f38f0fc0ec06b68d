/** Wall-clock time in ms since the epoch; injectable so tests control time. */
export interface Clock {
  now(): number;
}

export type TimerHandle = unknown;

/**
 * Timer functions, injectable for fake-clock tests. `keepAlive: true` is for
 * timers that are part of in-flight work someone awaits (a retry delay);
 * every other timer must not keep the process alive on its own.
 */
export interface Timers {
  setTimeout(fn: () => void, ms: number, options?: { keepAlive?: boolean }): TimerHandle;
  clearTimeout(handle: TimerHandle): void;
}

/** setTimeout fires at once for delays beyond this; longer waits are re-armed by their owners. */
export const MAX_TIMER_DELAY_MS = 2 ** 31 - 1;

export const systemClock: Clock = { now: () => Date.now() };

export const systemTimers: Timers = {
  setTimeout(fn, ms, options) {
    const timer = setTimeout(fn, Math.min(Math.max(0, ms), MAX_TIMER_DELAY_MS));
    if (!options?.keepAlive) timer.unref();
    return timer;
  },
  clearTimeout(handle) {
    clearTimeout(handle as ReturnType<typeof setTimeout>);
  },
};

/** Resolves after `ms` on `timers`; rejects with the signal's reason when it aborts first. */
export function sleep(timers: Timers, ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = (): void => {
      timers.clearTimeout(handle);
      reject(signal!.reason);
    };
    const handle = timers.setTimeout(
      () => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      },
      ms,
      { keepAlive: true },
    );
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
