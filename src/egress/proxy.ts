import { lookup as dnsLookup } from 'node:dns/promises';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import net, { type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { splice } from '../gateway/relay.js';
import type { Logger } from '../log.js';
import { connectionTokens, HOP_BY_HOP } from '../hop-by-hop.js';
import { Deadlines } from '../server/deadlines.js';
import { HttpListeners, type ListenAt } from '../server/http-listener.js';
import { canonicalIp, classifyAddress, type AddressClass } from './address.js';
import { EgressRefusals, type EgressAuditSink, type EgressConnectionEntry, type EgressRefusal } from './audit.js';
import { AuthorityError, literallyAllowed, matchHost, parseAuthority, suggestFlag, type HostRule, type RequestHost } from './hosts.js';

export type LookupFn = (name: string) => Promise<Array<{ address: string; family: number }>>;

export type EgressListen = ListenAt;

export interface EgressProxyOptions {
  rules: readonly HostRule[];
  logger: Logger;
  audit?: EgressAuditSink;
  /** Name resolution (default: the system resolver, dns.lookup with all addresses). */
  lookup?: LookupFn;
  /** Connecting to the checked address (default 10 s). */
  connectTimeoutMs?: number;
  /** From the first byte of a connection to the end of a request's head (default 10 s): a slow head is closed. */
  headersTimeoutMs?: number;
  /** A connection, tunnel or forwarded request with no byte either way for this long is closed (default 5 min). */
  idleTimeoutMs?: number;
  /** A name lookup that has not answered after this long is refused (default 5 s). */
  lookupTimeoutMs?: number;
  /** Connections open at once per listener (default 256). */
  maxConnections?: number;
  /** Largest request head (default 16 KiB; larger ones get 431). */
  maxHeaderSize?: number;
  /** Name lookups at once (default 2: they run on libuv's thread pool, which the store shares). */
  lookupConcurrency?: number;
  /** Name lookups waiting beyond that (default 128; more are refused with 503). */
  lookupQueue?: number;
}


class Refused extends Error {
  constructor(
    readonly status: number,
    readonly reason: EgressRefusal,
    readonly body: string,
  ) {
    super(body);
  }
}

function describeClass(c: AddressClass): string {
  return c === 'link-local' ? 'link-local (includes cloud metadata)' : c;
}

/** A small semaphore with a bounded queue. */
class Limiter {
  private active = 0;
  private readonly waiting: Array<() => void> = [];
  constructor(
    private readonly max: number,
    private readonly queue: number,
  ) {}
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.active >= this.max) {
      if (this.waiting.length >= this.queue) throw new Refused(503, 'busy', 'credproxy egress: too many name lookups at once; try again\n');
      await new Promise<void>((r) => this.waiting.push(r)); // the slot is handed over: `active` already counts it
    } else {
      this.active++;
    }
    try {
      return await fn();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.active--;
    }
  }
}

const systemLookup: LookupFn = (name) => dnsLookup(name, { all: true, verbatim: true });

/**
 * The host side of the egress allowlist (issue 15): an HTTP proxy that
 * tunnels CONNECT to allowed hosts (TLS stays end to end; nothing is
 * decrypted) and forwards plain-HTTP requests in absolute form. The proxy
 * resolves names itself, refuses loopback, private, link-local and other
 * non-public addresses unless a rule names that address literally, and
 * connects to exactly the address it checked (no second lookup, so DNS
 * rebinding cannot swap it).
 */
export class EgressProxy {
  private readonly o: EgressProxyOptions;
  private readonly http: http.Server;
  private readonly listeners: HttpListeners;
  /** Upstream connections open now: stop() ends them too, and waits for their audit lines. */
  private readonly upstreams = new Map<Socket, Promise<void>>();
  private readonly lookupLimiter: Limiter;
  private readonly deadlines = new Deadlines(50);
  readonly refusals: EgressRefusals;
  private readonly connectTimeoutMs: number;
  private readonly idleTimeoutMs: number;
  private readonly lookupTimeoutMs: number;
  /**
   * Client connections that have carried a request. One request per
   * connection, whatever it is: a pipelined second request is refused (it
   * would open another upstream connection and skip the head deadline), and
   * so is a CONNECT after a request (its tunnel would mix into that answer).
   */
  private readonly carried = new WeakSet<Socket>();

