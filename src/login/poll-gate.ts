import { sleepUnlessStopped } from './flows/sleep.js';

/**
 * Paces host-side polling of one provider's token endpoint across every
 * login session: however many device-code logins are running, the host
 * sends at most one poll per advised interval to a provider in total (each
 * session then polls less often), so a flood of logins cannot make the
 * user's address hammer the provider.
 */
export class PollGate {
  /** Earliest time of the next poll, per provider. */
  private readonly next = new Map<string, number>();

  constructor(private readonly now: () => number = Date.now) {}

  /** Wait for this session's turn to poll `provider`; rejects when `stop` aborts first. */
  async wait(provider: string, intervalMs: number, stop: AbortSignal): Promise<void> {
    const now = this.now();
    const slot = Math.max(now, this.next.get(provider) ?? 0);
    this.next.set(provider, slot + intervalMs);
    if (slot > now) await sleepUnlessStopped(slot - now, stop);
  }
}
