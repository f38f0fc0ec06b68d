import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeHostEnv, runCli, type CliResult, type HostEnv } from '../support/cli.js';
import { createTestCa, type TestCa } from '../support/test-ca.js';
import { FakeUpstream } from '../support/fake-upstream.js';

/**
 * Issue 15 end to end: real bwrap (no network, no --share-net) and the
 * built CLI. The "outside world" is two servers on 127.0.0.2 (HTTP and
 * HTTPS), reachable only because each run names that literal address with
 * --allow-host (which is what lifts the loopback block). Nothing else is
 * ever contacted: every other name is refused before any connection.
 */

const OUTSIDE = '127.0.0.2';
const KEY_CANARY = `sk-egress-canary-${process.pid}-77ab`;
const HEADER_CANARY = `hdr-canary-${process.pid}-41cd`;
const QUERY_CANARY = `qry-canary-${process.pid}-93ef`;

let ca: TestCa;
let host: HostEnv;
let work: string;
let plain: http.Server;
let secure: https.Server;
let httpPort = 0;
let httpsPort = 0;
const seen: Array<{ scheme: string; method: string; url: string; headers: http.IncomingHttpHeaders }> = [];
const outputs: string[] = [];

let gitDir: string;
let tarball: Buffer;

function git(args: string[], cwd: string): void {
  execFileSync('git', ['-c', 'user.name=t', '-c', 'user.email=t@example.invalid', '-c', 'init.defaultBranch=main', ...args], { cwd, stdio: 'ignore' });
}

/** The fake registry's packument for `egress-demo` (tarball on the HTTPS server). */
function packument(): string {
  const integrity = `sha512-${createHash('sha512').update(tarball).digest('base64')}`;
  const shasum = createHash('sha1').update(tarball).digest('hex');
  const version = { name: 'egress-demo', version: '1.0.0', main: 'index.js', dist: { tarball: `https://${OUTSIDE}:${httpsPort}/egress-demo/-/egress-demo-1.0.0.tgz`, integrity, shasum } };
  return JSON.stringify({ name: 'egress-demo', 'dist-tags': { latest: '1.0.0' }, versions: { '1.0.0': version } });
}

