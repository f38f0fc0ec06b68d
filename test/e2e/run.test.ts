import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, makeHostEnv, runCli, startServe, type HostEnv } from '../support/cli.js';

const TOKEN = `at-run-${process.pid}`;
const KEY = `sk-run-${process.pid}`;

describe('credproxy run --sandbox bwrap (real bubblewrap)', () => {
  let host: HostEnv;
  let work: string;
  let listener: Server;
  let port: number;

  const run = (args: string[], script: string) =>
    runCli(['run', '--allow', 'acme', '--allow-key', 'openai', ...args, '--', 'sh', '-c', script], { env: host.env, cwd: work });

  beforeAll(async () => {
    host = makeHostEnv();
    work = mkdtempSync('/tmp/cpw-');
    expect((await runCli(['token', 'import', 'acme'], { env: host.env, input: JSON.stringify({ access_token: TOKEN, expiry: 4102444800, refresh_token: 'rt-run' }) })).code).toBe(0);
    expect((await runCli(['key', 'set', 'openai'], { env: host.env, input: KEY })).code).toBe(0);
    mkdirSync(join(host.home, 'config'), { recursive: true });
    writeFileSync(join(host.home, 'config', 'config.json'), '{}');
    listener = createServer((s) => {
      s.on('error', () => undefined);
      s.end('hello');
    });
    await new Promise<void>((r) => listener.listen(0, '127.0.0.1', r));
    port = (listener.address() as { port: number }).port;
  });
  afterAll(() => {
    listener?.close();
    host?.cleanup();
    rmSync(work, { recursive: true, force: true });
  });

  it('gives the command a token and a key through the socket, and nothing else of the host', async () => {
    const r = await run(
      [],
      [
        'credproxy token get acme',
        'credproxy key get openai',
        `test -e ${host.home}/data && echo SEE-DATA`,
        `test -e ${host.home}/config/config.json && echo SEE-CONFIG`,
        `ls -A "$HOME" | grep . && echo SEE-HOME`,
        'ls /run/credproxy | wc -l',
        'echo "$CREDPROXY_PASSPHRASE" | grep . && echo SEE-PASSPHRASE',
        'pwd',
        'touch ./written-inside',
        'true',
      ].join('; '),
    );
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toBe(TOKEN);
    expect(lines[1]).toBe(KEY);
    expect(r.stdout).not.toMatch(/SEE-/);
    expect(lines).toContain('1'); // only our own socket in the bound directory
    expect(lines).toContain(work);
    expect(existsSync(join(work, 'written-inside'))).toBe(true); // the working directory is read-write
    expect(readdirSync(join(host.home, 'run'))).toEqual([]); // socket dir removed after the run
  });

  it('exec fills environment variables from the proxy for tools that only read env vars', async () => {
    const r = await run(
      [],
      [
        'credproxy exec --env ANTHROPIC_API_KEY=key:openai --env TOK=token:acme -- sh -c \'echo "$ANTHROPIC_API_KEY $TOK"; exit 4\'; echo "status=$?"',
        'credproxy exec --env BAD -- true; echo "bad=$?"',
        'credproxy exec --env X=key:hidden -- true; echo "denied=$?"',
        'credproxy exec -- no-such-command-here; echo "missing=$?"',
      ].join('; '),
    );
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`${KEY} ${TOKEN}\nstatus=4`);
    expect(r.stdout).toContain('bad=2');
    expect(r.stdout).toContain('denied=1');
    expect(r.stdout).toContain('missing=127');
  });

  it('keeps the capability token off every command line (readable by all local users)', async () => {
    rmSync(join(work, 'go'), { force: true });
    const child = spawn(process.execPath, [BIN, 'run', '--allow-key', 'openai', '--', 'sh', '-c', 'echo "$CREDPROXY_TOKEN" > tok; while [ ! -e go ]; do sleep 0.05; done'], {
      env: host.env,
      cwd: work,
      stdio: 'ignore',
    });
    const exited = new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
    const tokFile = join(work, 'tok');
    const deadline = Date.now() + 10_000;
    while (!(existsSync(tokFile) && readFileSync(tokFile, 'utf8').endsWith('\n'))) {
      if (Date.now() > deadline) throw new Error('the sandbox did not start');
      await new Promise((r) => setTimeout(r, 25));
    }
    const token = readFileSync(tokFile, 'utf8').trim();
    expect(token).toMatch(/^[0-9a-f]{64}$/);
    const onCommandLine = readdirSync('/proc')
      .filter((p) => /^\d+$/.test(p))
      .filter((p) => {
        try {
          return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(token);
        } catch {
          return false; // exited meanwhile
        }
      });
    writeFileSync(join(work, 'go'), '');
    expect(await exited).toBe(0);
    expect(onCommandLine).toEqual([]);
  });

  it('has no network, even to the host loopback', async () => {
    const probe = `node -e "require('net').connect(${port},'127.0.0.1').on('connect',()=>{console.log('CONNECTED');process.exit(0)}).on('error',e=>{console.log('NO-NET',e.code);process.exit(0)})"`;
    const r = await run([], probe);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/NO-NET/);
    const shared = await run(['--share-net'], probe);
    expect(shared.stdout).toMatch(/CONNECTED/);
  });

  it('cannot see another proxy’s socket', async () => {
    const other = await startServe(['--allow-key', 'openai'], host.env);
    try {
      const r = await run([], `test -e ${other.socket} && echo SEE-OTHER; ls ${join(host.home, 'run')} 2>&1 | grep s- && echo SEE-RUNDIR; true`);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).not.toMatch(/SEE-/);
    } finally {
      await other.stop();
    }
  });

  it('passes exit statuses through: 0, 3, and death by a signal', async () => {
    expect((await run([], 'exit 0')).code).toBe(0);
    expect((await run([], 'exit 3')).code).toBe(3);
    expect((await run([], 'kill -KILL $$')).code).toBe(137);
    expect((await run([], 'kill -TERM $$')).code).toBe(143);
  });

  it("a command that leaves its stdout non-blocking (as Claude Code's runtime does) does not leave it so for the user's next command", async () => {
    writeFileSync(join(work, 'nb.pl'), 'use Fcntl; fcntl(STDOUT, F_SETFL, fcntl(STDOUT, F_GETFL, 0) | O_NONBLOCK) or die "fcntl: $!";\n');
    writeFileSync(join(work, 'check.pl'), 'use Fcntl; print STDERR "$ARGV[0]: ", ((fcntl(STDOUT, F_GETFL, 0) & O_NONBLOCK) ? "nonblocking" : "blocking"), "\\n";\n');
    const shell = (script: string): Promise<string> =>
      new Promise((resolve) => {
        const child = spawn('sh', ['-c', script], { cwd: work, env: host.env, stdio: ['ignore', 'ignore', 'pipe'] });
        let err = '';
        child.stderr.on('data', (d: Buffer) => (err += d.toString()));
        child.on('close', () => resolve(err));
      });
    // The control: without credproxy in between the flag stays on the pipe the shell's next command writes to.
    expect(await shell('{ perl nb.pl; perl check.pl after; } | cat >/dev/null')).toBe('after: nonblocking\n');
    const out = await shell(`{ "${process.execPath}" "${BIN}" run --allow-key openai -- sh -c 'perl nb.pl; perl check.pl inside'; perl check.pl after; } | cat >/dev/null`);
    expect(out).toContain('inside: nonblocking\n');
    expect(out).toContain('after: blocking\n');
  });

  it('refuses to bind the home directory and a proxy that cannot start aborts with 125', async () => {
    const home = await runCli(['run', '--allow-key', 'openai', '--', 'true'], { env: host.env, cwd: host.home });
    expect(home.code).toBe(2);
    expect(home.stderr).toMatch(/--no-workdir/);
    const badDir = await runCli(['run', '--allow-key', 'openai', '--socket-dir', `/tmp/${'x'.repeat(120)}`, '--', 'true'], { env: host.env, cwd: work });
    expect(badDir.code).toBe(125);
    expect(badDir.stderr).toMatch(/socket-dir/);
  });

  it('after SIGTERM to the launcher nothing is left behind', async () => {
    const marker = `sleep 60.${process.pid}`;
    const child = spawn(process.execPath, [BIN, 'run', '--allow-key', 'openai', '--', 'sh', '-c', marker], {
      env: host.env,
      cwd: work,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const exited = new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
    const runDir = join(host.home, 'run');
    const deadline = Date.now() + 10_000;
    while (!(existsSync(runDir) && readdirSync(runDir).length > 0 && readdirSync(join(runDir, readdirSync(runDir)[0]!)).length > 0)) {
      if (Date.now() > deadline) throw new Error('run did not start its proxy');
      await new Promise((r) => setTimeout(r, 50));
    }
    await new Promise((r) => setTimeout(r, 300)); // let the sandbox start
    child.kill('SIGTERM');
    const code = await exited;
    expect(code).toBe(143);
    expect(readdirSync(runDir)).toEqual([]);
    const ps = spawn('pgrep', ['-f', marker]);
    const found = await new Promise<string>((r) => {
      let out = '';
      ps.stdout.on('data', (d: Buffer) => (out += d.toString()));
      ps.on('exit', () => r(out));
    });
    expect(found.trim()).toBe('');
  });
});

