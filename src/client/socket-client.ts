import { CredproxyError } from '../errors.js';
import { isOp, OP_PAYLOADS, type Op, type OpData, type OpInput } from '../protocol/messages.js';
import { connectionLostError, ProxyConnection } from './proxy-connection.js';
import { parseSocketAddress, type SocketAddress } from './socket-address.js';
import { capabilityTokenFromEnv } from './capability-token.js';

/** SPEC §6 defaults. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;
export const DEFAULT_IDLE_TIMEOUT_MS = 300_000;
export const DEFAULT_CONNECT_TIMEOUT_MS = 5_000;

export interface ProxySocketClientOptions {
  /** A Unix socket path, or `tcp://HOST:PORT`. */
  socket: string;
  capabilityToken?: string;
  requestTimeoutMs?: number;
  /** With nothing in flight this long, the client closes its connection and reconnects on the next call. */
  idleTimeoutMs?: number;
  /** Bound on connecting plus the handshake. */
  connectTimeoutMs?: number;
}

export type ProxySocketClientTimeouts = Omit<ProxySocketClientOptions, 'socket' | 'capabilityToken'>;

function positiveMs(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value <= 0 || value > 2_147_483_647) {
    throw new CredproxyError('CONFIG_INVALID', `${name} must be a positive number of milliseconds`);
  }
  return value;
}

function closedError(): CredproxyError {
  return new CredproxyError('CONNECTION_LOST', 'The credential proxy client was closed.');
}

/**
 * The sandbox side of the socket (SPEC §6): one persistent connection per
 * client, opened lazily with the handshake, closed after an idle period and
 * reopened on demand. A connection lost any other way is final: every call,
 * pending or later, fails with the one "connection lost" message.
 */
export class ProxySocketClient {
  private readonly address: SocketAddress;
  private readonly capabilityToken: string | undefined;
  private readonly requestTimeoutMs: number;
  private readonly idleTimeoutMs: number;
  private readonly connectTimeoutMs: number;
  private conn: ProxyConnection | null = null;
  private opening: Promise<ProxyConnection> | null = null;
  private idleTimer: NodeJS.Timeout | null = null;
  private lost = false;
  /** The server closed our connection while it was idle; a failed reconnect then means the server is gone. */
  private serverClosedIdle = false;
  private closed = false;

  constructor(options: ProxySocketClientOptions) {
    this.address = parseSocketAddress(options.socket);
    if (options.capabilityToken !== undefined && (typeof options.capabilityToken !== 'string' || options.capabilityToken.length > 1024)) {
      throw new CredproxyError('CONFIG_INVALID', 'capability token must be a string of at most 1024 characters');
    }
    this.capabilityToken = options.capabilityToken === '' ? undefined : options.capabilityToken;
    this.requestTimeoutMs = positiveMs(options.requestTimeoutMs, DEFAULT_REQUEST_TIMEOUT_MS, 'requestTimeoutMs');
    this.idleTimeoutMs = positiveMs(options.idleTimeoutMs, DEFAULT_IDLE_TIMEOUT_MS, 'idleTimeoutMs');
    this.connectTimeoutMs = positiveMs(options.connectTimeoutMs, DEFAULT_CONNECT_TIMEOUT_MS, 'connectTimeoutMs');
  }

  /** A client for the proxy named by CREDPROXY_SOCKET (and CREDPROXY_TOKEN or CREDPROXY_TOKEN_FILE) in `env`. */
  static fromEnv(env: NodeJS.ProcessEnv = process.env, timeouts: ProxySocketClientTimeouts = {}): ProxySocketClient {
    const socket = env.CREDPROXY_SOCKET;
    if (socket === undefined || socket === '') {
      throw new CredproxyError(
        'CONFIG_INVALID',
        'CREDPROXY_SOCKET is not set: the credential proxy client only works inside a sandbox started by `credproxy run`, or with the variables printed by `credproxy serve`.',
      );
    }
    const token = capabilityTokenFromEnv(env);
    return new ProxySocketClient({ ...timeouts, socket, ...(token ? { capabilityToken: token } : {}) });
  }

