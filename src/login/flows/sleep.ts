/**
 * Wait `ms`, or reject as soon as `stop` aborts. Unref'd: whoever waits for
 * the login's result keeps the process alive, not the background poll.
 */
export function sleepUnlessStopped(ms: number, stop: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (stop.aborted) {
      reject(stop.reason);
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(stop.reason);
    };
    const timer = setTimeout(() => {
      stop.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    timer.unref();
    stop.addEventListener('abort', onAbort, { once: true });
  });
}
