/**
 * Secret sweep (SPEC §1, §2, §5): ONE real `credproxy serve` (built CLI, file
 * store, debug logs, audit on) in front of ONE real authorization server
 * (oidc-provider), every op of the dispatch table and every login flow run
 * through it, plus the host and sandbox CLI commands that touch secrets.
 *
 * Every sandbox-side connection (test clients, the login adapter, sandbox CLI
 * processes) goes through a tap relay that keeps every byte per connection
 * and direction; the frames are decoded afterwards. At the end every frame
 * (both directions), every serve log line, the audit file and every CLI
 * output is scanned for every canary: the seeded ones, everything the
 * authorization server issued or was sent (refresh tokens, auth codes, PKCE
 * verifiers, device codes), the stored refresh tokens and the full login
 * session ids. Zero hits required; positive controls make sure the scan and
 * the captures are real.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loginThroughProxy, type LoginIO } from '../../src/client/login-adapter.js';
import { ProxySocketClient } from '../../src/client/socket-client.js';
import { resolveDirs } from '../../src/paths.js';
import { FrameDecoder } from '../../src/protocol/frame.js';
import { OPS, SESSION_ID_RE, type OAuthInitiateData } from '../../src/protocol/messages.js';
import { openHostStores, type HostStores } from '../../src/store/open.js';
import { RecordingRelay, type RelayedConnection } from '../login/support/recording-relay.js';
import { ScriptedBrowser } from '../support/browser.js';
import { BIN, makeHostEnv, runCli, startServe, waitForStderr, type CliResult, type HostEnv, type ServeProcess } from '../support/cli.js';
import { loginProviders, NATIVE_REDIRECT_URI, OidcTestServer, type TokenSet } from '../support/oidc-server.js';
import { RawClient, rawFrame, type Frame } from '../support/raw-client.js';

// ---------------------------------------------------------------------------
// Canaries
// ---------------------------------------------------------------------------

const tag = `${process.pid}-${Date.now().toString(36)}`;
/** Seeded stored refresh tokens (host only). */
const CANARY_RT_DEV = `canary-rt-dev-${tag}-91c2`;
const CANARY_RT_ACME = `canary-rt-acme-${tag}-4be7`;
const CANARY_RT_SECRET = `canary-rt-secret-${tag}-0d3f`;
/** API key values: the allowed one may reach an authorised get_api_key (and `key get`), never a log. */
const KEY_VALUE = `sk-canary-allowed-${tag}-77aa`;
/** A key outside the policy: host only, never on the wire either. */
const HIDDEN_KEY = `sk-canary-hidden-${tag}-12ef`;
/** Sent BY the client: must never be echoed back, logged or stored. */
const FORGED_RT = `forged-rt-${tag}-c0de`;
const ECHO_CAP = `echo-cap-${tag}-aa01`;
const ECHO_OP = `echo-op-${tag}-aa02`;
const ECHO_NAME = `echo-name-${tag}-aa03`;
const ECHO_SESSION = `echo-session-${tag}-aa04`;
const ECHO_CODE = `echo-code-${tag}-aa05`;
const ECHO_JUNK = `echo-junk-${tag}-aa06`;
const ECHO_IMPORT_RT = `echo-import-rt-${tag}-aa07`;
const ECHO_TARGET = `echo-target-${tag}-aa08`;
const ECHO_KEYSET = `echo-keyset-${tag}-aa10`;

const now = (): number => Math.floor(Date.now() / 1000);
const farFuture = now() + 24 * 3600;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Host-only values (label -> value): in no frame (either direction, bar the exemptions below), log, audit line or CLI output. */
const hostOnly = new Map<string, string>();
/** Codes the "user" pasted into the sandbox (right or wrong): they legitimately travel sandbox -> host in oauth_exchange. */
const pastedBySandbox = new Set<string>();
/** Values the client itself sent: never echoed back, logged or audited. */
const clientSent = new Map<string, string>([
  ['forged refresh_token', FORGED_RT],
  ['bad capability token', ECHO_CAP],
  ['unknown op name', ECHO_OP],
  ['bad provider name', ECHO_NAME],
  ['bad session id', ECHO_SESSION],
  ['oversized code', ECHO_CODE],
  ['non-JSON frame', ECHO_JUNK],
  ['bad token import', ECHO_IMPORT_RT],
  ['bad cancel target', ECHO_TARGET],
  ['key value typed into a sandbox `key set`', ECHO_KEYSET],
]);
/** Full login session ids seen on the socket: allowed in frames, never in a log, audit line or CLI output. */
const sessionIds = new Set<string>();
/** OAuth `state` values of sessions started through the socket: never in the serve log or audit. */
const states = new Set<string>();

function addHostOnly(label: string, value: string | undefined): void {
  if (typeof value !== 'string' || value === '') return;
  hostOnly.set(`${label} #${hostOnly.size}`, value);
}

interface WireFrame {
  conn: number;
  dir: 'up' | 'down';
  text: string;
  json: Frame | undefined;
}

interface Decoded {
  frames: WireFrame[];
  /** Bytes left in a decoder (an incomplete or oversize frame): scanned as raw text too. */
  leftovers: Array<{ conn: number; dir: 'up' | 'down'; bytes: number }>;
}

function decodeStream(conn: number, dir: 'up' | 'down', chunks: Buffer[], out: Decoded): void {
  const decoder = new FrameDecoder(64 * 1024 * 1024);
  for (const payload of decoder.push(Buffer.concat(chunks))) {
    const text = payload.toString('utf8');
    let json: Frame | undefined;
    try {
      const v: unknown = JSON.parse(text);
      if (typeof v === 'object' && v !== null && !Array.isArray(v)) json = v as Frame;
    } catch {
      json = undefined;
    }
    out.frames.push({ conn, dir, text, json });
  }
  if (decoder.hasPartialFrame) out.leftovers.push({ conn, dir, bytes: Buffer.concat(chunks).length });
}

function decodeAll(conns: RelayedConnection[]): Decoded {
  const out: Decoded = { frames: [], leftovers: [] };
  for (const c of conns) {
    decodeStream(c.n, 'up', c.up, out);
    decodeStream(c.n, 'down', c.down, out);
  }
  return out;
}

