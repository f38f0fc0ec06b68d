import { createCipheriv, createDecipheriv, randomBytes, scrypt as scryptCb, type ScryptOptions } from 'node:crypto';
import { constants as fsc, statSync, type Stats } from 'node:fs';
import { link, lstat, open, readFile, readdir, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { CredproxyError } from '../errors.js';
import { ChangeWatch } from './change-watch.js';
import { ensurePrivateDir } from '../paths.js';
import type { SecretBackend } from './backend.js';

const ENTRY_SUFFIX = '.enc';
/** Provider, `:` and the encoded bucket (store/entry-name.ts): at most 6 + 64 + 1 + 161 characters. */
const ENTRY_NAME_RE = /^[a-z]+:[A-Za-z0-9._@:~-]{1,240}$/;
const META_FILE = 'store.json';
const MASTER_FILE = 'master.key';
const CHECK_TEXT = 'credproxy-key-check-v1';
/** Older temp files cannot belong to a write still in progress. */
const TEMP_FILE_MAX_AGE_MS = 60 * 60 * 1000;
/** scrypt cost: ~50 ms here, once per process. */
const SCRYPT = { N: 1 << 15, r: 8, p: 1, maxmem: 64 * 1024 * 1024 };

export type Kdf = (passphrase: string, salt: Buffer, options: ScryptOptions) => Promise<Buffer>;

/** The production KDF; a seam so tests can count derivations (it is called once per process). */
export const scryptKdf: Kdf = (passphrase, salt, options) =>
  new Promise((resolve, reject) => scryptCb(passphrase, salt, 32, options, (err, key) => (err ? reject(err) : resolve(key))));

interface Sealed {
  v: 1;
  iv: string;
  tag: string;
  ct: string;
}

type StoreMeta = { v: 1; mode: 'master'; check: Sealed } | { v: 1; mode: 'passphrase'; salt: string; check: Sealed };

function parseMeta(text: string): StoreMeta | null {
  let m: unknown;
  try {
    m = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof m !== 'object' || m === null) return null;
  const o = m as Record<string, unknown>;
  if (o.v !== 1 || typeof o.check !== 'object' || o.check === null) return null;
  if (o.mode === 'master') return o as StoreMeta;
  if (o.mode === 'passphrase' && typeof o.salt === 'string' && o.salt.length > 0) return o as StoreMeta;
  return null;
}

function seal(key: Buffer, plaintext: string, aad: string): Sealed {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  cipher.setAAD(Buffer.from(aad, 'utf8'));
  const ct = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
  return { v: 1, iv: iv.toString('base64'), tag: cipher.getAuthTag().toString('base64'), ct: ct.toString('base64') };
}

/** Throws on a wrong key or tampered data (GCM authentication). */
function open_(key: Buffer, sealed: unknown, aad: string): string {
  const s = sealed as Partial<Sealed> | null;
  if (!s || s.v !== 1 || typeof s.iv !== 'string' || typeof s.tag !== 'string' || typeof s.ct !== 'string') throw new Error('bad envelope');
  const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(s.iv, 'base64'));
  decipher.setAAD(Buffer.from(aad, 'utf8'));
  decipher.setAuthTag(Buffer.from(s.tag, 'base64'));
  return Buffer.concat([decipher.update(Buffer.from(s.ct, 'base64')), decipher.final()]).toString('utf8');
}

function errno(err: unknown): string {
  return (err as NodeJS.ErrnoException).code ?? 'unknown error';
}

function unavailable(what: string, path: string, err: unknown): CredproxyError {
  const code = errno(err);
  const hint = code === 'ENOSPC' ? 'free some disk space' : code === 'EACCES' || code === 'EPERM' ? `check the permissions of ${path}` : 'check the data directory';
  return new CredproxyError('STORE_UNAVAILABLE', `cannot ${what} ${path} (${code}); ${hint}`);
}

