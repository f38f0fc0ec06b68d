import { spawn } from 'node:child_process';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { createLogger } from '../../src/log.js';
import type { EgressAuditEntry, EgressConnectionEntry, EgressRefusedEntry } from '../../src/egress/audit.js';
import { parseHostRules } from '../../src/egress/hosts.js';
import { EgressProxy, type EgressProxyOptions, type LookupFn } from '../../src/egress/proxy.js';

const logger = createLogger({ level: 'silent' });
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The "outside world": servers on 127.0.0.2 and 127.0.0.3, reachable only because tests name them literally. */
let echo: net.Server;
let echoPort = 0;
let echoConnections = 0;
let decoy: net.Server;
let decoyConnections = 0;
let burst: net.Server;
let burstPort = 0;
const BURST_BYTES = 8 * 2 ** 20;
let web: http.Server;
let webPort = 0;
const webSeen: Array<{ method: string; url: string; headers: http.IncomingHttpHeaders; body: string }> = [];
let webConnections = 0;

beforeAll(async () => {
  echo = net.createServer((s) => {
    echoConnections++;
    s.on('error', () => undefined);
    s.pipe(s);
  });
  await new Promise<void>((r) => echo.listen(0, '127.0.0.2', r));
  echoPort = (echo.address() as AddressInfo).port;
  // Same port on 127.0.0.3: it must never see a connection meant for the checked address.
  decoy = net.createServer((s) => {
    decoyConnections++;
    s.destroy();
  });
  await new Promise<void>((r) => decoy.listen(echoPort, '127.0.0.3', r));
  // Sends everything at once and closes: a tunnel must still deliver every byte.
  burst = net.createServer((s) => {
    s.on('error', () => undefined);
    s.end(Buffer.alloc(BURST_BYTES, 98));
  });
  await new Promise<void>((r) => burst.listen(0, '127.0.0.2', r));
  burstPort = (burst.address() as AddressInfo).port;
  web = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => {
      webSeen.push({ method: req.method!, url: req.url!, headers: req.headers, body });
      res.setHeader('x-upstream', 'yes');
      res.setHeader('set-cookie', ['a=1', 'b=2']);
      res.end(`hello ${req.method} ${req.url} ${body.length}`);
    });
  });
  web.on('connection', () => webConnections++);
  await new Promise<void>((r) => web.listen(0, '127.0.0.2', r));
  webPort = (web.address() as AddressInfo).port;
});

afterAll(async () => {
  await Promise.all([echo, decoy, burst, web].map((s) => new Promise((r) => s.close(r))));
});

interface Harness {
  proxy: EgressProxy;
  port: number;
  audit: EgressAuditEntry[];
  lookups: string[];
}

let current: Harness | null = null;

async function start(entries: string[], options: Partial<EgressProxyOptions> & { resolve?: Record<string, string[] | (() => string[])> } = {}): Promise<Harness> {
  const audit: EgressAuditEntry[] = [];
  const lookups: string[] = [];
  const table = options.resolve ?? {};
  const lookup: LookupFn = async (name) => {
    lookups.push(name);
    const entry = table[name];
    if (entry === undefined) throw Object.assign(new Error('ENOTFOUND'), { code: 'ENOTFOUND' });
    const list = typeof entry === 'function' ? entry() : entry;
    return list.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));
  };
  const proxy = new EgressProxy({ logger, audit: { record: (e) => audit.push(e) }, lookup, ...options, rules: parseHostRules(entries) });
  const url = await proxy.listen({ host: '127.0.0.1', port: 0 });
  current = { proxy, port: Number(new URL(url).port), audit, lookups };
  return current;
}

afterEach(async () => {
  await current?.proxy.stop();
  current = null;
});

/** Send raw bytes, collect everything until the proxy closes (or `until` matches), with a bound. */
function exchange(port: number, send: string | Buffer, opts: { until?: RegExp; timeoutMs?: number } = {}): Promise<{ text: string; closed: boolean; socket: net.Socket }> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let text = '';
    let settled = false;
    const done = (closed: boolean): void => {
      if (settled) return;
      settled = true;
      clearTimeout(t);
      resolve({ text, closed, socket: s });
    };
    const t = setTimeout(() => done(false), opts.timeoutMs ?? 10_000);
    s.on('data', (d: Buffer) => {
      text += d.toString('latin1');
      if (opts.until?.test(text)) done(false);
    });
    s.on('error', () => done(true));
    s.on('close', () => done(true));
    s.write(send);
  });
}

