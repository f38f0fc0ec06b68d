import http, { type ClientRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Logger } from '../log.js';
import type { CredentialService } from '../refresh/types.js';
import type { KeyStore } from '../store/types.js';
import { auditPath, GatewayRefusals, REFUSAL_OUTCOMES, type GatewayAuditEntry, type GatewayAuditSink, type GatewayOutcome } from './audit.js';
import { HttpListeners, type ListenAt } from '../server/http-listener.js';
import { GatewayCredentials, GatewayError, type ResolvedCredential } from './credentials.js';
import { downstreamHeaders, downstreamStatusMessage, hasPlaceholder, upstreamHeaders } from './inject.js';
import { KEY_ROUTE_PREFIX, rulesAllow, type Route } from './routes.js';
import { SecretRedactor, SecretScanner } from './scan.js';
import { Upstream, UpstreamTimeoutError, type UpstreamOptions } from './upstream.js';

/** Request bodies up to this size are buffered, so a 401 can be replayed once after a refresh. */
export const REPLAY_BODY_LIMIT = 1024 * 1024;
/**
 * All bodies held for a replay at once. Each is kept until its answer arrives,
 * so without a shared bound a sandbox could make the host hold up to a MiB
 * per connection (a GiB at the connection cap); past it, bodies stream.
 */
export const DEFAULT_REPLAY_BUDGET = 64 * 1024 * 1024;
/** How much of an upstream 401 body is kept to pass on when no replay happens. */
const UNAUTHORIZED_BODY_LIMIT = 64 * 1024;
/** Bytes buffered per direction and stage before backpressure applies. */
const STREAM_HIGH_WATER_MARK = 256 * 1024;

/** Connections open at once per listener; more are refused (a flood from the sandbox cannot exhaust the host). */
export const DEFAULT_MAX_CONNECTIONS = 1024;
/**
 * Requests a connection may have waiting behind the one being served. They
 * are served one at a time, so the connection cap bounds upstream requests
 * and replay buffers; a client piling up more is cut off (no HTTP client in
 * use pipelines at all).
 */
export const MAX_PIPELINED = 16;

export interface GatewayOptions {
  maxConnections?: number;
  routes: ReadonlyMap<string, Route>;
  /** The run's capability token: the placeholder clients send. */
  placeholder: string;
  credentials: CredentialService;
  keys: KeyStore;
  logger: Logger;
  audit?: GatewayAuditSink;
  upstream?: UpstreamOptions;
  /** From a connection's start, or its last answer, to a request's complete head (default 30 s). */
  headDeadlineMs?: number;
  /** Bytes of request bodies held for a replay at once (default DEFAULT_REPLAY_BUDGET). */
  replayBudgetBytes?: number;
}

export type GatewayListen = ListenAt;

interface Exchange {
  req: IncomingMessage;
  res: ServerResponse;
  entry: GatewayAuditEntry;
  started: number;
  /** The upstream request in flight, aborted when the client goes away. */
  upstream: ClientRequest | null;
  clientGone: boolean;
  /** Its turn on the connection came (see serveInTurn): until then it has done nothing to audit. */
  begun: boolean;
}

/**
 * The host-side HTTP/1.1 gateway (issue 13): `/<route>/<path>` is sent to
 * `<api_base>/<path>` with the real credential in place of the placeholder.
 * Bodies stream both ways; only small request bodies are buffered (for one
 * replay after a refresh).
 */
export class GatewayServer {
  private readonly o: GatewayOptions;
  private readonly placeholder: Buffer;
  private readonly creds: GatewayCredentials;
  private readonly upstream: Upstream;
  private readonly http: http.Server;
  private readonly listeners: HttpListeners;
  private readonly refusals: GatewayRefusals;
  /** Per connection with a request being served: the starts of the requests pipelined behind it. */
  private readonly waiting = new WeakMap<Socket, Array<() => void>>();
  /** Bytes of the bodies held for a replay now. */
  private replayHeld = 0;