function handler(scheme: string): http.RequestListener {
  return (req, res) => {
    seen.push({ scheme, method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname === '/hello') return void res.end(`hello from outside over ${scheme}\n`);
    if (url.pathname === '/big') return void res.end(Buffer.alloc(1 << 20, 97));
    if (url.pathname === '/egress-demo') return void res.writeHead(200, { 'content-type': 'application/json' }).end(packument());
    if (url.pathname === '/egress-demo/-/egress-demo-1.0.0.tgz') return void res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(tarball);
    if (url.pathname.startsWith('/repo.git/')) {
      // A dumb-HTTP git remote: the bare repository's files as they are.
      const file = normalize(join(gitDir, url.pathname.slice('/repo.git/'.length)));
      if (file.startsWith(gitDir) && existsSync(file)) return void res.end(readFileSync(file));
    }
    res.writeHead(404).end('not found\n');
  };
}

beforeAll(async () => {
  ca = createTestCa({ ips: [OUTSIDE] });
  host = makeHostEnv();
  // A host secret that must never show up in the proxy's audit or logs.
  const key = await runCli(['key', 'set', 'canary'], { env: host.env, input: `${KEY_CANARY}\n` });
  expect(key.code, key.stderr).toBe(0);
  work = mkdtempSync('/tmp/cpe-w-');
  writeFileSync(join(work, 'ca.pem'), ca.caPem);
  mkdirSync(join(work, 'proj'));
  writeFileSync(join(work, 'proj', 'package.json'), JSON.stringify({ name: 'proj', version: '1.0.0', private: true }));

  // The git remote: one commit, served as a dumb-HTTP repository.
  const src = mkdtempSync('/tmp/cpe-g-');
  git(['init', '-q', 'w'], src);
  writeFileSync(join(src, 'w', 'hello.txt'), 'fetched through the egress proxy\n');
  git(['add', 'hello.txt'], join(src, 'w'));
  git(['commit', '-q', '-m', 'one'], join(src, 'w'));
  git(['clone', '-q', '--bare', 'w', 'repo.git'], src);
  git(['update-server-info'], join(src, 'repo.git'));
  gitDir = join(src, 'repo.git');

  // The npm package.
  const pkg = mkdtempSync('/tmp/cpe-p-');
  mkdirSync(join(pkg, 'package'));
  writeFileSync(join(pkg, 'package', 'package.json'), JSON.stringify({ name: 'egress-demo', version: '1.0.0', main: 'index.js' }));
  writeFileSync(join(pkg, 'package', 'index.js'), "module.exports = 'egress-demo works';\n");
  execFileSync('tar', ['czf', 'p.tgz', 'package'], { cwd: pkg });
  tarball = readFileSync(join(pkg, 'p.tgz'));
  rmSync(pkg, { recursive: true, force: true });

  plain = http.createServer(handler('http'));
  secure = https.createServer({ cert: ca.certPem, key: ca.keyPem }, handler('https'));
  await new Promise<void>((r) => plain.listen(0, OUTSIDE, r));
  await new Promise<void>((r) => secure.listen(0, OUTSIDE, r));
  httpPort = (plain.address() as AddressInfo).port;
  httpsPort = (secure.address() as AddressInfo).port;
});

afterAll(async () => {
  await Promise.all([plain, secure].map((s) => new Promise((r) => (s ? s.close(r) : r(undefined)))));
  // Nothing the sandbox sent (credentials in headers or URLs) and no host secret is in what credproxy recorded.
  const state = join(host.home, 'state');
  const audit = existsSync(join(state, 'egress-audit.jsonl')) ? readFileSync(join(state, 'egress-audit.jsonl'), 'utf8') : '';
  expect(audit).toContain('"kind":"egress"');
  for (const text of [audit, ...outputs]) {
    expect(text).not.toContain(KEY_CANARY);
  }
  expect(audit).not.toContain(HEADER_CANARY);
  expect(audit).not.toContain(QUERY_CANARY);
  ca?.remove();
  host?.cleanup();
  rmSync(work, { recursive: true, force: true });
  if (gitDir) rmSync(join(gitDir, '..'), { recursive: true, force: true });
});

/** `credproxy run` in real bwrap with the project dir as workdir; never --share-net. */
async function inBwrap(allow: string[], script: string, extra: string[] = []): Promise<CliResult> {
  const args = ['run', '--sandbox', 'bwrap', ...allow.flatMap((h) => ['--allow-host', h]), ...extra, '--', 'sh', '-c', script];
  expect(args).not.toContain('--share-net');
  const r = await runCli(args, { env: host.env, cwd: work, timeoutMs: 120_000 });
  outputs.push(r.stdout, r.stderr);
  return r;
}

function auditLines(): Array<Record<string, unknown>> {
  const path = join(host.home, 'state', 'egress-audit.jsonl');
  return existsSync(path) ? readFileSync(path, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>) : [];
}

const literal = (): string[] => [`${OUTSIDE}:${httpPort}`, `${OUTSIDE}:${httpsPort}`];

describe('run --allow-host in bwrap', () => {
  it('curl reaches an allowed host over HTTP (forwarded) and HTTPS (CONNECT, TLS end to end); the proxy variables are set', async () => {
    const before = auditLines().length;
    const r = await inBwrap(literal(), [
      'env | grep -i _proxy | sort',
      `curl -sS -H "Authorization: Bearer ${HEADER_CANARY}" "http://${OUTSIDE}:${httpPort}/hello?token=${QUERY_CANARY}"`,
      `curl -sS --cacert ./ca.pem -H "Authorization: Bearer ${HEADER_CANARY}" "https://${OUTSIDE}:${httpsPort}/hello?token=${QUERY_CANARY}"`,
      `curl -sS --cacert ./ca.pem -o /dev/null -w "big %{size_download}\\n" "https://${OUTSIDE}:${httpsPort}/big"`,
    ].join(' && '));
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('hello from outside over http\n');
    expect(r.stdout).toContain('hello from outside over https\n');
    expect(r.stdout).toContain(`big ${1 << 20}`);
    expect(r.stdout).toMatch(/^HTTPS_PROXY=http:\/\/127\.0\.0\.1:\d+$/m);
    expect(r.stdout).toMatch(/^http_proxy=http:\/\/127\.0\.0\.1:\d+$/m);
    expect(r.stdout).toMatch(/^NO_PROXY=localhost,127\.0\.0\.1,::1$/m);
    // The upstream saw the sandbox's own header (it is the sandbox's business), and TLS was not intercepted:
    // curl verified the outside server's certificate from the test CA, which the host process never trusted.
    expect(seen.some((s) => s.scheme === 'https' && s.headers.authorization === `Bearer ${HEADER_CANARY}`)).toBe(true);
    const lines = auditLines().slice(before);
    // Lines are written when a connection closes: order them by size, not by time.
    const conns = lines.filter((l) => l.type !== 'refused').sort((a, b) => (a.bytesDown as number) - (b.bytesDown as number));
    expect(conns.map((l) => [l.type, l.host, l.port, l.result]).sort()).toEqual([
      ['connect', OUTSIDE, httpsPort, 'allowed'],
      ['connect', OUTSIDE, httpsPort, 'allowed'],
      ['http', OUTSIDE, httpPort, 'allowed'],
    ]);
    const big = conns.at(-1)!;
    expect(big.type).toBe('connect');
    expect(big.bytesDown as number).toBeGreaterThan(1 << 20);
    expect(big.bytesUp as number).toBeGreaterThan(0);
    for (const l of conns) expect(typeof l.durationMs).toBe('number');
  });

  it('git clones and npm installs from allowed hosts through the proxy', async () => {
    const r = await inBwrap(literal(), [
      `git ls-remote http://${OUTSIDE}:${httpPort}/repo.git`,
      `git clone -q http://${OUTSIDE}:${httpPort}/repo.git /tmp/clone && cat /tmp/clone/hello.txt`,
      `cd proj && npm_config_cafile=../ca.pem npm install egress-demo --registry https://${OUTSIDE}:${httpsPort}/ --no-audit --no-fund --no-update-notifier --loglevel=error`,
      `node -e "console.log(require('egress-demo'))"`,
    ].join(' && '));
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^[0-9a-f]{40}\tHEAD$/m);
    expect(r.stdout).toContain('fetched through the egress proxy');
    expect(r.stdout).toContain('egress-demo works');
    expect(seen.some((s) => s.url.startsWith('/repo.git/info/refs'))).toBe(true);
    expect(seen.some((s) => s.scheme === 'https' && s.url === '/egress-demo/-/egress-demo-1.0.0.tgz')).toBe(true);
    expect(existsSync(join(work, 'proj', 'node_modules', 'egress-demo', 'index.js'))).toBe(true);
  });

  it('refuses a disallowed name (403 naming --allow-host), a name resolving to loopback, other ports, and direct connections', async () => {
    const before = seen.length;
    const r = await inBwrap([`${OUTSIDE}:${httpPort}`, `localhost:${httpPort}`], [
      'curl -sS -w " status=%{http_code}\\n" http://not-allowed.example/x',
      'curl -sS https://not-allowed.example/ 2>&1; echo "connect-exit=$?"',
      `curl -sS -w " status=%{http_code}\\n" --noproxy "" http://localhost:${httpPort}/hello`,
      `curl -sS -w " status=%{http_code}\\n" http://${OUTSIDE}:${httpsPort}/hello`,
      // Without the proxy: the sandbox has only its own loopback.
      `curl -sS --noproxy "*" --max-time 10 http://${OUTSIDE}:${httpPort}/hello 2>&1; echo "direct-exit=$?"`,
      `node -e "const s=require('net').connect(${httpPort},'${OUTSIDE}');s.on('connect',()=>{console.log('node-direct=connected');process.exit(0)});s.on('error',e=>{console.log('node-direct='+e.code);process.exit(0)})"`,
      `curl -sS --noproxy "*" --max-time 10 http://example.com/ 2>&1; echo "dns-exit=$?"`,
    ].join('; '));
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/not-allowed\.example:80 is not on the allowlist\. To allow it, add --allow-host not-allowed\.example to credproxy run\.\n status=403/);
    expect(r.stdout).toMatch(/CONNECT tunnel failed, response 403[^]*connect-exit=56/);
    expect(r.stdout).toMatch(new RegExp(`localhost resolves to 127\\.0\\.0\\.1, a loopback address[^]*--allow-host 127\\.0\\.0\\.1:${httpPort}[^]*status=403`));
    expect(r.stdout).toMatch(new RegExp(`--allow-host ${OUTSIDE.replace(/\./g, '\\.')}:${httpsPort} to credproxy run\\.\\n status=403`));
    expect(r.stdout).toMatch(/direct-exit=7\b/);
    expect(r.stdout).toContain('node-direct=ECONNREFUSED');
    expect(r.stdout).toMatch(/dns-exit=6\b/);
    expect(seen.length).toBe(before); // nothing reached the outside world
    const refused = auditLines().filter((l) => l.type === 'refused');
    const hosts = Object.assign({}, ...refused.map((l) => l.hosts as Record<string, number>)) as Record<string, number>;
    expect(Object.keys(hosts)).toEqual(expect.arrayContaining(['not-allowed.example:80', 'not-allowed.example:443', `localhost:${httpPort}`, `${OUTSIDE}:${httpsPort}`]));
  });

  it('a name is resolved on the host: localhost reaches a host server once its loopback address is also named literally', async () => {
    const local = http.createServer(handler('local'));
    await new Promise<void>((r) => local.listen(0, '127.0.0.1', r));
    const port = (local.address() as AddressInfo).port;
    try {
      const script = `curl -sS -w " status=%{http_code}\\n" --noproxy "" http://localhost:${port}/hello`;
      const refused = await inBwrap([`localhost:${port}`], script);
      expect(refused.stdout).toMatch(/resolves to 127\.0\.0\.1, a loopback address[^]*status=403/);
      const allowed = await inBwrap([`localhost:${port}`, `127.0.0.1:${port}`], script);
      expect(allowed.code, allowed.stderr).toBe(0);
      expect(allowed.stdout).toBe('hello from outside over local\n status=200\n');
    } finally {
      await new Promise((r) => local.close(r));
    }
  });

  it('shares one relay with the gateway, comes from a profile, and is listed by --explain', async () => {
    mkdirSync(join(host.home, 'config'), { recursive: true, mode: 0o700 });
    writeFileSync(join(host.home, 'config', 'config.json'), JSON.stringify({ profiles: { outside: { allowHost: [`${OUTSIDE}:${httpPort}`], keys: ['canary'] } } }));
    try {
      // NO_PROXY keeps the gateway (on the sandbox's own 127.0.0.1) direct: it answers itself, the proxy never sees it.
      const r = await inBwrap([], `curl -sS http://${OUTSIDE}:${httpPort}/hello && echo "gw=$CREDPROXY_GATEWAY_URL" && curl -sS -w " gateway-status=%{http_code}\\n" "$CREDPROXY_GATEWAY_URL/no-such-route/x"`, ['--profile', 'outside', '--gateway']);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toContain('hello from outside over http');
      expect(r.stdout).toMatch(/^gw=http:\/\/127\.0\.0\.1:\d+$/m);
      expect(r.stdout).toMatch(/no such gateway route[^]* gateway-status=404/);
      expect(r.stdout).not.toContain('credproxy egress');
      const explained = await runCli(['run', '--explain', '--profile', 'outside', '--allow-host', '@npm', '--allow-host', '*.example.org:*', '--', 'true'], { env: host.env, cwd: work });
      expect(explained.code, explained.stderr).toBe(0);
      expect(explained.stdout).toContain(`  ${OUTSIDE} port ${httpPort}, literal address (reachable even if loopback or private)`);
      expect(explained.stdout).toContain('  registry.npmjs.org port 443 (from @npm)');
      expect(explained.stdout).toContain('  *.example.org any port');
      expect(explained.stdout).toContain('HTTPS_PROXY HTTP_PROXY https_proxy http_proxy NO_PROXY no_proxy');
    } finally {
      rmSync(join(host.home, 'config', 'config.json'), { force: true });
    }
  });

  it('a flood of refused connections from inside adds about a line a second to the audit, with exact counts', async () => {
    const before = auditLines().length;
    const flood = `node -e "
      const net = require('net'); const u = new URL(process.env.HTTPS_PROXY); let done = 0, refused = 0;
      const one = (i) => new Promise((r) => { const s = net.connect(+u.port, u.hostname, () => s.write('CONNECT flood' + (i % 40) + '.example:443 HTTP/1.1\\r\\n\\r\\n'));
        let t = ''; s.on('data', (d) => t += d); s.on('close', () => { if (t.startsWith('HTTP/1.1 403')) refused++; r(); }); s.on('error', () => {}); });
      (async () => { for (let i = 0; i < 500; i += 25) await Promise.all(Array.from({ length: 25 }, (_, j) => one(i + j))); console.log('refused=' + refused); })();"`;
    const r = await inBwrap([`${OUTSIDE}:${httpPort}`], flood);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('refused=500');
    const lines = auditLines().slice(before);
    expect(lines.every((l) => l.type === 'refused')).toBe(true);
    expect(lines.reduce((n, l) => n + (l.count as number), 0)).toBe(500);
    expect(lines.length).toBeLessThanOrEqual(20); // 500 connections in a few seconds: a line a second at most
    for (const l of lines) expect(Object.keys(l.hosts as object).length).toBeLessThanOrEqual(32);
  });

  it('the relay passes llxprt-code\'s fd 3 on to the command (and no fd 3 otherwise)', async () => {
    const on = await inBwrap([`${OUTSIDE}:${httpPort}`], 'echo "proxy=${HTTPS_PROXY:+set} sock=${LLXPRT_CREDENTIAL_SOCKET:+set}"; cat <&3', ['--llxprt']);
    expect(on.code, on.stderr).toBe(0);
    expect(on.stdout).toMatch(/^proxy=set sock=set\n[0-9a-f]{64}\n$/);
    const off = await inBwrap([`${OUTSIDE}:${httpPort}`], '[ -e /dev/fd/3 ] && echo FD3-OPEN; echo "token=${CREDPROXY_TOKEN:+set}"');
    expect(off.code, off.stderr).toBe(0);
    expect(off.stdout).toBe('token=set\n');
  });

  it('bad rules and --share-net with --allow-host are usage errors (exit 2)', async () => {
    for (const [args, msg] of [
      [['--allow-host', '*'], /--share-net/],
      [['--allow-host', '*.com'], /two labels/],
      [['--allow-host', '2130706433'], /four decimal numbers/],
      [['--allow-host', '@nope'], /unknown preset/],
      [['--allow-host', 'example.org', '--share-net'], /choose one/],
      [['--allow-host', 'example.org', '--sandbox', 'podman', '--image', 'x', '--transport', 'tcp'], /drop --transport tcp/],
    ] as const) {
      const r = await runCli(['run', ...args, '--', 'true'], { env: host.env, cwd: work });
      outputs.push(r.stderr);
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toMatch(msg);
    }
  });
});