const connected = (h: Harness): EgressConnectionEntry[] => h.audit.filter((e): e is EgressConnectionEntry => e.type !== 'refused');
const refusedLines = (h: Harness): EgressRefusedEntry[] => h.audit.filter((e): e is EgressRefusedEntry => e.type === 'refused');

describe('CONNECT', () => {
  it('tunnels to an allowed literal address, bytes both ways, and audits one line with the byte counts', async () => {
    const h = await start([`127.0.0.2:${echoPort}`]);
    const r = await exchange(h.port, `CONNECT 127.0.0.2:${echoPort} HTTP/1.1\r\nHost: 127.0.0.2:${echoPort}\r\n\r\nearly-bytes|`, { until: /early-bytes\|$/ });
    expect(r.text.startsWith('HTTP/1.1 200 ')).toBe(true);
    const payload = 'x'.repeat(100_000);
    const back = await new Promise<string>((resolve) => {
      let got = '';
      r.socket.on('data', (d: Buffer) => {
        got += d.toString('latin1');
        if (got.length >= payload.length) resolve(got);
      });
      r.socket.write(payload);
    });
    expect(back).toBe(payload);
    r.socket.end();
    await until(() => connected(h).length === 1);
    const line = connected(h)[0]!;
    expect(line).toMatchObject({ kind: 'egress', type: 'connect', host: '127.0.0.2', port: echoPort, address: '127.0.0.2', result: 'allowed' });
    expect(line.bytesUp).toBe('early-bytes|'.length + payload.length);
    expect(line.bytesDown).toBe('early-bytes|'.length + payload.length);
    expect(typeof line.durationMs).toBe('number');
  });

  it('an upstream that sends a lot and closes at once: every byte reaches a slow reader, then the tunnel closes and is audited', async () => {
    const h = await start([`127.0.0.2:${burstPort}`]);
    // Through a Unix socket (as from the relay): its small kernel buffers leave the proxy holding bytes for the reader.
    const path = join(mkdtempSync(join(tmpdir(), 'cpe-')), 'egress.sock');
    await h.proxy.listen({ path });
    const s = net.connect(path);
    s.pause();
    s.write(`CONNECT 127.0.0.2:${burstPort} HTTP/1.1\r\n\r\n`);
    // Let the upstream finish and close while nothing is read here (the proxy holds what is in flight).
    await sleep(500);
    let got = 0;
    await new Promise<void>((resolve, reject) => {
      // A reader that stays slow to the end: the proxy always has bytes buffered for it when the upstream closes.
      s.on('data', (d: Buffer) => {
        got += d.length;
        s.pause();
        setTimeout(() => s.resume(), 2);
      });
      s.on('end', () => resolve());
      s.on('error', reject);
      s.resume();
    });
    const head = 'HTTP/1.1 200 Connection Established\r\n\r\n'.length;
    expect(got - head).toBe(BURST_BYTES);
    await until(() => connected(h).length === 1);
    expect(connected(h)[0]).toMatchObject({ bytesDown: BURST_BYTES, bytesUp: 0 });
  });

  it('a client that ends its side of a tunnel still gets the answer the server sends after that end', async () => {
    // A server that answers only once the client has finished (an upload's end, a half-closing protocol).
    const late = net.createServer({ allowHalfOpen: true }, (c) => {
      let n = 0;
      c.on('data', (d: Buffer) => (n += d.length));
      c.on('end', () => c.end(`got ${n} bytes after the end`));
    });
    await new Promise<void>((r) => late.listen(0, '127.0.0.2', r));
    const port = (late.address() as AddressInfo).port;
    try {
      const h = await start([`127.0.0.2:${port}`]);
      const text = await new Promise<string>((resolve) => {
        const s = net.connect(h.port, '127.0.0.1');
        let got = '';
        s.on('data', (d: Buffer) => {
          got += d.toString('latin1');
          if (/\r\n\r\n$/.test(got)) s.end('hello');
        });
        s.on('error', () => resolve(got));
        s.on('close', () => resolve(got));
        s.write(`CONNECT 127.0.0.2:${port} HTTP/1.1\r\nhost: 127.0.0.2:${port}\r\n\r\n`);
      });
      expect(text).toMatch(/^HTTP\/1\.1 200 [^]*\r\n\r\ngot 5 bytes after the end$/);
    } finally {
      await new Promise((r) => late.close(r));
    }
  });

  it('stop() ends open tunnels and waits for their audit lines', async () => {
    const h = await start([`127.0.0.2:${echoPort}`]);
    const r = await exchange(h.port, `CONNECT 127.0.0.2:${echoPort} HTTP/1.1\r\n\r\nabc`, { until: /abc$/ });
    expect(r.text).toMatch(/^HTTP\/1\.1 200 /);
    r.socket.end(); // a clean half-close from the client: the upstream side is still open when stop() comes
    await h.proxy.stop();
    expect(connected(h)).toHaveLength(1);
    expect(connected(h)[0]).toMatchObject({ bytesUp: 3, bytesDown: 3 });
  });

  it("on the host's loopback a process of another user is cut off before a byte is read, and counted", async () => {
    expect(process.getuid?.()).toBe(0); // taking another uid for the client needs root
    const h = await start([`127.0.0.2:${echoPort}`]);
    const script = `const s = require('net').connect(${h.port}, '127.0.0.1', () => s.write('CONNECT 127.0.0.2:${echoPort} HTTP/1.1\\r\\nhost: 127.0.0.2:${echoPort}\\r\\n\\r\\n')); let got = ''; s.on('data', (d) => (got += d)); s.on('error', (e) => (got += 'error ' + e.code)); s.on('close', () => console.log(got || 'closed'));`;
    const out = await new Promise<string>((resolve) => {
      const child = spawn(process.execPath, ['-e', script], { cwd: '/', uid: 65534, gid: 65534, stdio: ['ignore', 'pipe', 'ignore'] });
      let text = '';
      child.stdout.on('data', (d: Buffer) => (text += d.toString()));
      child.on('close', () => resolve(text.trim()));
    });
    expect(out).toMatch(/^(closed|error ECONNRESET)$/);
    await until(() => h.proxy.refusals.total === 1);
    await h.proxy.stop();
    expect(refusedLines(h).map((l) => l.reasons)).toEqual([{ foreign_peer: 1 }]);
    expect(h.audit.filter((e) => e.type !== 'refused')).toEqual([]);
    // The same request from our own uid goes through.
    const mine = await start([`127.0.0.2:${echoPort}`]);
    const r = await exchange(mine.port, `CONNECT 127.0.0.2:${echoPort} HTTP/1.1\r\nhost: 127.0.0.2:${echoPort}\r\n\r\n`, { until: /200/ });
    expect(r.text).toMatch(/^HTTP\/1\.1 200/);
    r.socket.destroy();
  });

  it('refuses a host outside the allowlist with 403 naming the host and the flag, without resolving or connecting', async () => {
    const h = await start(['*.npmjs.org'], { resolve: { 'evilnpmjs.org': ['127.0.0.2'] } });
    const r = await exchange(h.port, 'CONNECT evilnpmjs.org:443 HTTP/1.1\r\nHost: evilnpmjs.org:443\r\n\r\n');
    expect(r.text).toMatch(/^HTTP\/1\.1 403 Forbidden\r\n/);
    expect(r.text).toContain('evilnpmjs.org:443 is not on the allowlist');
    expect(r.text).toContain('--allow-host evilnpmjs.org');
    expect(r.closed).toBe(true);
    expect(h.lookups).toEqual([]);
    const odd = await exchange(h.port, 'CONNECT registry.npmjs.org:8443 HTTP/1.1\r\n\r\n');
    expect(odd.text).toContain('--allow-host registry.npmjs.org:8443');
  });

  it('refuses names that resolve to loopback, link-local (metadata), private or mapped addresses, naming the address', async () => {
    const resolve = {
      'loop.test': ['127.0.0.2'],
      'meta.test': ['169.254.169.254'],
      'lan.test': ['10.0.0.5', '192.168.1.1'],
      'mapped.test': ['::ffff:127.0.0.2'],
      'v6loop.test': ['::1'],
      'zero.test': ['0.0.0.0'],
      'ula.test': ['fd00::1'],
    };
    const h = await start(Object.keys(resolve).map((n) => `${n}:*`), { resolve });
    for (const [host, addrs] of Object.entries(resolve)) {
      const r = await exchange(h.port, `CONNECT ${host}:${echoPort} HTTP/1.1\r\n\r\n`);
      expect(r.text, host).toMatch(/^HTTP\/1\.1 403 /);
      const shown = addrs[0]!.replace('::ffff:', '');
      expect(r.text, host).toContain(`resolves to ${shown}`);
      expect(r.text, host).toContain('--allow-host');
    }
    expect(h.lookups.sort()).toEqual(Object.keys(resolve).sort());
    expect(connected(h)).toEqual([]);
    const r = await exchange(h.port, `CONNECT meta.test:80 HTTP/1.1\r\n\r\n`);
    expect(r.text).toContain('link-local (includes cloud metadata)');
  });

  it('refuses names that resolve to IPv4-translated (SIIT) forms of loopback or private addresses', async () => {
    const resolve = { 'siit-loop.test': ['::ffff:0:7f00:1'], 'siit-lan.test': ['::ffff:0:a00:1'] };
    const h = await start(Object.keys(resolve).map((n) => `${n}:*`), { resolve });
    for (const [host, addrs] of Object.entries(resolve)) {
      const r = await exchange(h.port, `CONNECT ${host}:${echoPort} HTTP/1.1\r\n\r\n`);
      expect(r.text, host).toMatch(/^HTTP\/1\.1 403 /);
      expect(r.text, host).toContain(`resolves to ${addrs[0]}`);
    }
    expect(connected(h)).toEqual([]);
  });

  it('refuses literal private addresses unless a rule names them, and IP-literal tricks are not literals', async () => {
    const h = await start([`127.0.0.2:${echoPort}`]);
    for (const target of [`127.0.0.1:${echoPort}`, `[::1]:${echoPort}`, `0.0.0.0:${echoPort}`, `169.254.169.254:80`, `[::ffff:127.0.0.1]:${echoPort}`, `127.0.0.2:${echoPort + 1}`]) {
      const r = await exchange(h.port, `CONNECT ${target} HTTP/1.1\r\n\r\n`);
      expect(r.text, target).toMatch(/^HTTP\/1\.1 403 /);
    }
    for (const target of [`2130706434:${echoPort}`, `0x7f000002:${echoPort}`, `0177.0.0.2:${echoPort}`, `127.2:${echoPort}`, `127.0.0.2.:${echoPort}`]) {
      const r = await exchange(h.port, `CONNECT ${target} HTTP/1.1\r\n\r\n`);
      expect(r.text, target).toMatch(/^HTTP\/1\.1 400 /);
      expect(r.text, target).toContain('four decimal numbers');
    }
    // The mapped form of the allowed literal is that literal.
    const ok = await exchange(h.port, `CONNECT [::ffff:127.0.0.2]:${echoPort} HTTP/1.1\r\n\r\n`, { until: /\r\n\r\n/ });
    expect(ok.text).toMatch(/^HTTP\/1\.1 200 /);
    ok.socket.destroy();
  });

  it('IPv6: a bracketed literal named by a rule is reached over IPv6; a name resolving to ::1 is not', async () => {
    const v6 = net.createServer((sock) => sock.end(`hi ${sock.localAddress}`));
    await new Promise<void>((r) => v6.listen(0, '::1', r));
    const port = (v6.address() as AddressInfo).port;
    try {
      const h = await start([`[::1]:${port}`, `six.test:${port}`], { resolve: { 'six.test': ['::1'] } });
      const r = await exchange(h.port, `CONNECT [0:0::1]:${port} HTTP/1.1\r\n\r\n`);
      expect(r.text).toMatch(/^HTTP\/1\.1 200 [^]*hi ::1$/);
      await until(() => connected(h).length === 1);
      expect(connected(h)[0]).toMatchObject({ host: '::1', address: '::1', port });
      // The literal rule lifts the block for a name that resolves to it as well (same address, same port).
      const named = await exchange(h.port, `CONNECT six.test:${port} HTTP/1.1\r\n\r\n`);
      expect(named.text).toMatch(/^HTTP\/1\.1 200 [^]*hi ::1$/);
      await h.proxy.stop();
      const strict = await start([`six.test:${port}`], { resolve: { 'six.test': ['::1'] } });
      const refused = await exchange(strict.port, `CONNECT six.test:${port} HTTP/1.1\r\n\r\n`);
      expect(refused.text).toMatch(/^HTTP\/1\.1 403 [^]*resolves to ::1, a loopback address[^]*--allow-host \[::1\]:\d+ \(the literal address\)/);
    } finally {
      await new Promise((r) => v6.close(r));
    }
  });

  it('a name is resolved once, blocked addresses are skipped, and the connection goes to the checked address (no rebinding)', async () => {
    let calls = 0;
    const h = await start([`rebind.test:${echoPort}`, `127.0.0.2:${echoPort}`], {
      // First answer: a blocked address then the allowed literal; any later answer would be the decoy.
      resolve: { 'rebind.test': () => (calls++ === 0 ? ['127.0.0.3', '127.0.0.2'] : ['127.0.0.3']) },
    });
    const r = await exchange(h.port, `CONNECT rebind.test:${echoPort} HTTP/1.1\r\n\r\nping`, { until: /ping$/ });
    expect(r.text).toMatch(/^HTTP\/1\.1 200 [^]*ping$/);
    r.socket.destroy();
    expect(h.lookups).toEqual(['rebind.test']);
    await until(() => connected(h).length === 1);
    expect(connected(h)[0]).toMatchObject({ host: 'rebind.test', address: '127.0.0.2' });
    const again = await exchange(h.port, `CONNECT rebind.test:${echoPort} HTTP/1.1\r\n\r\n`);
    expect(again.text).toMatch(/^HTTP\/1\.1 403 /);
    expect(again.text).toContain('resolves to 127.0.0.3');
    expect(decoyConnections).toBe(0);
  });

  it('answers 502 for a name that does not resolve and for an allowed address that refuses the connection', async () => {
    const closed = net.createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.2', r));
    const deadPort = (closed.address() as AddressInfo).port;
    await new Promise((r) => closed.close(r));
    const h = await start(['nowhere.test', `127.0.0.2:${deadPort}`]);
    expect((await exchange(h.port, 'CONNECT nowhere.test:443 HTTP/1.1\r\n\r\n')).text).toMatch(/^HTTP\/1\.1 502 [^]*could not be resolved/);
    expect((await exchange(h.port, `CONNECT 127.0.0.2:${deadPort} HTTP/1.1\r\n\r\n`)).text).toMatch(/^HTTP\/1\.1 502 [^]*could not connect/);
    await until(() => refusedLines(h).length > 0 || h.proxy.refusals.total === 2);
    h.proxy.refusals.flush();
    const reasons = refusedLines(h).reduce<Record<string, number>>((a, l) => ({ ...a, ...l.reasons }), {});
    expect(reasons).toEqual({ dns_failed: 1, connect_failed: 1 });
  });

  it('refuses malformed targets with 400', async () => {
    const h = await start(['example.org:*']);
    for (const target of ['example.org', 'user@example.org:443', '[::1', 'exa%6dple.org:443', 'example.org:0', `${'a'.repeat(300)}:443`, '/path']) {
      const r = await exchange(h.port, `CONNECT ${target} HTTP/1.1\r\n\r\n`);
      expect(r.text, target).toMatch(/^HTTP\/1\.1 400 /);
    }
  });
});

