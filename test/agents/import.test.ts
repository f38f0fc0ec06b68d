import { unverifiedClaims } from '../../src/oauth/jwt.js';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { claudeImporter, claudeKeychainItem } from '../../src/agents/import/claude.js';
import { codexImporter } from '../../src/agents/import/codex.js';
import {
  MAX_CREDENTIAL_FILE_BYTES,
  isPlaceholder,
  moveRefusal,
  readCredentialFile,
  replaceCredentialFile,
  type AgentImporter,
} from '../../src/agents/import/common.js';
import { geminiImporter } from '../../src/agents/import/gemini.js';
import { credentialPath, mapSource, readAgentSource, replaceSource, sourceMoveRefusal, sourceWarnings } from '../../src/agents/import/index.js';
import { qwenImporter } from '../../src/agents/import/qwen.js';
import { CredproxyError } from '../../src/errors.js';
import { keychainWriteRefusal, writeKeychainItem } from '../../src/agents/import/keychain.js';

/**
 * Seams in node:fs/promises for the races of reading and replacing a file:
 * each hook runs once, at the moment named, then clears itself. Unset, the
 * module is the real one.
 */
const fsHooks = vi.hoisted(() => ({
  /** After an lstat of this path returned (and before whatever comes next, e.g. the open). */
  afterLstat: undefined as { path: string; run: () => void } | undefined,
  /** After the fsync of a temp file (`*.tmp`) opened for writing returned. */
  afterTempSync: undefined as (() => void) | undefined,
  /** The next open of this path fails with this errno code. */
  failOpen: undefined as { path: string; code: string } | undefined,
}));

vi.mock('node:fs/promises', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs/promises')>();
  const lstat = (async (...args: Parameters<typeof real.lstat>) => {
    const st = await real.lstat(...args);
    const hook = fsHooks.afterLstat;
    if (hook && String(args[0]) === hook.path) {
      fsHooks.afterLstat = undefined;
      hook.run();
    }
    return st;
  }) as typeof real.lstat;
  const open = (async (...args: Parameters<typeof real.open>) => {
    const fail = fsHooks.failOpen;
    if (fail && String(args[0]) === fail.path) {
      fsHooks.failOpen = undefined;
      throw Object.assign(new Error(`${fail.code}: injected`), { code: fail.code });
    }
    const fh = await real.open(...args);
    if (String(args[0]).endsWith('.tmp')) {
      const sync = fh.sync.bind(fh);
      fh.sync = async () => {
        await sync();
        const hook = fsHooks.afterTempSync;
        fsHooks.afterTempSync = undefined;
        hook?.();
      };
    }
    return fh;
  }) as typeof real.open;
  return { ...real, default: { ...real, lstat, open }, lstat, open };
});

/**
 * Unit tests of `credproxy import`'s formats and file handling, with fixture
 * files written here in each tool's format. Every secret is a canary that
 * must never show up in an error message or a placeholder.
 */

const C = `cnry${process.pid}`;
const AT = `${C}-access`;
const RT = `${C}-refresh`;
const KEY = `${C}-apikey`;
const SIG = `${C}-sig`;
const CANARIES = [AT, RT, KEY, SIG, C];

const b64 = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString('base64url');
/** A JWT-shaped value whose signature part is a canary (so the whole token is a secret). */
const jwt = (claims: Record<string, unknown>): string => `${b64({ alg: 'RS256', typ: 'JWT' })}.${b64(claims)}.${SIG}`;

function expectNoCanary(text: string): void {
  for (const c of CANARIES) expect(text).not.toContain(c);
}

function mapError(importer: AgentImporter, value: unknown, where = '/x/creds.json'): CredproxyError {
  try {
    importer.map(value, where);
  } catch (err) {
    expect(err).toBeInstanceOf(CredproxyError);
    expectNoCanary((err as Error).message);
    return err as CredproxyError;
  }
  throw new Error('expected the mapping to be refused');
}

const inOneHourMs = (): number => Date.now() + 3600_000;