/** op -> the results it got on the wire ('OK' or the error code), from the decoded frames. */
function opResults(frames: WireFrame[]): Map<string, Set<string>> {
  const results = new Map<string, Set<string>>();
  const add = (op: string, r: string): void => {
    if (!results.has(op)) results.set(op, new Set());
    results.get(op)!.add(r);
  };
  const byConn = new Map<number, WireFrame[]>();
  for (const f of frames) {
    if (!byConn.has(f.conn)) byConn.set(f.conn, []);
    byConn.get(f.conn)!.push(f);
  }
  for (const list of byConn.values()) {
    const opOfId = new Map<string, string>();
    for (const f of list) if (f.dir === 'up' && f.json && typeof f.json.id === 'string' && typeof f.json.op === 'string') opOfId.set(f.json.id, f.json.op);
    for (const f of list) {
      if (f.dir !== 'down' || !f.json) continue;
      const r = f.json.ok === true ? 'OK' : String(f.json.code);
      if (f.json.op === 'handshake') add('handshake', r);
      else if (typeof f.json.id === 'string' && opOfId.has(f.json.id)) add(opOfId.get(f.json.id)!, r);
      else add('(no id)', r);
    }
  }
  return results;
}

// ---------------------------------------------------------------------------
// Scanner
// ---------------------------------------------------------------------------

interface Corpus {
  label: string;
  text: string;
}
interface Hit {
  canary: string;
  where: string;
  context: string;
}

/** Every string leaf of a JSON value (a canary split by escaping is still found). */
function jsonLeaves(v: unknown, out: string[] = []): string[] {
  if (typeof v === 'string') out.push(v);
  else if (Array.isArray(v)) for (const x of v) jsonLeaves(x, out);
  else if (typeof v === 'object' && v !== null) {
    for (const [k, x] of Object.entries(v)) {
      out.push(k);
      jsonLeaves(x, out);
    }
  }
  return out;
}

function variants(text: string): string[] {
  const out = [text];
  let decoded = text;
  try {
    decoded = decodeURIComponent(text.replace(/\+/g, ' '));
  } catch {
    decoded = text.replace(/%([0-9a-f]{2})/gi, (_m, h: string) => String.fromCharCode(parseInt(h, 16)));
  }
  if (decoded !== text) out.push(decoded);
  // JSON lines (logs, audit): also the parsed string leaves.
  for (const line of text.split('\n')) {
    const t = line.trim();
    if (!t.startsWith('{')) continue;
    try {
      const leaves = jsonLeaves(JSON.parse(t));
      if (leaves.length > 0) out.push(leaves.join('\n'));
    } catch {
      // not JSON
    }
  }
  return out;
}

function scan(corpora: Corpus[], canaries: Map<string, string>): Hit[] {
  const hits: Hit[] = [];
  for (const c of corpora) {
    const forms = variants(c.text);
    for (const [label, value] of canaries) {
      for (const form of forms) {
        const at = form.indexOf(value);
        if (at >= 0) {
          hits.push({ canary: label, where: c.label, context: form.slice(Math.max(0, at - 80), at).replace(/\s+/g, ' ') + '<CANARY>' });
          break;
        }
      }
    }
  }
  return hits;
}

/** Standalone 32-hex runs: what a full session id looks like (catches ids the test cannot learn, e.g. host-CLI sessions). */
const SESSION_LIKE = /(?<![0-9a-f])[0-9a-f]{32}(?![0-9a-f])/g;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

interface CliCapture {
  label: string;
  stdout: string;
  stderr: string;
  /** Its stdout is the allowed API key's value by design (`key get`). */
  showsKey?: boolean;
}

function configFor(oidc: OidcTestServer): object {
  const providers = loginProviders(oidc.issuer);
  // Configured on the host but outside the serve policy: only the host CLI refreshes it.
  return { providers: { ...providers, hostonly: providers.dev } };
}

// ---------------------------------------------------------------------------
// The sweep
// ---------------------------------------------------------------------------

