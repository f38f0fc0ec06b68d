import { randomBytes } from 'node:crypto';
import { constants as fsc } from 'node:fs';
import { access, lstat, open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { CredproxyError } from '../../errors.js';
import { unsignedJwt } from '../../oauth/jwt.js';
import type { OAuthToken } from '../../store/types.js';

/**
 * Shared parts of `credproxy import <agent>`: what every importer returns,
 * the placeholder that `--move` leaves behind, the bounded and careful read
 * of a tool's credential file and its atomic replacement.
 *
 * Error texts name files and fields, never a value read from the file.
 */

export type AgentName = 'claude' | 'codex' | 'gemini' | 'qwen';

/** Every secret `--move` takes away is replaced by this prefix plus the provider name. */
export const PLACEHOLDER_PREFIX = 'credproxy-moved:';

export function placeholderValue(provider: string): string {
  return `${PLACEHOLDER_PREFIX}${provider}`;
}

export function isPlaceholder(value: unknown): boolean {
  return typeof value === 'string' && value.startsWith(PLACEHOLDER_PREFIX);
}

/** What an importer made of a tool's credential file. */
export interface MappedCredential {
  /** The preset name the token is stored under. */
  provider: string;
  /** The OAuth login to store (absent: the file held an API key only). */
  token?: OAuthToken;
  /** An API key found beside (or instead of) the login, stored with `key set` semantics. */
  apiKey?: { name: string; value: string; field: string };
  /**
   * The file's full text after `--move`: the same format, every secret of this
   * login a placeholder. Entries that are not this login stay as they are, and
   * may be secrets too (Claude Code's `mcpOAuth`: MCP servers' tokens).
   */
  placeholder: string;
  /** Safe remarks about the mapping (an expiry that had to be guessed...). */
  notes: string[];
}

/** One tool's credential format. */
export interface AgentImporter {
  /** The tool's own name, for messages. */
  tool: string;
  /** Map the parsed file; `where` names it in errors. Throws on unknown formats and on placeholders. */
  map(value: unknown, where: string): MappedCredential;
}

/** A file that is not in the format the importer knows: exit 1, naming the file and the field. */
export function formatError(where: string, tool: string, field: string, problem: string): CredproxyError {
  return new CredproxyError('INVALID_REQUEST', `${where}: not a ${tool} credential file credproxy knows: '${field}' ${problem}`);
}

export function alreadyMoved(where: string, tool: string, provider: string): CredproxyError {
  return new CredproxyError(
    'INVALID_REQUEST',
    `${where} was already moved into credproxy: it holds a credproxy placeholder, not a ${tool} login. ` +
      `The login lives in credproxy's store (provider '${provider}'); see 'credproxy status'. To import a new one, log ${tool} in again first.`,
  );
}

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Field access that turns a wrong shape into a format error naming the field. */
export class FieldReader {
  constructor(
    private readonly where: string,
    private readonly tool: string,
  ) {}

  /** The parsed file itself, which must be a JSON object. */
  root(value: unknown): Record<string, unknown> {
    if (!isRecord(value)) throw formatError(this.where, this.tool, '(top level)', 'is not a JSON object');
    return value;
  }

  object(parent: Record<string, unknown>, key: string, path: string): Record<string, unknown> {
    const v = parent[key];
    if (!isRecord(v)) throw formatError(this.where, this.tool, path, v === undefined ? 'is missing' : 'is not an object');
    return v;
  }

  string(parent: Record<string, unknown>, key: string, path: string): string {
    const v = parent[key];
    if (typeof v !== 'string' || v === '') throw formatError(this.where, this.tool, path, v === undefined ? 'is missing' : 'is not a non-empty string');
    return v;
  }

  optionalString(parent: Record<string, unknown>, key: string, path: string): string | undefined {
    const v = parent[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'string') throw formatError(this.where, this.tool, path, 'is not a string');
    return v === '' ? undefined : v;
  }

  /** A millisecond epoch; a value that looks like seconds is refused rather than guessed. */
  epochMs(parent: Record<string, unknown>, key: string, path: string): number {
    const v = parent[key];
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw formatError(this.where, this.tool, path, v === undefined ? 'is missing' : 'is not a millisecond timestamp');
    if (v > 0 && v < 1e11) throw formatError(this.where, this.tool, path, 'looks like seconds, expected milliseconds since 1970');
    return v;
  }
}

/** Milliseconds since 1970 -> our expiry (Unix seconds). */
export function msToExpiry(ms: number): number {
  return Math.floor(ms / 1000);
}

/** An unsigned, secret-free JWT, for formats whose readers insist on parsing one. */
export function placeholderJwt(claims: Record<string, unknown>): string {
  return unsignedJwt(claims, Buffer.from(PLACEHOLDER_PREFIX).toString('base64url'));
}

/** JSON text for a placeholder file, in the style the tools write. */
export function placeholderText(value: unknown): string {
  return `${JSON.stringify(value, null, 2)}\n`;
}

/** Names from a file end up on a terminal: printable ASCII, bounded. */
export function printable(s: string, max = 120): string {
  const clipped = s.length > max ? `${s.slice(0, max)}...` : s;
  return clipped.replace(/[^\x20-\x7e]/g, '?');
}

// --- reading and replacing the credential file ------------------------------

/** Credential files are small; anything larger is not one (and is not read into memory). */
export const MAX_CREDENTIAL_FILE_BYTES = 1024 * 1024;

export interface CredentialFile {
  path: string;
  text: string;
  /** Permission bits (st_mode & 0o7777). */
  mode: number;
  uid: number;
  gid: number;
  dev: number;
  ino: number;
  /** The path itself is a symbolic link (its target was read). */
  symlink: boolean;
  /** Safe remarks for the user (loose permissions, a link, another owner). */
  warnings: string[];
}

function errnoOf(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

async function readBounded(fh: FileHandle, where: string): Promise<string> {
  const buf = Buffer.alloc(MAX_CREDENTIAL_FILE_BYTES + 1);
  let size = 0;
  for (;;) {
    const { bytesRead } = await fh.read(buf, size, buf.length - size, null);
    if (bytesRead === 0) break;
    size += bytesRead;
    if (size > MAX_CREDENTIAL_FILE_BYTES) throw tooLarge(where);
  }
  return buf.subarray(0, size).toString('utf8');
}

function tooLarge(where: string): CredproxyError {
  return new CredproxyError('INVALID_REQUEST', `${where} is larger than ${MAX_CREDENTIAL_FILE_BYTES} bytes: not a credential file; refusing to read it`);
}

/**
 * Read a tool's credential file: null when it does not exist. A symlink is
 * followed for reading (dotfile managers use them) and reported; anything
 * but a regular file (a FIFO, a device, a directory) is refused before a
 * byte is read, and so is a file over 1 MiB. A path that was not a link
 * must lead to the very file found by the lstat (same device and inode),
 * else it was swapped meanwhile and is refused.
 */
export async function readCredentialFile(path: string): Promise<CredentialFile | null> {
  let link;
  try {
    link = await lstat(path);
  } catch (err) {
    if (errnoOf(err) === 'ENOENT' || errnoOf(err) === 'ENOTDIR') return null;
    throw new CredproxyError('INVALID_REQUEST', `cannot read ${path} (${errnoOf(err) ?? 'error'})`);
  }
  let fh: FileHandle;
  try {
    // O_NONBLOCK: opening a FIFO planted at the path must not hang the import.
    fh = await open(path, fsc.O_RDONLY | fsc.O_NONBLOCK | fsc.O_NOCTTY);
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') {
      // Not a link: the file went away since the lstat, as if it had not been there.
      if (!link.isSymbolicLink()) return null;
      throw new CredproxyError('INVALID_REQUEST', `${path} is a symbolic link to a file that does not exist`);
    }
    throw new CredproxyError('INVALID_REQUEST', `cannot read ${path} (${errnoOf(err) ?? 'error'})`);
  }
  try {
    const st = await fh.stat();
    // `symlink` and the checks below must describe the file that is read: a path swapped between
    // the lstat and the open (another file, or a link, put in its place) is refused.
    if (!link.isSymbolicLink() && (st.dev !== link.dev || st.ino !== link.ino)) {
      throw new CredproxyError('INVALID_REQUEST', `${path} changed while it was being read (it was replaced meanwhile); run the import again`);
    }
    if (!st.isFile()) throw new CredproxyError('INVALID_REQUEST', `${path} is not a regular file; refusing to read it`);
    if (st.size > MAX_CREDENTIAL_FILE_BYTES) throw tooLarge(path);
    const text = await readBounded(fh, path);
    const mode = st.mode & 0o7777;
    const warnings: string[] = [];
    if (link.isSymbolicLink()) warnings.push(`${path} is a symbolic link; its target was read`);
    if ((mode & 0o077) !== 0) {
      warnings.push(
        `${path} is accessible to other users (mode ${mode.toString(8).padStart(4, '0')}): anyone who could read it may hold a copy of this login; ` +
          `after importing, log the tool out and in again (or revoke the login) to be sure`,
      );
    }
    const uid = process.getuid?.();
    if (uid !== undefined && st.uid !== uid) warnings.push(`${path} belongs to uid ${st.uid}, not to you (uid ${uid})`);
    return { path, text, mode, uid: st.uid, gid: st.gid, dev: st.dev, ino: st.ino, symlink: link.isSymbolicLink(), warnings };
  } finally {
    await fh.close();
  }
}

/** Why `--move` cannot replace this file, or null when it can. Checked before anything is stored. */
export function moveRefusal(file: CredentialFile): string | null {
  if (file.symlink) {
    return (
      `${file.path} is a symbolic link: --move does not write through links, and replacing the link would leave the refresh token in its target. ` +
      `Run the import where the link points (set the tool's config dir to the target's directory) or replace the link by the file itself`
    );
  }
  return null;
}

/** moveRefusal plus what needs the file system: the directory must take the temp file and the rename. */
export async function moveRefusalNow(file: CredentialFile): Promise<string | null> {
  const refusal = moveRefusal(file);
  if (refusal) return refusal;
  try {
    await access(dirname(file.path), fsc.W_OK | fsc.X_OK);
  } catch (err) {
    return `${dirname(file.path)} is not writable (${errnoOf(err) ?? 'error'}), so --move could not replace ${basename(file.path)}`;
  }
  return null;
}

/**
 * `--move`: replace the credential file by `placeholder`, atomically and
 * with the same mode (and owner, when running as root): a temp file in the
 * same directory, written and fsynced, then the original checked, then the
 * rename over it, then the directory fsynced. The check comes after the slow
 * part, just before the rename: the original must still be the very file
 * that was imported (same inode, same text). When the tool refreshed its
 * login meanwhile (a new file renamed into place, or the same file rewritten
 * in place), the refresh token just stored is already stale and the tool's
 * new one is in the file: it is left alone. (A rewrite in the instant
 * between that check and the rename cannot be seen without the tool's
 * cooperation.)
 */
export async function replaceCredentialFile(file: CredentialFile, placeholder: string): Promise<void> {
  const refusal = moveRefusal(file);
  if (refusal) throw new CredproxyError('INVALID_REQUEST', refusal);

  const dir = dirname(file.path);
  const tmp = join(dir, `.${basename(file.path)}.credproxy-${randomBytes(6).toString('hex')}.tmp`);
  try {
    const fh = await open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o600);
    try {
      // Ownership first (as root), then the mode: chown clears set-id bits.
      if (process.getuid?.() === 0 && (file.uid !== 0 || file.gid !== 0)) await fh.chown(file.uid, file.gid);
      await fh.chmod(file.mode);
      await fh.writeFile(placeholder, 'utf8');
      await fh.sync();
    } finally {
      await fh.close();
    }
    await expectUnchanged(file);
    await rename(tmp, file.path);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    if (err instanceof CredproxyError) throw err;
    throw new CredproxyError('INVALID_REQUEST', `cannot replace ${file.path} (${errnoOf(err) ?? 'error'}); it was left in place`);
  }
  try {
    const dh = await open(dir, fsc.O_RDONLY | fsc.O_DIRECTORY);
    try {
      await dh.sync();
    } finally {
      await dh.close();
    }
  } catch {
    // Some file systems refuse fsync on a directory; the rename itself happened.
  }
}