  constructor(options: EgressProxyOptions) {
    this.o = options;
    this.connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
    this.idleTimeoutMs = options.idleTimeoutMs ?? 5 * 60_000;
    this.lookupTimeoutMs = options.lookupTimeoutMs ?? 5_000;
    this.lookupLimiter = new Limiter(options.lookupConcurrency ?? 2, options.lookupQueue ?? 128);
    this.refusals = new EgressRefusals(options.audit);
    this.listeners = new HttpListeners({
      maxConnections: options.maxConnections ?? 256,
      highWaterMark: 64 * 1024,
      // One request per connection, so one deadline bounds its head: a slowloris client, trickling or silent, is closed.
      headDeadlineMs: options.headersTimeoutMs ?? 10_000,
      onHeadTimeout: (socket) => {
        this.refusals.note('bad_request', '-');
        if (socket.writable) socket.end(rawResponse(408, 'credproxy egress: request head not received in time\n'));
      },
      onBusy: () => this.refusals.note('busy', '-'),
      onForeignPeer: () => this.refusals.note('foreign_peer', '-'),
      onConnection: (socket) => this.http.emit('connection', socket),
    });
    // The head deadline is the listeners' (headersTimeout never applies to connections handed over).
    this.http = http.createServer(
      {
        maxHeaderSize: options.maxHeaderSize ?? 16 * 1024,
        requestTimeout: 0,
        highWaterMark: 64 * 1024,
        // Every request reaches forward(), which answers a missing Host itself: Node's own 400 would skip the
        // one-request-per-connection mark (a CONNECT could follow it).
        requireHostHeader: false,
      },
      (req, res) => this.forward(req, res),
    );
    this.http.timeout = this.idleTimeoutMs;
    // Node drops HTTP/1.1 requests after the first itself (503, never sent: the first answer closes the connection);
    // forward() refuses the rest (HTTP/1.0 is not counted by Node).
    this.http.maxRequestsPerSocket = 1;
    this.http.on('dropRequest', (_req: IncomingMessage, socket: Socket) => {
      this.carried.add(socket);
      this.refusals.note('bad_request', '-');
    });
    // An Expect other than 100-continue: answered here (not by Node) so that the connection is marked as used.
    this.http.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) => {
      if (!this.firstRequest(req, res)) return;
      this.refusals.note('bad_request', '-');
      plainAnswer(res, 417, 'credproxy egress: unsupported Expect header\n');
    });
    this.http.on('connect', (req: IncomingMessage, socket: Socket, head: Buffer) => this.tunnel(req, socket, head));
    this.http.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
      const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : 400;
      // As in the gateway: a reset by the client is its own business; malformed HTTP is a refusal.
      if (err.code !== 'ECONNRESET') this.refusals.note('bad_request', '-');
      if (socket.writable) socket.end(rawResponse(status, `credproxy egress: ${status === 431 ? 'request head too large' : 'malformed request'}\n`));
      else socket.destroy();
    });
  }

  /** Accept connections on a TCP address or a Unix socket path; may be called more than once. */
  listen(where: EgressListen): Promise<string> {
    return this.listeners.listen(where);
  }

  async stop(): Promise<void> {
    const closed = this.listeners.close();
    const recorded = [...this.upstreams.values()];
    for (const u of this.upstreams.keys()) u.destroy();
    await closed;
    await Promise.all(recorded);
    this.http.close();
    this.refusals.flush();
  }

  /** Connections open now (tests). */
  get openConnections(): number {
    return this.listeners.connections;
  }

  /** Rule check, resolution and address check; the address to connect to, or Refused. */
  async check(host: RequestHost, port: number, display: string): Promise<{ address: string; family: 4 | 6 }> {
    const rule = matchHost(this.o.rules, host, port);
    const flag = suggestFlag(host, port);
    if (rule === null) {
      throw new Refused(403, 'not_allowed', `credproxy egress: ${display} is not on the allowlist. To allow it, add ${flag} to credproxy run.\n`);
    }
    if (host.kind === 'address') return { address: host.address, family: host.family }; // named literally by the rule that matched
    let found: Array<{ address: string; family: number }>;
    try {
      // The slot stays taken until the lookup itself ends (a stuck getaddrinfo holds a thread-pool thread);
      // the request stops waiting after the timeout, queue time included.
      found = await this.deadlines.bound(this.lookupLimiter.run(() => this.lookup(host.name)), this.lookupTimeoutMs, () => new Error('lookup timeout'));
    } catch (err) {
      if (err instanceof Refused) throw err;
      throw new Refused(502, 'dns_failed', `credproxy egress: ${host.name} could not be resolved on the host\n`);
    }
    let firstBlocked: { address: string; cls: AddressClass } | null = null;
    for (const a of found) {
      const ip = canonicalIp(a.address);
      if (ip === null) continue;
      const cls = classifyAddress(ip.address);
      if (cls === 'public' || literallyAllowed(this.o.rules, ip.address, port)) return ip;
      firstBlocked ??= { address: ip.address, cls };
    }
    if (firstBlocked === null) throw new Refused(502, 'dns_failed', `credproxy egress: ${host.name} has no usable address\n`);
    const literal = firstBlocked.address.includes(':') ? `[${firstBlocked.address}]` : firstBlocked.address;
    throw new Refused(
      403,
      'blocked_address',
      `credproxy egress: ${host.name} resolves to ${firstBlocked.address}, a ${describeClass(firstBlocked.cls)} address, which the proxy does not reach for a name. If you mean it, add --allow-host ${literal}:${port} (the literal address) to credproxy run.\n`,
    );
  }

  private lookup(name: string): Promise<Array<{ address: string; family: number }>> {
    return (this.o.lookup ?? systemLookup)(name);
  }

  private refuse(err: unknown, display: string): Refused {
    const r = err instanceof Refused ? err : new Refused(502, 'connect_failed', `credproxy egress: could not connect to ${display}\n`);
    this.refusals.note(r.reason, display);
    return r;
  }

  private connectTo(address: string, family: 4 | 6, port: number): Promise<Socket> {
    return new Promise((resolve, reject) => {
      const upstream = net.connect({ host: address, port, family, noDelay: true, allowHalfOpen: true });
      const timer = setTimeout(() => {
        upstream.destroy();
        reject(new Error('connect timeout'));
      }, this.connectTimeoutMs);
      upstream.once('connect', () => {
        clearTimeout(timer);
        upstream.removeAllListeners('error');
        resolve(upstream);
      });
      upstream.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
  }

  private tunnel(req: IncomingMessage, client: Socket, head: Buffer): void {
    const started = performance.now();
    const time = new Date().toISOString();
    client.on('error', () => client.destroy());
    if (this.carried.has(client)) {
      // A CONNECT after a request on the same connection: that request's answer may still be on its way, and a
      // tunnel would mix into it. Dropped, with the answer.
      this.refusals.note('bad_request', '-');
      client.destroy();
      return;
    }
    this.carried.add(client);
    this.listeners.headArrived(client);
    client.setTimeout(this.idleTimeoutMs, () => client.destroy());
    let target: ReturnType<typeof parseAuthority>;
    try {
      target = parseAuthority(req.url ?? '');
    } catch (err) {
      this.refusals.note('bad_request', '-');
      endAndDrop(client, rawResponse(400, `credproxy egress: CONNECT needs HOST:PORT (${err instanceof AuthorityError ? err.message : 'bad target'})\n`));
      return;
    }
    const display = target.display;
    void (async () => {
      let upstream: Socket;
      let address: string;
      try {
        const checked = await this.check(target.host, target.port, display);
        address = checked.address;
        if (client.destroyed) return;
        upstream = await this.connectTo(checked.address, checked.family, target.port);
      } catch (err) {
        const r = this.refuse(err, display);
        if (!client.destroyed) endAndDrop(client, rawResponse(r.status, r.body));
        return;
      }
      if (client.destroyed) {
        upstream.destroy();
        return;
      }
      const entry: EgressConnectionEntry = { time, kind: 'egress', type: 'connect', host: hostText(target.host), port: target.port, address, result: 'allowed', bytesUp: 0, bytesDown: 0, durationMs: 0 };
      const fail = (): void => {
        client.destroy();
        upstream.destroy();
      };
      upstream.setTimeout(this.idleTimeoutMs, fail);
      client.setTimeout(this.idleTimeoutMs, fail);
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length > 0) upstream.write(head);
      let recorded!: () => void;
      this.upstreams.set(upstream, new Promise<void>((r) => (recorded = r)));
      splice(client, upstream, () => {
        // The upstream socket's own counters: no listener per chunk on a bulk path.
        entry.bytesUp = upstream.bytesWritten;
        entry.bytesDown = upstream.bytesRead;
        entry.durationMs = Math.round(performance.now() - started);
        this.o.audit?.record(entry);
        this.upstreams.delete(upstream);
        recorded();
      });
    })().catch((err: unknown) => this.unexpected(err, client));
  }

  /**
   * Marks the client connection as having carried its one request; a later
   * request on it is refused and counted, and never reaches an upstream. Its
   * answer waits behind the first one, which closes the connection, so it is
   * not sent.
   */
  private firstRequest(req: IncomingMessage, res: ServerResponse): boolean {
    res.shouldKeepAlive = false;
    if (!this.carried.has(req.socket)) {
      this.carried.add(req.socket);
      return true;
    }
    this.refusals.note('bad_request', '-');
    plainAnswer(res, 400, 'credproxy egress: one request per connection\n');
    return false;
  }

  /** A bug of ours must not take `run` down: log it and drop the one connection. */
  private unexpected(err: unknown, socket: Socket): void {
    this.o.logger.warn({ error: err instanceof Error ? err.message : 'unknown' }, 'egress: unexpected error; connection dropped');
    socket.destroy();
  }

  /** A plain-HTTP request in absolute form (`GET http://host/path`): forwarded on a new upstream connection. */
  private forward(req: IncomingMessage, res: ServerResponse): void {
    const started = performance.now();
    const time = new Date().toISOString();
    // One request per client connection (answered with `connection: close`): the head deadline then bounds every head.
    if (!this.firstRequest(req, res)) return;
    this.listeners.headArrived(req.socket);
    if (req.httpVersion === '1.1' && req.headers.host === undefined) {
      this.refusals.note('bad_request', '-');
      return plainAnswer(res, 400, 'credproxy egress: an HTTP/1.1 request needs a Host header\n');
    }
    const url = req.url ?? '';
    const m = /^http:\/\/([^/?#]*)(.*)$/i.exec(url);
    if (m === null) {
      this.refusals.note('bad_request', '-');
      const https = /^https:/i.test(url);
      return plainAnswer(res, 400, https ? 'credproxy egress: https:// URLs go through CONNECT (set HTTPS_PROXY, not HTTP_PROXY)\n' : 'credproxy egress: this is an HTTP proxy; send an absolute http:// URL (set HTTP_PROXY)\n');
    }
    let target: ReturnType<typeof parseAuthority>;
    try {
      target = parseAuthority(m[1]!, 80);
    } catch (err) {
      this.refusals.note('bad_request', '-');
      return plainAnswer(res, 400, `credproxy egress: bad host in URL (${err instanceof AuthorityError ? err.message : 'bad target'})\n`);
    }
    const path = m[2] === '' ? '/' : m[2]!;
    if (!path.startsWith('/') && !path.startsWith('?')) {
      this.refusals.note('bad_request', '-');
      return plainAnswer(res, 400, 'credproxy egress: bad URL\n');
    }
    const display = target.display;
    req.pause();
    void (async () => {
      let checked: { address: string; family: 4 | 6 };
      try {
        checked = await this.check(target.host, target.port, display);
      } catch (err) {
        const r = this.refuse(err, display);
        return plainAnswer(res, r.status, r.body);
      }
      if (req.destroyed) return;
      const headers: Array<[string, string]> = [];
      const named = connectionTokens(req.headers);
      for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
        const name = req.rawHeaders[i]!;
        const lower = name.toLowerCase();
        if (HOP_BY_HOP.has(lower) || named.has(lower) || lower === 'host') continue;
        headers.push([name, req.rawHeaders[i + 1]!]);
      }
      const hostHeader = target.port === 80 ? hostText(target.host, true) : `${hostText(target.host, true)}:${target.port}`;
      const entry: EgressConnectionEntry = { time, kind: 'egress', type: 'http', host: hostText(target.host), port: target.port, address: checked.address, method: req.method ?? 'GET', status: 0, result: 'allowed', bytesUp: 0, bytesDown: 0, durationMs: 0 };
      let connected = false;
      let recorded = false;
      const record = (): void => {
        if (recorded || !connected) return;
        recorded = true;
        entry.status = res.statusCode;
        entry.durationMs = Math.round(performance.now() - started);
        this.o.audit?.record(entry);
      };
      const upstream = http.request({
        host: checked.address,
        family: checked.family,
        port: target.port,
        method: req.method,
        path: path.startsWith('?') ? `/${path}` : path,
        headers: [['Host', hostHeader], ...headers].flat(),
        setHost: false,
        agent: false,
        timeout: this.connectTimeoutMs,
      });
      upstream.on('socket', (s: Socket) => {
        let done!: () => void;
        this.upstreams.set(s, new Promise<void>((r) => (done = r)));
        s.once('close', () => {
          // The response's close comes first when the client went away; the audit line is written by then or here.
          setImmediate(() => {
            record();
            this.upstreams.delete(s);
            done();
          });
        });
        s.once('connect', () => {
          connected = true;
          upstream.setTimeout(this.idleTimeoutMs);
        });
      });
      upstream.on('timeout', () => upstream.destroy(new Error('timeout')));
      upstream.on('error', () => {
        if (!connected) {
          const r = this.refuse(null, display);
          return plainAnswer(res, r.status, r.body);
        }
        if (!res.headersSent) plainAnswer(res, 502, `credproxy egress: ${display} closed the connection\n`);
        else res.destroy();
        record();
      });
      upstream.on('response', (up: IncomingMessage) => {
        const connNamed = connectionTokens(up.headers);
        const out: Record<string, string[]> = {};
        for (let i = 0; i + 1 < up.rawHeaders.length; i += 2) {
          const lower = up.rawHeaders[i]!.toLowerCase();
          if (HOP_BY_HOP.has(lower) || connNamed.has(lower)) continue;
          (out[lower] ??= []).push(up.rawHeaders[i + 1]!);
        }
        try {
          res.writeHead(up.statusCode ?? 502, up.statusMessage, out);
        } catch {
          // A header Node will not send on (invalid characters): the response is not passed on.
          up.destroy();
          return plainAnswer(res, 502, `credproxy egress: ${display} sent a response that cannot be passed on\n`);
        }
        up.on('data', (d: Buffer) => (entry.bytesDown += d.length));
        up.pipe(res);
        up.on('error', () => res.destroy());
      });
      res.once('close', () => {
        if (!res.writableFinished) upstream.destroy();
        record();
      });
      req.on('data', (d: Buffer) => (entry.bytesUp += d.length));
      req.pipe(upstream);
      req.resume();
    })().catch((err: unknown) => this.unexpected(err, req.socket));
  }
}

function hostText(host: RequestHost, bracket = false): string {
  if (host.kind === 'name') return host.name;
  return bracket && host.family === 6 ? `[${host.address}]` : host.address;
}


function rawResponse(status: number, body: string): string {
  const b = Buffer.from(body, 'utf8');
  return `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? 'Error'}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${b.length}\r\nconnection: close\r\n\r\n${body}`;
}

/** Answer and close; a client that keeps its side open is dropped shortly after (a refusal flood must not hold sockets). */
function endAndDrop(socket: Socket, text: string): void {
  socket.end(text);
  setTimeout(() => socket.destroy(), 2000).unref();
}

function plainAnswer(res: ServerResponse, status: number, body: string): void {
  if (res.headersSent || res.destroyed) {
    res.destroy();
    return;
  }
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body), connection: 'close' });
  res.end(body);
}

