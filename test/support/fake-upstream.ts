import { createHash } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import { connect, createServer as createNetServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net';
import type { TestCa } from './test-ca.js';

/** One request as the fake API saw it. */
export interface SeenRequest {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  /** The credential it carried (Bearer value, x-api-key or x-goog-api-key). */
  credential: string | null;
  bodyBytes: number;
  bodySha256: string;
  bodyText: string;
}

function credentialOf(headers: IncomingMessage['headers']): string | null {
  const auth = headers.authorization;
  if (typeof auth === 'string' && auth.startsWith('Bearer ')) return auth.slice(7);
  for (const h of ['x-api-key', 'x-goog-api-key'] as const) {
    const v = headers[h];
    if (typeof v === 'string') return v;
  }
  return null;
}

/** Gemini Code Assist (v1internal:NAME) calls with a fixed answer: a free-tier user with a project. */
const GEMINI_FIXED: Readonly<Record<string, object>> = {
  loadCodeAssist: { currentTier: { id: 'free-tier', name: 'Fake tier' }, allowedTiers: [{ id: 'free-tier', isDefault: true }], cloudaicompanionProject: 'fake-project' },
  onboardUser: { done: true, response: { cloudaicompanionProject: { id: 'fake-project' } } },
  retrieveUserQuota: { buckets: [] },
  listExperiments: { experimentIds: [], flags: [] },
  countTokens: { totalTokens: 3 },
};

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * A local HTTPS stand-in for the Anthropic, OpenAI (chat completions and
 * the Responses API), Gemini and Gemini Code Assist APIs (and a few test
 * endpoints), with a certificate from a test CA. Only credentials `accept`
 * approves get an answer other than 401.
 */
export class FakeUpstream {
  readonly requests: SeenRequest[] = [];
  /** Responses whose client (the gateway) went away before they were finished. */
  abortedResponses = 0;
  /** When the first body byte of the latest request arrived (performance.now()). */
  firstBodyByteAt = 0;
  /** Which credentials the API accepts. */
  accept: (credential: string | null) => boolean = (c) => c !== null;
  /** Resolves the held second half of /sse-gate. */
  private gate: (() => void) | null = null;
  private gateOpened: Promise<void> = Promise.resolve();
  private readonly sockets = new Set<Socket>();

  private constructor(
    private readonly server: Server,
    readonly url: string,
  ) {}

  static async start(ca: TestCa): Promise<FakeUpstream> {
    const server = createServer({ cert: ca.certPem, key: ca.keyPem });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    const fake = new FakeUpstream(server, `https://127.0.0.1:${port}`);
    server.on('connection', (s: Socket) => {
      fake.sockets.add(s);
      s.once('close', () => fake.sockets.delete(s));
    });
    server.on('request', (req, res) => {
      fake.handle(req, res).catch(() => res.destroy());
    });
    return fake;
  }

  /** The next /sse-gate request holds its second event until openGate(). */
  holdGate(): void {
    this.gateOpened = new Promise((resolve) => {
      this.gate = resolve;
    });
  }

  openGate(): void {
    this.gate?.();
    this.gate = null;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const hash = createHash('sha256');
    let bodyBytes = 0;
    const keep: Buffer[] = [];
    res.once('close', () => {
      if (!res.writableFinished) this.abortedResponses++;
    });
    for await (const chunk of req) {
      const b = chunk as Buffer;
      if (bodyBytes === 0) this.firstBodyByteAt = performance.now();
      hash.update(b);
      bodyBytes += b.length;
      if (bodyBytes <= 1 << 20) keep.push(b);
    }
    const credential = credentialOf(req.headers);
    const seen: SeenRequest = {
      method: req.method ?? '',
      url: req.url ?? '',
      headers: req.headers,
      credential,
      bodyBytes,
      bodySha256: hash.digest('hex'),
      bodyText: Buffer.concat(keep).toString('utf8'),
    };
    this.requests.push(seen);
    const path = (req.url ?? '').split('?')[0]!;
    if (!this.accept(credential)) {
      res.writeHead(401, { 'content-type': 'application/json', 'request-id': 'req_fake' });
      res.end(JSON.stringify({ type: 'error', error: { type: 'authentication_error', message: 'invalid credential' } }));
      return;
    }
    if (path.endsWith('/ping')) {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': '2' });
      res.end('{}');
      return;
    }
    if (path.endsWith('/v1/messages')) return this.anthropicMessages(seen, res);
    if (path.endsWith('/chat/completions')) return this.openaiChat(seen, res);
    if (req.method === 'POST' && path.endsWith('/responses')) return this.openaiResponses(seen, res);
    if (req.method === 'GET' && path.endsWith('/models')) {
      // Codex's ChatGPT backend lists `models`, the OpenAI API `data`: an empty list of either kind.
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ object: 'list', data: [], models: [] }));
      return;
    }
    const method = /:([A-Za-z]+)$/.exec(path)?.[1];
    if (method !== undefined && Object.hasOwn(GEMINI_FIXED, method)) {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(GEMINI_FIXED[method]));
      return;
    }
    if (method === 'generateContent' || method === 'streamGenerateContent') return this.geminiGenerate(seen, res, path.includes('/v1internal'), method === 'streamGenerateContent');
    if (path.endsWith('/echo')) {
      // Reflects what it received, credential included: the gateway must mask it.
      res.writeHead(200, { 'content-type': 'application/json', 'x-echo-auth': String(req.headers.authorization ?? req.headers['x-api-key'] ?? '') });
      res.end(JSON.stringify({ headers: req.headers }));
      return;
    }
    if (path.endsWith('/leak-split')) {
      // The credential split across two writes with a pause between: one chunk each on the wire.
      const secret = credential ?? '';
      const cut = Math.floor(secret.length / 2);
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(`data: {"token":"${secret.slice(0, cut)}`);
      await sleep(50);
      res.end(`${secret.slice(cut)}"}\n\n`);
      return;
    }
    if (path.endsWith('/upload')) {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ bytes: bodyBytes, sha256: seen.bodySha256 }));
      return;
    }
    if (path.endsWith('/big')) {
      const mb = Number(new URL(req.url ?? '', 'http://x').searchParams.get('mb') ?? '1');
      const block = Buffer.alloc(64 * 1024, 0x61);
      const total = mb * 1024 * 1024;
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(total) });
      let sent = 0;
      while (sent < total) {
        const n = Math.min(block.length, total - sent);
        sent += n;
        if (!res.write(n === block.length ? block : block.subarray(0, n))) await new Promise((r) => res.once('drain', r));
      }
      res.end();
      return;
    }
    if (path.endsWith('/sse-burst')) {
      // Every event and the end in one go: the gateway gets data and end in the same turn of its event loop.
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      for (let i = 0; i < 20; i++) res.write(`data: {"n":${i}}\n\n`);
      res.end('data: [DONE]\n\n');
      return;
    }
    if (path.endsWith('/sse-gate')) {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      res.write('event: first\ndata: {"n":1}\n\n');
      await this.gateOpened;
      res.end('event: last\ndata: {"n":2}\n\n');
      return;
    }
    if (path.endsWith('/gzip')) {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-encoding': 'gzip' });
      res.end(Buffer.from([0x1f, 0x8b]));
      return;
    }
    res.writeHead(404, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ type: 'error', error: { type: 'not_found_error', message: 'no such fake endpoint' } }));
  }

  private anthropicMessages(seen: SeenRequest, res: ServerResponse): void {
    const body = JSON.parse(seen.bodyText || '{}') as { model?: string; stream?: boolean };
    const text = `fake answer #${this.requests.length}`;
    const message = {
      id: `msg_fake${this.requests.length}`,
      type: 'message',
      role: 'assistant',
      model: body.model ?? 'claude-fake',
      content: [{ type: 'text', text }],
      stop_reason: 'end_turn',
      stop_sequence: null,
      usage: { input_tokens: 3, output_tokens: 4 },
    };
    if (!body.stream) {
      res.writeHead(200, { 'content-type': 'application/json', 'request-id': 'req_fake' });
      res.end(JSON.stringify(message));
      return;
    }
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    const ev = (type: string, data: object): string => `event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`;
    res.write(ev('message_start', { message: { ...message, content: [], stop_reason: null, usage: { input_tokens: 3, output_tokens: 0 } } }));
    res.write(ev('content_block_start', { index: 0, content_block: { type: 'text', text: '' } }));
    for (const word of text.split(/(?= )/)) res.write(ev('content_block_delta', { index: 0, delta: { type: 'text_delta', text: word } }));
    res.write(ev('content_block_stop', { index: 0 }));
    res.write(ev('message_delta', { delta: { stop_reason: 'end_turn', stop_sequence: null }, usage: { output_tokens: 4 } }));
    res.end(ev('message_stop', {}));
  }

  private openaiChat(seen: SeenRequest, res: ServerResponse): void {
    const body = JSON.parse(seen.bodyText || '{}') as { model?: string; stream?: boolean; stream_options?: { include_usage?: boolean } };
    const text = `fake answer #${this.requests.length}`;
    const base = { id: `chatcmpl-fake${this.requests.length}`, created: 1_700_000_000, model: body.model ?? 'gpt-fake' };
    if (!body.stream) {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ ...base, object: 'chat.completion', choices: [{ index: 0, message: { role: 'assistant', content: text }, finish_reason: 'stop' }], usage: { prompt_tokens: 3, completion_tokens: 4, total_tokens: 7 } }));
      return;
    }
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    for (const word of text.split(/(?= )/)) {
      res.write(`data: ${JSON.stringify({ ...base, object: 'chat.completion.chunk', choices: [{ index: 0, delta: { content: word }, finish_reason: null }] })}\n\n`);
    }
    res.write(`data: ${JSON.stringify({ ...base, object: 'chat.completion.chunk', choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] })}\n\n`);
    // As the API does with stream_options.include_usage (Qwen Code asks for it): one more chunk, usage and no choices.
    if (body.stream_options?.include_usage === true) {
      res.write(`data: ${JSON.stringify({ ...base, object: 'chat.completion.chunk', choices: [], usage: { prompt_tokens: 3, completion_tokens: 4, total_tokens: 7 } })}\n\n`);
    }
    res.end('data: [DONE]\n\n');
  }

  /**
   * The OpenAI Responses API as Codex reads it: an SSE stream from
   * response.created to response.completed with one output message.
   */
  private openaiResponses(seen: SeenRequest, res: ServerResponse): void {
    const body = JSON.parse(seen.bodyText || '{}') as { model?: string };
    const n = this.requests.length;
    const text = `fake answer #${n}`;
    const item = { id: `msg_fake${n}`, type: 'message', role: 'assistant', status: 'completed', content: [{ type: 'output_text', text, annotations: [] }] };
    const response = { id: `resp_fake${n}`, object: 'response', created_at: 1_700_000_000, status: 'in_progress', model: body.model ?? 'gpt-fake', output: [] as unknown[] };
    const ev = (type: string, data: object): string => `event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`;
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    res.write(ev('response.created', { response }));
    res.write(ev('response.output_item.added', { output_index: 0, item: { ...item, status: 'in_progress', content: [] } }));
    res.write(ev('response.content_part.added', { output_index: 0, item_id: item.id, content_index: 0, part: { type: 'output_text', text: '', annotations: [] } }));
    for (const word of text.split(/(?= )/)) res.write(ev('response.output_text.delta', { output_index: 0, item_id: item.id, content_index: 0, delta: word }));
    res.write(ev('response.output_text.done', { output_index: 0, item_id: item.id, content_index: 0, text }));
    res.write(ev('response.output_item.done', { output_index: 0, item }));
    const usage = { input_tokens: 3, output_tokens: 4, total_tokens: 7, input_tokens_details: { cached_tokens: 0 }, output_tokens_details: { reasoning_tokens: 0 } };
    res.end(ev('response.completed', { response: { ...response, status: 'completed', output: [item], usage } }));
  }

  /**
   * Gemini's generateContent and streamGenerateContent (SSE with alt=sse):
   * the Gemini API's answer as it is, Code Assist's (v1internal) wrapped in
   * `response`. A request for JSON output (Gemini CLI's model router) gets
   * an object that satisfies its classifiers.
   */
  private geminiGenerate(seen: SeenRequest, res: ServerResponse, codeAssist: boolean, stream: boolean): void {
    const body = JSON.parse(seen.bodyText || '{}') as { generationConfig?: { responseMimeType?: string }; request?: { generationConfig?: { responseMimeType?: string } } };
    const wantsJson = (body.request?.generationConfig ?? body.generationConfig)?.responseMimeType === 'application/json';
    const text = wantsJson ? JSON.stringify({ reasoning: 'fake', model_choice: 'flash', complexity_reasoning: 'fake', complexity_score: 1 }) : `fake answer #${this.requests.length}`;
    const answer = {
      candidates: [{ content: { role: 'model', parts: [{ text }] }, finishReason: 'STOP', index: 0 }],
      usageMetadata: { promptTokenCount: 3, candidatesTokenCount: 4, totalTokenCount: 7 },
      modelVersion: 'gemini-fake',
    };
    const wrapped = codeAssist ? { response: answer, traceId: 'fake-trace' } : answer;
    if (!stream) {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(wrapped));
      return;
    }
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.end(`data: ${JSON.stringify(wrapped)}\n\n`);
  }

  async close(): Promise<void> {
    this.openGate();
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** A TCP relay in front of the gateway that keeps every byte it returned to clients. */
export class TcpRecorder {
  readonly toClient: Buffer[] = [];
  readonly toServer: Buffer[] = [];
  private readonly sockets = new Set<Socket>();

  private constructor(
    private readonly server: NetServer,
    readonly url: string,
  ) {}

  static async start(targetPort: number): Promise<TcpRecorder> {
    const server = createNetServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const rec = new TcpRecorder(server, `http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    server.on('connection', (client) => {
      const upstream = connect(targetPort, '127.0.0.1');
      for (const s of [client, upstream]) {
        rec.sockets.add(s);
        s.once('close', () => rec.sockets.delete(s));
        s.on('error', () => undefined);
      }
      client.on('data', (d: Buffer) => rec.toServer.push(d));
      upstream.on('data', (d: Buffer) => rec.toClient.push(d));
      client.pipe(upstream);
      upstream.pipe(client);
      client.once('close', () => upstream.destroy());
      upstream.once('close', () => client.destroy());
    });
    return rec;
  }

  received(): string {
    return Buffer.concat(this.toClient).toString('latin1');
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