describe('Claude Code .credentials.json', () => {
  const file = (over: Record<string, unknown> = {}) => ({
    claudeAiOauth: { accessToken: AT, refreshToken: RT, expiresAt: 1_900_000_000_123, scopes: ['user:inference', 'user:profile'], subscriptionType: 'max', ...over },
    mcpOAuth: { someServer: { accessToken: 'mcp-token-kept-as-is' } },
  });

  it('maps to an anthropic token: ms expiry to seconds, scopes joined, subscription kept', () => {
    const m = claudeImporter.map(file(), '/h/.claude/.credentials.json');
    expect(m.provider).toBe('anthropic');
    expect(m.token).toEqual({
      access_token: AT,
      refresh_token: RT,
      expiry: 1_900_000_000,
      token_type: 'Bearer',
      scope: 'user:inference user:profile',
      subscription_type: 'max',
    });
    expect(m.apiKey).toBeUndefined();
  });

  it('builds a placeholder of the same format with no secret, other entries kept, and refuses it on a second import', () => {
    const m = claudeImporter.map(file(), '/h/.claude/.credentials.json');
    expectNoCanary(m.placeholder);
    const ph = JSON.parse(m.placeholder);
    expect(ph.claudeAiOauth).toEqual({ accessToken: 'credproxy-moved:anthropic', refreshToken: 'credproxy-moved:anthropic', expiresAt: 0, scopes: ['user:inference', 'user:profile'], subscriptionType: 'max' });
    expect(ph.mcpOAuth).toEqual(file().mcpOAuth);
    const err = mapError(claudeImporter, ph, '/h/.claude/.credentials.json');
    expect(err.message).toMatch(/\/h\/\.claude\/\.credentials\.json was already moved into credproxy/);
  });

  it('refuses unknown shapes naming the file and the field, never a value', () => {
    expect(mapError(claudeImporter, { somethingElse: { accessToken: AT } }).message).toMatch(/\/x\/creds\.json: .*'claudeAiOauth' is missing/);
    expect(mapError(claudeImporter, file({ accessToken: 42 })).message).toMatch(/'claudeAiOauth\.accessToken' is not a non-empty string/);
    expect(mapError(claudeImporter, file({ expiresAt: 1_900_000_000 })).message).toMatch(/'claudeAiOauth\.expiresAt' looks like seconds/);
    expect(mapError(claudeImporter, file({ expiresAt: '2030-01-01' })).message).toMatch(/'claudeAiOauth\.expiresAt' is not a millisecond timestamp/);
    expect(mapError(claudeImporter, file({ scopes: 'user:inference' })).message).toMatch(/'claudeAiOauth\.scopes' is not a list of strings/);
    expect(mapError(claudeImporter, [AT]).message).toMatch(/is not a JSON object/);
    expect(mapError(claudeImporter, { claudeAiOauth: null }).message).toMatch(/'claudeAiOauth' is null: Claude Code is not logged in/);
  });

  it('imports a login without a refresh token as one that cannot be renewed', () => {
    const m = claudeImporter.map(file({ refreshToken: undefined }), 'f');
    expect(m.token?.refresh_token).toBeUndefined();
  });

  it('names the macOS Keychain item as Claude Code does (hashed config dir suffix only with CLAUDE_CONFIG_DIR)', () => {
    expect(claudeKeychainItem({ HOME: '/home/u', USER: 'alice' })).toEqual({ service: 'Claude Code-credentials', account: 'alice' });
    const dir = '/srv/claude-work';
    const suffix = createHash('sha256').update(dir).digest('hex').slice(0, 8);
    expect(claudeKeychainItem({ CLAUDE_CONFIG_DIR: dir, USER: 'bob' })).toEqual({ service: `Claude Code-credentials-${suffix}`, account: 'bob' });
    expect(claudeKeychainItem({ HOME: '/h', USER: 'not a name!' }).account).toBe('claude-code-user');
  });
});