describe('run --allow-host --sandbox none', () => {
  it('points the proxy variables at the host proxy on loopback and enforces the same rules', async () => {
    const r = await runCli(['run', '--sandbox', 'none', '--no-workdir', '--allow-host', `${OUTSIDE}:${httpPort}`, '--', 'sh', '-c',
      `echo "proxy=$HTTPS_PROXY"; curl -sS http://${OUTSIDE}:${httpPort}/hello; curl -sS -w " status=%{http_code}\\n" http://not-allowed.example/`], { env: host.env, timeoutMs: 60_000 });
    outputs.push(r.stdout, r.stderr);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^proxy=http:\/\/127\.0\.0\.1:\d+$/m);
    expect(r.stdout).toContain('hello from outside over http');
    expect(r.stdout).toMatch(/--allow-host not-allowed\.example to credproxy run\.\n status=403/);
  });
});

describe('run --agent claude --allow-host', () => {
  it('Claude Code\'s model calls still go straight to the gateway (NO_PROXY), none through the egress proxy, and it adds no hosts', async () => {
    const claudeBin = fileURLToPath(new URL('../../node_modules/.bin', import.meta.url));
    expect(existsSync(join(claudeBin, 'claude')), 'npm ci installs @anthropic-ai/claude-code').toBe(true);
    const apiCa = createTestCa();
    const fake = await FakeUpstream.start(apiCa);
    const agentHost = makeHostEnv({ NODE_EXTRA_CA_CERTS: apiCa.caPath, PATH: `${claudeBin}:${process.env.PATH}` });
    try {
      mkdirSync(join(agentHost.home, 'config'), { recursive: true, mode: 0o700 });
      writeFileSync(join(agentHost.home, 'config', 'config.json'), JSON.stringify({ providers: { anthropic: { api_base: fake.url } } }));
      const t = await runCli(['token', 'import', 'anthropic'], { env: agentHost.env, input: JSON.stringify({ access_token: `sk-ant-oat01-egress-${process.pid}`, expiry: Math.floor(Date.now() / 1000) + 3600 }) });
      expect(t.code, t.stderr).toBe(0);
      const explained = await runCli(['run', '--explain', '--no-workdir', '--agent', 'claude', '--allow', 'anthropic', '--allow-host', `${OUTSIDE}:${httpPort}`, '--', 'claude'], { env: agentHost.env });
      expect(explained.code, explained.stderr).toBe(0);
      const rules = explained.stdout.split('\n').filter((l) => /^  \S+ (port|any port)/.test(l));
      expect(rules).toEqual([`  ${OUTSIDE} port ${httpPort}, literal address (reachable even if loopback or private)`]);
      const script = `claude -p "say hi" </dev/null >/tmp/claude.out 2>/tmp/claude.err; cat /tmp/claude.out; curl -sS http://${OUTSIDE}:${httpPort}/hello`;
      const r = await runCli(['run', '--sandbox', 'bwrap', '--no-workdir', '--agent', 'claude', '--allow', 'anthropic', '--allow-host', `${OUTSIDE}:${httpPort}`, '--', 'sh', '-c', script], { env: agentHost.env, timeoutMs: 120_000 });
      outputs.push(r.stdout, r.stderr);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/fake answer #\d+/);
      expect(r.stdout).toContain('hello from outside over http');
      const egressAudit = readFileSync(join(agentHost.home, 'state', 'egress-audit.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
      // Only curl's request: nothing of Claude Code's went through the proxy, and nothing it tried was refused.
      expect(egressAudit.map((l) => [l.type, l.host, l.port])).toEqual([['http', OUTSIDE, httpPort]]);
      expect(readFileSync(join(agentHost.home, 'state', 'gateway-audit.jsonl'), 'utf8')).toContain('"route":"anthropic"');
    } finally {
      await fake.close();
      apiCa.remove();
      agentHost.cleanup();
    }
  });
});
