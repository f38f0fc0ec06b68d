import { spawn } from 'node:child_process';
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BIN, makeHostEnv, runCli, type CliResult, type HostEnv } from '../support/cli.js';

/**
 * `credproxy import <agent>` end to end: the built CLI in child processes, a
 * temp HOME holding each tool's credential file in its own format (written
 * here, every secret a canary), the file store. Checked: what is stored
 * (status, token get --json, key list), that no canary reaches stdout or
 * stderr, --move's placeholder and kept mode, the second import's refusal,
 * --dry-run changing nothing, and --move's confirmation rules.
 */

const C = `e2ecnry${process.pid}`;
const AT = `${C}-access`;
const RT = `${C}-refresh`;
const KEY = `${C}-apikey`;
const SIG = `${C}-sig`;
const CANARIES = [AT, RT, KEY, SIG];

const b64 = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString('base64url');
const jwt = (claims: Record<string, unknown>): string => `${b64({ alg: 'RS256', typ: 'JWT' })}.${b64(claims)}.${SIG}`;

function expectClean(r: CliResult): void {
  for (const c of CANARIES) {
    expect(r.stdout).not.toContain(c);
    expect(r.stderr).not.toContain(c);
  }
}

const nowS = (): number => Math.floor(Date.now() / 1000);

interface Fixture {
  agent: 'claude' | 'codex' | 'gemini' | 'qwen';
  provider: string;
  /** Relative to HOME. */
  file: string;
  content(expiryS: number): Record<string, unknown>;
  /** What `token get --json` must show beside access_token/expiry (no refresh_token: it never leaves the host store). */
  stored(expiryS: number): Record<string, unknown>;
}

const ID_TOKEN = jwt({ email: 'dev@example.com', 'https://api.openai.com/auth': { chatgpt_account_id: 'acct-e2e' } });

const FIXTURES: Fixture[] = [
  {
    agent: 'claude',
    provider: 'anthropic',
    file: '.claude/.credentials.json',
    content: (e) => ({ claudeAiOauth: { accessToken: AT, refreshToken: RT, expiresAt: e * 1000, scopes: ['user:inference', 'user:profile'], subscriptionType: 'pro' } }),
    stored: (e) => ({ access_token: AT, expiry: e, token_type: 'Bearer', scope: 'user:inference user:profile', subscription_type: 'pro' }),
  },
  {
    agent: 'codex',
    provider: 'codex',
    file: '.codex/auth.json',
    content: (e) => ({ OPENAI_API_KEY: null, tokens: { id_token: ID_TOKEN, access_token: jwt({ exp: e, sub: 'u1' }), refresh_token: RT }, last_refresh: '2026-12-01T00:00:00Z' }),
    stored: (e) => ({ access_token: jwt({ exp: e, sub: 'u1' }), expiry: e, token_type: 'Bearer', id_token: ID_TOKEN, account_id: 'acct-e2e' }),
  },
  {
    agent: 'gemini',
    provider: 'gemini',
    file: '.gemini/oauth_creds.json',
    content: (e) => ({ access_token: AT, refresh_token: RT, scope: 'https://www.googleapis.com/auth/cloud-platform', token_type: 'Bearer', expiry_date: e * 1000 + 456 }),
    stored: (e) => ({ access_token: AT, expiry: e, token_type: 'Bearer', scope: 'https://www.googleapis.com/auth/cloud-platform' }),
  },
  {
    agent: 'qwen',
    provider: 'qwen',
    file: '.qwen/oauth_creds.json',
    content: (e) => ({ access_token: AT, refresh_token: RT, token_type: 'Bearer', resource_url: 'portal.qwen.ai', expiry_date: e * 1000 }),
    stored: (e) => ({ access_token: AT, expiry: e, token_type: 'Bearer', resource_url: 'portal.qwen.ai' }),
  },
];

