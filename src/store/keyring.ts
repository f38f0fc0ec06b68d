import { CredproxyError } from '../errors.js';
import type { SecretBackend } from './backend.js';
import { AgentFailure, KeyringAgent, type AgentRequest } from './keyring-agent.js';

export const DEFAULT_KEYRING_SERVICE = 'credproxy';
/** A healthy keyring answers in a few ms; a locked one may wait for a prompt nobody sees. */
export const DEFAULT_KEYRING_CALL_TIMEOUT_MS = 5000;
export const DEFAULT_KEYRING_PROBE_TIMEOUT_MS = 2000;

const FIX = 'start and unlock a Secret Service keyring (e.g. gnome-keyring) in this session, or use `--store file`';
// Written and deleted by the probe: reading a missing entry answers null even from a
// locked collection, so only a write proves a keyring with nothing of ours in it usable.
const PROBE_ENTRY = 'probe:credproxy';

export interface KeyringBackendOptions {
  /** Service name all entries are stored under (tests use unique ones). */
  service?: string;
  /** Environment for reaching the keyring (D-Bus session address); defaults to process.env. */
  env?: NodeJS.ProcessEnv;
  callTimeoutMs?: number;
}

export type KeyringProbe = { ok: true } | { ok: false; reason: string };

function isSafeValue(v: unknown): v is string | null {
  return v === null || typeof v === 'string';
}

/**
 * The OS keyring through @napi-rs/keyring (pinned to Secret Service on
 * Linux so a missing keyring is an error, not a silent fallback to the
 * kernel keyring): one credential per entry under one service name.
 * Calls run in a helper process (see keyring-agent.ts) and are bounded by a timeout.
 */
export class KeyringBackend implements SecretBackend {
  readonly name = 'keyring' as const;
  readonly service: string;
  private readonly agent: KeyringAgent;
  private readonly callTimeoutMs: number;

  constructor(options: KeyringBackendOptions = {}) {
    this.service = options.service ?? DEFAULT_KEYRING_SERVICE;
    this.callTimeoutMs = options.callTimeoutMs ?? DEFAULT_KEYRING_CALL_TIMEOUT_MS;
    this.agent = new KeyringAgent(options.env ? { env: options.env } : {});
  }

  /** pid of the helper process while one runs. */
  get helperPid(): number | undefined {
    return this.agent.pid;
  }

  private async call(action: string, request: AgentRequest, timeoutMs = this.callTimeoutMs): Promise<unknown> {
    try {
      return await this.agent.call(request, timeoutMs);
    } catch (err) {
      const detail = err instanceof AgentFailure ? err.message : 'unknown failure';
      throw new CredproxyError('STORE_UNAVAILABLE', `OS keyring ${action} failed: ${detail}; ${FIX}`);
    }
  }

  async get(entry: string): Promise<string | null> {
    const v = await this.call('read', { op: 'get', service: this.service, entry });
    if (!isSafeValue(v)) throw new CredproxyError('STORE_UNAVAILABLE', 'OS keyring read answered an unexpected value');
    return v;
  }

  async set(entry: string, value: string): Promise<void> {
    await this.call('write', { op: 'set', service: this.service, entry, value });
  }

  async delete(entry: string): Promise<boolean> {
    return (await this.call('delete', { op: 'delete', service: this.service, entry })) === true;
  }

  async list(): Promise<string[]> {
    const v = await this.call('search', { op: 'list', service: this.service });
    if (!Array.isArray(v)) throw new CredproxyError('STORE_UNAVAILABLE', 'OS keyring search answered an unexpected value');
    return v.filter((a): a is string => typeof a === 'string' && a !== PROBE_ENTRY);
  }

  /**
   * Is the keyring usable right now? Answers within timeoutMs. Reading our
   * entries proves the collection is unlocked; with none stored yet, a
   * write and delete of a probe entry proves it instead.
   */
  async probe(timeoutMs = DEFAULT_KEYRING_PROBE_TIMEOUT_MS): Promise<KeyringProbe> {
    const deadline = Date.now() + timeoutMs;
    const left = (): number => Math.max(1, deadline - Date.now());
    try {
      const found = await this.call('search', { op: 'list', service: this.service }, left());
      if (Array.isArray(found) && found.some((a) => a !== PROBE_ENTRY)) return { ok: true };
      await this.call('write', { op: 'set', service: this.service, entry: PROBE_ENTRY, value: 'ok' }, left());
      await this.call('delete', { op: 'delete', service: this.service, entry: PROBE_ENTRY }, left());
      return { ok: true };
    } catch (err) {
      const msg = err instanceof Error ? err.message : 'unknown failure';
      return { ok: false, reason: msg.slice(0, msg.indexOf(`; ${FIX}`) >= 0 ? msg.indexOf(`; ${FIX}`) : msg.length) };
    }
  }

  /** Stops the helper process. */
  close(): void {
    this.agent.close();
  }
}

/** Does a usable keyring answer (within ~2 s)? */
export async function probeKeyring(service = DEFAULT_KEYRING_SERVICE, options: Omit<KeyringBackendOptions, 'service'> & { timeoutMs?: number } = {}): Promise<KeyringProbe> {
  const backend = new KeyringBackend({ ...options, service });
  try {
    return await backend.probe(options.timeoutMs);
  } finally {
    backend.close();
  }
}