describe('credproxy run --sandbox none', () => {
  it('runs a plain child with the two variables and only harmless ones', async () => {
    const host = makeHostEnv({ CREDPROXY_PASSPHRASE: 'host-secret-pass', SOME_HOST_SECRET: 'nope' });
    const work = mkdtempSync('/tmp/cpw-');
    try {
      expect((await runCli(['key', 'set', 'openai'], { env: host.env, input: KEY })).code).toBe(0);
      const r = await runCli(['run', '--sandbox', 'none', '--allow-key', 'openai', '--', 'sh', '-c', 'env; credproxy key get openai'], { env: host.env, cwd: work });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/^CREDPROXY_SOCKET=\//m);
      expect(r.stdout).toMatch(/^CREDPROXY_TOKEN=[0-9a-f]{64}$/m);
      expect(r.stdout).toContain(KEY);
      expect(r.stdout).not.toContain('host-secret-pass');
      expect(r.stdout).not.toContain('SOME_HOST_SECRET');

      // --transport tcp: the same, over loopback TCP.
      const t = await runCli(['run', '--sandbox', 'none', '--transport', 'tcp', '--allow-key', 'openai', '--', 'sh', '-c', 'echo "$CREDPROXY_SOCKET"; credproxy key get openai'], { env: host.env, cwd: work });
      expect(t.code, t.stderr).toBe(0);
      expect(t.stdout).toMatch(/^tcp:\/\/127\.0\.0\.1:\d+\n/);
      expect(t.stdout).toContain(KEY);
      const bw = await runCli(['run', '--transport', 'tcp', '--allow-key', 'openai', '--', 'true'], { env: host.env, cwd: work });
      expect(bw.code).toBe(2);
      expect(bw.stderr).toMatch(/--transport tcp is for docker, podman/);
    } finally {
      host.cleanup();
      rmSync(work, { recursive: true, force: true });
    }
  });
});
