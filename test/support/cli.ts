import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const BIN = fileURLToPath(new URL('../../bin/credproxy', import.meta.url));
const DIST_MAIN = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url));

function assertBuilt(): void {
  if (!existsSync(DIST_MAIN)) throw new Error('dist/ is missing: end-to-end tests run the built CLI; run `npm run build` (npm test does it first)');
}

/** A private CREDPROXY_HOME with a clean environment (no session bus unless asked for). */
export interface HostEnv {
  home: string;
  env: NodeJS.ProcessEnv;
  cleanup(): void;
}

export function makeHostEnv(extra: NodeJS.ProcessEnv = {}): HostEnv {
  // Short path: sockets live under it and must stay below 107 bytes.
  const home = mkdtempSync('/tmp/cph-');
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: home,
    LANG: 'C.UTF-8',
    CREDPROXY_HOME: home,
    CREDPROXY_STORE: 'file',
    CREDPROXY_LOG_LEVEL: 'debug',
    ...extra,
  };
  return { home, env, cleanup: () => rmSync(home, { recursive: true, force: true }) };
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export function runCli(args: string[], options: { env: NodeJS.ProcessEnv; input?: string; timeoutMs?: number; cwd?: string }): Promise<CliResult> {
  assertBuilt();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: options.env, stdio: ['pipe', 'pipe', 'pipe'], ...(options.cwd ? { cwd: options.cwd } : {}) });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 20_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
    child.stdin.end(options.input ?? '');
  });
}

export interface ServeProcess {
  proc: ChildProcess;
  socket: string;
  token: string;
  /** Everything the serve process wrote on stderr (its logs and notices). */
  stderr(): string;
  stdout(): string;
  /** SIGTERM and wait for exit. */
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Start `credproxy serve` and wait for its CREDPROXY_SOCKET / CREDPROXY_TOKEN lines. */
export function startServe(args: string[], env: NodeJS.ProcessEnv, options: { timeoutMs?: number; uid?: number } = {}): Promise<ServeProcess> {
  assertBuilt();
  const timeoutMs = options.timeoutMs ?? 15_000;
  return new Promise((resolve, reject) => {
    const ids = options.uid === undefined ? {} : { uid: options.uid, gid: options.uid };
    const proc = spawn(process.execPath, [BIN, 'serve', ...args], { env, stdio: ['ignore', 'pipe', 'pipe'], ...ids });
    let err = '';
    let out = '';
    proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    const vars: Record<string, string> = {};
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => proc.on('exit', (code, signal) => r({ code, signal })));
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`serve did not start in time; stderr:\n${err}`));
    }, timeoutMs);
    void exited.then(({ code }) => {
      clearTimeout(timer);
      reject(new Error(`serve exited (${code}) before printing its socket; stderr:\n${err}`));
    });
    createInterface({ input: proc.stdout! }).on('line', (line) => {
      out += `${line}\n`;
      const m = /^(CREDPROXY_SOCKET|CREDPROXY_TOKEN)=(.*)$/.exec(line);
      if (m) vars[m[1]!] = m[2]!;
      if (vars.CREDPROXY_SOCKET && vars.CREDPROXY_TOKEN && line.startsWith('CREDPROXY_TOKEN')) {
        clearTimeout(timer);
        resolve({
          proc,
          socket: vars.CREDPROXY_SOCKET,
          token: vars.CREDPROXY_TOKEN,
          stderr: () => err,
          stdout: () => out,
          stop: async (signal = 'SIGTERM') => {
            if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
            return exited;
          },
        });
      }
    });
  });
}

/** Wait until a child's stderr (accumulated) matches `pattern`; `text()` keeps growing afterwards. */
export function waitForStderr(child: ChildProcess, pattern: RegExp, what: string, timeoutMs = 10_000): Promise<{ match: RegExpExecArray; text: () => string }> {
  let text = '';
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no ${what}; stderr so far: ${text}`)), timeoutMs);
    child.stderr!.on('data', (d: Buffer) => {
      text += d.toString();
      const match = pattern.exec(text);
      if (match) {
        clearTimeout(t);
        resolve({ match, text: () => text });
      }
    });
  });
}