describe('Codex auth.json', () => {
  const exp = 1_900_000_000;
  const idToken = jwt({ email: 'dev@example.com', 'https://api.openai.com/auth': { chatgpt_account_id: 'acct-from-claim' } });
  const file = (tokens: Record<string, unknown> | null = {}, key: string | null = null) => ({
    OPENAI_API_KEY: key,
    tokens: tokens === null ? null : { id_token: idToken, access_token: jwt({ exp, sub: 'u' }), refresh_token: RT, account_id: 'acct-field', ...tokens },
    last_refresh: '2026-12-01T10:00:00Z',
  });

  it('takes the expiry from the access token JWT, the account id from tokens.account_id, and keeps the id_token', () => {
    const m = codexImporter.map(file(), '/h/.codex/auth.json');
    expect(m.provider).toBe('codex');
    expect(m.token).toEqual({ access_token: jwt({ exp, sub: 'u' }), expiry: exp, token_type: 'Bearer', refresh_token: RT, id_token: idToken, account_id: 'acct-field' });
    expect(m.notes).toEqual([]);
    expect(m.apiKey).toBeUndefined();
  });

  it('falls back to the id_token claim for the account id', () => {
    expect(codexImporter.map(file({ account_id: null }), 'f').token?.account_id).toBe('acct-from-claim');
    expect(codexImporter.map(file({ account_id: undefined }), 'f').token?.account_id).toBe('acct-from-claim');
  });

  it('stores an access token that is not a JWT as expired (refreshed on first use) and says so', () => {
    const m = codexImporter.map(file({ access_token: AT }), 'f');
    expect(m.token?.expiry).toBe(0);
    expect(m.notes.join(' ')).toMatch(/no expiry .* refreshes it on first use/);
  });

  it('maps OPENAI_API_KEY to the key "openai", alone or beside the login', () => {
    const both = codexImporter.map(file({}, KEY), 'f');
    expect(both.apiKey).toEqual({ name: 'openai', value: KEY, field: 'OPENAI_API_KEY' });
    expect(both.token?.refresh_token).toBe(RT);
    const keyOnly = codexImporter.map(file(null, KEY), 'f');
    expect(keyOnly.token).toBeUndefined();
    expect(keyOnly.apiKey?.value).toBe(KEY);
  });

  it('leaves a placeholder the Codex CLI can still parse (the id_token stays a JWT), without any secret or claim of the login', () => {
    const m = codexImporter.map(file({}, KEY), 'f');
    expectNoCanary(m.placeholder);
    expect(m.placeholder).not.toContain('dev@example.com');
    const ph = JSON.parse(m.placeholder);
    expect(ph.tokens.access_token).toBe('credproxy-moved:codex');
    expect(ph.tokens.refresh_token).toBe('credproxy-moved:codex');
    expect(ph.tokens.account_id).toBe('acct-field');
    expect(unverifiedClaims(ph.tokens.id_token)).toEqual({ credproxy: 'credproxy-moved:codex' });
    expect(ph.OPENAI_API_KEY).toBe('credproxy-moved:openai');
    expect(ph.last_refresh).toBe('2026-12-01T10:00:00Z');
    expect(mapError(codexImporter, ph).message).toMatch(/already moved into credproxy/);
    const keyOnly = JSON.parse(codexImporter.map(file(null, KEY), 'f').placeholder);
    expect(mapError(codexImporter, keyOnly).message).toMatch(/already moved into credproxy/);
  });

  it('refuses a tokens.account_id no header can carry (the gateway sends it as chatgpt-account-id), naming the field, never the value', () => {
    for (const bad of [`${C}\r\nX-Injected: 1`, `${C} with spaces`, `${C}${'a'.repeat(256)}`, `${C}\u00e9`]) {
      const err = mapError(codexImporter, file({ account_id: bad }), '/h/.codex/auth.json');
      expect(err.message).toMatch(/\/h\/\.codex\/auth\.json: not a Codex credential file credproxy knows: 'tokens\.account_id' is not an account id/);
      expect(err.message).not.toContain('X-Injected');
    }
    expect(mapError(codexImporter, file({ account_id: 12 })).message).toMatch(/'tokens\.account_id' is not a string/);
    expect(codexImporter.map(file({ account_id: 'a'.repeat(256) }), 'f').token?.account_id).toBe('a'.repeat(256));
  });

  it('refuses unknown shapes naming the field', () => {
    expect(mapError(codexImporter, { OPENAI_API_KEY: null }).message).toMatch(/'tokens' is missing/);
    expect(mapError(codexImporter, file({ refresh_token: 7 })).message).toMatch(/'tokens\.refresh_token' is not a non-empty string/);
    expect(mapError(codexImporter, file({ id_token: undefined })).message).toMatch(/'tokens\.id_token' is missing/);
    expect(mapError(codexImporter, { tokens: [AT] }).message).toMatch(/'tokens' is not an object/);
    expect(mapError(codexImporter, { OPENAI_API_KEY: 5, tokens: null }).message).toMatch(/'OPENAI_API_KEY' is neither null nor a string/);
  });
});

