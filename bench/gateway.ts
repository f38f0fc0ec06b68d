// `npm run bench -- --only=gateway`: the HTTP gateway (issue 13) against the
// same fake HTTPS API called directly, in the same run. Client (this
// process), gateway (`serve --gateway`) and fake API are three processes.
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { createTestCa } from '../test/support/test-ca.js';
import { cpuMs, median, percentile, rssMiB, sleep, type Row } from './stats.js';

const BIN = fileURLToPath(new URL('../bin/credproxy', import.meta.url));
const PLACEHOLDER_HEADER = 'authorization';


interface Target {
  base: string;
  agent: http.Agent;
  headers: Record<string, string>;
}

/** One request; resolves with ms to the first body byte and ms to the end. */
function timed(t: Target, path: string, onChunk?: (n: number) => void): Promise<{ first: number; total: number; bytes: number }> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const url = new URL(`${t.base}${path}`);
    const mod = url.protocol === 'https:' ? https : http;
    const req = mod.request(url, { agent: t.agent, headers: t.headers }, (res) => {
      let first = -1;
      let bytes = 0;
      res.on('data', (d: Buffer) => {
        if (first < 0) first = Number(process.hrtime.bigint() - t0) / 1e6;
        bytes += d.length;
        onChunk?.(d.length);
      });
      res.on('end', () => resolve({ first, total: Number(process.hrtime.bigint() - t0) / 1e6, bytes }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

export async function gatewayBench(): Promise<Row[]> {
  const ca = createTestCa();
  // The fake API runs in a process of its own: client, gateway and API each get their own event loop.
  const fakeProc = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(new URL('./fake-upstream-process.ts', import.meta.url)), ca.dir], { stdio: ['pipe', 'pipe', 'inherit'] });
  const fakeLines = createInterface({ input: fakeProc.stdout! });
  const fakeUrl = await new Promise<string>((resolve, reject) => {
    fakeLines.once('line', (line) => (line.startsWith('URL=') ? resolve(line.slice(4)) : reject(new Error(`fake API said ${line}`))));
    fakeProc.once('exit', (code) => reject(new Error(`fake API exited (${code})`)));
  });
  const tell = (cmd: string): Promise<void> =>
    new Promise((resolve) => {
      fakeLines.once('line', () => resolve());
      fakeProc.stdin!.write(`${cmd}\n`);
    });
  const fake = { url: fakeUrl, holdGate: () => tell('hold'), openGate: () => tell('open') };
  const home = mkdtempSync('/tmp/cp-benchg-');
  const env = { PATH: process.env.PATH, HOME: home, CREDPROXY_HOME: home, CREDPROXY_STORE: 'file', CREDPROXY_LOG_LEVEL: 'warn', NODE_EXTRA_CA_CERTS: ca.caPath };
  mkdirSync(join(home, 'config'), { recursive: true, mode: 0o700 });
  writeFileSync(join(home, 'config', 'config.json'), JSON.stringify({ providers: { anthropic: { api_base: fake.url } } }));
  const token = 'sk-ant-oat01-bench-token-0123456789abcdef';
  const imp = spawnSync(process.execPath, [BIN, 'token', 'import', 'anthropic'], { env, input: JSON.stringify({ access_token: token, expiry: Math.floor(Date.now() / 1000) + 86_400 }), encoding: 'utf8' });
  if (imp.status !== 0) throw new Error(`token import failed: ${imp.stderr}`);
  const proc = spawn(process.execPath, [BIN, 'serve', '--gateway', '--allow', 'anthropic'], { env, stdio: ['ignore', 'pipe', 'inherit'] });
  const vars: Record<string, string> = {};
  await new Promise<void>((resolve, reject) => {
    createInterface({ input: proc.stdout! }).on('line', (line) => {
      const m = /^(CREDPROXY_TOKEN|CREDPROXY_GATEWAY_URL)=(.*)$/.exec(line);
      if (m) vars[m[1]!] = m[2]!;
      if (vars.CREDPROXY_TOKEN && vars.CREDPROXY_GATEWAY_URL) resolve();
    });
    proc.once('exit', (code) => reject(new Error(`serve exited (${code})`)));
  });
  const direct: Target = { base: fake.url, agent: new https.Agent({ keepAlive: true, ca: ca.caPem, maxSockets: 200 }), headers: { [PLACEHOLDER_HEADER]: `Bearer ${token}` } };
  const viaGateway: Target = { base: `${vars.CREDPROXY_GATEWAY_URL}/anthropic`, agent: new http.Agent({ keepAlive: true, maxSockets: 200 }), headers: { [PLACEHOLDER_HEADER]: `Bearer ${vars.CREDPROXY_TOKEN}` } };
  const rows: Row[] = [];
  try {
    // Added latency: small requests, alternating direct and gateway, after a warm-up.
    for (let i = 0; i < 200; i++) {
      await timed(direct, '/ping');
      await timed(viaGateway, '/ping');
    }
    const d: number[] = [];
    const g: number[] = [];
    for (let i = 0; i < 1500; i++) {
      d.push((await timed(direct, '/ping')).total);
      g.push((await timed(viaGateway, '/ping')).total);
    }
    d.sort((a, b) => a - b);
    g.sort((a, b) => a - b);
    const added50 = percentile(g, 50) - percentile(d, 50);
    const added99 = percentile(g, 99) - percentile(d, 99);
    rows.push({ figure: 'gateway added latency p50 (small request, 1,500 samples)', value: `${added50.toFixed(3)} ms`, reference: `${percentile(d, 50).toFixed(3)} ms direct, ${percentile(g, 50).toFixed(3)} ms via gateway`, ratio: percentile(g, 50) / percentile(d, 50), target: '≤ 1 ms', ok: added50 <= 1 });
    rows.push({ figure: 'gateway added latency p99', value: `${added99.toFixed(3)} ms`, reference: `${percentile(d, 99).toFixed(3)} ms direct, ${percentile(g, 99).toFixed(3)} ms via gateway`, ratio: percentile(g, 99) / percentile(d, 99), target: 'report', ok: null });

    // Time to the first SSE event of a streamed /v1/messages answer.
    const sse = async (t: Target): Promise<number> => {
      const samples: number[] = [];
      for (let i = 0; i < 100; i++) {
        samples.push(
          await new Promise<number>((resolve, reject) => {
            const t0 = process.hrtime.bigint();
            const url = new URL(`${t.base}/v1/messages`);
            const mod = url.protocol === 'https:' ? https : http;
            const body = JSON.stringify({ model: 'm', max_tokens: 8, stream: true, messages: [{ role: 'user', content: 'hi' }] });
            const req = mod.request(url, { method: 'POST', agent: t.agent, headers: { ...t.headers, 'content-type': 'application/json', 'content-length': String(body.length) } }, (res) => {
              let first = -1;
              res.on('data', () => {
                if (first < 0) first = Number(process.hrtime.bigint() - t0) / 1e6;
              });
              res.on('end', () => resolve(first));
            });
            req.on('error', reject);
            req.end(body);
          }),
        );
      }
      return percentile(samples.sort((a, b) => a - b), 50);
    };
    const sseDirect = await sse(direct);
    const sseGateway = await sse(viaGateway);
    rows.push({ figure: 'time to first SSE event (median of 100)', value: `${sseGateway.toFixed(3)} ms`, reference: `${sseDirect.toFixed(3)} ms direct`, ratio: sseGateway / sseDirect, target: 'report', ok: null });

    // Streaming throughput of a 50 MB answer (best of 7 each, alternating, after warm-up streams:
    // the small requests above leave the bulk paths of all three processes cold).
    // Each stream's CPU time too, per process: on a box with fewer cores than processes the rate is
    // bounded by the sum of these, which is what the gateway can change.
    const pids = { client: process.pid, gateway: proc.pid!, api: fakeProc.pid! };
    type Cpu = Record<keyof typeof pids, number>;
    const cpuNow = (): Cpu => ({ client: cpuMs(pids.client), gateway: cpuMs(pids.gateway), api: cpuMs(pids.api) });
    const rate = async (t: Target): Promise<{ mbs: number; cpu: Cpu }> => {
      const c0 = cpuNow();
      const r = await timed(t, '/big?mb=50');
      const c1 = cpuNow();
      const mb = r.bytes / 1024 / 1024;
      return { mbs: mb / (r.total / 1000), cpu: { client: (c1.client - c0.client) / mb, gateway: (c1.gateway - c0.gateway) / mb, api: (c1.api - c0.api) / mb } };
    };
    // Both paths speed up over their first half-dozen streams (JIT, TCP window growth) before they level off.
    for (let i = 0; i < 6; i++) {
      await rate(direct);
      await rate(viaGateway);
    }
    const dr: { mbs: number; cpu: Cpu }[] = [];
    const gr: { mbs: number; cpu: Cpu }[] = [];
    for (let i = 0; i < 7; i++) {
      dr.push(await rate(direct));
      gr.push(await rate(viaGateway));
    }
    const bestD = Math.max(...dr.map((r) => r.mbs));
    const bestG = Math.max(...gr.map((r) => r.mbs));
    rows.push({ figure: 'streaming a 50 MB answer (best of 7, after 6 warm-up streams each)', value: `${bestG.toFixed(0)} MB/s`, reference: `${bestD.toFixed(0)} MB/s direct`, ratio: bestG / bestD, target: '≥ 80% of direct', ok: bestG >= 0.8 * bestD });
    const cpuOf = (runs: { cpu: Cpu }[], who: keyof Cpu): number => median(runs.map((r) => r.cpu[who]));
    const show = (runs: { cpu: Cpu }[], withGateway: boolean): string =>
      `client ${cpuOf(runs, 'client').toFixed(2)}${withGateway ? ` + gateway ${cpuOf(runs, 'gateway').toFixed(2)}` : ''} + API ${cpuOf(runs, 'api').toFixed(2)}`;
    const total = (runs: { cpu: Cpu }[], withGateway: boolean): number => cpuOf(runs, 'client') + cpuOf(runs, 'api') + (withGateway ? cpuOf(runs, 'gateway') : 0);
    rows.push({
      figure: 'CPU ms per MB streamed, all processes (median of 7)',
      value: `${total(gr, true).toFixed(2)} (${show(gr, true)})`,
      reference: `${total(dr, false).toFixed(2)} direct (${show(dr, false)})`,
      ratio: total(gr, true) / total(dr, false),
      target: 'report',
      ok: null,
    });

    // Server RSS with 100 streams held open.
    await sleep(500);
    const idle = rssMiB(proc.pid!);
    await fake.holdGate();
    let firstEvents = 0;
    const streams = Array.from({ length: 100 }, () => timed(viaGateway, '/sse-gate', () => firstEvents++));
    const deadline = Date.now() + 30_000;
    while (firstEvents < 100 && Date.now() < deadline) await sleep(20);
    const held = rssMiB(proc.pid!);
    await fake.openGate();
    await Promise.all(streams);
    rows.push({ figure: 'serve --gateway RSS with 100 concurrent SSE streams', value: `${held.toFixed(1)} MiB`, reference: `${idle.toFixed(1)} MiB idle (after the runs above)`, ratio: held / idle, target: 'report', ok: null });
  } finally {
    direct.agent.destroy();
    viaGateway.agent.destroy();
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGTERM');
    await exited;
    const fakeExited = new Promise((r) => fakeProc.once('exit', r));
    fakeProc.stdin!.end();
    await fakeExited;
    ca.remove();
    rmSync(home, { recursive: true, force: true });
  }
  return rows;
}