/** Write `data` to `path` atomically: temp file in the same dir, fsync, rename, fsync the dir. */
async function atomicWrite(dir: string, path: string, data: string): Promise<void> {
  const tmp = join(dir, `.tmp-${process.pid}-${randomBytes(6).toString('hex')}`);
  try {
    const fh = await open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o600);
    try {
      await fh.writeFile(data, 'utf8');
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw unavailable('write', path, err);
  }
  await syncDir(dir);
}

/**
 * Create `path` with `data` only if it does not exist yet: the content is
 * complete and synced before the name appears. false when it already existed.
 */
async function exclusiveCreate(dir: string, path: string, data: string | Buffer): Promise<boolean> {
  const tmp = join(dir, `.tmp-${process.pid}-${randomBytes(6).toString('hex')}`);
  try {
    const fh = await open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o600);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await link(tmp, path);
  } catch (err) {
    if (errno(err) === 'EEXIST') return false;
    throw unavailable('create', path, err);
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
  await syncDir(dir);
  return true;
}

/** A writer killed mid-write leaves its temp file (ciphertext only); clear old ones on open. */
async function sweepTempFiles(dir: string): Promise<void> {
  const names = await readdir(dir).catch(() => [] as string[]);
  const cutoff = Date.now() - TEMP_FILE_MAX_AGE_MS;
  for (const name of names) {
    if (!name.startsWith('.tmp-')) continue;
    const path = join(dir, name);
    const st = await lstat(path).catch(() => null);
    if (st?.isFile() && st.mtimeMs < cutoff) await unlink(path).catch(() => undefined);
  }
}

async function syncDir(dir: string): Promise<void> {
  const dh = await open(dir, fsc.O_RDONLY).catch(() => null);
  if (dh) {
    await dh.sync().catch(() => undefined);
    await dh.close();
  }
}

export interface EncryptedFileBackendOptions {
  /** The data directory (0700); entries live in `<dir>/entries`. */
  dir: string;
  /** When set, the key is derived from it with scrypt instead of a random master secret. */
  passphrase?: string | undefined;
  kdf?: Kdf;
}

const fileOf = (entry: string): string => `${entry}${ENTRY_SUFFIX}`;

interface CacheEntry {
  ino: number;
  size: number;
  mtimeMs: number;
  ctimeMs: number;
  value: string;
}

/**
 * AES-256-GCM encrypted files, one per entry, the entry name bound as AAD so
 * files cannot be swapped between entries. The key mode (random master
 * secret, or passphrase) is fixed when the store is created and recorded in
 * store.json with a check record, so a wrong passphrase is told apart from a
 * corrupt entry. The key is derived once per process; decrypted entries are
 * cached until the file changes on disk.
 *
 * The master secret lives in a 0600 file next to the entries rather than in
 * the keyring: this store is the one used when no keyring works, and a store
 * that needed the keyring to open would fail exactly then.
 */
export class EncryptedFileBackend implements SecretBackend {
  readonly name = 'file' as const;
  readonly dir: string;
  private readonly entriesDir: string;
  private readonly passphrase: string | undefined;
  private readonly kdf: Kdf;
  private keyPromise: Promise<Buffer> | undefined;
  /** The store was opened (key loaded): only then may peek answer. */
  private opened = false;
  /**
   * Lets peek skip its stat for entries unchanged since the last one. Started
   * by the first peek (a serving process), never by one-shot commands; null
   * once closed.
   */
  private changes: ChangeWatch | null | undefined;
  private readonly cache = new Map<string, CacheEntry>();

  constructor(options: EncryptedFileBackendOptions) {
    this.dir = options.dir;
    this.entriesDir = join(options.dir, 'entries');
    this.passphrase = options.passphrase === '' ? undefined : options.passphrase;
    this.kdf = options.kdf ?? scryptKdf;
  }

  /** Open (or create) the store and check the key; safe to call more than once. */
  key(): Promise<Buffer> {
    this.keyPromise ??= this.loadKey().then(
      (key) => {
        this.opened = true;
        return key;
      },
      (err: unknown) => {
        this.keyPromise = undefined;
        throw err;
      },
    );
    return this.keyPromise;
  }