describe('Gemini CLI and Qwen Code oauth_creds.json', () => {
  it('maps Gemini: ms expiry, scope, token type, id_token', () => {
    const idToken = jwt({ email: 'g@example.com' });
    const value = { access_token: AT, refresh_token: RT, scope: 'https://www.googleapis.com/auth/cloud-platform openid', token_type: 'Bearer', id_token: idToken, expiry_date: 1_900_000_000_999 };
    const m = geminiImporter.map(value, 'f');
    expect(m.provider).toBe('gemini');
    expect(m.token).toEqual({ access_token: AT, refresh_token: RT, expiry: 1_900_000_000, token_type: 'Bearer', scope: value.scope, id_token: idToken });
    expectNoCanary(m.placeholder);
    const ph = JSON.parse(m.placeholder);
    expect(ph).toEqual({ ...value, access_token: 'credproxy-moved:gemini', refresh_token: 'credproxy-moved:gemini', id_token: 'credproxy-moved:gemini', expiry_date: 0 });
    expect(mapError(geminiImporter, ph).message).toMatch(/already moved/);
    expect(mapError(geminiImporter, { ...value, expiry_date: undefined }).message).toMatch(/'expiry_date' is missing/);
    expect(mapError(geminiImporter, { ...value, access_token: '' }).message).toMatch(/'access_token' is not a non-empty string/);
  });

  it('maps Qwen: resource_url kept as the extra field of that name', () => {
    const value = { access_token: AT, refresh_token: RT, token_type: 'Bearer', resource_url: 'portal.qwen.ai', expiry_date: 1_900_000_000_000 };
    const m = qwenImporter.map(value, 'f');
    expect(m.provider).toBe('qwen');
    expect(m.token).toEqual({ access_token: AT, refresh_token: RT, expiry: 1_900_000_000, token_type: 'Bearer', resource_url: 'portal.qwen.ai' });
    const ph = JSON.parse(m.placeholder);
    expect(ph).toEqual({ ...value, access_token: 'credproxy-moved:qwen', refresh_token: 'credproxy-moved:qwen', expiry_date: 0 });
    expect(isPlaceholder(ph.access_token)).toBe(true);
    expect(mapError(qwenImporter, ph).message).toMatch(/already moved/);
    expect(mapError(qwenImporter, { ...value, resource_url: 3 }).message).toMatch(/'resource_url' is not a string/);
  });
});