/**
 * Read the credential file again: it must be the file imported, unchanged.
 * Gone, or another file or text: "changed". An error reading it (a
 * permission, an I/O error...) is reported as that error.
 */
async function expectUnchanged(file: CredentialFile): Promise<void> {
  let now: CredentialFile | null;
  try {
    now = await readCredentialFile(file.path);
  } catch (err) {
    const why = err instanceof CredproxyError ? err.message : `cannot read ${file.path} (${errnoOf(err) ?? 'error'})`;
    throw new CredproxyError('INVALID_REQUEST', `cannot check ${file.path} before replacing it: ${why}; it was left in place`);
  }
  if (!now || now.symlink || now.dev !== file.dev || now.ino !== file.ino || now.text !== file.text) {
    throw new CredproxyError(
      'INVALID_REQUEST',
      `${file.path} changed while it was being imported (the tool may have refreshed its login): it was left in place. Run the import again`,
    );
  }
}

/**
 * The google-auth-library style file both Gemini CLI and Qwen Code write:
 * access and refresh token, `expiry_date` in ms, token_type, id_token, and
 * one extra string field that is the tool's own (`scope`, `resource_url`),
 * kept under the same name.
 */
export function mapOAuthCredsFile(parsed: unknown, where: string, o: { tool: string; provider: string; extra: 'scope' | 'resource_url' }): MappedCredential {
  const f = new FieldReader(where, o.tool);
  const value = f.root(parsed);
  if (isPlaceholder(value.access_token) || isPlaceholder(value.refresh_token)) throw alreadyMoved(where, o.tool, o.provider);
  const accessToken = f.string(value, 'access_token', 'access_token');
  const refreshToken = f.optionalString(value, 'refresh_token', 'refresh_token');
  const expiryDate = f.epochMs(value, 'expiry_date', 'expiry_date');
  const extra = f.optionalString(value, o.extra, o.extra);
  const tokenType = f.optionalString(value, 'token_type', 'token_type');
  const idToken = f.optionalString(value, 'id_token', 'id_token');

  const token: OAuthToken = { access_token: accessToken, expiry: msToExpiry(expiryDate), token_type: tokenType ?? 'Bearer' };
  if (refreshToken) token.refresh_token = refreshToken;
  if (extra) token[o.extra] = extra;
  if (idToken) token.id_token = idToken;

  const moved = placeholderValue(o.provider);
  const placeholder: Record<string, unknown> = { ...value, access_token: moved, refresh_token: moved, expiry_date: 0 };
  if (idToken) placeholder.id_token = moved;
  return { provider: o.provider, token, placeholder: placeholderText(placeholder), notes: [] };
}
