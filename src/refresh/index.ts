export { MAX_TIMER_DELAY_MS, sleep, systemClock, systemTimers, type Clock, type TimerHandle, type Timers } from './clock.js';
export { COOLDOWN_DIR_NAME, FileCooldownStore, MemoryCooldownStore, type CooldownStore } from './cooldown.js';
export { RefreshCoordinator, type ProviderLookup, type RefreshCoordinatorOptions } from './coordinator.js';
export { maxJitterMs, renewalFireAt, renewalLeadSeconds } from './renewal-time.js';
export { RenewalScheduler, type ArmOptions, type RenewalOutcome, type RenewalSchedulerOptions, type RenewFn } from './scheduler.js';
export { SingleFlight } from './single-flight.js';
export type { CredentialService } from './types.js';
