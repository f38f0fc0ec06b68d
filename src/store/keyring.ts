import { randomBytes } from 'node:crypto';
import { renameSync, statSync, writeFileSync, type Stats } from 'node:fs';
import { basename, dirname } from 'node:path';
import { CredproxyError } from '../errors.js';
import { ChangeWatch } from './change-watch.js';
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
  /**
   * Enables the read cache: a file every credproxy writer of this service
   * replaces after each keyring write. Unset, every read asks the keyring.
   */
  stampPath?: string;
  /** How long a cached value is trusted without a new stamp: bounds edits made outside credproxy (default 5 s). */
  cacheMaxAgeMs?: number;
}

export const DEFAULT_KEYRING_CACHE_MAX_AGE_MS = 5000;

interface Cached {
  value: string | null;
  stamp: string;
  readAt: number;
}

/** The stamp's identity; a missing stamp is a valid state of its own. */
function stampOf(path: string): string {
  let st: Stats | undefined;
  try {
    st = statSync(path, { throwIfNoEntry: false });
  } catch {
    return `unreadable:${Date.now()}:${Math.random()}`;
  }
  return st === undefined ? 'none' : `${st.ino}:${st.mtimeMs}:${st.ctimeMs}`;
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
  private readonly stampPath: string | undefined;
  private readonly cacheMaxAgeMs: number;
  private readonly cache = new Map<string, Cached>();
  /** Lets peek skip the stamp's stat while no change to it was reported; started by the first peek, null once closed. */
  private changes: ChangeWatch | null | undefined;
  private lastStamp: string | undefined;

  constructor(options: KeyringBackendOptions = {}) {
    this.service = options.service ?? DEFAULT_KEYRING_SERVICE;
    this.callTimeoutMs = options.callTimeoutMs ?? DEFAULT_KEYRING_CALL_TIMEOUT_MS;
    this.agent = new KeyringAgent(options.env ? { env: options.env } : {});
    this.stampPath = options.stampPath;
    this.cacheMaxAgeMs = options.cacheMaxAgeMs ?? DEFAULT_KEYRING_CACHE_MAX_AGE_MS;
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

  /**
   * A keyring read is a D-Bus round trip through the helper process (ms);
   * with a stamp file, a value is served from memory while the stamp is
   * unchanged and the value is younger than cacheMaxAgeMs. The stamp is read
   * before the keyring, so a write racing this read shows up next time.
   */
  peek(entry: string): string | null | undefined {
    if (this.stampPath === undefined) return undefined;
    if (this.changes === undefined) this.changes = new ChangeWatch(dirname(this.stampPath));
    const name = basename(this.stampPath);
    let stamp = this.lastStamp;
    if (stamp === undefined || !this.changes?.isVerified(name)) {
      stamp = this.lastStamp = stampOf(this.stampPath);
      this.changes?.markVerified(name);
    }
    return this.cachedIfCurrent(entry, stamp);
  }

  private cachedIfCurrent(entry: string, stamp: string): string | null | undefined {
    const hit = this.cache.get(entry);
    if (hit === undefined || hit.stamp !== stamp) return undefined;
    const age = Date.now() - hit.readAt;
    if (age >= this.cacheMaxAgeMs) return undefined;
    // Past half its life, an entry in use is re-read in the background, so
    // steady readers never wait for the keyring.
    if (age >= this.cacheMaxAgeMs / 2) this.revalidate(entry);
    return hit.value;
  }

  private readonly revalidating = new Set<string>();

  private revalidate(entry: string): void {
    if (this.stampPath === undefined || this.revalidating.has(entry)) return;
    this.revalidating.add(entry);
    // The stamp is taken before the read, as in get(): a write racing this read shows up next time.
    const stamp = stampOf(this.stampPath);
    const readAt = Date.now();
    this.call('read', { op: 'get', service: this.service, entry })
      .then((v) => {
        if (isSafeValue(v)) this.cache.set(entry, { value: v, stamp, readAt });
      })
      .catch(() => undefined)
      .finally(() => this.revalidating.delete(entry));
  }

  async get(entry: string): Promise<string | null> {
    const stamp = this.stampPath === undefined ? undefined : stampOf(this.stampPath);
    if (stamp !== undefined) {
      const hit = this.cachedIfCurrent(entry, stamp);
      if (hit !== undefined) return hit;
    }
    const readAt = Date.now();
    const v = await this.call('read', { op: 'get', service: this.service, entry });
    if (!isSafeValue(v)) throw new CredproxyError('STORE_UNAVAILABLE', 'OS keyring read answered an unexpected value');
    if (stamp !== undefined) this.cache.set(entry, { value: v, stamp, readAt });
    return v;
  }

  async set(entry: string, value: string): Promise<void> {
    this.cache.delete(entry);
    try {
      await this.call('write', { op: 'set', service: this.service, entry, value });
    } finally {
      this.touchStamp();
    }
  }

  async delete(entry: string): Promise<boolean> {
    this.cache.delete(entry);
    try {
      return (await this.call('delete', { op: 'delete', service: this.service, entry })) === true;
    } finally {
      this.touchStamp();
    }
  }

  /**
   * Tells every reader (this process and others) that an entry may have
   * changed: a new file renamed into place, so its inode changes. Also after
   * a failed or timed-out write, which may still have landed.
   */
  private touchStamp(): void {
    if (this.stampPath === undefined) return;
    this.changes?.forget(basename(this.stampPath));
    const tmp = `${this.stampPath}.${process.pid}.${randomBytes(6).toString('hex')}`;
    try {
      writeFileSync(tmp, randomBytes(8).toString('hex'), { mode: 0o600 });
      renameSync(tmp, this.stampPath);
    } catch {
      // Readers fall back to cacheMaxAgeMs; the write itself stands.
    }
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
    this.changes?.close();
    this.changes = null;
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