describe('credproxy import', () => {
  let host: HostEnv;
  beforeEach(() => {
    host = makeHostEnv();
  });
  afterEach(() => host.cleanup());

  const cli = (args: string[], env: NodeJS.ProcessEnv = host.env) => runCli(args, { env });
  const writeFixture = (rel: string, value: unknown, mode = 0o600): string => {
    const p = join(host.home, rel);
    mkdirSync(dirname(p), { recursive: true });
    writeFileSync(p, `${JSON.stringify(value, null, 2)}\n`);
    chmodSync(p, mode);
    return p;
  };
  const status = async (): Promise<{ tokens: Array<Record<string, unknown>>; keys: string[] }> => {
    const r = await cli(['status', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expectClean(r);
    return JSON.parse(r.stdout);
  };

  for (const fx of FIXTURES) {
    it(`${fx.agent}: imports, --move leaves a placeholder with the same mode, a second import refuses`, async () => {
      const expiry = nowS() + 3600;
      const path = writeFixture(fx.file, fx.content(expiry), 0o600);
      const original = readFileSync(path, 'utf8');

      const imp = await cli(['import', fx.agent]);
      expect(imp.code, imp.stderr).toBe(0);
      expectClean(imp);
      expect(imp.stderr).toContain(`imported ${fx.provider}:default (expires in`);
      expect(imp.stderr).toMatch(/refreshable/);
      expect(imp.stderr).toMatch(/still holds this login's refresh token.*whichever refreshes second.*revoke the whole grant/s);
      expect(readFileSync(path, 'utf8')).toBe(original); // a plain import leaves the tool's file alone

      const st = await status();
      expect(st.tokens).toContainEqual(expect.objectContaining({ provider: fx.provider, bucket: 'default', expiry, renewable: true, canRefresh: true }));
      const got = await cli(['token', 'get', fx.provider, '--json']);
      expect(got.code, got.stderr).toBe(0);
      expect(JSON.parse(got.stdout)).toEqual(fx.stored(expiry));

      const twice = await cli(['import', fx.agent]);
      expect(twice.code, twice.stderr).toBe(0);
      expect(twice.stderr).toMatch(/, replacing the stored entry/);

      const inode = statSync(path).ino;
      const moved = await cli(['import', fx.agent, '--move', '--yes', '--bucket', 'work']);
      expect(moved.code, moved.stderr).toBe(0);
      expectClean(moved);
      expect(moved.stderr).toMatch(new RegExp(`moved: .*${fx.file.replace(/\./g, '\\.')} now holds a placeholder \\('credproxy-moved:${fx.provider}', mode 0600 kept\\)`));
      const after = readFileSync(path, 'utf8');
      for (const c of CANARIES) expect(after).not.toContain(c);
      expect(after).toContain(`credproxy-moved:${fx.provider}`);
      JSON.parse(after); // still the tool's format: JSON
      expect(statSync(path).mode & 0o7777).toBe(0o600);
      expect(statSync(path).ino).not.toBe(inode);
      expect(readdirSync(dirname(path))).toEqual([fx.file.split('/').pop()]); // no temp file left
      expect(moved.stderr).not.toMatch(/replacing the stored entry/); // a new bucket
      const st2 = await status();
      expect(st2.tokens).toContainEqual(expect.objectContaining({ provider: fx.provider, bucket: 'work', expiry, renewable: true }));

      const dryAfterMove = await cli(['import', fx.agent, '--dry-run']);
      expect(dryAfterMove.code).toBe(1); // --dry-run finds the placeholder too
      const again = await cli(['import', fx.agent]);
      expect(again.code).toBe(1);
      expectClean(again);
      expect(again.stderr).toMatch(/was already moved into credproxy/);
      expect(readFileSync(path, 'utf8')).toBe(after);
      // The stored login is untouched by the refused import.
      expect(JSON.parse((await cli(['token', 'get', fx.provider, '--bucket', 'work', '--json'])).stdout)).toEqual(fx.stored(expiry));
    });
  }

  it('--move keeps a non-default mode and warns that others could read the file', async () => {
    const path = writeFixture('.qwen/oauth_creds.json', FIXTURES[3]!.content(nowS() + 600), 0o640);
    const r = await cli(['import', 'qwen', '--move', '--yes']);
    expect(r.code, r.stderr).toBe(0);
    expectClean(r);
    expect(r.stderr).toMatch(/warning: .*oauth_creds\.json is accessible to other users \(mode 0640\)/);
    expect(statSync(path).mode & 0o7777).toBe(0o640);
    expect(JSON.parse(readFileSync(path, 'utf8')).refresh_token).toBe('credproxy-moved:qwen');
  });

  it('--dry-run shows what would be stored and moved, and changes nothing (not even the store)', async () => {
    const expiry = nowS() + 1800;
    const path = writeFixture('.codex/auth.json', {
      OPENAI_API_KEY: KEY,
      tokens: { id_token: ID_TOKEN, access_token: jwt({ exp: expiry }), refresh_token: RT, account_id: 'acct-field' },
      last_refresh: '2026-12-01T00:00:00Z',
    });
    const before = { text: readFileSync(path, 'utf8'), st: statSync(path) };
    const r = await cli(['import', 'codex', '--dry-run', '--move']);
    expect(r.code, r.stderr).toBe(0);
    expectClean(r);
    expect(r.stdout).toMatch(/would import Codex's login from .*\.codex\/auth\.json/);
    expect(r.stdout).toMatch(/store as: +codex:default/);
    expect(r.stdout).toMatch(/fields: +access_token, account_id, expiry, id_token, refresh_token, token_type/);
    expect(r.stdout).toContain(`expires:     ${new Date(expiry * 1000).toISOString()}`);
    expect(r.stdout).toMatch(/account: +acct-field/);
    expect(r.stdout).toMatch(/api key: +OPENAI_API_KEY -> key 'openai'/);
    expect(r.stdout).toMatch(/--move: +would replace .* with a placeholder \('credproxy-moved:codex', mode 0600 kept\)/);
    expect(r.stdout).toMatch(/Why --move matters/);
    expect(r.stdout).toMatch(/nothing was changed \(--dry-run\)/);
    const json = await cli(['import', 'codex', '--dry-run', '--move', '--json']);
    expect(json.code, json.stderr).toBe(0);
    expectClean(json);
    expect(JSON.parse(json.stdout)).toMatchObject({
      agent: 'codex',
      provider: 'codex',
      bucket: 'default',
      dryRun: true,
      move: 'would-move',
      key: { name: 'openai', from: 'OPENAI_API_KEY' },
      token: { expiry, refreshable: true, account: 'acct-field' },
    });
    expect(readFileSync(path, 'utf8')).toBe(before.text);
    expect(statSync(path).ino).toBe(before.st.ino);
    expect(statSync(path).mtimeMs).toBe(before.st.mtimeMs);
    expect(existsSync(join(host.home, 'data'))).toBe(false); // the store was not even opened
  });

  it('refuses to overwrite a stored login with a different refresh token (rotated since, or another login) unless --force', async () => {
    const expiry = nowS() + 3600;
    const path = writeFixture('.claude/.credentials.json', FIXTURES[0]!.content(expiry));
    const original = readFileSync(path, 'utf8');
    // What a refresh by credproxy leaves in the store: a new access token and a rotated refresh token.
    const rotated = { access_token: `${C}-rotated-access`, refresh_token: `${C}-rotated-refresh`, expiry: expiry + 60 };
    const put = await runCli(['token', 'import', 'anthropic'], { env: host.env, input: JSON.stringify(rotated) });
    expect(put.code, put.stderr).toBe(0);
    const storedAccess = async (bucket = 'default'): Promise<unknown> => {
      const got = await cli(['token', 'get', 'anthropic', '--bucket', bucket, '--json']);
      expect(got.code, got.stderr).toBe(0);
      return JSON.parse(got.stdout).access_token;
    };

    const refused = await cli(['import', 'claude', '--move', '--yes']);
    expect(refused.code).toBe(1);
    expectClean(refused);
    expect(refused.stderr).not.toContain(rotated.refresh_token);
    expect(refused.stderr).toMatch(/credproxy already holds a different login for anthropic:default, with its own refresh token .*retired.*Nothing was changed; pass --force to replace it with Claude Code's/s);
    expect(readFileSync(path, 'utf8')).toBe(original); // --move did not run either
    expect(await storedAccess()).toBe(rotated.access_token);

    const forced = await cli(['import', 'claude', '--force']);
    expect(forced.code, forced.stderr).toBe(0);
    expect(forced.stderr).toMatch(/, replacing the stored entry/);
    expect(await storedAccess()).toBe(AT);
    // The same login again (same refresh token) needs no --force.
    const again = await cli(['import', 'claude']);
    expect(again.code, again.stderr).toBe(0);
    // Nor does a stored entry without a refresh token: nothing refreshable is lost.
    const accessOnly = await runCli(['token', 'import', 'anthropic', '--bucket', 'ao'], { env: host.env, input: JSON.stringify({ access_token: `${C}-ao`, expiry }) });
    expect(accessOnly.code, accessOnly.stderr).toBe(0);
    const over = await cli(['import', 'claude', '--bucket', 'ao']);
    expect(over.code, over.stderr).toBe(0);
    expect(await storedAccess('ao')).toBe(AT);
  });

  it('codex: refuses to overwrite a different stored key "openai" unless --force, and then stores nothing at all', async () => {
    const other = `${C}-other-key`;
    const set = await runCli(['key', 'set', 'openai'], { env: host.env, input: `${other}\n` });
    expect(set.code, set.stderr).toBe(0);
    writeFixture('.codex/auth.json', { OPENAI_API_KEY: KEY, tokens: { id_token: ID_TOKEN, access_token: jwt({ exp: nowS() + 900 }), refresh_token: RT }, last_refresh: null });
    const refused = await cli(['import', 'codex']);
    expect(refused.code).toBe(1);
    expectClean(refused);
    expect(refused.stderr).not.toContain(other);
    expect(refused.stderr).toMatch(/credproxy already holds a different key 'openai'\. Nothing was changed; pass --force/);
    expect((await status()).tokens).toEqual([]);
    expect((await cli(['key', 'get', 'openai'])).stdout).toBe(`${other}\n`);
    const forced = await cli(['import', 'codex', '--force']);
    expect(forced.code, forced.stderr).toBe(0);
    expect((await cli(['key', 'get', 'openai'])).stdout).toBe(`${KEY}\n`);
    expect((await status()).tokens).toContainEqual(expect.objectContaining({ provider: 'codex', bucket: 'default' }));
  });

  it('codex: OPENAI_API_KEY becomes the key "openai" and is moved too', async () => {
    const expiry = nowS() + 900;
    const path = writeFixture('.codex/auth.json', { OPENAI_API_KEY: KEY, tokens: { id_token: ID_TOKEN, access_token: jwt({ exp: expiry }), refresh_token: RT }, last_refresh: null });
    const r = await cli(['import', 'codex', '--move', '--yes', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expectClean(r);
    expect(r.stderr).toMatch(/saved key 'openai' from OPENAI_API_KEY/);
    expect(JSON.parse(r.stdout)).toMatchObject({ move: 'moved', dryRun: false, key: { name: 'openai' }, token: { account: 'acct-e2e' } });
    expect((await status()).keys).toEqual(['openai']);
    const key = await cli(['key', 'get', 'openai']);
    expect(key.stdout).toBe(`${KEY}\n`);
    const ph = JSON.parse(readFileSync(path, 'utf8'));
    expect(ph.OPENAI_API_KEY).toBe('credproxy-moved:openai');
    expect(ph.tokens.refresh_token).toBe('credproxy-moved:codex');
  });

  it('codex: refuses a tokens.account_id no header can carry, naming the field, never the value, before storing anything', async () => {
    const path = writeFixture('.codex/auth.json', {
      OPENAI_API_KEY: null,
      tokens: { id_token: ID_TOKEN, access_token: jwt({ exp: nowS() + 900 }), refresh_token: RT, account_id: `${C}-acct\r\nX-Injected: 1` },
      last_refresh: null,
    });
    const before = readFileSync(path, 'utf8');
    const r = await cli(['import', 'codex', '--move', '--yes']);
    expect(r.code).toBe(1);
    expectClean(r);
    expect(r.stderr).toMatch(/auth\.json: not a Codex credential file credproxy knows: 'tokens\.account_id' is not an account id/);
    expect(r.stderr).not.toContain(C);
    expect(r.stderr).not.toContain('X-Injected');
    expect(readFileSync(path, 'utf8')).toBe(before);
    expect(existsSync(join(host.home, 'data'))).toBe(false);
  });

  it('--move without a terminal and without --yes is a usage error that changes nothing', async () => {
    const path = writeFixture('.gemini/oauth_creds.json', FIXTURES[2]!.content(nowS() + 600));
    const before = readFileSync(path, 'utf8');
    const r = await cli(['import', 'gemini', '--move']);
    expect(r.code).toBe(2);
    expectClean(r);
    expect(r.stderr).toMatch(/stdin is not a terminal: pass --yes to confirm/);
    expect(readFileSync(path, 'utf8')).toBe(before);
    expect(existsSync(join(host.home, 'data'))).toBe(false);
  });

  it('asks at a terminal: "no" changes nothing, "yes" moves', async () => {
    const path = writeFixture('.claude/.credentials.json', FIXTURES[0]!.content(nowS() + 600));
    const before = readFileSync(path, 'utf8');
    const declined = await underTerminal(['import', 'claude', '--move'], 'n', host.env);
    expect(declined.code, declined.output).toBe(1);
    for (const c of CANARIES) expect(declined.output).not.toContain(c);
    expect(declined.output).toMatch(/Replace .*\.credentials\.json with a placeholder\?/);
    expect(declined.output).toMatch(/import cancelled; nothing was changed/);
    expect(readFileSync(path, 'utf8')).toBe(before);
    expect(existsSync(join(host.home, 'data'))).toBe(false);

    const accepted = await underTerminal(['import', 'claude', '--move'], 'y', host.env);
    expect(accepted.code, accepted.output).toBe(0);
    for (const c of CANARIES) expect(accepted.output).not.toContain(c);
    expect(JSON.parse(readFileSync(path, 'utf8')).claudeAiOauth.refreshToken).toBe('credproxy-moved:anthropic');
    expect((await status()).tokens).toContainEqual(expect.objectContaining({ provider: 'anthropic', bucket: 'default', renewable: true }));
  });

  it('honours CLAUDE_CONFIG_DIR and CODEX_HOME', async () => {
    const expiry = nowS() + 600;
    writeFixture('elsewhere/claude/.credentials.json', FIXTURES[0]!.content(expiry));
    writeFixture('elsewhere/codex/auth.json', FIXTURES[1]!.content(expiry));
    const env = { ...host.env, CLAUDE_CONFIG_DIR: join(host.home, 'elsewhere/claude'), CODEX_HOME: join(host.home, 'elsewhere/codex') };
    for (const agent of ['claude', 'codex']) {
      const r = await cli(['import', agent], env);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toContain('/elsewhere/');
    }
    const providers = (await status()).tokens.map((t) => t.provider).sort();
    expect(providers).toEqual(['anthropic', 'codex']);
  });

  it('refuses an unknown format with exit 1, naming the file and the field, never a value', async () => {
    writeFixture('.claude/.credentials.json', { claudeAiOauth: { access: AT, refresh: RT } });
    const r = await cli(['import', 'claude']);
    expect(r.code).toBe(1);
    expectClean(r);
    expect(r.stderr).toMatch(/\.claude\/\.credentials\.json: not a Claude Code credential file credproxy knows: 'claudeAiOauth\.accessToken' is missing/);
    const p = join(host.home, '.gemini/oauth_creds.json');
    mkdirSync(dirname(p), { recursive: true });
    writeFileSync(p, `${AT}\n${RT}\n`, { mode: 0o600 });
    const g = await cli(['import', 'gemini']);
    expect(g.code).toBe(1);
    expectClean(g);
    expect(g.stderr).toMatch(/oauth_creds\.json: .*not valid JSON/);
    expect(existsSync(join(host.home, 'data'))).toBe(false);
  });

  it('says clearly when there is nothing to import (and that the Keychain is macOS only)', async () => {
    const r = await cli(['import', 'claude']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/NOT_FOUND: no Claude Code login found: .*\.credentials\.json does not exist\. On macOS .*Keychain .* not available on linux/);
    const bad = await cli(['import', 'cursor']);
    expect(bad.code).toBe(2);
  });

  it('refuses --move through a symlink (the target would keep the refresh token) before storing anything', async () => {
    const target = writeFixture('dotfiles/qwen-creds.json', FIXTURES[3]!.content(nowS() + 600));
    mkdirSync(join(host.home, '.qwen'));
    symlinkSync(target, join(host.home, '.qwen/oauth_creds.json'));
    const before = readFileSync(target, 'utf8');
    const r = await cli(['import', 'qwen', '--move', '--yes']);
    expect(r.code).toBe(1);
    expectClean(r);
    expect(r.stderr).toMatch(/is a symbolic link: --move does not write through links/);
    expect(readFileSync(target, 'utf8')).toBe(before);
    expect(lstatSync(join(host.home, '.qwen/oauth_creds.json')).isSymbolicLink()).toBe(true);
    expect(existsSync(join(host.home, 'data'))).toBe(false);
    // A plain import may read through it, and says it did.
    const plain = await cli(['import', 'qwen']);
    expect(plain.code, plain.stderr).toBe(0);
    expect(plain.stderr).toMatch(/is a symbolic link; its target was read/);
  });

  it('refuses --move before storing anything when the directory cannot take the placeholder', async () => {
    const path = writeFixture('.qwen/oauth_creds.json', FIXTURES[3]!.content(nowS() + 600));
    const before = readFileSync(path, 'utf8');
    let r: CliResult;
    if (process.getuid?.() === 0) {
      // Root may write anywhere: run as nobody, owning the file and HOME but not the directory.
      chownSync(host.home, 65534, 65534);
      chownSync(path, 65534, 65534);
      chmodSync(dirname(path), 0o755);
      r = await runAs(['import', 'qwen', '--move', '--yes'], host.env, 65534);
    } else {
      chmodSync(dirname(path), 0o555);
      r = await cli(['import', 'qwen', '--move', '--yes']);
      chmodSync(dirname(path), 0o755);
    }
    expect(r.code, r.stderr).toBe(1);
    expectClean(r);
    expect(r.stderr).toMatch(/\.qwen is not writable \(EACCES\), so --move could not replace oauth_creds\.json\. Nothing was changed/);
    expect(readFileSync(path, 'utf8')).toBe(before);
    expect(existsSync(join(host.home, 'data'))).toBe(false);
  });

  it('refuses a huge file without reading it', async () => {
    const p = join(host.home, '.gemini/oauth_creds.json');
    mkdirSync(dirname(p), { recursive: true });
    writeFileSync(p, `{"access_token":"${AT}","pad":"${'x'.repeat(2 * 1024 * 1024)}"}`, { mode: 0o600 });
    const r = await cli(['import', 'gemini']);
    expect(r.code).toBe(1);
    expectClean(r);
    expect(r.stderr).toMatch(/larger than 1048576 bytes/);
  });

  it('is a host command: refused inside a sandbox', async () => {
    writeFixture('.qwen/oauth_creds.json', FIXTURES[3]!.content(nowS() + 600));
    const r = await cli(['import', 'qwen'], { ...host.env, CREDPROXY_SOCKET: join(host.home, 'none.sock'), CREDPROXY_TOKEN: 'x' });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/import is a host command/);
  });
});

/** runCli as another uid (root only). */
function runAs(args: string[], env: NodeJS.ProcessEnv, uid: number): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { env, uid, gid: uid, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/**
 * Run the CLI with a real terminal as its stdin/stdout/stderr (util-linux
 * `script` allocates the pty) and answer the confirmation with `key` once
 * the question is shown.
 */
function underTerminal(args: string[], key: string, env: NodeJS.ProcessEnv): Promise<{ code: number | null; output: string }> {
  // A fresh pty has no size (0 columns): give it one, or the prompt is wrapped after every character.
  const command = `stty cols 200 rows 50; exec ${[process.execPath, BIN, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ')}`;
  return new Promise((resolve, reject) => {
    const child = spawn('script', ['-qefc', command, '/dev/null'], { env: { ...env, TERM: 'dumb', COLUMNS: '200' }, stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    let answered = false;
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    const onData = (d: Buffer): void => {
      output += d.toString();
      if (!answered && /placeholder\?/.test(output)) {
        answered = true;
        // A moment for the prompt to put the terminal in raw mode, then the key and Enter.
        setTimeout(() => {
          child.stdin.write(key);
          setTimeout(() => child.stdin.write('\r'), 200);
        }, 300);
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}