describe('secret sweep: every op and flow against one real serve, every frame, log, audit line and CLI output scanned', () => {
  let oidc: OidcTestServer;
  let host: HostEnv;
  let serve: ServeProcess;
  let tap: RecordingRelay;
  let stores: HostStores;
  const raws: RawClient[] = [];
  const clients: ProxySocketClient[] = [];
  const cli: CliCapture[] = [];
  const adapterOutput: string[] = [];
  /** Token sets the authorization server issued directly to the test, by provider:bucket. */
  const issued = new Map<string, TokenSet>();
  /** What the logged-in sandbox got back, per bucket. */
  const loginTokens = new Map<string, string>();

  async function raw(): Promise<RawClient> {
    const c = await RawClient.connect(tap.path);
    raws.push(c);
    return c;
  }
  async function session(): Promise<RawClient> {
    const c = await raw();
    expect(await c.handshake({ minVersion: 1, maxVersion: 1, capabilityToken: serve.token })).toMatchObject({ ok: true, data: { version: 1 } });
    return c;
  }
  function client(): ProxySocketClient {
    const c = new ProxySocketClient({ socket: tap.path, capabilityToken: serve.token });
    clients.push(c);
    return c;
  }
  async function hostCli(label: string, args: string[], input?: string, extra: Partial<CliCapture> = {}): Promise<CliResult> {
    const r = await runCli(args, { env: host.env, ...(input === undefined ? {} : { input }) });
    cli.push({ label: `host: ${label}`, stdout: r.stdout, stderr: r.stderr, ...extra });
    return r;
  }
  const sandboxEnv = (): NodeJS.ProcessEnv => ({ PATH: process.env.PATH, LANG: 'C.UTF-8', CREDPROXY_SOCKET: tap.path, CREDPROXY_TOKEN: serve.token });
  async function sandboxCli(label: string, args: string[], input?: string, extra: Partial<CliCapture> = {}): Promise<CliResult> {
    const r = await runCli(args, { env: sandboxEnv(), ...(input === undefined ? {} : { input }) });
    cli.push({ label: `sandbox: ${label}`, stdout: r.stdout, stderr: r.stderr, ...extra });
    return r;
  }
  const io = (over: Partial<LoginIO>): LoginIO => ({
    output: { write: (t: string) => adapterOutput.push(t), isTTY: false },
    prompt: () => Promise.reject(new Error('no code expected')),
    // The host's advice (5 s device, 2 s loopback) only slows the suite here.
    sleep: (ms) => sleep(Math.min(ms, 250)),
    ...over,
  });
  async function importToken(bucket: string, set: TokenSet, expiry: number, provider = 'dev'): Promise<void> {
    issued.set(`${provider}:${bucket}`, set);
    addHostOnly(`issued refresh token (${bucket})`, set.refresh_token);
    const r = await hostCli(`token import ${provider} --bucket ${bucket}`, ['token', 'import', provider, '--bucket', bucket], JSON.stringify({ ...set, expires_in: undefined, expiry }));
    expect(r.code, r.stderr).toBe(0);
  }
  async function storedRt(provider: string, bucket: string): Promise<string | undefined> {
    const rt = (await stores.tokens.getToken(provider, bucket))?.refresh_token;
    addHostOnly(`stored refresh token ${provider}:${bucket}`, rt);
    return rt;
  }

  beforeAll(async () => {
    oidc = await OidcTestServer.start();
    host = makeHostEnv(); // file store, CREDPROXY_LOG_LEVEL=debug
    mkdirSync(join(host.home, 'config'), { recursive: true });
    writeFileSync(join(host.home, 'config', 'config.json'), JSON.stringify(configFor(oidc)));
    stores = await openHostStores({ choice: 'file', dirs: resolveDirs(host.env), env: host.env });

    hostOnly.set('seeded refresh token dev:canary', CANARY_RT_DEV);
    hostOnly.set('seeded refresh token acme:default', CANARY_RT_ACME);
    hostOnly.set('seeded refresh token secret:default', CANARY_RT_SECRET);
    hostOnly.set('hidden API key value', HIDDEN_KEY);

    // Seeding through the host CLI (captured and scanned like every other CLI output).
    const seeds: Array<[string, string, string]> = [
      ['dev', 'canary', CANARY_RT_DEV],
      ['acme', 'default', CANARY_RT_ACME],
      ['secret', 'default', CANARY_RT_SECRET],
    ];
    const seed = async ([provider, bucket, rt]: [string, string, string]): Promise<void> => {
      const r = await hostCli(`token import ${provider}:${bucket}`, ['token', 'import', provider, '--bucket', bucket], JSON.stringify({ access_token: `at-${provider}-${bucket}-${tag}`, expiry: farFuture, refresh_token: rt, id_token: 'idt-1' }));
      expect(r.code, r.stderr).toBe(0);
    };
    const setKey = async (name: string, value: string): Promise<void> => {
      const r = await hostCli(`key set ${name}`, ['key', 'set', name], `${value}\n`);
      expect(r.code, r.stderr).toBe(0);
    };
    await seed(seeds[0]!); // alone: creates the store and its master secret
    // Real credentials from the authorization server (their refresh tokens rotate below).
    const sets = await Promise.all([0, 1, 2, 3].map(() => oidc.issueTokens()));
    await Promise.all([
      ...seeds.slice(1).map(seed),
      setKey('openai', KEY_VALUE),
      setKey('hidden', HIDDEN_KEY),
      importToken('expired', sets[0]!, now() - 10),
      importToken('rotate', sets[1]!, now() + 3600),
      importToken('slow', sets[2]!, now() + 3600),
      importToken('default', sets[3]!, now() - 10, 'hostonly'),
    ]);

    serve = await startServe(['--allow', 'dev:*', '--allow', 'paste:*', '--allow', 'loop:*', '--allow', 'acme', '--allow-key', 'openai', '--allow-write'], host.env);
    tap = await RecordingRelay.start(serve.socket);
  });

  afterAll(async () => {
    for (const c of clients) await c.close().catch(() => undefined);
    for (const c of raws) c.close();
    await serve?.stop();
    await tap?.close();
    await stores?.close();
    await oidc?.close();
    host?.cleanup();
  });

  it('handshake and framing errors: bad or missing capability, wrong version, no handshake, non-JSON and oversize frames', async () => {
    const bad = await raw();
    expect(await bad.handshake({ minVersion: 1, maxVersion: 1, capabilityToken: ECHO_CAP })).toMatchObject({ ok: false, code: 'UNAUTHORIZED' });
    await bad.closed;
    const none = await raw();
    expect(await none.handshake({ minVersion: 1, maxVersion: 1 })).toMatchObject({ ok: false, code: 'UNAUTHORIZED' });
    await none.closed;
    const version = await raw();
    expect(await version.handshake({ minVersion: 3, maxVersion: 4, capabilityToken: serve.token })).toMatchObject({ ok: false, code: 'UNKNOWN_VERSION' });
    await version.closed;
    const noHandshake = await raw();
    noHandshake.send({ v: 1, id: 'first', op: 'get_token', payload: { provider: 'dev', bucket: 'canary' } });
    expect(await noHandshake.frameAt(0)).toMatchObject({ ok: false, code: 'INVALID_REQUEST' });
    await noHandshake.closed;
    const junk = await session();
    junk.sendRaw(rawFrame(`not json ${ECHO_JUNK}`));
    await junk.closed;
    const oversize = await session();
    const header = Buffer.alloc(4);
    header.writeUInt32BE(70_000, 0);
    oversize.sendRaw(Buffer.concat([header, Buffer.from(`{"v":1,"id":"big","op":"get_token","payload":{"provider":"${ECHO_JUNK}"`)]));
    await oversize.closed;
    expect(oversize.frames.length).toBe(1); // only the handshake answer
  });

  it('token, key and list ops, refresh with rotation, policy refusals and malformed payloads', async () => {
    const c = await session();
    // get_token of the seeded canary credential: sanitized.
    const canary = await c.request('get_token', { provider: 'dev', bucket: 'canary' });
    expect(canary).toMatchObject({ ok: true, data: { access_token: `at-dev-canary-${tag}`, id_token: 'idt-1' } });
    expect(canary.data).not.toHaveProperty('refresh_token');

    // get_token of an expired real credential refreshes it transparently (rotation).
    let grants = oidc.refreshSuccesses;
    const expired = await c.request('get_token', { provider: 'dev', bucket: 'expired' });
    expect(expired).toMatchObject({ ok: true });
    expect((expired.data as { access_token: string }).access_token).not.toBe(issued.get('dev:expired')!.access_token);
    expect(oidc.refreshSuccesses).toBe(grants + 1);
    expect(await storedRt('dev', 'expired')).not.toBe(issued.get('dev:expired')!.refresh_token);

    // Forced refresh of a still-valid token: rotation.
    grants = oidc.refreshSuccesses;
    const rotated = await c.request('refresh_token', { provider: 'dev', bucket: 'rotate' });
    expect(rotated).toMatchObject({ ok: true });
    expect(rotated.data).not.toHaveProperty('refresh_token');
    expect((rotated.data as { access_token: string }).access_token).not.toBe(issued.get('dev:rotate')!.access_token);
    expect(oidc.refreshSuccesses).toBe(grants + 1);
    expect(await storedRt('dev', 'rotate')).not.toBe(issued.get('dev:rotate')!.refresh_token);

    // The canary refresh token goes to the provider, which answers invalid_grant: REAUTH_REQUIRED, RT cleared.
    expect(await c.request('refresh_token', { provider: 'dev', bucket: 'canary' })).toMatchObject({ ok: false, code: 'REAUTH_REQUIRED' });
    expect(oidc.secretsSeen.has(CANARY_RT_DEV)).toBe(true);
    expect((await stores.tokens.getToken('dev', 'canary'))?.refresh_token).toBeUndefined();
    // A provider with no configuration.
    expect(await c.request('refresh_token', { provider: 'acme' })).toMatchObject({ ok: false, code: 'PROVIDER_NOT_FOUND' });
    expect(await c.request('get_token', { provider: 'acme' })).toMatchObject({ ok: true, data: { access_token: `at-acme-default-${tag}` } });

    // Outside the policy.
    expect(await c.request('get_token', { provider: 'secret' })).toMatchObject({ ok: false, code: 'UNAUTHORIZED' });
    expect(await c.request('refresh_token', { provider: 'secret' })).toMatchObject({ ok: false, code: 'UNAUTHORIZED' });
    expect(await c.request('list_buckets', { provider: 'secret' })).toMatchObject({ ok: false, code: 'UNAUTHORIZED' });
    expect(await c.request('get_api_key', { name: 'hidden' })).toMatchObject({ ok: false, code: 'UNAUTHORIZED' });
    expect(await c.request('save_token', { provider: 'secret', token: { access_token: 'x', expiry: farFuture } })).toMatchObject({ ok: false, code: 'UNAUTHORIZED' });
    expect(await c.request('remove_token', { provider: 'secret' })).toMatchObject({ ok: false, code: 'UNAUTHORIZED' });
    expect(await c.request('oauth_initiate', { provider: 'secret' })).toMatchObject({ ok: false, code: 'UNAUTHORIZED' });
    expect(await c.request('get_token', { provider: 'dev', bucket: 'nothing-here' })).toMatchObject({ ok: false, code: 'NOT_FOUND' });

    // save_token with a forged refresh token: dropped; the host's refresh token is kept, unknown extras are not stored.
    const rotateRt = (await stores.tokens.getToken('dev', 'rotate'))!.refresh_token;
    expect(await c.request('save_token', { provider: 'dev', bucket: 'rotate', token: { access_token: `at-saved-${tag}`, expiry: farFuture, refresh_token: FORGED_RT, extra: 'x' } })).toMatchObject({ ok: true, data: {} });
    expect(await stores.tokens.getToken('dev', 'rotate')).toMatchObject({ access_token: `at-saved-${tag}`, refresh_token: rotateRt });
    expect((await stores.tokens.getToken('dev', 'rotate'))?.extra).toBeUndefined();
    expect(await c.request('save_token', { provider: 'dev', bucket: 'saved', token: { access_token: `at-new-${tag}`, expiry: farFuture, refresh_token: FORGED_RT } })).toMatchObject({ ok: true });
    expect((await stores.tokens.getToken('dev', 'saved'))?.refresh_token).toBeUndefined();
    expect(await c.request('list_providers', {})).toMatchObject({ ok: true, data: { providers: expect.arrayContaining(['dev', 'acme']) } });
    expect((await c.request('list_providers', {})).data).not.toMatchObject({ providers: expect.arrayContaining(['secret']) });
    expect(await c.request('list_buckets', { provider: 'dev' })).toMatchObject({ ok: true, data: { buckets: expect.arrayContaining(['canary', 'rotate', 'saved']) } });
    expect(await c.request('remove_token', { provider: 'dev', bucket: 'saved' })).toMatchObject({ ok: true, data: { removed: 'entry' } });
    expect(await c.request('remove_token', { provider: 'dev', bucket: 'saved' })).toMatchObject({ ok: true, data: {} });

    // Keys.
    expect(await c.request('get_api_key', { name: 'openai' })).toMatchObject({ ok: true, data: { key: KEY_VALUE } });
    expect(await c.request('get_api_key', { name: 'absent' })).toMatchObject({ ok: false, code: 'UNAUTHORIZED' });
    expect(await c.request('list_api_keys', {})).toMatchObject({ ok: true, data: { keys: ['openai'] } });
    expect(await c.request('has_api_key', { name: 'openai' })).toMatchObject({ ok: true, data: { exists: true } });
    expect(await c.request('has_api_key', { name: 'hidden' })).toMatchObject({ ok: false, code: 'UNAUTHORIZED' });
    expect(await c.request('get_bucket_stats', { provider: 'dev', bucket: 'rotate' })).toMatchObject({ ok: true, data: { bucket: 'rotate' } });

    // Malformed requests: schema errors never echo the offending value.
    expect(await c.request(ECHO_OP, {})).toMatchObject({ ok: false, code: 'INVALID_REQUEST' });
    expect(await c.request('get_token', { provider: `bad/${ECHO_NAME}` })).toMatchObject({ ok: false, code: 'INVALID_REQUEST' });
    expect(await c.request('get_token', { provider: 'dev', bucket: null })).toMatchObject({ ok: false, code: 'INVALID_REQUEST' });
    expect(await c.request('get_api_key', { name: 42 })).toMatchObject({ ok: false, code: 'INVALID_REQUEST' });
    expect(await c.request('save_token', { provider: 'dev', token: { refresh_token: FORGED_RT } })).toMatchObject({ ok: false, code: 'INVALID_REQUEST' });
    expect(await c.request('oauth_exchange', { session_id: ECHO_SESSION, code: 'x' })).toMatchObject({ ok: false, code: 'INVALID_REQUEST' });
    expect(await c.request('oauth_poll', { session_id: ECHO_SESSION })).toMatchObject({ ok: false, code: 'INVALID_REQUEST' });
    expect(await c.request('oauth_cancel', {})).toMatchObject({ ok: false, code: 'INVALID_REQUEST' });
    expect(await c.request('oauth_exchange', { session_id: 'a'.repeat(32), code: ECHO_CODE.repeat(Math.ceil(8193 / ECHO_CODE.length)) })).toMatchObject({ ok: false, code: 'INVALID_REQUEST' });
    expect(await c.request('cancel', { targetId: ECHO_TARGET.repeat(20) })).toMatchObject({ ok: false, code: 'INVALID_REQUEST' });
    c.send({ v: 1, id: 'payload-array', op: 'list_api_keys', payload: [ECHO_JUNK] });
    expect(await c.answerFor('payload-array')).toMatchObject({ ok: false, code: 'INVALID_REQUEST' });
    c.send({ v: 2, id: 'v2', op: 'list_api_keys', payload: {} });
    expect(await c.answerFor('v2')).toMatchObject({ ok: false, code: 'INVALID_REQUEST' });
    const before = c.frames.length;
    c.send({ v: 1, op: 'get_token', payload: { provider: ECHO_NAME } });
    expect(await c.frameAt(before)).toMatchObject({ ok: false, code: 'INVALID_REQUEST' });
    expect(c.frames[before]).not.toHaveProperty('id');

    // cancel: a slow refresh is cancelled and never answered; cancelling nothing says so.
    oidc.tokenDelayMs = 1000;
    try {
      c.fire('refresh_token', { provider: 'dev', bucket: 'slow' }, 'slow-refresh');
      await sleep(200);
      c.fire('refresh_token', { provider: 'dev', bucket: 'slow' }, 'slow-refresh'); // same id in flight
      expect(await c.answerFor('slow-refresh')).toMatchObject({ ok: false, code: 'INVALID_REQUEST' });
      const dupAnswers = c.frames.length;
      expect(await c.request('cancel', { targetId: 'slow-refresh' })).toMatchObject({ ok: true, data: { cancelled: true } });
      expect(await c.request('cancel', { targetId: 'nothing-in-flight' })).toMatchObject({ ok: true, data: { cancelled: false } });
      await sleep(1500); // the provider call ends on the host; no answer may follow
      expect(c.frames.slice(dupAnswers).filter((f) => f.id === 'slow-refresh')).toEqual([]);
    } finally {
      oidc.tokenDelayMs = 0;
    }
    await storedRt('dev', 'slow');

    // Rate limit on its own connection: 70 requests within a second.
    const rl = await session();
    const answers: Frame[] = [];
    for (let batch = 0; batch < 7; batch++) {
      const ids = Array.from({ length: 10 }, (_, i) => rl.fire('list_api_keys', {}, `rl-${batch}-${i}`));
      answers.push(...(await Promise.all(ids.map((id) => rl.answerFor(id)))));
    }
    expect(answers.filter((a) => a.ok === false && a.code === 'RATE_LIMITED').length).toBeGreaterThan(0);
  });

  it('logins from the socket side: device, code paste, loopback, denied, cancelled and failing sessions; a host CLI device login alongside', async () => {
    // Host CLI device login in parallel (its own in-process session manager).
    const hostDev = spawn(process.execPath, [BIN, 'login', 'dev', '--bucket', 'hostdev', '--no-browser'], { env: host.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let hostDevOut = '';
    hostDev.stdout!.on('data', (d: Buffer) => (hostDevOut += d.toString()));
    const hostDevExit = new Promise<number | null>((r) => hostDev.on('exit', (code) => r(code)));
    const hostDevPrompt = waitForStderr(hostDev, /open (\S+) and enter the code: (\S+)\n/, 'host device prompt');

    const remember = (info: OAuthInitiateData): void => {
      sessionIds.add(info.session_id);
      if (info.auth_url) states.add(new URL(info.auth_url).searchParams.get('state')!);
    };

    const device = loginThroughProxy(client(), 'dev', 'devlogin', io({
      onStart: (info) => {
        remember(info);
        void new ScriptedBrowser().completeDevice(info.verification_url!, info.user_code);
      },
    }));

    let pasteUrl = '';
    const paste = loginThroughProxy(client(), 'paste', 'pastelogin', io({
      onStart: (info) => {
        remember(info);
        pasteUrl = info.auth_url!;
      },
      prompt: async () => {
        const landed = await new ScriptedBrowser().authorize(pasteUrl, NATIVE_REDIRECT_URI);
        pastedBySandbox.add(landed.searchParams.get('code')!);
        return `${landed.searchParams.get('code')}#${landed.searchParams.get('state')}`;
      },
    }));

    let delivered: Promise<void> = Promise.resolve();
    const loop = loginThroughProxy(client(), 'loop', 'looplogin', io({
      onStart: (info) => {
        remember(info);
        const auth = new URL(info.auth_url!);
        const redirect = auth.searchParams.get('redirect_uri')!;
        delivered = (async () => {
          const landed = await new ScriptedBrowser().authorize(auth, redirect);
          const res = await fetch(landed);
          expect(res.status).toBe(200);
          await res.text();
        })();
      },
    }));

    // These three finish first: a sandbox may have at most 4 logins in progress at once.
    const [devToken, pasteToken, loopToken] = await Promise.all([device, paste, loop]);
    await delivered;

    // Raw-op sessions: denied, cancelled, failing.
    const c = await session();
    const ok = async (op: string, payload: Frame): Promise<Frame> => {
      const a = await c.request(op, payload);
      expect(a, `${op} ${JSON.stringify(a)}`).toMatchObject({ ok: true });
      return a.data as Frame;
    };
    const denied = (await ok('oauth_initiate', { provider: 'dev', bucket: 'denied' })) as unknown as OAuthInitiateData;
    remember(denied);
    await new ScriptedBrowser().completeDevice(denied.verification_url!, denied.user_code, 'deny');

    const cancelled = (await ok('oauth_initiate', { provider: 'dev', bucket: 'cancelled' })) as unknown as OAuthInitiateData;
    remember(cancelled);
    expect(await ok('oauth_poll', { session_id: cancelled.session_id })).toMatchObject({ status: 'pending' });
    expect(await ok('oauth_cancel', { session_id: cancelled.session_id })).toEqual({});
    expect(await c.request('oauth_poll', { session_id: cancelled.session_id })).toMatchObject({ ok: false, code: 'SESSION_NOT_FOUND' });
    const loopCancelled = (await ok('oauth_initiate', { provider: 'loop', bucket: 'cancelled' })) as unknown as OAuthInitiateData;
    remember(loopCancelled);
    expect(await ok('oauth_cancel', { session_id: loopCancelled.session_id })).toEqual({});

    const failing = (await ok('oauth_initiate', { provider: 'paste', bucket: 'failing' })) as unknown as OAuthInitiateData;
    remember(failing);
    expect(await c.request('oauth_poll', { session_id: failing.session_id })).toMatchObject({ ok: false, code: 'INVALID_REQUEST' });
    expect(await c.request('oauth_exchange', { session_id: denied.session_id, code: 'x' })).toMatchObject({ ok: false, code: 'INVALID_REQUEST' });
    expect(await c.request('oauth_poll', { session_id: '0'.repeat(32) })).toMatchObject({ ok: false, code: 'SESSION_NOT_FOUND' });
    pastedBySandbox.add(`wrong-code-${tag}`);
    expect(await c.request('oauth_exchange', { session_id: failing.session_id, code: `wrong-code-${tag}` })).toMatchObject({ ok: false, code: 'EXCHANGE_FAILED' });
    expect(await c.request('oauth_exchange', { session_id: failing.session_id, code: `wrong-code-${tag}` })).toMatchObject({ ok: false, code: 'SESSION_ALREADY_USED' });

    // The user on the host approves the host CLI's device login.
    const { match } = await hostDevPrompt;
    await new ScriptedBrowser().completeDevice(match[1]!, match[2]!);

    for (const [bucket, t] of [['dev:devlogin', devToken], ['paste:pastelogin', pasteToken], ['loop:looplogin', loopToken]] as const) {
      expect(t).not.toHaveProperty('refresh_token');
      expect(t.access_token.length).toBeGreaterThan(10);
      loginTokens.set(bucket, t.access_token);
      const [provider, b] = bucket.split(':') as [string, string];
      const stored = await stores.tokens.getToken(provider, b);
      expect(stored?.access_token).toBe(t.access_token);
      expect(typeof (await storedRt(provider, b))).toBe('string');
    }

    // Denied consent: the poll itself succeeds and reports EXCHANGE_FAILED.
    let poll = await ok('oauth_poll', { session_id: denied.session_id });
    const deadline = Date.now() + 15_000;
    while (poll.status === 'pending' && Date.now() < deadline) {
      await sleep(250);
      poll = await ok('oauth_poll', { session_id: denied.session_id });
    }
    expect(poll).toMatchObject({ status: 'error', code: 'EXCHANGE_FAILED' });
    expect(await stores.tokens.getToken('dev', 'denied')).toBeNull();

    expect(await hostDevExit).toBe(0);
    const hostDevErr = (await hostDevPrompt).text();
    cli.push({ label: 'host: login dev --bucket hostdev (device)', stdout: hostDevOut, stderr: hostDevErr });
    expect(hostDevErr).toMatch(/logged in to dev:hostdev/);
    expect(typeof (await storedRt('dev', 'hostdev'))).toBe('string');

    // The logged-in credentials are served (sanitized) through the proxy.
    expect(await c.request('get_token', { provider: 'loop', bucket: 'looplogin' })).toMatchObject({ ok: true, data: { access_token: loopToken.access_token } });
  }, 30_000);

  it('CLI commands inside the sandbox (through the tap) and on the host', async () => {
    const results = await Promise.all([
      sandboxCli('token get dev rotate', ['token', 'get', 'dev', '--bucket', 'rotate']),
      sandboxCli('token get --json dev devlogin', ['token', 'get', 'dev', '--bucket', 'devlogin', '--json']),
      sandboxCli('key get openai', ['key', 'get', 'openai'], undefined, { showsKey: true }),
      sandboxCli('key list', ['key', 'list', '--json']),
      sandboxCli('status --json', ['status', '--json']),
      sandboxCli('status', ['status']),
      sandboxCli('exec', ['exec', '--env', 'T=token:dev:rotate', '--env', 'K=key:openai', '--', process.execPath, '-e', 'process.stdout.write(`${(process.env.T ?? "").length} ${(process.env.K ?? "").length}`)']),
      sandboxCli('token get secret (forbidden)', ['token', 'get', 'secret']),
      sandboxCli('key set (refused)', ['key', 'set', 'x'], `${ECHO_KEYSET}\n`),
    ]);
    const [tget, tjson, kget, klist, status, , exec, forbidden, kset] = results as [CliResult, CliResult, CliResult, CliResult, CliResult, CliResult, CliResult, CliResult, CliResult];
    expect(tget.code, tget.stderr).toBe(0);
    expect(tget.stdout.trim()).toBe(`at-saved-${tag}`);
    expect(tjson.code, tjson.stderr).toBe(0);
    expect(JSON.parse(tjson.stdout)).not.toHaveProperty('refresh_token');
    expect(kget.stdout.trim()).toBe(KEY_VALUE);
    expect(JSON.parse(klist.stdout)).toEqual(['openai']);
    expect(status.code, status.stderr).toBe(0);
    expect(JSON.parse(status.stdout)).toMatchObject({ mode: 'sandbox' });
    expect(exec.code, exec.stderr).toBe(0);
    expect(exec.stdout).toBe(`${`at-saved-${tag}`.length} ${KEY_VALUE.length}`);
    expect(forbidden.code).toBe(1);
    expect(forbidden.stderr).toContain('UNAUTHORIZED');
    expect(kset.code).toBe(1);

    // Sandbox CLI login (code paste through the proxy), then logout through the proxy.
    const child = spawn(process.execPath, [BIN, 'login', 'paste', '--bucket', 'clipaste'], { env: sandboxEnv(), stdio: ['pipe', 'pipe', 'pipe'] });
    let childOut = '';
    child.stdout!.on('data', (d: Buffer) => (childOut += d.toString()));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    const prompt = await waitForStderr(child, /(http:\/\/127\.0\.0\.1:\d+\/auth\?\S+)\n[\s\S]*paste the code/, 'sandbox CLI URL and prompt');
    states.add(new URL(prompt.match[1]!).searchParams.get('state')!);
    const landed = await new ScriptedBrowser().authorize(prompt.match[1]!, NATIVE_REDIRECT_URI);
    pastedBySandbox.add(landed.searchParams.get('code')!);
    child.stdin!.end(`${landed.searchParams.get('code')}\n`);
    expect(await exited).toBe(0);
    cli.push({ label: 'sandbox: login paste --bucket clipaste', stdout: childOut, stderr: prompt.text() });
    expect(prompt.text()).toMatch(/logged in to paste:clipaste/);
    expect(typeof (await storedRt('paste', 'clipaste'))).toBe('string');
    const logout = await sandboxCli('logout paste clipaste', ['logout', 'paste', '--bucket', 'clipaste']);
    expect(logout.code, logout.stderr).toBe(0);
    // The sandbox removes what it can see: the access token; the host keeps the refresh token.
    expect(logout.stderr).toContain('the host keeps its refresh token');
    expect(await stores.tokens.getToken('paste', 'clipaste')).toMatchObject({ expiry: 0 });
    expect(typeof (await storedRt('paste', 'clipaste'))).toBe('string');

    // Host CLI.
    const grantsBefore = oidc.refreshSuccesses;
    const [hget, hjson, hexp, hstatus, hstatusText, hkeys, hkget, hproviders, badImport] = await Promise.all([
      hostCli('token get dev rotate', ['token', 'get', 'dev', '--bucket', 'rotate']),
      hostCli('token get --json dev devlogin', ['token', 'get', 'dev', '--bucket', 'devlogin', '--json']),
      hostCli('token get hostonly (expired: refreshes in-process)', ['token', 'get', 'hostonly']),
      hostCli('status --json', ['status', '--json']),
      hostCli('status', ['status']),
      hostCli('key list', ['key', 'list']),
      hostCli('key get openai', ['key', 'get', 'openai'], undefined, { showsKey: true }),
      hostCli('providers', ['providers', '--json']),
      hostCli('token import (malformed)', ['token', 'import', 'dev', '--bucket', 'bad'], JSON.stringify({ access_token: 5, refresh_token: ECHO_IMPORT_RT })),
    ]);
    expect(hget.code, hget.stderr).toBe(0);
    expect(hget.stdout.trim()).toBe(`at-saved-${tag}`);
    expect(hjson.code, hjson.stderr).toBe(0);
    expect(JSON.parse(hjson.stdout)).not.toHaveProperty('refresh_token');
    expect(hexp.code, hexp.stderr).toBe(0);
    expect(hexp.stdout.trim()).not.toBe(issued.get('hostonly:default')!.access_token);
    expect(oidc.refreshSuccesses).toBe(grantsBefore + 1);
    expect(await storedRt('hostonly', 'default')).not.toBe(issued.get('hostonly:default')!.refresh_token);
    expect(hstatus.code, hstatus.stderr).toBe(0);
    expect(JSON.parse(hstatus.stdout)).toMatchObject({ mode: 'host', backend: 'file' });
    expect(hstatusText.code).toBe(0);
    expect(hkeys.stdout).toContain('openai');
    expect(hkget.stdout.trim()).toBe(KEY_VALUE);
    expect(hproviders.code, hproviders.stderr).toBe(0);
    expect(badImport.code).toBe(1);

    // Host CLI code-paste login, then logout of both host logins.
    const hp = spawn(process.execPath, [BIN, 'login', 'paste', '--bucket', 'hostpaste', '--no-browser'], { env: host.env, stdio: ['pipe', 'pipe', 'pipe'] });
    let hpOut = '';
    hp.stdout!.on('data', (d: Buffer) => (hpOut += d.toString()));
    const hpExit = new Promise<number | null>((r) => hp.on('exit', (code) => r(code)));
    const hpPrompt = await waitForStderr(hp, /(http:\/\/127\.0\.0\.1:\d+\/auth\?\S+)\n[\s\S]*paste the code/, 'host CLI URL and prompt');
    const hpLanded = await new ScriptedBrowser().authorize(hpPrompt.match[1]!, NATIVE_REDIRECT_URI);
    hp.stdin!.end(`${hpLanded.searchParams.get('code')}\n`);
    expect(await hpExit).toBe(0);
    cli.push({ label: 'host: login paste --bucket hostpaste', stdout: hpOut, stderr: hpPrompt.text() });
    expect(typeof (await storedRt('paste', 'hostpaste'))).toBe('string');
    for (const [p, b] of [['paste', 'hostpaste'], ['dev', 'hostdev']] as const) {
      const out = await hostCli(`logout ${p} ${b}`, ['logout', p, '--bucket', b]);
      expect(out.code, out.stderr).toBe(0);
      expect(await stores.tokens.getToken(p, b)).toBeNull();
    }
  }, 120_000);

  it('sweep: zero canary hits in every frame, serve log line, audit line and CLI output', async () => {
    // Stop the sandbox side, then serve (SIGTERM flushes the audit log).
    for (const c of clients) await c.close();
    for (const r of raws) r.close();
    const serveStopped = await serve.stop('SIGTERM');
    expect(serveStopped.code === 0 || serveStopped.code === 143 || serveStopped.signal === 'SIGTERM').toBe(true);

    // Every refresh token still stored anywhere is host-only too.
    for (const provider of await stores.tokens.listProviders()) {
      for (const bucket of await stores.tokens.listBuckets(provider)) await storedRt(provider, bucket);
    }
    for (const set of issued.values()) addHostOnly('issued refresh token', set.refresh_token);
    // Everything the authorization server issued or was sent: refresh tokens, auth codes, verifiers, device codes.
    const seen = [...oidc.secretsSeen];
    for (const s of seen) if (!pastedBySandbox.has(s)) addHostOnly('authorization server secret', s);
    const pasted = new Map([...pastedBySandbox].map((v, i) => [`auth code pasted by the sandbox user #${i}`, v] as const));

    // --- captures and corpora ----------------------------------------------------
    const decoded = decodeAll(tap.conns);
    const down = decoded.frames.filter((f) => f.dir === 'down');
    // Full session ids: those answered by oauth_initiate on the wire (the only place a full id exists outside serve).
    for (const f of down) {
      const id = (f.json?.data as Frame | undefined)?.session_id;
      if (typeof id === 'string') sessionIds.add(id);
    }
    const logs = serve.stderr();
    const stateDir = join(host.home, 'state');
    const auditFiles = readdirSync(stateDir).filter((f) => f.includes('audit'));
    const audit = auditFiles.map((f) => readFileSync(join(stateDir, f), 'utf8')).join('\n');
    const wireDown: Corpus[] = tap.conns.map((c) => ({ label: `frames host->sandbox, conn ${c.n}`, text: Buffer.concat(c.down).toString('utf8') }));
    const wireUp: Corpus[] = tap.conns.map((c) => ({ label: `frames sandbox->host, conn ${c.n}`, text: Buffer.concat(c.up).toString('utf8') }));
    // Decoded frames too (a frame split across TCP chunks is whole here).
    for (const f of decoded.frames) (f.dir === 'down' ? wireDown : wireUp).push({ label: `decoded frame ${f.dir === 'down' ? 'host->sandbox' : 'sandbox->host'}, conn ${f.conn}`, text: f.text });
    const serveLogs: Corpus[] = [
      { label: 'serve stderr (logs)', text: logs },
      ...auditFiles.map((f) => ({ label: `audit ${f}`, text: readFileSync(join(stateDir, f), 'utf8') })),
    ];
    const cliOut: Corpus[] = [
      ...cli.flatMap((c) => [
        { label: `${c.label} stdout`, text: c.stdout },
        { label: `${c.label} stderr`, text: c.stderr },
      ]),
      { label: 'login adapter output', text: adapterOutput.join('') },
      { label: 'serve stdout', text: serve.stdout() },
    ];
    const cliNoKey = cliOut.filter((c) => !cli.some((x) => x.showsKey && c.label === `${x.label} stdout`));
    const cliNoServeStdout = cliOut.filter((c) => c.label !== 'serve stdout'); // it prints the capability token by design

    // --- positive controls: the scanner finds what it must ---------------------------
    const sampleSecret = seen.find((s) => !pastedBySandbox.has(s))!;
    expect(sampleSecret).toBeDefined();
    const sampleFrame = down.find((f) => f.json?.ok === true && typeof (f.json.data as Frame | undefined)?.access_token === 'string');
    const planted = { ...(sampleFrame?.json ?? {}), data: { ...((sampleFrame?.json?.data as Frame | undefined) ?? {}), note: `x${sampleSecret}y` } };
    const control: Corpus[] = [
      { label: 'control frame', text: rawFrame(JSON.stringify(planted)).toString('utf8') },
      { label: 'control log', text: `${logs.split('\n')[0]}\n${JSON.stringify({ level: 20, msg: 'oops', url: `http://x/?code=${encodeURIComponent(sampleSecret)}` })}\n` },
      { label: 'clean control', text: JSON.stringify({ level: 20, msg: 'fine', code: sampleSecret.slice(0, 8) }) },
    ];
    expect(scan(control, new Map([['sample', sampleSecret]])).map((h) => h.where).sort()).toEqual(['control frame', 'control log']);
    const anyId = [...sessionIds][0] ?? '0123456789abcdef0123456789abcdef';
    expect(scan([{ label: 'control', text: `{"session":"${anyId}"}` }], new Map([['sid', anyId]]))).toHaveLength(1);
    expect(`a ${'0123456789abcdef'.repeat(2)} b`.match(SESSION_LIKE)).toHaveLength(1);

    // --- the sweep: zero hits -----------------------------------------------------------
    expect(hostOnly.size).toBeGreaterThanOrEqual(30);
    for (const v of hostOnly.values()) expect(v.length).toBeGreaterThan(8);
    const report = (hits: Hit[]): string => hits.map((h) => `${h.canary} in ${h.where}: ...${h.context}`).join('\n');
    const hits: Hit[] = [
      // Host-only secrets: nowhere at all.
      ...scan([...wireDown, ...wireUp, ...serveLogs, ...cliOut], hostOnly),
      // Codes the user pasted in the sandbox: never back down the socket, in a log or the audit.
      ...scan([...wireDown, ...serveLogs], pasted),
      // Values the client sent: never echoed, logged or audited.
      ...scan([...wireDown, ...serveLogs, ...cliOut], clientSent),
      // Full session ids: on the wire only.
      ...scan([...serveLogs, ...cliOut], new Map([...sessionIds].map((id, i) => [`session id #${i}`, id] as const))),
      // OAuth state of socket sessions: in the URL the user sees, never in the serve log or audit.
      ...scan(serveLogs, new Map([...states].map((st, i) => [`state #${i}`, st] as const))),
      // The allowed key: never in a log, the audit or a CLI output (bar `key get`'s stdout).
      ...scan([...serveLogs, ...cliNoKey], new Map([['allowed API key value', KEY_VALUE]])),
      // The capability token: never in a log, the audit or a CLI output.
      ...scan([...serveLogs, ...cliNoServeStdout], new Map([['capability token', serve.token]])),
    ];
    expect(report(hits)).toBe('');
    // Session ids the test cannot learn (the host CLI's in-process sessions): no full-length id in any log or output.
    const idLike = [...serveLogs, ...cliNoServeStdout].flatMap((c) => (c.text.match(SESSION_LIKE) ?? []).map((m) => `${c.label}: ${m}`));
    expect(idLike).toEqual([]);
    // Field names that must never come down the socket.
    for (const f of down) expect(f.text).not.toMatch(/"(refresh_token|code_verifier|device_code|client_secret)"\s*:/);

    // --- the captures are real and the run did what it claims ---------------------------
    expect(cli.length).toBeGreaterThanOrEqual(30);
    expect(scan(wireDown, new Map([['allowed key', KEY_VALUE]])).length).toBeGreaterThan(0); // the authorised get_api_key answers are in the capture
    expect(scan(cli.filter((c) => c.showsKey).map((c) => ({ label: c.label, text: c.stdout })), new Map([['allowed key', KEY_VALUE]]))).toHaveLength(2);
    expect(scan(wireUp, pasted).length).toBeGreaterThanOrEqual(2 * pastedBySandbox.size); // pasted codes really went up the socket (raw + decoded)
    expect(scan(wireUp, new Map([['forged', FORGED_RT]])).length).toBeGreaterThan(0); // and so did the forged save
    const results = opResults(decoded.frames);
    // Every op of the dispatch table succeeded at least once on the wire.
    for (const op of OPS) expect(results.get(op), `op ${op} never answered ok; saw ${[...(results.get(op) ?? [])].join(',')}`).toContain('OK');
    // INVALID_REQUEST: the first frame that was not a handshake.
    expect(results.get('handshake')).toEqual(new Set(['OK', 'UNAUTHORIZED', 'UNKNOWN_VERSION', 'INVALID_REQUEST']));
    const codes = new Set([...results.values()].flatMap((r) => [...r]));
    for (const code of ['UNAUTHORIZED', 'UNKNOWN_VERSION', 'INVALID_REQUEST', 'NOT_FOUND', 'REAUTH_REQUIRED', 'PROVIDER_NOT_FOUND', 'SESSION_NOT_FOUND', 'SESSION_ALREADY_USED', 'EXCHANGE_FAILED', 'RATE_LIMITED']) {
      expect(codes, `error path ${code}`).toContain(code);
    }
    // Every connection decodes cleanly, bar the oversize one (its frame never completes).
    expect(decoded.leftovers.map((l) => l.dir)).toEqual(['up']);
    expect(down.length).toBeGreaterThan(150);
    expect(down.every((f) => f.json !== undefined)).toBe(true);
    expect(tap.conns.length).toBeGreaterThan(15);
    const flowTypes = new Set(down.map((f) => (f.json?.data as Frame | undefined)?.flow_type).filter(Boolean));
    expect(flowTypes).toEqual(new Set(['device_code', 'pkce_redirect', 'browser_redirect']));
    expect(down.filter((f) => (f.json?.data as Frame | undefined)?.status === 'complete').length).toBeGreaterThanOrEqual(2); // device + loopback
    expect(loginTokens.size).toBe(3);
    expect(sessionIds.size).toBeGreaterThanOrEqual(8);
    for (const id of sessionIds) expect(id).toMatch(SESSION_ID_RE);
    // A full session id only ever goes down the one connection that started its session.
    for (const id of sessionIds) {
      const conns = new Set(down.filter((f) => f.text.includes(id)).map((f) => f.conn));
      expect(conns.size, `session ${id.slice(0, 8)} sent down connections ${[...conns].join(',')}`).toBe(1);
    }
    // Logs are really captured at debug level and name sessions by their 8-character prefix.
    expect(logs).toContain('token refreshed');
    expect(logs).toContain('login completed');
    expect(logs).toContain('login session cancelled');
    expect([...sessionIds].filter((id) => !logs.includes(id.slice(0, 8)))).toEqual([]);
    // The audit: one JSON line per request, only the SPEC §5 fields, every op present.
    expect(auditFiles).toContain('audit.jsonl');
    const auditLines = audit.split('\n').filter((l) => l.trim() !== '');
    expect(auditLines.length).toBeGreaterThan(100);
    const allowedKeys = new Set(['time', 'conn', 'peerPid', 'peerUid', 'remote', 'op', 'provider', 'bucket', 'key', 'flow', 'account', 'refused', 'ops', 'result', 'durationMs']);
    const auditOps = new Set<string>();
    for (const line of auditLines) {
      const entry = JSON.parse(line) as Record<string, unknown>;
      for (const k of Object.keys(entry)) expect(allowedKeys, `audit field ${k}`).toContain(k);
      auditOps.add(String(entry.op));
      // Refused requests are counted per op in one line per connection and second.
      for (const op of Object.keys((entry.ops ?? {}) as object)) auditOps.add(op);
    }
    for (const op of OPS) expect(auditOps, `audit line for ${op}`).toContain(op);
    expect(auditOps).toContain('unknown');
    expect(existsSync(serve.socket)).toBe(false);
  });
});
