import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, makeHostEnv, runCli, startServe, type HostEnv } from '../support/cli.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url)).replace(/\/$/, '');
const KEY = `sk-term-${process.pid}`;

/** A command under a real pseudo-terminal (util-linux `script`), fed keystrokes through its stdin. */
class Terminal {
  readonly proc: ChildProcess;
  out = '';
  readonly exited: Promise<number | null>;

  constructor(command: string, env: NodeJS.ProcessEnv, cwd: string) {
    // `exec`: no shell between the pty and the command, to die of a ^C on its own.
    this.proc = spawn('script', ['-qec', `exec ${command}`, '/dev/null'], { env: { ...env, SHELL: '/bin/sh' }, cwd, stdio: ['pipe', 'pipe', 'pipe'] });
    this.proc.stdout!.on('data', (d: Buffer) => (this.out += d.toString()));
    this.proc.stderr!.on('data', (d: Buffer) => (this.out += d.toString()));
    this.exited = new Promise((r) => this.proc.on('exit', (code) => r(code)));
  }

  type(keys: string): void {
    this.proc.stdin!.write(keys);
  }

  async waitFor(re: RegExp, timeoutMs = 15_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!re.test(this.out)) {
      if (Date.now() > deadline) throw new Error(`no ${re} in terminal output:\n${this.out}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  async close(): Promise<number | null> {
    const code = await this.exited;
    this.proc.stdin!.end();
    return code;
  }
}

/** /proc/PID/status State letter (R, S, T…). */
function state(pid: number): string {
  return /^State:\s+(\S)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? '?';
}

async function until(check: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Counts SIGINTs; a signal delivered twice shows as INT2. The loop is short sleeps so the trap runs promptly. */
const COUNT_INTS = 'n=0; trap \'n=$((n+1)); echo "INT$n"\' INT; echo READY; i=0; while [ ! -e go ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; echo "END n=$n"';

describe('credproxy run in a terminal (real pty, real bwrap)', () => {
  let host: HostEnv;
  let work: string;

  beforeAll(async () => {
    host = makeHostEnv();
    work = mkdtempSync('/tmp/cpw-');
    expect((await runCli(['key', 'set', 'openai'], { env: host.env, input: KEY })).code).toBe(0);
    writeFileSync(join(work, 'count-ints.sh'), COUNT_INTS);
    // Asks the kernel to type into the terminal, and says whether the process has a controlling terminal at all.
    writeFileSync(
      join(work, 'tiocsti.cjs'),
      `const koffi = require(${JSON.stringify(join(ROOT, 'node_modules', 'koffi'))});
const ioctl = koffi.load(null).func('int ioctl(int fd, unsigned long req, uint8_t *arg)');
const rc = ioctl(0, 0x5412, Buffer.from('#'));
const errno = koffi.errno();
const stat = require('fs').readFileSync('/proc/self/stat', 'utf8');
const ttyNr = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[4];
console.log('tiocsti rc=' + rc + ' errno=' + errno + ' isatty=' + require('tty').isatty(0) + ' ctty=' + ttyNr);
`,
    );
  });
  afterAll(() => {
    host?.cleanup();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('a ^C typed at the terminal reaches the command exactly once, and the sandbox lives on', async () => {
    rmSync(join(work, 'go'), { force: true });
    const t = new Terminal(`${process.execPath} ${BIN} run --allow-key openai -- sh count-ints.sh`, host.env, work);
    await t.waitFor(/READY/);
    t.type('\x03');
    await t.waitFor(/INT1/);
    t.type('\x03');
    await t.waitFor(/INT2/);
    writeFileSync(join(work, 'go'), '');
    expect(await t.close(), t.out).toBe(0);
    expect(t.out).toMatch(/END n=2/);
    expect(t.out).not.toMatch(/INT3/);
  });

  it('the command has no controlling terminal, so TIOCSTI cannot type into the user’s shell', async () => {
    const t = new Terminal(`${process.execPath} ${BIN} run --allow-key openai -- node tiocsti.cjs`, host.env, work);
    expect(await t.close(), t.out).toBe(0);
    // stdin is still the terminal (TUIs work), but the kernel refuses the injection: EPERM.
    expect(t.out).toMatch(/tiocsti rc=-1 errno=1 isatty=true ctty=0/);
    expect(t.out).not.toContain('#');
  });

  it('terminal settings the command changed (^C off, no echo) are put back when it ends', async () => {
    const t = new Terminal(`sh -c '${process.execPath} ${BIN} run --allow-key openai -- stty -isig -echo; stty -a'`, host.env, work);
    expect(await t.close(), t.out).toBe(0);
    const flags = t.out.split(/[\s;]+/);
    expect(flags).toContain('isig');
    expect(flags).toContain('echo');
  });

  it('^Z stops the command with the launcher, and fg continues both', async () => {
    const ticks = join(work, 'ticks');
    rmSync(ticks, { force: true });
    const child = spawn(process.execPath, [BIN, 'run', '--allow-key', 'openai', '--', 'sh', '-c', 'i=0; while [ $i -lt 40 ]; do echo $i >> ticks; sleep 0.05; i=$((i+1)); done'], {
      env: host.env,
      cwd: work,
      stdio: 'ignore',
    });
    const exited = new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
    const count = (): number => (existsSync(ticks) ? readFileSync(ticks, 'utf8').split('\n').length - 1 : 0);
    await until(() => count() >= 3, 'the command to start ticking');
    child.kill('SIGTSTP'); // what the terminal sends on ^Z
    await until(() => state(child.pid!) === 'T', 'the launcher to stop');
    const stopped = count();
    await new Promise((r) => setTimeout(r, 400));
    expect(count()).toBeLessThanOrEqual(stopped + 1); // one write may have been in flight
    child.kill('SIGCONT'); // what the shell sends on fg
    expect(await exited).toBe(0);
    expect(count()).toBe(40);
  });

  it('exec inside run hands a relayed SIGINT to its command once', async () => {
    rmSync(join(work, 'go'), { force: true });
    const child = spawn(process.execPath, [BIN, 'run', '--allow-key', 'openai', '--', 'credproxy', 'exec', '--env', 'K=key:openai', '--', 'sh', 'count-ints.sh'], {
      env: host.env,
      cwd: work,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
    await until(() => out.includes('READY'), 'the command inside exec');
    child.kill('SIGINT');
    await until(() => out.includes('INT1'), 'the relayed SIGINT');
    await new Promise((r) => setTimeout(r, 300));
    writeFileSync(join(work, 'go'), '');
    expect(await exited).toBe(0);
    expect(out).toMatch(/END n=1/);
  });

  it('exec at a terminal leaves ^C to the terminal, which already delivered it to its command', async () => {
    rmSync(join(work, 'go'), { force: true });
    const serve = await startServe(['--allow-key', 'openai'], host.env);
    try {
      const env = { PATH: host.env.PATH, CREDPROXY_SOCKET: serve.socket, CREDPROXY_TOKEN: serve.token };
      const t = new Terminal(`${process.execPath} ${BIN} exec --env K=key:openai -- sh count-ints.sh`, env, work);
      await t.waitFor(/READY/);
      t.type('\x03');
      await t.waitFor(/INT1/);
      await new Promise((r) => setTimeout(r, 300));
      writeFileSync(join(work, 'go'), '');
      expect(await t.close(), t.out).toBe(0);
      expect(t.out).toMatch(/END n=1/);
    } finally {
      await serve.stop();
    }
  });
});