describe('reading and replacing credential files', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'cp-import-'));
  });
  afterEach(() => {
    fsHooks.afterLstat = undefined;
    fsHooks.afterTempSync = undefined;
    fsHooks.failOpen = undefined;
    rmSync(dir, { recursive: true, force: true });
  });

  const write = (name: string, text: string, mode = 0o600): string => {
    const p = join(dir, name);
    writeFileSync(p, text);
    chmodSync(p, mode);
    return p;
  };

  it('returns null for a missing file and reads a private one without warnings', async () => {
    expect(await readCredentialFile(join(dir, 'nope.json'))).toBeNull();
    const p = write('c.json', '{"a":1}');
    const f = await readCredentialFile(p);
    expect(f).toMatchObject({ path: p, text: '{"a":1}', mode: 0o600, symlink: false, warnings: [] });
  });

  it('warns about a file other users can read', async () => {
    const f = await readCredentialFile(write('c.json', '{}', 0o644));
    expect(f?.warnings.join('\n')).toMatch(/accessible to other users \(mode 0644\)/);
  });

  it('refuses a file over 1 MiB without reading it into memory', async () => {
    const p = write('big.json', `{"x":"${'a'.repeat(MAX_CREDENTIAL_FILE_BYTES)}"}`);
    await expect(readCredentialFile(p)).rejects.toThrow(/larger than 1048576 bytes/);
  });

  it('refuses a FIFO at once instead of hanging on it', async () => {
    const p = join(dir, 'fifo.json');
    execFileSync('mkfifo', [p]);
    const started = Date.now();
    await expect(readCredentialFile(p)).rejects.toThrow(/is not a regular file/);
    expect(Date.now() - started).toBeLessThan(2000);
    await expect(readCredentialFile(dir)).rejects.toThrow(/is not a regular file/);
  });

  it('follows a symlink for reading, says so, and refuses to --move through it (the target keeps its content)', async () => {
    const target = write('real.json', '{"k":"v"}');
    const link = join(dir, 'link.json');
    symlinkSync(target, link);
    const f = await readCredentialFile(link);
    expect(f?.text).toBe('{"k":"v"}');
    expect(f?.symlink).toBe(true);
    expect(f?.warnings.join('\n')).toMatch(/is a symbolic link/);
    expect(moveRefusal(f!)).toMatch(/symbolic link: --move does not write through links/);
    await expect(replaceCredentialFile(f!, '{}\n')).rejects.toThrow(/symbolic link/);
    expect(readFileSync(target, 'utf8')).toBe('{"k":"v"}');
    expect(lstatSync(link).isSymbolicLink()).toBe(true);
  });

  it('replaces the file atomically with the same mode, a new inode and no temp file left over', async () => {
    const p = write('c.json', `{"t":"${RT}"}`, 0o640);
    const f = (await readCredentialFile(p))!;
    await replaceCredentialFile(f, '{"t":"credproxy-moved:x"}\n');
    expect(readFileSync(p, 'utf8')).toBe('{"t":"credproxy-moved:x"}\n');
    const st = statSync(p);
    expect(st.mode & 0o7777).toBe(0o640);
    expect(st.ino).not.toBe(f.ino);
    expect(readdirSync(dir)).toEqual(['c.json']);
  });

  it('leaves the file alone when it changed after it was read (the tool refreshed meanwhile)', async () => {
    const p = write('c.json', `{"t":"${RT}"}`);
    const f = (await readCredentialFile(p))!;
    writeFileSync(p, `{"t":"${RT}-rotated"}`);
    await expect(replaceCredentialFile(f, '{}\n')).rejects.toThrow(/changed while it was being imported/);
    expect(readFileSync(p, 'utf8')).toBe(`{"t":"${RT}-rotated"}`);
    // Replaced by another file (same bytes, another inode), as a tool's own atomic write does: also refused.
    const g = (await readCredentialFile(p))!;
    writeFileSync(`${p}.new`, g.text, { mode: 0o600 });
    renameSync(`${p}.new`, p);
    expect(statSync(p).ino).not.toBe(g.ino);
    await expect(replaceCredentialFile(g, '{}\n')).rejects.toThrow(/changed while it was being imported/);
    expect(readdirSync(dir)).toEqual(['c.json']);
  });

  it('refuses a path swapped for a link between its lstat and its open (the link would go unreported)', async () => {
    const p = write('c.json', `{"t":"${RT}"}`);
    const elsewhere = write('elsewhere.json', `{"t":"${RT}-elsewhere"}`);
    fsHooks.afterLstat = {
      path: p,
      run: () => {
        rmSync(p);
        symlinkSync(elsewhere, p);
      },
    };
    const err = await readCredentialFile(p).catch((e: unknown) => e);
    expect(fsHooks.afterLstat).toBeUndefined(); // the swap happened
    expect(err).toBeInstanceOf(CredproxyError);
    expect((err as Error).message).toMatch(/c\.json changed while it was being read/);
    expectNoCanary((err as Error).message);
  });

  it('refuses a path swapped for another file between its lstat and its open', async () => {
    const p = write('c.json', `{"t":"${RT}"}`);
    write('next.json', `{"t":"${RT}-next"}`);
    fsHooks.afterLstat = { path: p, run: () => renameSync(join(dir, 'next.json'), p) };
    await expect(readCredentialFile(p)).rejects.toThrow(/c\.json changed while it was being read/);
    expect(fsHooks.afterLstat).toBeUndefined();
  });

  it('leaves the file alone when the tool rewrites it in place (same inode) while the placeholder is being written', async () => {
    const p = write('c.json', `{"t":"${RT}"}`);
    const f = (await readCredentialFile(p))!;
    // The tool refreshes its login during the slow part (temp file written and fsynced): same inode, new text.
    fsHooks.afterTempSync = () => writeFileSync(p, `{"t":"${RT}-rotated"}`);
    const err = await replaceCredentialFile(f, '{"t":"credproxy-moved:x"}\n').catch((e: unknown) => e);
    expect(fsHooks.afterTempSync).toBeUndefined(); // the rewrite happened
    expect(statSync(p).ino).toBe(f.ino);
    expect(readFileSync(p, 'utf8')).toBe(`{"t":"${RT}-rotated"}`); // the tool's new refresh token is not lost
    expect(err).toBeInstanceOf(CredproxyError);
    expect((err as Error).message).toMatch(/changed while it was being imported .*it was left in place/);
    expectNoCanary((err as Error).message);
    expect(readdirSync(dir)).toEqual(['c.json']);
  });

  it('says "changed" when the file is gone at the last check, and reports any other error reading it as that error', async () => {
    const p = write('c.json', `{"t":"${RT}"}`);
    const f = (await readCredentialFile(p))!;
    fsHooks.afterTempSync = () => rmSync(p);
    await expect(replaceCredentialFile(f, '{}\n')).rejects.toThrow(/changed while it was being imported/);
    expect(readdirSync(dir)).toEqual([]);

    const q = write('d.json', `{"t":"${RT}"}`);
    const g = (await readCredentialFile(q))!;
    fsHooks.failOpen = { path: q, code: 'EIO' };
    const err = await replaceCredentialFile(g, '{}\n').catch((e: unknown) => e);
    expect(fsHooks.failOpen).toBeUndefined();
    expect(err).toBeInstanceOf(CredproxyError);
    expect((err as Error).message).toMatch(/cannot check .*d\.json before replacing it: cannot read .*d\.json \(EIO\); it was left in place/);
    expect((err as Error).message).not.toMatch(/changed/);
    expect(readFileSync(q, 'utf8')).toBe(`{"t":"${RT}"}`);
    expect(readdirSync(dir)).toEqual(['d.json']);
  });
});

