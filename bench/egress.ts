// `npm run bench -- --only=egress`: CONNECT throughput through the egress
// proxy (issue 15) against a direct TCP connection to the same source, in
// the same run. The source (bench/egress-source.mjs) and the client
// (bench/egress-client.mjs) are processes of their own; the client runs
// directly on the host, under `credproxy run --sandbox none` (host proxy on
// loopback) and under `credproxy run --sandbox bwrap` (in-sandbox relay,
// Unix socket, host proxy), alternating, and each figure is the median of
// its rounds.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { median, type Row } from './stats.js';

const BIN = fileURLToPath(new URL('../bin/credproxy', import.meta.url));
const SOURCE = fileURLToPath(new URL('./egress-source.mjs', import.meta.url));
const CLIENT = fileURLToPath(new URL('./egress-client.mjs', import.meta.url));
const OUTSIDE = '127.0.0.2';
const BYTES = 128 * 2 ** 20;
const ROUNDS_PER_RUN = 3;
const ALTERNATIONS = 3;

function client(argv: string[], env: NodeJS.ProcessEnv, cwd: string): number[] {
  const r = spawnSync(argv[0]!, argv.slice(1), { env, cwd, encoding: 'utf8', timeout: 300_000 });
  const line = r.stdout.split('\n').find((l) => l.startsWith('{'));
  if (r.status !== 0 || line === undefined) throw new Error(`egress bench client failed (${r.status}): ${r.stderr.slice(-2000)}`);
  return (JSON.parse(line) as { mibPerSec: number[] }).mibPerSec;
}

export async function egressBench(): Promise<Row[]> {
  const source: ChildProcess = spawn(process.execPath, [SOURCE, OUTSIDE], { stdio: ['ignore', 'pipe', 'inherit'] });
  const home = mkdtempSync('/tmp/cp-benche-');
  try {
    const port = await new Promise<number>((resolve, reject) => {
      createInterface({ input: source.stdout! }).once('line', (l) => (l.startsWith('PORT=') ? resolve(Number(l.slice(5))) : reject(new Error(l))));
      source.once('exit', (code) => reject(new Error(`egress source exited (${code})`)));
    });
    const env = { PATH: process.env.PATH, HOME: home, CREDPROXY_HOME: home, CREDPROXY_STORE: 'file', CREDPROXY_LOG_LEVEL: 'warn' };
    const args = (mode: string): string[] => [process.execPath, CLIENT, OUTSIDE, String(port), String(BYTES), String(ROUNDS_PER_RUN), mode];
    const run = (sandbox: string): string[] => [process.execPath, BIN, 'run', '--sandbox', sandbox, '--no-workdir', '--allow-host', `${OUTSIDE}:${port}`, '--', ...args('proxy')];
    const direct: number[] = [];
    const none: number[] = [];
    const bwrap: number[] = [];
    for (let i = 0; i < ALTERNATIONS; i++) {
      direct.push(...client(args('direct'), env, home));
      none.push(...client(run('none'), env, home));
      bwrap.push(...client(run('bwrap'), env, home));
    }
    const d = median(direct);
    const n = median(none);
    const b = median(bwrap);
    const mib = (v: number): string => `${v.toFixed(0)} MiB/s`;
    const rounds = `median of ${ALTERNATIONS * ROUNDS_PER_RUN} × ${BYTES / 2 ** 20} MiB`;
    return [
      { figure: `egress: CONNECT download through the host proxy (run --sandbox none), ${rounds}`, value: mib(n), reference: `${mib(d)} direct TCP`, ratio: n / d, target: 'report', ok: null },
      { figure: `egress: CONNECT download from inside bwrap (relay + Unix socket + host proxy), ${rounds}`, value: mib(b), reference: `${mib(d)} direct TCP`, ratio: b / d, target: 'report', ok: null },
    ];
  } finally {
    source.kill('SIGTERM');
    rmSync(home, { recursive: true, force: true });
  }
}
