import http, { type ClientRequest, type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import https from 'node:https';
import { isIP, type Socket } from 'node:net';
import tls from 'node:tls';
import { isInsecureLoopback } from '../oauth/url-policy.js';

export interface UpstreamOptions {
  /** Extra CA certificates (PEM) trusted for upstream TLS besides the system ones and NODE_EXTRA_CA_CERTS. */
  ca?: string | Buffer;
  /** TCP+TLS connect bound (default 10 s). */
  connectTimeoutMs?: number;
  /** No byte either way for this long ends the request (default 10 min: models may think quietly). */
  idleTimeoutMs?: number;
  /** Sockets kept per upstream host (default 256). */
  maxSockets?: number;
}

export class UpstreamTimeoutError extends Error {
  constructor(readonly phase: 'connect' | 'idle') {
    super(`upstream ${phase} timeout`);
    this.name = 'UpstreamTimeoutError';
  }
}

/**
 * Outgoing requests to the APIs: keep-alive agents (https, and plain http
 * only for loopback IP literals, as endpointUrlProblem allows), connect and
 * idle bounds.
 */
export class Upstream {
  private readonly httpsAgent: https.Agent;
  private readonly httpAgent: http.Agent;
  readonly connectTimeoutMs: number;
  readonly idleTimeoutMs: number;

  constructor(options: UpstreamOptions = {}) {
    const maxSockets = options.maxSockets ?? 256;
    this.httpsAgent = new https.Agent({ keepAlive: true, maxSockets, ...(options.ca === undefined ? {} : { ca: withSystemCas(options.ca) }) });
    this.httpAgent = new http.Agent({ keepAlive: true, maxSockets });
    this.connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
    this.idleTimeoutMs = options.idleTimeoutMs ?? 600_000;
  }

  request(url: URL, method: string, headers: OutgoingHttpHeaders, onResponse: (res: IncomingMessage) => void): ClientRequest {
    const plain = isInsecureLoopback(url);
    if (!plain && url.protocol !== 'https:') throw new Error('upstream must be https');
    const options = {
      method,
      headers,
      host: url.hostname.replace(/^\[|\]$/g, ''),
      port: url.port === '' ? undefined : Number(url.port),
      path: `${url.pathname}${url.search}`,
      // SNI carries names only (RFC 6066).
      servername: plain || isIP(url.hostname.replace(/^\[|\]$/g, '')) !== 0 ? undefined : url.hostname,
    };
    const req = plain ? http.request({ ...options, agent: this.httpAgent }, onResponse) : https.request({ ...options, agent: this.httpsAgent }, onResponse);
    req.on('socket', (socket: Socket) => {
      socket.setNoDelay(true);
      if (!socket.connecting) return;
      const timer = setTimeout(() => req.destroy(new UpstreamTimeoutError('connect')), this.connectTimeoutMs);
      socket.once(plain ? 'connect' : 'secureConnect', () => clearTimeout(timer));
      socket.once('close', () => clearTimeout(timer));
    });
    req.setTimeout(this.idleTimeoutMs, () => req.destroy(new UpstreamTimeoutError('idle')));
    return req;
  }

  close(): void {
    this.httpsAgent.destroy();
    this.httpAgent.destroy();
  }
}

/** An explicit `ca` replaces Node's list; keep the bundled roots alongside it. */
function withSystemCas(ca: string | Buffer): (string | Buffer)[] {
  return [...tls.rootCertificates, ca];
}