/** Not derived from C: a secret that --move keeps (an MCP server's token in Claude Code's item). */
const MCP = `mcptok${process.pid}`;

/**
 * A stand-in for /usr/bin/security with the same arguments, exit codes and
 * `-i` line parsing (Apple's split_line: quotes, backslash escapes), keeping
 * the items in a file and recording every command line it was started with.
 */
function fakeSecurity(dir: string): { bin: string; store: string; argvs: () => string[][] } {
  const store = join(dir, 'keychain.json');
  const log = join(dir, 'security-argv.log');
  const bin = join(dir, 'security');
  writeFileSync(
    bin,
    String.raw`#!/usr/bin/env node
const fs = require('fs');
fs.appendFileSync(${JSON.stringify(log)}, JSON.stringify(process.argv.slice(2)) + '\n');
const STORE = ${JSON.stringify(store)};
function splitLine(line) {
  const args = [];
  let state = 'ws', quote = '', cur = '';
  for (const ch of line) {
    if (state === 'ws') {
      if (/\s/.test(ch)) continue;
      cur = '';
      if (ch === '"' || ch === "'") { quote = ch; state = 'q'; continue; }
      state = 'a';
    }
    if (state === 'a') {
      if (ch === '\\') state = 'ae';
      else if (/\s/.test(ch)) { args.push(cur); state = 'ws'; }
      else cur += ch;
    } else if (state === 'ae') { cur += ch; state = 'a'; }
    else if (state === 'q') {
      if (ch === '\\') state = 'qe';
      else if (ch === quote) { args.push(cur); state = 'ws'; }
      else cur += ch;
    } else if (state === 'qe') { cur += ch; state = 'q'; }
  }
  if (state !== 'ws') args.push(cur);
  return args;
}
function run(cmd, args) {
  const opt = (f) => args[args.indexOf(f) + 1];
  const items = fs.existsSync(STORE) ? JSON.parse(fs.readFileSync(STORE, 'utf8')) : {};
  const id = opt('-s') + '\u0000' + opt('-a');
  if (cmd === 'find-generic-password') {
    if (!(id in items)) return 44;
    process.stdout.write(items[id] + '\n');
    return 0;
  }
  if (cmd === 'add-generic-password') {
    if (!args.includes('-U') && id in items) return 45;
    if (args.includes('-w')) items[id] = opt('-w');
    else if (args.includes('-X') && /^(?:[0-9a-f]{2})+$/i.test(opt('-X'))) items[id] = Buffer.from(opt('-X'), 'hex').toString('utf8');
    else return 2;
    fs.writeFileSync(STORE, JSON.stringify(items));
    return 0;
  }
  return 1;
}
const argv = process.argv.slice(2);
if (argv[0] === '-i') {
  let result = 0;
  for (const line of fs.readFileSync(0, 'utf8').split('\n')) {
    // Apple's security reads lines into a 4096-byte buffer and runs a longer line's pieces as commands.
    if (Buffer.byteLength(line) > 4094) { process.stderr.write('line too long\n'); process.exit(99); }
    const [cmd, ...args] = splitLine(line);
    if (cmd !== undefined) result = run(cmd, args);
  }
  process.exit(result);
}
process.exit(run(argv[0], argv.slice(1)));
`,
  );
  chmodSync(bin, 0o755);
  const argvs = (): string[][] =>
    existsSync(log)
      ? readFileSync(log, 'utf8')
          .split('\n')
          .filter((l) => l !== '')
          .map((l) => JSON.parse(l) as string[])
      : [];
  return { bin, store, argvs };
}