  private async loadKey(): Promise<Buffer> {
    try {
      ensurePrivateDir(this.dir);
      ensurePrivateDir(this.entriesDir);
    } catch (err) {
      if (err instanceof CredproxyError) throw err;
      throw new CredproxyError('STORE_UNAVAILABLE', `cannot use the data directory ${this.dir}: ${err instanceof Error ? err.message : 'unknown error'}`);
    }
    await sweepTempFiles(this.entriesDir);
    const metaPath = join(this.dir, META_FILE);
    let text: string;
    try {
      text = await readFile(metaPath, 'utf8');
    } catch (err) {
      if (errno(err) === 'ENOENT') return this.createStore(metaPath);
      throw unavailable('read', metaPath, err);
    }
    const meta = parseMeta(text);
    if (!meta) throw new CredproxyError('CORRUPT_ENTRY', `${metaPath} is corrupt; restore it from a backup (nothing was changed)`);

    let key: Buffer;
    if (meta.mode === 'passphrase') {
      if (this.passphrase === undefined) {
        throw new CredproxyError('BAD_PASSPHRASE', `the file store in ${this.dir} is protected by a passphrase; set CREDPROXY_PASSPHRASE`);
      }
      key = await this.kdf(this.passphrase, Buffer.from(meta.salt, 'base64'), SCRYPT);
    } else {
      if (this.passphrase !== undefined) {
        throw new CredproxyError('BAD_PASSPHRASE', `the file store in ${this.dir} uses a master key file, not a passphrase; unset CREDPROXY_PASSPHRASE`);
      }
      key = await this.readMaster();
    }
    try {
      if (open_(key, meta.check, CHECK_TEXT) !== CHECK_TEXT) throw new Error('mismatch');
    } catch {
      throw meta.mode === 'passphrase'
        ? new CredproxyError('BAD_PASSPHRASE', `CREDPROXY_PASSPHRASE does not open the file store in ${this.dir} (nothing was changed)`)
        : new CredproxyError('BAD_PASSPHRASE', `${join(this.dir, MASTER_FILE)} does not match this store; restore the original master key file (nothing was changed)`);
    }
    return key;
  }

  private async readMaster(): Promise<Buffer> {
    const path = join(this.dir, MASTER_FILE);
    let key: Buffer;
    try {
      key = await readFile(path);
    } catch (err) {
      throw errno(err) === 'ENOENT'
        ? new CredproxyError('BAD_PASSPHRASE', `the master key file ${path} is missing; restore it from a backup (nothing was changed)`)
        : unavailable('read', path, err);
    }
    if (key.length !== 32) throw new CredproxyError('CORRUPT_ENTRY', `the master key file ${path} is damaged (wrong length)`);
    return key;
  }

  /**
   * First use: fix the key mode and write the check record. Both files are
   * created with link(2), which fails when the name exists, so two processes
   * creating the store at once agree on one key; a crash between the two
   * leaves a master key that the next start completes the store with.
   */
  private async createStore(metaPath: string): Promise<Buffer> {
    let key: Buffer;
    let meta: { v: 1; mode: 'master' } | { v: 1; mode: 'passphrase'; salt: string };
    if (this.passphrase !== undefined) {
      if ((await this.list_()).length > 0) {
        throw new CredproxyError('CORRUPT_ENTRY', `${metaPath} is missing but ${this.entriesDir} holds entries; restore ${META_FILE} from a backup (nothing was changed)`);
      }
      const salt = randomBytes(16);
      key = await this.kdf(this.passphrase, salt, SCRYPT);
      meta = { v: 1, mode: 'passphrase', salt: salt.toString('base64') };
    } else {
      const masterPath = join(this.dir, MASTER_FILE);
      // When it exists already, another process won the race or an earlier start died
      // before writing store.json: either way that key is the store's key.
      await exclusiveCreate(this.dir, masterPath, randomBytes(32));
      key = await this.readMaster();
      meta = { v: 1, mode: 'master' };
    }
    if (!(await exclusiveCreate(this.dir, metaPath, JSON.stringify({ ...meta, check: seal(key, CHECK_TEXT, CHECK_TEXT) })))) {
      // Someone else created the store first: open theirs.
      return this.loadKey();
    }
    return key;
  }