describe('limits', () => {
  it('a request head over the size limit gets 431 and a close', async () => {
    const h = await start(['example.org'], { maxHeaderSize: 8 * 1024 });
    const r = await exchange(h.port, `CONNECT example.org:443 HTTP/1.1\r\nX-Fill: ${'a'.repeat(9000)}\r\n\r\n`);
    expect(r.text).toMatch(/^HTTP\/1\.1 431 /);
    expect(r.closed).toBe(true);
  });

  it('slowloris: a head trickled a byte at a time, and a connection that sends nothing, are closed after the head timeout', async () => {
    const h = await start(['example.org'], { headersTimeoutMs: 1500 });
    const t0 = Date.now();
    const silent = exchange(h.port, '', { timeoutMs: 15_000 });
    const trickle = net.connect(h.port, '127.0.0.1');
    let trickleClosedAt = 0;
    trickle.on('error', () => undefined);
    trickle.on('close', () => (trickleClosedAt = Date.now()));
    const head = 'CONNECT example.org:443 HTTP/1.1\r\nX-Slow: ';
    for (let i = 0; i < 40 && trickleClosedAt === 0; i++) {
      trickle.write(head[i % head.length]!);
      await sleep(150);
    }
    const s = await silent;
    expect(s.closed).toBe(true);
    expect(trickleClosedAt).toBeGreaterThan(0);
    expect(trickleClosedAt - t0).toBeLessThan(5000);
    expect(trickleClosedAt - t0).toBeGreaterThanOrEqual(1400);
    await until(() => h.proxy.openConnections === 0);
  });

  it('an open tunnel with no byte either way is closed after the idle timeout, and audited', async () => {
    const h = await start([`127.0.0.2:${echoPort}`], { idleTimeoutMs: 1000 });
    const r = await exchange(h.port, `CONNECT 127.0.0.2:${echoPort} HTTP/1.1\r\n\r\n`, { until: /\r\n\r\n/ });
    expect(r.text).toMatch(/^HTTP\/1\.1 200 /);
    const closedIn = await new Promise<number>((resolve) => {
      const t0 = Date.now();
      r.socket.on('close', () => resolve(Date.now() - t0));
    });
    expect(closedIn).toBeLessThan(6000);
    await until(() => connected(h).length === 1);
  });

  it('connections past the cap are turned away and counted as busy', async () => {
    const h = await start(['allowed.test'], { maxConnections: 2 });
    const holders = [net.connect(h.port, '127.0.0.1'), net.connect(h.port, '127.0.0.1')];
    for (const s of holders) s.on('error', () => undefined);
    await vi.waitFor(() => expect(h.proxy.openConnections).toBe(2), { timeout: 10_000, interval: 20 });
    const extra = await Promise.all([exchange(h.port, ''), exchange(h.port, ''), exchange(h.port, '')]);
    for (const r of extra) expect(r.closed).toBe(true);
    for (const s of holders) s.destroy();
    h.proxy.refusals.flush();
    expect(refusedLines(h).reduce((a, l) => a + (l.reasons.busy ?? 0), 0)).toBe(3);
  });

  it('a refused flood is aggregated: a few audit lines with counts, not one per connection', async () => {
    const h = await start(['allowed.test']);
    const n = 300;
    for (let i = 0; i < n; i += 30) {
      await Promise.all(Array.from({ length: 30 }, (_, j) => exchange(h.port, `CONNECT flood${(i + j) % 50}.test:443 HTTP/1.1\r\n\r\n`)));
    }
    h.proxy.refusals.flush();
    const lines = refusedLines(h);
    expect(lines.reduce((a, l) => a + l.count, 0)).toBe(n);
    expect(lines.length).toBeLessThanOrEqual(Math.ceil(n / 30) + 1);
    for (const l of lines) {
      expect(Object.keys(l.hosts).length).toBeLessThanOrEqual(32);
      expect(l.reasons.not_allowed).toBe(l.count);
      expect(Object.values(l.hosts).reduce((a, b) => a + b, 0) + (l.otherHosts ?? 0)).toBe(l.count);
    }
    expect(connected(h)).toEqual([]);
  });
});