/** No command line holds any of `secrets`, as text or as hex. */
function expectNoSecretArgv(argvs: string[][], secrets: string[]): void {
  expect(argvs.length).toBeGreaterThan(0);
  for (const argv of argvs) {
    for (const arg of argv) {
      for (const secret of secrets) {
        expect(arg).not.toContain(secret);
        expect(arg.toLowerCase()).not.toContain(Buffer.from(secret).toString('hex'));
      }
    }
  }
}

describe('finding each tool\'s file', () => {
  let home: string;
  beforeEach(() => {
    home = mkdtempSync(join(tmpdir(), 'cp-import-home-'));
  });
  afterEach(() => rmSync(home, { recursive: true, force: true }));

  it('uses the documented places and their variables', () => {
    expect(credentialPath('claude', { HOME: home })).toBe(join(home, '.claude', '.credentials.json'));
    expect(credentialPath('claude', { HOME: home, CLAUDE_CONFIG_DIR: '/cfg/claude' })).toBe('/cfg/claude/.credentials.json');
    expect(credentialPath('codex', { HOME: home })).toBe(join(home, '.codex', 'auth.json'));
    expect(credentialPath('codex', { HOME: home, CODEX_HOME: '/cfg/codex' })).toBe('/cfg/codex/auth.json');
    expect(credentialPath('gemini', { HOME: home })).toBe(join(home, '.gemini', 'oauth_creds.json'));
    expect(credentialPath('qwen', { HOME: home })).toBe(join(home, '.qwen', 'oauth_creds.json'));
  });

  it('on Linux says that the macOS Keychain is not available rather than skipping it silently', async () => {
    const err = await readAgentSource('claude', { env: { HOME: home }, platform: 'linux' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CredproxyError);
    expect((err as CredproxyError).code).toBe('NOT_FOUND');
    expect((err as Error).message).toMatch(/\.claude\/\.credentials\.json does not exist\. On macOS Claude Code keeps its login in the Keychain item 'Claude Code-credentials', but the macOS Keychain is not available on linux/);
  });

  it('names the file and the problem for a file that is not JSON', async () => {
    mkdirSync(join(home, '.qwen'));
    writeFileSync(join(home, '.qwen', 'oauth_creds.json'), `access_token=${AT}`);
    const source = await readAgentSource('qwen', { env: { HOME: home }, platform: 'linux' });
    let message = '';
    try {
      mapSource('qwen', source);
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toMatch(/oauth_creds\.json: not a Qwen Code credential file credproxy knows: it is not valid JSON/);
    expectNoCanary(message);
  });

  it('on macOS reads and replaces the Keychain item through the security tool, the value never on a command line', async () => {
    const { bin, store, argvs } = fakeSecurity(home);
    const env = { HOME: home, USER: 'alice' };
    const missing = await readAgentSource('claude', { env, platform: 'darwin', securityBin: bin }).catch((e: unknown) => e);
    expect((missing as Error).message).toMatch(/\.credentials\.json does not exist, and the macOS Keychain has no item 'Claude Code-credentials' \(account 'alice'\)/);
    // MCP servers' logins beside Claude's own: kept by --move, so the placeholder is a secret too.
    const login = { claudeAiOauth: { accessToken: AT, refreshToken: RT, expiresAt: inOneHourMs(), scopes: ['user:inference'] }, mcpOAuth: { srv: { accessToken: MCP, refreshToken: `${MCP}-r` } } };
    writeFileSync(store, JSON.stringify({ 'Claude Code-credentials\u0000alice': JSON.stringify(login) }));
    // A file beside the item is named, and neither imported nor touched.
    mkdirSync(join(home, '.claude'));
    const fileText = JSON.stringify({ claudeAiOauth: { accessToken: 'file-at', refreshToken: 'file-rt', expiresAt: inOneHourMs() } });
    writeFileSync(join(home, '.claude', '.credentials.json'), fileText);
    const source = await readAgentSource('claude', { env, platform: 'darwin', securityBin: bin });
    expect(source.kind).toBe('keychain');
    expect(sourceWarnings(source).join('\n')).toMatch(/\.credentials\.json exists too; only the Keychain item .* is imported and moved/);
    const mapped = mapSource('claude', source);
    expect(mapped.token?.refresh_token).toBe(RT);
    expect(await sourceMoveRefusal(source, mapped.placeholder)).toBeNull();
    await replaceSource(source, mapped.placeholder);
    const after = JSON.parse(readFileSync(store, 'utf8'))['Claude Code-credentials\u0000alice'];
    expectNoCanary(after);
    expect(JSON.parse(after).claudeAiOauth.refreshToken).toBe('credproxy-moved:anthropic');
    expect(JSON.parse(after).mcpOAuth).toEqual(login.mcpOAuth);
    const again = await readAgentSource('claude', { env, platform: 'darwin', securityBin: bin });
    expect(() => mapSource('claude', again)).toThrow(/already moved into credproxy/);
    expect(readFileSync(join(home, '.claude', '.credentials.json'), 'utf8')).toBe(fileText);
    // What every local user could see (ps): the command lines of security. The write went through `security -i`.
    expectNoSecretArgv(argvs(), [AT, RT, MCP, after, 'credproxy-moved']);
    expect(argvs()).toContainEqual(['-i']);
  });

  it('quotes the item name for `security -i`, and refuses a placeholder too long for its 4 KiB command lines before anything is stored', async () => {
    const { bin, store, argvs } = fakeSecurity(home);
    const odd = { service: 'Claude Code-credentials "x" \\ y', account: 'alice' };
    await writeKeychainItem(odd, `{"k":"${MCP}"}`, bin);
    expect(JSON.parse(readFileSync(store, 'utf8'))[`${odd.service}\u0000alice`]).toBe(`{"k":"${MCP}"}`);
    expect(keychainWriteRefusal({ ...odd, account: 'a\nb' }, '{}')).toMatch(/control character/);

    // Many MCP logins: the placeholder keeps them all, and its hex does not fit one line of `security -i`.
    const servers = Object.fromEntries(Array.from({ length: 80 }, (_, i) => [`server${i}`, { accessToken: `${MCP}-${i}` }]));
    const login = { claudeAiOauth: { accessToken: AT, refreshToken: RT, expiresAt: inOneHourMs() }, mcpOAuth: servers };
    writeFileSync(store, JSON.stringify({ 'Claude Code-credentials\u0000alice': JSON.stringify(login) }));
    const env = { HOME: home, USER: 'alice' };
    const source = await readAgentSource('claude', { env, platform: 'darwin', securityBin: bin });
    const mapped = mapSource('claude', source);
    const refusal = await sourceMoveRefusal(source, mapped.placeholder);
    expect(refusal).toMatch(/the placeholder for the macOS Keychain item 'Claude Code-credentials' \(account 'alice'\) would be \d+ bytes .*too long for one 'security -i' command line/);
    expectNoCanary(refusal!);
    expect(refusal).not.toContain(MCP);
    const before = readFileSync(store, 'utf8');
    const calls = argvs().length;
    await expect(replaceSource(source, mapped.placeholder)).rejects.toThrow(/too long for one 'security -i' command line.*it was left in place/);
    expect(argvs().slice(calls).filter((a) => a[0] !== 'find-generic-password')).toEqual([]); // no write was attempted
    expect(readFileSync(store, 'utf8')).toBe(before);
    expectNoSecretArgv(argvs(), [AT, RT, MCP]);
  });
});