  constructor(options: GatewayOptions) {
    this.o = options;
    this.refusals = new GatewayRefusals(options.audit);
    this.placeholder = Buffer.from(options.placeholder, 'utf8');
    this.creds = new GatewayCredentials(options.credentials, options.keys);
    this.upstream = new Upstream(options.upstream);
    // Larger stream buffers than Node's 16 KiB: a two-hop pipe with small ones stalls on every drain.
    // The head deadline is the listeners' (headersTimeout never applies to connections handed over).
    this.http = http.createServer({ requestTimeout: 0, keepAliveTimeout: 5_000, highWaterMark: STREAM_HIGH_WATER_MARK }, (req, res) => this.handle(req, res));
    this.http.timeout = this.upstream.idleTimeoutMs;
    this.listeners = new HttpListeners({
      maxConnections: options.maxConnections ?? DEFAULT_MAX_CONNECTIONS,
      highWaterMark: STREAM_HIGH_WATER_MARK,
      headDeadlineMs: options.headDeadlineMs ?? 30_000,
      onHeadTimeout: (socket) => {
        this.refusals.note('slow_head', null);
        if (socket.writable) socket.end('HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
      },
      onBusy: () => this.refusals.note('busy', null),
      onForeignPeer: () => this.refusals.note('foreign_peer', null),
      onConnection: (socket) => this.http.emit('connection', socket),
    });
    this.http.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
      // A reset by the client is its own business; malformed or too slow HTTP is a refusal.
      if (err.code !== 'ECONNRESET') this.refusals.note('bad_request', null);
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
      else socket.destroy();
    });
  }

  /** Accept connections on a TCP address or a Unix socket path; may be called more than once. */
  listen(where: GatewayListen): Promise<string> {
    return this.listeners.listen(where);
  }

  /** Connections open now. */
  get connections(): number {
    return this.listeners.connections;
  }

  /** Stop accepting, end every connection, drop upstream sockets. */
  async stop(): Promise<void> {
    await this.listeners.close();
    this.upstream.close();
    this.refusals.flush();
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const started = performance.now();
    this.listeners.headArrived(req.socket);
    res.once('finish', () => this.listeners.answered(req.socket));
    const x: Exchange = {
      req,
      res,
      started,
      upstream: null,
      clientGone: false,
      begun: false,
      entry: { time: new Date().toISOString(), kind: 'gateway', route: null, method: req.method ?? 'GET', path: '', status: 0, bytesIn: 0, bytesOut: 0, durationMs: 0, refreshed: false },
    };
    res.once('close', () => {
      if (!x.begun) return;
      if (!res.writableFinished) {
        x.clientGone = true;
        // Gone before anything went upstream: counted like a refusal, or a sandbox opening and
        // resetting connections would write an audit line each without reaching any API.
        x.entry.outcome ??= x.upstream === null ? 'abandoned' : 'client_closed';
        x.upstream?.destroy();
      }
      x.entry.status = res.statusCode;
      x.entry.durationMs = Math.round((performance.now() - started) * 100) / 100;
      // Every request that reached the upstream has its own line; what the gateway refused itself is counted.
      if (x.entry.outcome !== undefined && REFUSAL_OUTCOMES.has(x.entry.outcome)) this.refusals.note(x.entry.outcome, x.entry.route);
      else this.o.audit?.record(x.entry);
    });
    this.serveInTurn(x);
  }

  /**
   * Node dispatches every pipelined request at once: one connection could
   * have hundreds upstream, each holding a replay buffer. Here a connection's
   * requests go upstream one after the other (their answers go out in order
   * anyway).
   */
  private serveInTurn(x: Exchange): void {
    const socket = x.req.socket;
    const start = (): void => {
      x.begun = true;
      x.res.once('close', () => {
        const next = this.waiting.get(socket)?.shift();
        if (next !== undefined && !socket.destroyed) next();
        else this.waiting.delete(socket);
      });
      this.route(x).catch((err: unknown) => this.fail(x, err));
    };
    const queue = this.waiting.get(socket);
    if (queue === undefined) {
      this.waiting.set(socket, []);
      start();
    } else if (queue.length < MAX_PIPELINED) {
      queue.push(start);
    } else if (!socket.destroyed) {
      // Once per connection: requests parsed after the cut are dropped unseen.
      this.refusals.note('pipelined', null);
      socket.destroy();
    }
  }

  private async route(x: Exchange): Promise<void> {
    const { req } = x;
    const target = parseTarget(req.url ?? '/', this.o.routes);
    if (target === null) return this.refuse(x, 404, 'not_found_error', 'no such gateway route', 'no_route');
    x.entry.route = target.route.name;
    x.entry.path = auditPath(target.rest);
    if (target.bad) return this.refuse(x, 400, 'invalid_request_error', 'the path may not contain dot segments or backslashes', 'bad_path');
    if (!rulesAllow(target.route.rules, x.entry.method, target.pathOnly)) {
      return this.refuse(x, 403, 'permission_error', `${x.entry.method} ${x.entry.path} is not allowed on route ${target.route.name}`, 'not_allowed');
    }
    if (!hasPlaceholder(req.headers, this.placeholder)) {
      return this.refuse(x, 401, 'authentication_error', "missing or wrong placeholder credential: use the run's token as the API key", 'no_placeholder');
    }
    let credential: ResolvedCredential;
    try {
      credential = await this.creds.current(target.route);
    } catch (err) {
      return this.fail(x, err);
    }
    const body = await this.replayableBody(x);
    if (x.clientGone) return;
    this.send(x, target.route, target.rest, credential, body, false);
  }

  /**
   * The whole body when it may be replayed (declared length ≤ 1 MiB, and room
   * in the shared budget until the exchange ends); null to stream it.
   */
  private async replayableBody(x: Exchange): Promise<Buffer | null> {
    const { req } = x;
    if (req.headers['transfer-encoding'] !== undefined) return null;
    const declared = Number(req.headers['content-length'] ?? '0');
    if (!Number.isFinite(declared) || declared > REPLAY_BODY_LIMIT) return null;
    if (declared === 0) return Buffer.alloc(0);
    if (this.replayHeld + declared > (this.o.replayBudgetBytes ?? DEFAULT_REPLAY_BUDGET)) return null;
    this.replayHeld += declared;
    x.res.once('close', () => {
      this.replayHeld -= declared;
    });
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks);
  }

  private send(x: Exchange, route: Route, rest: string, credential: ResolvedCredential, body: Buffer | null, isReplay: boolean): void {
    const url = upstreamUrl(credential.apiBase, rest);
    if (url === null) {
      this.refuse(x, 400, 'invalid_request_error', 'the path does not stay under the route', 'bad_path');
      return;
    }
    const headers = upstreamHeaders(x.req.headers, route, credential.injection, url.host);
    // The gateway frames every body it sends itself. Left to Node, a streamed body with no
    // Content-Length on a GET/HEAD/DELETE/OPTIONS goes out unframed on a pooled keep-alive
    // connection: the upstream reads it as a request of the sandbox's making, and an unfinished
    // one takes the next request's head, the real credential included, as its own.
    delete headers['content-length'];
    delete headers['transfer-encoding'];
    if (body !== null) headers['content-length'] = String(body.length);
    else if (x.req.headers['transfer-encoding'] === undefined && x.req.headers['content-length'] !== undefined) headers['content-length'] = x.req.headers['content-length'];
    else headers['transfer-encoding'] = 'chunked';
    const secrets = [credential.injection.secret];
    let upstream: ClientRequest;
    try {
      upstream = this.upstream.request(url, x.entry.method, headers, (up) => {
        if (up.statusCode === 401 && route.kind === 'oauth' && body !== null && !isReplay) {
          void this.retryAfterUnauthorized(x, route, rest, credential, body, up, secrets);
          return;
        }
        this.relayResponse(x, up, secrets);
      });
    } catch (err) {
      this.fail(x, err);
      return;
    }
    x.upstream = upstream;
    upstream.on('error', (err) => this.fail(x, err));
    if (body !== null) {
      x.entry.bytesIn = body.length;
      upstream.end(body);
    } else {
      // The body is read only from here on: until now it stayed paused in the socket (backpressure on the client).
      x.req.on('data', (chunk: Buffer) => {
        x.entry.bytesIn += chunk.length;
      });
      x.req.pipe(upstream);
    }
  }

  /** One forced refresh (shared by every request that saw the same 401) and one replay. */
  private async retryAfterUnauthorized(
    x: Exchange,
    route: Route,
    rest: string,
    used: ResolvedCredential,
    body: Buffer,
    up: IncomingMessage,
    secrets: string[],
  ): Promise<void> {
    const kept = await readCapped(up, UNAUTHORIZED_BODY_LIMIT);
    if (x.clientGone) return;
    let fresh: ResolvedCredential | null;
    try {
      fresh = await this.creds.afterUnauthorized(route, used.injection.secret);
    } catch (err) {
      if (err instanceof GatewayError && err.status === 401) return this.fail(x, err);
      fresh = null;
    }
    if (x.clientGone) return;
    if (fresh === null) {
      // Nothing newer to try: the client gets the upstream's own answer.
      if (scannable(up)) this.writeBuffered(x, up, kept, secrets);
      else this.refuseEncoded(x);
      return;
    }
    x.entry.refreshed = true;
    this.send(x, route, rest, fresh, body, true);
  }

  private relayResponse(x: Exchange, up: IncomingMessage, secrets: string[]): void {
    const { res } = x;
    if (x.clientGone) {
      up.destroy();
      return;
    }
    if (!scannable(up)) {
      up.destroy();
      this.refuseEncoded(x);
      return;
    }
    res.writeHead(up.statusCode ?? 502, downstreamStatusMessage(up.statusMessage, secrets), downstreamHeaders(up.headers, secrets));
    // A hand-made pump rather than pipeline(up, Transform, res): one stream layer less per chunk.
    const scanner = new SecretScanner(secrets);
    let ended = false;
    const finish = (err: Error | null): void => {
      if (ended) return;
      ended = true;
      x.entry.bytesOut = scanner.bytes;
      if (scanner.masked > 0) {
        x.entry.masked = scanner.masked;
        this.o.logger.warn({ route: x.entry.route, masked: scanner.masked }, 'gateway masked a credential in an upstream response');
      }
      if (err && !x.clientGone) {
        x.entry.outcome = err instanceof UpstreamTimeoutError ? 'upstream_timeout' : 'upstream_error';
        res.destroy();
      }
    };
    // TLS hands over one 16 KiB record per 'data', each in a callback of its own (a nextTick would run
    // between them): what arrives in one turn of the event loop leaves in one writev after its I/O phase.
    let corked = false;
    // Only ever undoes our own cork (Node 22's uncork counts down even when nothing is corked).
    const uncork = (): void => {
      if (!corked) return;
      corked = false;
      res.uncork();
    };
    up.on('data', (chunk: Buffer) => {
      const out = scanner.push(chunk);
      if (out.length === 0) return;
      if (!corked) {
        corked = true;
        res.cork();
        setImmediate(uncork);
      }
      if (!res.write(out)) up.pause();
    });
    res.on('drain', () => up.resume());
    up.once('end', () => {
      const rest = scanner.flush();
      // Node 22 writes the last chunk's terminator past bytes still held by a cork: release them first.
      uncork();
      res.end(rest.length > 0 ? rest : undefined);
      finish(null);
    });
    up.once('error', (err) => finish(err));
    up.once('close', () => {
      if (!up.complete) finish(new Error('upstream response cut short'));
    });
  }

  private writeBuffered(x: Exchange, up: IncomingMessage, body: Buffer, secrets: string[]): void {
    const redactor = new SecretRedactor(secrets);
    const headers = downstreamHeaders(up.headers, secrets);
    headers['content-length'] = String(body.length);
    x.res.writeHead(up.statusCode ?? 502, downstreamStatusMessage(up.statusMessage, secrets), headers);
    redactor.pipe(x.res);
    redactor.end(body);
    x.res.once('finish', () => {
      x.entry.bytesOut = redactor.bytes;
    });
  }

  private fail(x: Exchange, err: unknown): void {
    if (x.clientGone) return;
    if (err instanceof GatewayError) {
      this.refuse(x, err.status, err.type, err.message, 'credential_error');
      return;
    }
    if (err instanceof UpstreamTimeoutError) {
      this.refuse(x, 504, 'api_error', `the upstream did not answer (${err.phase} timeout)`, 'upstream_timeout');
      return;
    }
    const code = (err as NodeJS.ErrnoException | undefined)?.code;
    this.o.logger.warn({ route: x.entry.route, code: typeof code === 'string' ? code : undefined }, 'gateway upstream request failed');
    this.refuse(x, 502, 'api_error', `the upstream could not be reached${typeof code === 'string' ? ` (${code})` : ''}`, 'upstream_error');
  }

  private refuseEncoded(x: Exchange): void {
    this.refuse(x, 502, 'api_error', 'the upstream answered with a compressed body the gateway cannot check', 'encoded_response');
  }

  /** An answer of our own, shaped like the providers' error bodies (`error.type`, `error.message`). */
  private refuse(x: Exchange, status: number, type: string, message: string, outcome: GatewayOutcome): void {
    const { res } = x;
    x.entry.outcome ??= outcome;
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const body = Buffer.from(JSON.stringify({ type: 'error', error: { type, message } }));
    x.entry.bytesOut = body.length;
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': String(body.length), ...(status === 401 || status === 404 ? { connection: 'close' } : {}) });
    res.end(body);
    // Whatever the client still sends is not wanted.
    x.req.resume();
  }
}