describe('name lookups', () => {
  it('a stuck lookup keeps its slot after the request gave up; beyond the queue requests get 503 at once', async () => {
    const pending: Array<() => void> = [];
    let started = 0;
    const h = await start(['*.slow.test'], {
      lookupConcurrency: 1,
      lookupQueue: 1,
      lookupTimeoutMs: 800,
      lookup: (name) => {
        started++;
        return new Promise((resolve) => pending.push(() => resolve(name === 'a.slow.test' ? [{ address: '10.0.0.1', family: 4 }] : [])));
      },
    });
    const first = exchange(h.port, 'CONNECT a.slow.test:443 HTTP/1.1\r\n\r\n');
    await until(() => started === 1);
    const second = exchange(h.port, 'CONNECT b.slow.test:443 HTTP/1.1\r\n\r\n'); // queued behind the first
    await sleep(100);
    const third = await exchange(h.port, 'CONNECT c.slow.test:443 HTTP/1.1\r\n\r\n');
    expect(third.text).toMatch(/^HTTP\/1\.1 503 [^]*too many name lookups/);
    // Both give up after the timeout, but the stuck lookup still holds the only slot: nothing else started.
    expect((await first).text).toMatch(/^HTTP\/1\.1 502 [^]*could not be resolved/);
    expect((await second).text).toMatch(/^HTTP\/1\.1 502 /);
    expect(started).toBe(1);
    pending.shift()!();
    await until(() => started === 2); // the queued one runs once the slot is free
    pending.shift()!();
  });
});

