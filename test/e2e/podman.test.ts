import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, makeHostEnv, runCli, type HostEnv } from '../support/cli.js';
import { FakeUpstream } from '../support/fake-upstream.js';
import { createTestCa } from '../support/test-ca.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url)).replace(/\/$/, '');
// Per process, and removed afterwards, so repeated runs leave no images behind.
const IMAGE = `localhost/credproxy-test-${process.pid}:latest`;
const TOKEN = `at-podman-${process.pid}`;
const KEY = `sk-podman-${process.pid}`;

/**
 * A real container (podman with runc, image built locally with `podman import`,
 * no registry). The image is only a skeleton; the host's /usr (node, sh) and
 * this checkout are mounted read-only through --engine-arg.
 */
describe('credproxy run --sandbox podman', () => {
  let host: HostEnv;
  let scratch: string;
  let env: NodeJS.ProcessEnv;

  beforeAll(() => {
    if (spawnSync('podman', ['--version']).status !== 0) {
      throw new Error('podman is not installed: apt-get install -y podman runc (.ci/run does this); this test is not skipped');
    }
    scratch = mkdtempSync('/tmp/cp-podman-');
    writeFileSync(join(scratch, 'containers.conf'), '[containers]\ndefault_ulimits=["nofile=1024:1024","nproc=1024:1024"]\n[engine]\nruntime="runc"\n');
    const rootfs = join(scratch, 'rootfs');
    for (const d of ['etc', 'tmp', 'run', 'work', 'proc', 'dev', 'sys', 'usr', 'opt/credproxy']) mkdirSync(join(rootfs, d), { recursive: true });
    for (const d of ['bin', 'lib', 'lib64', 'sbin']) symlinkSync(`usr/${d}`, join(rootfs, d));
    writeFileSync(join(rootfs, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
    writeFileSync(join(rootfs, 'etc/group'), 'root:x:0:\n');
    execFileSync('tar', ['-C', rootfs, '-cf', join(scratch, 'rootfs.tar'), '.']);
    host = makeHostEnv({ CONTAINERS_CONF: join(scratch, 'containers.conf') });
    env = host.env;
    execFileSync('podman', ['import', join(scratch, 'rootfs.tar'), IMAGE], { env: { ...process.env, CONTAINERS_CONF: env.CONTAINERS_CONF }, stdio: 'ignore' });
  });
  afterAll(() => {
    if (env) spawnSync('podman', ['rmi', '--force', IMAGE], { env: { ...process.env, CONTAINERS_CONF: env.CONTAINERS_CONF }, stdio: 'ignore' });
    host?.cleanup();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  it('gives the container a token and a key through the mounted socket, and nothing else of the host', async () => {
    expect((await runCli(['token', 'import', 'acme'], { env, input: JSON.stringify({ access_token: TOKEN, expiry: 4102444800, refresh_token: 'rt' }) })).code).toBe(0);
    expect((await runCli(['key', 'set', 'openai'], { env, input: KEY })).code).toBe(0);
    const work = mkdtempSync('/tmp/cpw-');
    try {
      const r = await runCli(
        [
          'run', '--sandbox', 'podman', '--image', IMAGE, '--allow', 'acme', '--allow-key', 'openai',
          '--engine-arg=-v', '--engine-arg=/usr:/usr:ro', '--engine-arg=-v', `--engine-arg=${ROOT}:/opt/credproxy:ro`,
          '--', 'sh', '-c',
          [
            '/opt/credproxy/bin/credproxy token get acme',
            '/opt/credproxy/bin/credproxy key get openai',
            'echo "socket=$CREDPROXY_SOCKET"',
            `test -e ${host.home} && echo SEE-HOME`,
            'pwd',
            `node -e "console.log('ifaces=' + Object.keys(require('os').networkInterfaces()).join(','))"`,
          ].join('; '),
        ],
        { env, cwd: work, timeoutMs: 60_000 },
      );
      expect(r.code, r.stderr).toBe(0);
      const lines = r.stdout.trim().split('\n');
      expect(lines[0]).toBe(TOKEN);
      expect(lines[1]).toBe(KEY);
      expect(lines[2]).toMatch(/^socket=\/run\/credproxy\/credproxy-\d+-[0-9a-f]{16}\.sock$/);
      expect(r.stdout).not.toContain('SEE-HOME');
      expect(lines).toContain('/work');
      expect(lines).toContain('ifaces=lo'); // --network none: loopback only
      // Nothing left behind: no socket dir, no env file.
      const left = spawnSync('sh', ['-c', `ls -A ${join(host.home, 'run')}`], { encoding: 'utf8' }).stdout.trim();
      expect(left).toBe('');
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  }, 90_000);

  it('--llxprt: LLXPRT_CREDENTIAL_SOCKET and LLXPRT_CAPABILITY_TOKEN (env file) as llxprt-code images expect; their entrypoint puts the token on fd 3', async () => {
    const work = mkdtempSync('/tmp/cpw-');
    try {
      expect((await runCli(['token', 'import', 'acme', '--bucket', 'my work'], { env, input: JSON.stringify({ access_token: `${TOKEN}-w`, expiry: 4102444800 }) })).code).toBe(0);
      expect((await runCli(['key', 'set', 'openai'], { env, input: KEY })).code).toBe(0);
      const steps = [['get_token', { provider: 'acme', bucket: 'my work' }], ['get_bucket_stats', { provider: 'acme', bucket: 'my work' }], ['has_api_key', { name: 'openai' }]];
      // What an llxprt image's entrypoint does with the variable before it starts llxprt.
      const entrypoint = 'exec 3<<<"$LLXPRT_CAPABILITY_TOKEN"; unset LLXPRT_CAPABILITY_TOKEN; export LLXPRT_CAPABILITY_FD=3; exec node /opt/credproxy/test/e2e/fixtures/llxprt-style-client.mjs "$1"';
      const r = await runCli(
        [
          'run', '--sandbox', 'podman', '--image', IMAGE, '--llxprt', '--allow', 'acme:*', '--allow-key', 'openai',
          '--engine-arg=-v', '--engine-arg=/usr:/usr:ro', '--engine-arg=-v', `--engine-arg=${ROOT}:/opt/credproxy:ro`,
          '--', 'bash', '-c', entrypoint, 'entry', JSON.stringify(steps),
        ],
        { env, cwd: work, timeoutMs: 60_000 },
      );
      expect(r.code, `${r.stderr}\n${r.stdout}`).toBe(0);
      const report = JSON.parse(r.stdout) as { env: Record<string, string | null>; handshake: { data: { version: number } }; results: Array<Record<string, unknown>> };
      expect(report.env).toMatchObject({ LLXPRT_CREDENTIAL_SOCKET: expect.stringMatching(/^\/run\/credproxy\/.*\.sock$/), CREDPROXY_SOCKET: null, CREDPROXY_TOKEN: null });
      expect(report.handshake.data.version).toBe(2);
      expect(report.results[0]).toMatchObject({ ok: true, data: { access_token: `${TOKEN}-w` } });
      expect(report.results[1]).toMatchObject({ ok: true, data: { bucket: 'my work', requestCount: 1 } });
      expect(report.results[2]).toMatchObject({ ok: true, data: { exists: true } });
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  }, 90_000);

  it('gives the token as a 0400 file in the socket mount: not in inspect, not in any environ, not on any command line', async () => {
    const work = mkdtempSync('/tmp/cpw-');
    const child = spawn(
      process.execPath,
      [BIN, 'run', '--sandbox', 'podman', '--image', IMAGE, '--allow-key', 'openai', '--engine-arg=-v', '--engine-arg=/usr:/usr:ro', '--', 'sh', '-c', 'echo "env=$CREDPROXY_TOKEN" > env-seen; cat "$CREDPROXY_TOKEN_FILE" > tok; while [ ! -e go ]; do sleep 0.05; done'],
      { env, cwd: work, stdio: 'ignore' },
    );
    const exited = new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
    try {
      const tokFile = join(work, 'tok');
      const deadline = Date.now() + 60_000;
      while (!(existsSync(tokFile) && readFileSync(tokFile, 'utf8').endsWith('\n'))) {
        if (Date.now() > deadline) throw new Error('the container did not start');
        await new Promise((r) => setTimeout(r, 50));
      }
      const token = readFileSync(tokFile, 'utf8').trim();
      expect(token).toMatch(/^[0-9a-f]{64}$/);
      expect(readFileSync(join(work, 'env-seen'), 'utf8')).toBe('env=\n'); // no CREDPROXY_TOKEN variable inside
      // The container is running (it waits for "go"): no env file, only the cid and the 0400 token file in the socket dir.
      const files = execFileSync('find', [join(host.home, 'run'), '-type', 'f'], { encoding: 'utf8' }).trim().split('\n').filter(Boolean);
      expect(files.map((f) => f.split('/').pop()).sort()).toEqual(['cid', 'token']);
      const tokenFile = files.find((f) => f.endsWith('/token'))!;
      expect(statSync(tokenFile).mode & 0o777).toBe(0o400);
      // What anyone who may use the engine sees: the container's configuration.
      const cid = readFileSync(files.find((f) => f.endsWith('/cid'))!, 'utf8').trim();
      const inspect = execFileSync('podman', ['inspect', cid], { encoding: 'utf8', env: { ...process.env, CONTAINERS_CONF: env.CONTAINERS_CONF } });
      expect(inspect).toContain('CREDPROXY_TOKEN_FILE=/run/credproxy/token'); // the positive control: we did look at its env
      expect(inspect).not.toContain(token);
      const holding = (what: 'cmdline' | 'environ'): string[] =>
        readdirSync('/proc').filter((p) => {
          try {
            return /^\d+$/.test(p) && readFileSync(`/proc/${p}/${what}`, 'utf8').includes(token);
          } catch {
            return false;
          }
        });
      expect(holding('cmdline')).toEqual([]);
      expect(holding('environ')).toEqual([]);
    } finally {
      writeFileSync(join(work, 'go'), '');
      expect(await exited).toBe(0);
      rmSync(work, { recursive: true, force: true });
    }
    // The run is over: the token file went with the socket dir.
    expect(execFileSync('find', [join(host.home, 'run'), '-type', 'f'], { encoding: 'utf8' }).trim()).toBe('');
  }, 90_000);
  it('a --socket-dir holding a killed run\'s token file, or a link planted in its place, still gets a fresh token file, never written through the link', async () => {
    const dir = mkdtempSync('/tmp/cps-');
    chmodSync(dir, 0o700);
    const target = join(dir, '..', `${basename(dir)}-target`);
    writeFileSync(target, 'untouched');
    try {
      for (const plant of ['stale', 'link'] as const) {
        if (plant === 'stale') writeFileSync(join(dir, 'token'), 'stale-token\n', { mode: 0o400 });
        else symlinkSync(target, join(dir, 'token'));
        const r = await runCli(
          ['run', '--sandbox', 'podman', '--image', IMAGE, '--socket-dir', dir, '--allow-key', 'openai', '--engine-arg=-v', '--engine-arg=/usr:/usr:ro', '--', 'sh', '-c', 'cat "$CREDPROXY_TOKEN_FILE"'],
          { env, timeoutMs: 60_000 },
        );
        expect(r.code, r.stderr).toBe(0);
        expect(r.stdout.trim(), plant).toMatch(/^[0-9a-f]{64}$/);
        expect(existsSync(join(dir, 'token')), plant).toBe(false);
        expect(readFileSync(target, 'utf8')).toBe('untouched');
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
      rmSync(target, { force: true });
    }
  }, 120_000);
  it('--gateway: the relay runs on the image\'s node behind --network none; the API sees the real key, the container only the placeholder', async () => {
    const ca = createTestCa();
    const fake = await FakeUpstream.start(ca);
    try {
      mkdirSync(join(host.home, 'config'), { recursive: true, mode: 0o700 });
      writeFileSync(join(host.home, 'config', 'config.json'), JSON.stringify({ keys: { openai: { route: { api_base: `${fake.url}/v1` } } } }));
      const script = [
        "import { readFileSync } from 'node:fs';",
        "const placeholder = readFileSync(process.env.CREDPROXY_TOKEN_FILE, 'utf8').trim();",
        "const base = process.env.CREDPROXY_GATEWAY_URL;",
        "const body = JSON.stringify({ model: 'gpt-fake', messages: [{ role: 'user', content: 'hi' }] });",
        "const r = await fetch(`${base}/keys/openai/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${placeholder}`, 'content-type': 'application/json' }, body });",
        "const guess = await fetch(`${base}/keys/openai/chat/completions`, { method: 'POST', headers: { authorization: 'Bearer sk-guess', 'content-type': 'application/json' }, body });",
        "console.log(JSON.stringify({ status: r.status, text: await r.text(), guess: guess.status, base, env: process.env }));",
      ].join('\n');
      const before = fake.requests.length;
      const r = await runCli(
        ['run', '--sandbox', 'podman', '--image', IMAGE, '--no-workdir', '--gateway', '--allow-key', 'openai', '--engine-arg=-v', '--engine-arg=/usr:/usr:ro', '--', 'node', '--input-type=module', '-e', script],
        { env: { ...env, NODE_EXTRA_CA_CERTS: ca.caPath }, timeoutMs: 90_000 },
      );
      expect(r.code, r.stderr).toBe(0);
      const out = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { status: number; text: string; guess: number; base: string; env: Record<string, string> };
      expect(out.status).toBe(200);
      expect(out.text).toMatch(/fake answer/);
      expect(out.guess).toBe(401);
      expect(out.base).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      const seen = fake.requests.slice(before);
      expect(seen.map((q) => [q.url, q.credential])).toEqual([['/v1/chat/completions', KEY]]);
      expect(r.stdout).not.toContain(KEY);
      expect(JSON.stringify(out.env)).not.toContain(KEY);
      // Without node in the image: run's own status and a sentence, not a bare "not found".
      const bare = await runCli(
        ['run', '--sandbox', 'podman', '--image', IMAGE, '--no-workdir', '--gateway', '--allow-key', 'openai', '--engine-arg=-v', '--engine-arg=/usr:/usr:ro', '--engine-arg=-v', '--engine-arg=/dev/null:/usr/bin/node:ro', '--', 'true'],
        { env, timeoutMs: 90_000 },
      );
      expect(bare.code).toBe(125);
      expect(bare.stderr).toContain('this image has no node on PATH');
      // Over --transport tcp there is no socket directory to carry it: a usage error.
      const tcp = await runCli(['run', '--sandbox', 'podman', '--image', IMAGE, '--transport', 'tcp', '--gateway', '--allow-key', 'openai', '--', 'true'], { env });
      expect(tcp.code).toBe(2);
      expect(tcp.stderr).toContain('drop --transport tcp');
    } finally {
      rmSync(join(host.home, 'config', 'config.json'), { force: true });
      await fake.close();
      ca.remove();
    }
  }, 240_000);

  it('--allow-host: the container reaches an allowed host through the egress proxy and nothing directly', async () => {
    const server = createServer((_req, res) => res.end('egress-ok'));
    await new Promise<void>((r) => server.listen(0, '127.0.0.2', () => r()));
    const port = (server.address() as AddressInfo).port;
    try {
      const r = await runCli(
        [
          'run', '--sandbox', 'podman', '--image', IMAGE, '--no-workdir', '--allow-host', `127.0.0.2:${port}`, '--engine-arg=-v', '--engine-arg=/usr:/usr:ro',
          '--', 'sh', '-c', `curl -sS --max-time 30 http://127.0.0.2:${port}/; echo; curl -sS --max-time 5 --noproxy '*' http://127.0.0.2:${port}/ || echo direct-failed; curl -sS --max-time 30 http://127.0.0.3:${port}/ || echo refused`,
        ],
        { env, timeoutMs: 120_000 },
      );
      expect(r.code, r.stderr).toBe(0);
      const lines = r.stdout.trim().split('\n');
      expect(lines[0]).toBe('egress-ok');
      expect(lines).toContain('direct-failed');
      expect(r.stdout + r.stderr).toMatch(/403|refused/);
    } finally {
      server.close();
    }
  }, 180_000);
});