interface Target {
  route: Route;
  /** What follows the route, query included, always starting with '/'. */
  rest: string;
  pathOnly: string;
  /** Dot segments or backslashes: refused, they could climb out of the route's base path. */
  bad: boolean;
}

function parseTarget(url: string, routes: ReadonlyMap<string, Route>): Target | null {
  if (!url.startsWith('/')) return null;
  const q = url.indexOf('?');
  const path = q < 0 ? url : url.slice(0, q);
  const query = q < 0 ? '' : url.slice(q);
  const segments = path.split('/');
  // ['', name, ...] or ['', 'keys', key, ...]
  const take = segments[1] === KEY_ROUTE_PREFIX ? 3 : 2;
  const name = segments.slice(1, take).join('/');
  const route = routes.get(name);
  if (route === undefined) return null;
  const pathOnly = `/${segments.slice(take).join('/')}`;
  const bad = segments.slice(take).some((s) => climbs(s)) || /\\|%5c/i.test(pathOnly);
  return { route, rest: `${pathOnly}${query}`, pathOnly, bad };
}

/**
 * A segment that is, or decodes to something containing, a dot segment (`..`, `%2e%2e`, `..%2f..`),
 * path parameters included (`..;x`: servlet containers and others resolve it as `..`).
 */
function climbs(segment: string): boolean {
  let decoded: string;
  try {
    decoded = decodeURIComponent(segment);
  } catch {
    return true;
  }
  return decoded.split(/[/\\]/).some((part) => {
    const name = part.split(';', 1)[0];
    return name === '.' || name === '..';
  });
}