  private pathOf(entry: string): string {
    // Entry names become file names: nothing that could leave the directory or hide as a dotfile.
    if (!ENTRY_NAME_RE.test(entry)) throw new CredproxyError('INVALID_REQUEST', 'invalid store entry name');
    return join(this.entriesDir, fileOf(entry));
  }

  /** The entry's stat, or undefined when there is no such file. */
  private statOf(path: string): Stats | undefined {
    try {
      // Synchronous on purpose: one stat of a local file is a few µs, far less than a threadpool round trip on this hot path.
      return statSync(path, { throwIfNoEntry: false });
    } catch (err) {
      throw unavailable('read', path, err);
    }
  }

  /**
   * Every write renames a new file into place, so the inode changes; the
   * times (sub-µs as doubles) guard against a reused inode number.
   */
  private cachedIfCurrent(entry: string, st: Stats): string | undefined {
    const cached = this.cache.get(entry);
    if (cached && cached.ino === st.ino && cached.size === st.size && cached.mtimeMs === st.mtimeMs && cached.ctimeMs === st.ctimeMs) return cached.value;
    return undefined;
  }

  peek(entry: string): string | null | undefined {
    if (!this.opened) return undefined;
    if (this.changes === undefined) this.changes = new ChangeWatch(this.entriesDir);
    // Only names that passed pathOf ever get cached and verified, so a hit needs no path.
    const file = fileOf(entry);
    if (this.changes?.isVerified(file)) {
      const cached = this.cache.get(entry);
      if (cached !== undefined) return cached.value;
    }
    const st = this.statOf(this.pathOf(entry));
    if (st === undefined) {
      this.cache.delete(entry);
      return null;
    }
    const hit = this.cachedIfCurrent(entry, st);
    // Only a value checked against the disk in this same tick is marked: no change event can be missed in between.
    if (hit !== undefined) this.changes?.markVerified(file);
    return hit;
  }

  /** Stops watching the entries directory. */
  close(): void {
    this.changes?.close();
    this.changes = null;
  }

  async get(entry: string): Promise<string | null> {
    const path = this.pathOf(entry);
    const key = await this.key();
    const st = this.statOf(path);
    if (st === undefined) {
      this.cache.delete(entry);
      return null;
    }
    const hit = this.cachedIfCurrent(entry, st);
    if (hit !== undefined) return hit;
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      if (errno(err) === 'ENOENT') return null;
      throw unavailable('read', path, err);
    }
    let value: string;
    try {
      value = open_(key, JSON.parse(text), entry);
    } catch {
      throw new CredproxyError('CORRUPT_ENTRY', `stored entry ${entry} cannot be decrypted (${path}); it was left in place — remove or replace it`);
    }
    // Read after an await: a change event may have come and gone meanwhile, so peek checks it again.
    this.changes?.forget(fileOf(entry));
    this.cache.set(entry, { ino: st.ino, size: st.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs, value });
    return value;
  }

  async set(entry: string, value: string): Promise<void> {
    const path = this.pathOf(entry);
    const key = await this.key();
    await atomicWrite(this.entriesDir, path, JSON.stringify(seal(key, value, entry)));
    this.cache.delete(entry);
    this.changes?.forget(fileOf(entry));
  }

  async delete(entry: string): Promise<boolean> {
    const path = this.pathOf(entry);
    await this.key();
    this.cache.delete(entry);
    this.changes?.forget(fileOf(entry));
    try {
      await unlink(path);
      return true;
    } catch (err) {
      if (errno(err) === 'ENOENT') return false;
      throw unavailable('delete', path, err);
    }
  }

  async list(): Promise<string[]> {
    await this.key();
    return this.list_();
  }

  private async list_(): Promise<string[]> {
    let names: string[];
    try {
      names = await readdir(this.entriesDir);
    } catch (err) {
      throw unavailable('list', this.entriesDir, err);
    }
    return names.filter((n) => n.endsWith(ENTRY_SUFFIX) && !n.startsWith('.')).map((n) => n.slice(0, -ENTRY_SUFFIX.length));
  }
}

