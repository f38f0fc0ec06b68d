import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface RecordedRequest {
  method: string;
  path: string;
  contentType: string;
  body: string;
}

export interface ScriptedAnswer {
  status: number;
  body: string;
  contentType?: string;
}

/**
 * A tiny real HTTP server on 127.0.0.1 for provider quirks the standard
 * server cannot show (a JSON-only token endpoint, errors with HTTP 200): it
 * records each request and answers with the next scripted reply.
 */
export class RecordingServer {
  readonly requests: RecordedRequest[] = [];
  private readonly answers: ScriptedAnswer[] = [];

  private constructor(private readonly http: Server, readonly origin: string) {}

  static async start(): Promise<RecordingServer> {
    const http = createServer();
    await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', () => resolve()));
    const server = new RecordingServer(http, `http://127.0.0.1:${(http.address() as AddressInfo).port}`);
    http.on('request', (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        server.requests.push({ method: req.method ?? '', path: req.url ?? '', contentType: req.headers['content-type'] ?? '', body: Buffer.concat(chunks).toString('utf8') });
        const answer = server.answers.shift() ?? { status: 500, body: '{"error":"server_error"}' };
        res.writeHead(answer.status, { 'content-type': answer.contentType ?? 'application/json' });
        res.end(answer.body);
      });
    });
    return server;
  }

  answer(...answers: ScriptedAnswer[]): void {
    this.answers.push(...answers);
  }

  async close(): Promise<void> {
    this.http.closeAllConnections();
    await new Promise<void>((resolve) => this.http.close(() => resolve()));
  }
}