/** `<api_base><rest>`, and null unless the result stays on the base's origin and under its path. */
export function upstreamUrl(apiBase: string, rest: string): URL | null {
  const base = new URL(apiBase);
  const basePath = base.pathname.replace(/\/+$/, '');
  let url: URL;
  try {
    url = new URL(`${base.origin}${basePath}${rest}`);
  } catch {
    return null;
  }
  if (url.origin !== base.origin) return null;
  if (url.pathname !== basePath && !url.pathname.startsWith(`${basePath}/`)) return null;
  return url;
}

/**
 * Whether the body arrives as plain bytes the scanner can check. The upstream
 * is asked for an identity encoding; an answer under any other content coding,
 * or a transfer coding Node does not undo (it removes only `chunked`), is not.
 */
function scannable(up: IncomingMessage): boolean {
  const encoding = up.headers['content-encoding'];
  if (encoding !== undefined && encoding !== 'identity') return false;
  const transfer = up.headers['transfer-encoding'];
  return transfer === undefined || transfer.trim().toLowerCase() === 'chunked';
}

async function readCapped(stream: IncomingMessage, cap: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of stream) {
      const b = chunk as Buffer;
      if (size < cap) chunks.push(b.subarray(0, cap - size));
      size += b.length;
    }
  } catch {
    /* a cut-off 401 body is still a 401 */
  }
  return Buffer.concat(chunks);
}