describe('plain HTTP', () => {
  it('forwarding by name: the name is resolved once, a blocked address is skipped, and a name resolving only to loopback is refused', async () => {
    let calls = 0;
    const h = await start([`fwd.test:${webPort}`, `127.0.0.2:${webPort}`, `lo.test:${webPort}`], {
      resolve: { 'fwd.test': () => (calls++ === 0 ? ['127.0.0.3', '127.0.0.2'] : ['127.0.0.3']), 'lo.test': ['127.0.0.1'] },
    });
    const before = webSeen.length;
    const ok = await exchange(h.port, `GET http://fwd.test:${webPort}/by-name HTTP/1.1\r\nhost: fwd.test:${webPort}\r\n\r\n`, { until: /by-name/ });
    expect(ok.text).toMatch(/^HTTP\/1\.1 200 /);
    expect(webSeen.length).toBe(before + 1);
    expect(calls).toBe(1);
    await until(() => connected(h).length === 1);
    expect(connected(h)[0]).toMatchObject({ type: 'http', host: 'fwd.test', address: '127.0.0.2' });
    const lo = await exchange(h.port, `GET http://lo.test:${webPort}/x HTTP/1.1\r\nhost: lo.test:${webPort}\r\n\r\n`);
    expect(lo.text).toMatch(/^HTTP\/1\.1 403 [^]*127\.0\.0\.1, a loopback address/);
    expect(webSeen.length).toBe(before + 1);
  });

  it('forwards absolute-form requests to an allowed host: Host rewritten, proxy and hop-by-hop headers dropped, body and response streamed', async () => {
    const h = await start([`127.0.0.2:${webPort}`]);
    const res = await new Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }>((resolve, reject) => {
      const req = http.request(
        { host: '127.0.0.1', port: h.port, method: 'POST', path: `http://127.0.0.2:${webPort}/upload?x=1`, headers: { 'proxy-authorization': 'Basic c2VjcmV0', 'x-keep': 'kept', connection: 'keep-alive, x-drop', 'x-drop': 'dropped', host: 'spoofed.example' } },
        (r) => {
          let body = '';
          r.on('data', (d: Buffer) => (body += d.toString()));
          r.on('end', () => resolve({ status: r.statusCode!, headers: r.headers, body }));
        },
      );
      req.on('error', reject);
      req.end('payload-123');
    });
    expect(res.status).toBe(200);
    expect(res.body).toBe('hello POST /upload?x=1 11');
    expect(res.headers['x-upstream']).toBe('yes');
    expect(res.headers['set-cookie']).toEqual(['a=1', 'b=2']);
    // One request per client connection: the head deadline then bounds every request head.
    expect(res.headers.connection).toBe('close');
    const seen = webSeen.at(-1)!;
    expect(seen.headers.host).toBe(`127.0.0.2:${webPort}`);
    expect(seen.headers['x-keep']).toBe('kept');
    expect(seen.headers['proxy-authorization']).toBeUndefined();
    expect(seen.headers['x-drop']).toBeUndefined();
    expect(seen.body).toBe('payload-123');
    await until(() => connected(h).length === 1);
    expect(connected(h)[0]).toMatchObject({ type: 'http', method: 'POST', status: 200, host: '127.0.0.2', port: webPort, bytesUp: 11, bytesDown: res.body.length });
    // Nothing from the path, query or headers is in the audit.
    expect(JSON.stringify(h.audit)).not.toMatch(/upload|x=1|c2VjcmV0|kept/);
  });

  it('clients that vanish mid-upload or right after CONNECT leave nothing open, and the proxy keeps serving', async () => {
    const h = await start([`127.0.0.2:${webPort}`, `127.0.0.2:${echoPort}`]);
    for (let i = 0; i < 5; i++) {
      const s = net.connect(h.port, '127.0.0.1');
      s.on('error', () => undefined);
      s.write(`POST http://127.0.0.2:${webPort}/up HTTP/1.1\r\nHost: x\r\ncontent-length: 100000\r\n\r\n${'a'.repeat(100)}`);
      await sleep(50);
      s.destroy();
      const c = net.connect(h.port, '127.0.0.1');
      c.on('error', () => undefined);
      c.write(`CONNECT 127.0.0.2:${echoPort} HTTP/1.1\r\n\r\n`);
      c.destroy();
    }
    await until(() => h.proxy.openConnections === 0);
    const ok = await exchange(h.port, `CONNECT 127.0.0.2:${echoPort} HTTP/1.1\r\n\r\nstill`, { until: /still$/ });
    expect(ok.text).toMatch(/^HTTP\/1\.1 200 [^]*still$/);
    ok.socket.destroy();
  });

  it('refuses disallowed hosts with 403, https:// and origin-form URLs with 400', async () => {
    const h = await start([`127.0.0.2:${webPort}`]);
    const get = (path: string): Promise<{ status: number; body: string }> =>
      new Promise((resolve, reject) => {
        http
          .get({ host: '127.0.0.1', port: h.port, path, agent: false }, (r) => {
            let body = '';
            r.on('data', (d: Buffer) => (body += d.toString()));
            r.on('end', () => resolve({ status: r.statusCode!, body }));
          })
          .on('error', reject);
      });
    const denied = await get('http://evil.example/steal?token=abc');
    expect(denied.status).toBe(403);
    expect(denied.body).toContain('evil.example:80 is not on the allowlist');
    expect(denied.body).toContain('--allow-host evil.example');
    expect((await get(`http://127.0.0.2:${webPort + 1}/`)).status).toBe(403);
    expect((await get(`https://127.0.0.2:${webPort}/`)).body).toContain('CONNECT');
    expect((await get('/')).status).toBe(400);
    expect((await get(`http://user:pw@127.0.0.2:${webPort}/`)).status).toBe(400);
    expect((await get(`http://2130706434:${webPort}/`)).status).toBe(400);
    h.proxy.refusals.flush();
    expect(JSON.stringify(h.audit)).not.toContain('token=abc');
    expect(JSON.stringify(h.audit)).not.toContain('pw');
  });
});