  /** Send one operation and return its answer's data; error answers reject with CredproxyError(code, error, {retryAfter}). */
  async request<O extends Op>(op: O, payload: OpInput<O>): Promise<OpData[O]> {
    this.assertUsable();
    const body = this.validate(op, payload);
    for (;;) {
      const conn = await this.connection();
      // The idle timer may have closed this connection between the await and here; open a fresh one.
      if (conn.isOpen) return (await conn.request(op, body, this.requestTimeoutMs)) as unknown as OpData[O];
      this.assertUsable();
    }
  }

  /**
   * The protocol version agreed with the proxy (connecting if needed). Ops
   * added with version 2 are used only when it was agreed, so an older
   * proxy keeps working through the version-1 equivalents.
   */
  async protocolVersion(): Promise<number> {
    this.assertUsable();
    for (;;) {
      const conn = await this.connection();
      if (conn.isOpen) return conn.version;
      this.assertUsable();
    }
  }

  /** Close the connection; pending and later calls fail. */
  async close(): Promise<void> {
    this.closed = true;
    this.clearIdle();
    const conn = this.conn;
    this.conn = null;
    const opening = this.opening;
    if (conn !== null) await conn.close(closedError);
    if (opening !== null) await opening.then((c) => c.close(closedError), () => undefined);
  }

  private assertUsable(): void {
    if (this.closed) throw closedError();
    if (this.lost) throw connectionLostError();
  }

  /** Check a payload before any connection is made; what is sent is the schema's output (unknown fields dropped). */
  private validate<O extends Op>(op: O, payload: OpInput<O>): object {
    if (!isOp(op)) throw new CredproxyError('INVALID_REQUEST', 'unknown operation');
    const parsed = OP_PAYLOADS[op].safeParse(payload);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      const where = issue === undefined || issue.path.length === 0 ? 'payload' : issue.path.map(String).join('.');
      throw new CredproxyError('INVALID_REQUEST', `invalid ${op} request: ${where}: ${issue?.message ?? 'invalid'}`);
    }
    return parsed.data;
  }

  private connection(): Promise<ProxyConnection> {
    if (this.conn !== null && this.conn.isOpen) return Promise.resolve(this.conn);
    if (this.opening === null) {
      const opening = this.open();
      this.opening = opening;
      const clear = (): void => {
        if (this.opening === opening) this.opening = null;
      };
      opening.then(clear, clear);
    }
    return this.opening;
  }

  private async open(): Promise<ProxyConnection> {
    let conn: ProxyConnection | null = null;
    const events = {
      onLost: () => {
        this.lost = true;
        if (this.conn === conn) this.conn = null;
        this.clearIdle();
      },
      // The server's idle timeout or a connection cap: reconnect on the next call, as after our own idle close.
      onIdleClose: () => {
        if (this.conn === conn) this.conn = null;
        this.clearIdle();
        this.serverClosedIdle = true;
      },
      onBusyChange: (busy: boolean) => {
        if (this.conn !== conn) return;
        if (busy) this.clearIdle();
        else this.armIdle();
      },
    };
    try {
      conn = await ProxyConnection.open(
        this.address,
        { connectTimeoutMs: this.connectTimeoutMs, ...(this.capabilityToken === undefined ? {} : { capabilityToken: this.capabilityToken }) },
        events,
      );
    } catch (err) {
      // The server closed our idle connection and now cannot be reached: it is gone, as SPEC §6 reports it.
      if (this.serverClosedIdle) {
        this.lost = true;
        throw connectionLostError();
      }
      throw err;
    }
    this.serverClosedIdle = false;
    if (this.closed || this.lost || !conn.isOpen) {
      await conn.close(this.closed ? closedError : connectionLostError);
      this.assertUsable();
      throw connectionLostError();
    }
    this.conn = conn;
    this.armIdle();
    return conn;
  }

  private armIdle(): void {
    this.clearIdle();
    const conn = this.conn;
    if (conn === null) return;
    const timer = setTimeout(() => {
      if (this.idleTimer !== timer) return;
      this.idleTimer = null;
      if (this.conn !== conn || conn.busy) return;
      this.conn = null;
      void conn.close(closedError);
    }, this.idleTimeoutMs);
    timer.unref();
    this.idleTimer = timer;
  }

  private clearIdle(): void {
    if (this.idleTimer !== null) clearTimeout(this.idleTimer);
    this.idleTimer = null;
  }
}