describe('one request per client connection', () => {
  /** Refusal reasons counted so far, from the aggregated audit lines. */
  const reasonsOf = (h: Harness): Record<string, number> => {
    h.proxy.refusals.flush();
    const out: Record<string, number> = {};
    for (const l of refusedLines(h)) for (const [k, v] of Object.entries(l.reasons)) out[k] = (out[k] ?? 0) + v;
    return out;
  };

  for (const version of ['1.1', '1.0'] as const) {
    it(`50 pipelined absolute-form GETs (HTTP/${version}) on one connection: one upstream connection, one answer, the other 49 refused and counted`, async () => {
      const h = await start([`127.0.0.2:${webPort}`]);
      const before = webConnections;
      const seenBefore = webSeen.length;
      const keep = version === '1.0' ? 'Connection: keep-alive\r\n' : '';
      const one = (i: number): string => `GET http://127.0.0.2:${webPort}/p${i} HTTP/${version}\r\nHost: 127.0.0.2:${webPort}\r\n${keep}\r\n`;
      const r = await exchange(h.port, Array.from({ length: 50 }, (_, i) => one(i)).join(''));
      expect(r.closed).toBe(true);
      expect(r.text.match(/hello GET/g)).toEqual(['hello GET']);
      expect(r.text).toContain('hello GET /p0 ');
      await sleep(300); // any further upstream connection would have been opened by now
      expect(webConnections - before).toBe(1);
      expect(webSeen.length - seenBefore).toBe(1);
      await until(() => connected(h).length === 1);
      await until(() => h.proxy.refusals.total === 49);
      expect(reasonsOf(h)).toEqual({ bad_request: 49 });
      await until(() => h.proxy.openConnections === 0);
    });
  }

  it('a CONNECT after a GET on the same connection opens no tunnel, and is counted', async () => {
    const h = await start([`127.0.0.2:${webPort}`, `127.0.0.2:${echoPort}`]);
    const before = echoConnections;
    const r = await exchange(h.port, `GET http://127.0.0.2:${webPort}/first HTTP/1.1\r\nHost: 127.0.0.2:${webPort}\r\n\r\nCONNECT 127.0.0.2:${echoPort} HTTP/1.1\r\n\r\nping`, { timeoutMs: 3000 });
    expect(r.closed).toBe(true);
    expect(r.text).not.toContain('Connection Established');
    expect(r.text).not.toMatch(/ping$/);
    await sleep(300);
    expect(echoConnections - before).toBe(0);
    expect(connected(h).filter((e) => e.type === 'connect')).toEqual([]);
    expect(reasonsOf(h).bad_request).toBeGreaterThanOrEqual(1);
    await until(() => h.proxy.openConnections === 0);
  });

  it('a CONNECT after a request Node answers itself (no Host, unknown Expect, HTTP/1.0) opens no tunnel either', async () => {
    const h = await start([`127.0.0.2:${webPort}`, `127.0.0.2:${echoPort}`]);
    const before = echoConnections;
    const firsts = [
      `GET http://127.0.0.2:${webPort}/nohost HTTP/1.1\r\n\r\n`,
      `GET http://127.0.0.2:${webPort}/expect HTTP/1.1\r\nHost: x\r\nExpect: something\r\n\r\n`,
      `GET http://127.0.0.2:${webPort}/old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n`,
      `GET / HTTP/1.1\r\nHost: x\r\n\r\n`,
    ];
    for (const first of firsts) {
      const r = await exchange(h.port, `${first}CONNECT 127.0.0.2:${echoPort} HTTP/1.1\r\n\r\nping`, { timeoutMs: 3000 });
      expect(r.closed, first).toBe(true);
      expect(r.text, first).not.toContain('Connection Established');
    }
    await sleep(300);
    expect(echoConnections - before).toBe(0);
    expect(connected(h).filter((e) => e.type === 'connect')).toEqual([]);
    await until(() => h.proxy.openConnections === 0);
  });
});

async function until(cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await sleep(20);
  }
}
