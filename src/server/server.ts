import { chmodSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { constants as osConstants } from 'node:os';
import { dirname } from 'node:path';
import { CredproxyError } from '../errors.js';
import { createLogger, type Logger } from '../log.js';
import { FRAME_TIMEOUT_MS } from '../protocol/frame.js';
import { MAX_PROTOCOL_VERSION, PROTOCOL_VERSION } from '../protocol/messages.js';
import type { CredentialService } from '../refresh/types.js';
import type { KeyStore, TokenStore } from '../store/types.js';
import type { LoginEvent } from '../login/session-manager.js';
import { AuditLog } from './audit.js';
import { ByteBudget, ConnectionBytes, DEFAULT_CONNECTION_BUFFER_BYTES, DEFAULT_SERVER_BUFFER_BYTES } from './byte-budget.js';
import type { AuditRotation } from './audit-rotate.js';
import { CapabilityCheck } from './capability.js';
import { Connection } from './connection.js';
import { RefusalMeter } from './refusals.js';
import { PeerAudit } from './peer-audit.js';
import { collectGarbage } from '../heap.js';
import { TcpThrottle, type TcpThrottleOptions } from './tcp-throttle.js';
import { defaultPeerLimits, PeerTable, peerKey, type PeerLimitOptions } from './peer-limits.js';
import type { LoginPort, PeerIdentity } from './context.js';
import { CREDENTIAL_OP_TIMEOUT_MS, Dispatcher, HOST_OP_TIMEOUT_MS } from './dispatch.js';
import { resolveLimits, type LimitOptions } from './limits.js';
import { isPeerAllowed, loadPeerCredReader, type PeerCredReader } from './peercred.js';
import type { Policy } from './policy.js';
import { assertSocketPathLength, makeSocketPath, prepareSocketDir, removeStaleSocket, unlinkSocket } from './socket-path.js';

export type PeerCheckMode = 'required' | 'off';

export interface ServerTimeouts {
  /** SPEC §4: 5 s from connect to a completed handshake. */
  handshakeMs: number;
  /** SPEC §4: 5 s from a frame's first byte to its last. */
  frameMs: number;
  /** SPEC §5: 15 s for a store read, write or list. */
  hostOpMs: number;
  /** get_token / refresh_token / remove_token / oauth_*: may refresh or wait for the refresh lock. */
  credentialOpMs: number;
  /** SPEC §5: in-flight work gets this long on stop (5 s). */
  shutdownGraceMs: number;
}

export const DEFAULT_TIMEOUTS: ServerTimeouts = {
  handshakeMs: 5000,
  frameMs: FRAME_TIMEOUT_MS,
  hostOpMs: HOST_OP_TIMEOUT_MS,
  credentialOpMs: CREDENTIAL_OP_TIMEOUT_MS,
  shutdownGraceMs: 5000,
};

export interface ProxyServerOptions {
  tokens: TokenStore;
  keys: KeyStore;
  /** Owned by the caller: stop() does not close it. */
  credentials: CredentialService;
  policy: Policy;
  /** The raw token handed to the sandbox; only its hash is kept. */
  capabilityToken?: string;
  /** A fresh socket name is made in this directory (created 0700)... */
  socketDir?: string;
  /** ...or this exact path is used... */
  socketPath?: string;
  /**
   * ...or TCP (for VM-based engines that cannot carry a Unix socket). Exactly
   * one of the three. TCP needs a capability token; there is no peer check,
   * and failed handshakes are rate-limited per remote address.
   */
  tcp?: { host: string; port: number };
  /** Default 'required': on Linux, refuse to start without SO_PEERCRED. */
  peerCheck?: PeerCheckMode;
  /** Let uid 0 connect besides our own uid. */
  allowRoot?: boolean;
  /** audit.jsonl; no audit file when absent. */
  auditPath?: string;
  /** Size cap and retention of the audit file (default 10 MiB, 5 rotated files). */
  auditRotation?: Partial<AuditRotation>;
  logger?: Logger;
  /** Per-connection limits; the benchmark raises requestsPerWindow here. */
  limits?: Partial<LimitOptions>;
  timeouts?: Partial<ServerTimeouts>;
  /** Output queued for one client before it is dropped (default 2 MiB). */
  maxOutputBytes?: number;
  /** TCP transport: how failed handshakes are delayed. */
  tcpThrottle?: TcpThrottleOptions;
  /** Simultaneous connections (default 1024); past it the longest-idle one is closed to admit a new one. */
  maxConnections?: number;
  /** Per-peer limits across connections (default: 4 × the per-connection rate, 64 in flight, 256 connections). */
  peerLimits?: Partial<PeerLimitOptions>;
  /** Run once things are quiet after a burst of closed connections (default: one full garbage collection). */
  afterBurst?: () => void;
  /** Close a connection idle (nothing in flight, nothing received) this long (default 6 minutes; the client reconnects). */
  idleTimeoutMs?: number;
  /** Login sessions; oauth_* answer INTERNAL_ERROR without it. */
  login?: LoginPort;
  /**
   * Bytes of frames above 64 KiB (version 2) held at once, per connection
   * and per server: receiving, being handled, or queued for sending. A frame
   * that does not fit closes its connection; an answer that does not fit is
   * answered RATE_LIMITED. Defaults 12 MiB and 32 MiB.
   */
  bufferBytes?: { perConnection?: number; perServer?: number };
  /** Highest protocol version agreed (default 2; 1 behaves as a version-1-only server). */
  maxProtocolVersion?: number;
}

type ServerState = 'new' | 'starting' | 'listening' | 'stopping' | 'stopped';

const DEFAULT_MAX_OUTPUT_BYTES = 2 * 1024 * 1024;
/** Enough for many agents and tools sharing one proxy; each idle connection costs a few KiB. */
const DEFAULT_MAX_CONNECTIONS = 1024;
/** Connections closed since the last full collection that make a burst worth one. */
const BURST_CLOSES = 256;
/** Longer than the client's own 5-minute idle close, so a well-behaved client always closes first. */
export const DEFAULT_IDLE_TIMEOUT_MS = 6 * 60_000;

/**
 * The proxy server (SPEC §4, §5). Owns the listening socket and its file,
 * every connection and the audit writer; start() and stop() are explicit.
 */
export class ProxyServer {
  private readonly o: ProxyServerOptions;
  private readonly logger: Logger;
  private readonly timeouts: ServerTimeouts;
  private readonly limits: LimitOptions;
  private readonly capability: CapabilityCheck | null;
  private readonly dispatcher: Dispatcher;
  private readonly connections = new Set<Connection>();
  private readonly buffers: ByteBudget;
  private readonly connectionBufferBytes: number;
  private readonly maxProtocolVersion: number;
  private state: ServerState = 'new';
  private path: string | null = null;
  private server: Server | null = null;
  private audit: AuditLog | null = null;
  private peerReader: PeerCredReader | null = null;
  private nextConnectionId = 0;
  private startPromise: Promise<void> | null = null;
  private stopPromise: Promise<void> | null = null;
  private readonly ownUid: number;
  /** Failed handshakes of every connection: one audit line per second with counts. */
  private handshakeRefusals: RefusalMeter | null = null;
  /** Refusals and connection lines, aggregated per peer across its connections. */
  private peerAudit: PeerAudit | null = null;
  /** TCP transport: failed handshakes are delayed, never valid ones. */
  private readonly tcpThrottle: TcpThrottle;
  private readonly peers: PeerTable;
  private closedSinceCollect = 0;
  private collectTimer: NodeJS.Timeout | null = null;

  constructor(options: ProxyServerOptions) {
    if ([options.socketDir, options.socketPath, options.tcp].filter((x) => x !== undefined).length !== 1) {
      throw new CredproxyError('USAGE', 'give exactly one of socketDir, socketPath and tcp');
    }
    if (options.tcp !== undefined && !options.capabilityToken) {
      throw new CredproxyError('USAGE', 'the TCP transport requires a capability token');
    }
    const peerCheck = options.peerCheck ?? 'required';
    if (peerCheck !== 'required' && peerCheck !== 'off') throw new CredproxyError('USAGE', 'peerCheck must be "required" or "off"');
    this.o = { ...options, peerCheck };
    this.logger = options.logger ?? createLogger();
    this.timeouts = { ...DEFAULT_TIMEOUTS, ...options.timeouts };
    for (const [name, value] of Object.entries(this.timeouts)) {
      if (!Number.isFinite(value) || value <= 0) throw new CredproxyError('USAGE', `timeout ${name} must be a positive number`);
    }
    this.limits = resolveLimits(options.limits);
    const perServer = options.bufferBytes?.perServer ?? DEFAULT_SERVER_BUFFER_BYTES;
    const perConnection = options.bufferBytes?.perConnection ?? DEFAULT_CONNECTION_BUFFER_BYTES;
    for (const value of [perServer, perConnection]) {
      if (!Number.isSafeInteger(value) || value < 1) throw new CredproxyError('USAGE', 'buffer byte bounds must be positive integers');
    }
    this.buffers = new ByteBudget(perServer);
    this.connectionBufferBytes = perConnection;
    this.maxProtocolVersion = options.maxProtocolVersion ?? MAX_PROTOCOL_VERSION;
    if (!Number.isInteger(this.maxProtocolVersion) || this.maxProtocolVersion < PROTOCOL_VERSION || this.maxProtocolVersion > MAX_PROTOCOL_VERSION) {
      throw new CredproxyError('USAGE', `maxProtocolVersion must be ${PROTOCOL_VERSION} to ${MAX_PROTOCOL_VERSION}`);
    }
    this.tcpThrottle = new TcpThrottle(options.tcpThrottle);
    this.peers = new PeerTable(this.limits, { ...defaultPeerLimits(this.limits), ...options.peerLimits });
    this.capability = options.capabilityToken === undefined ? null : new CapabilityCheck(options.capabilityToken);
    this.ownUid = typeof process.getuid === 'function' ? process.getuid() : -1;
    const dispatcherOptions: ConstructorParameters<typeof Dispatcher>[0] = {
      tokens: options.tokens,
      keys: options.keys,
      credentials: options.credentials,
      policy: options.policy,
      logger: this.logger,
      hostOpTimeoutMs: this.timeouts.hostOpMs,
      credentialOpTimeoutMs: this.timeouts.credentialOpMs,
    };
    if (options.login !== undefined) dispatcherOptions.login = options.login;
    this.dispatcher = new Dispatcher(dispatcherOptions);
  }

  /** The socket the server listens on; known once start() has begun. */
  get socketPath(): string {
    if (this.path === null) throw new CredproxyError('USAGE', 'the server has not been started');
    return this.path;
  }

  /** True when every connection's peer uid is checked. */
  get peerCheckActive(): boolean {
    return this.peerReader !== null;
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  /** Bytes of large frames the server holds right now (see bufferBytes). */
  get bufferedLargeBytes(): number {
    return this.buffers.inUse;
  }

  start(): Promise<void> {
    if (this.state !== 'new') return Promise.reject(new CredproxyError('USAGE', 'a server can be started only once'));
    this.state = 'starting';
    this.startPromise = this.startListening().then(
      () => {
        this.state = 'listening';
      },
      async (err: unknown) => {
        await this.releaseAfterFailedStart();
        this.state = 'stopped';
        throw err;
      },
    );
    return this.startPromise;
  }

  private async startListening(): Promise<void> {
    if (this.o.tcp !== undefined) return this.startTcp(this.o.tcp);
    const path = this.o.socketPath ?? makeSocketPath(this.o.socketDir!);
    // Checked before anything is created: a refused path leaves no trace.
    assertSocketPathLength(path);
    await this.loadPeerCheck();
    prepareSocketDir(dirname(path));
    await removeStaleSocket(path);
    this.path = path;
    const server = await this.openAuditAndServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (err: NodeJS.ErrnoException) => this.logger.error({ code: err.code }, 'server socket error'));
    // The directory is 0700 already; this keeps the socket private even if
    // the directory is later opened up.
    chmodSync(path, 0o600);
    this.logger.info({ socket: path, peerCheck: this.peerCheckActive, policy: this.o.policy.describe() }, 'credproxy server listening');
  }

  /** What both transports share: the audit writer and the net.Server owned by this object. */
  private async openAuditAndServer(): Promise<Server> {
    if (this.o.auditPath !== undefined) {
      const audit = new AuditLog({ path: this.o.auditPath, logger: this.logger, ...(this.o.auditRotation ? { rotation: this.o.auditRotation } : {}) });
      await audit.open();
      this.audit = audit;
    }
    this.handshakeRefusals = new RefusalMeter({ audit: this.audit, peer: { connectionId: 0, pid: null, uid: null }, remote: null });
    this.peerAudit = new PeerAudit({ audit: this.audit });
    const server = createServer({ allowHalfOpen: true }, (socket) => this.onConnection(socket));
    this.server = server;
    return server;
  }

  private async startTcp(tcp: { host: string; port: number }): Promise<void> {
    const server = await this.openAuditAndServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) =>
        reject(new CredproxyError('USAGE', `cannot listen on ${tcp.host}:${tcp.port} (${err.code ?? 'error'}); choose another --transport tcp:ADDR`)),
      );
      server.listen(tcp.port, tcp.host, () => resolve());
    });
    server.on('error', (err: NodeJS.ErrnoException) => this.logger.error({ code: err.code }, 'server socket error'));
    const { address, port } = server.address() as { address: string; port: number };
    this.path = `tcp://${address.includes(':') ? `[${address}]` : address}:${port}`;
    this.logger.info({ socket: this.path, peerCheck: false, policy: this.o.policy.describe() }, 'credproxy server listening (TCP: capability token required, no peer check)');
  }

  /** Only a Unix socket leaves a file behind. */
  private removeSocketFile(): void {
    if (this.path !== null && this.o.tcp === undefined) unlinkSocket(this.path);
  }

  private async loadPeerCheck(): Promise<void> {
    if (this.o.peerCheck === 'off') return;
    const loaded = loadPeerCredReader();
    if (loaded.ok) {
      this.peerReader = loaded.reader;
      return;
    }
    if (process.platform === 'linux') {
      throw new CredproxyError('INTERNAL_ERROR', `the peer check cannot run (${loaded.reason}); pass --no-peer-check to start without it`);
    }
    this.logger.warn({ reason: loaded.reason }, 'peer checks are unavailable on this platform; relying on socket permissions and the capability token');
  }

  private async releaseAfterFailedStart(): Promise<void> {
    const server = this.server;
    this.server = null;
    // Only a socket we were listening on is ours to remove.
    if (server?.listening) {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      this.removeSocketFile();
    }
    await this.audit?.close();
    this.audit = null;
  }

  private onConnection(socket: Socket): void {
    const id = ++this.nextConnectionId;
    if (this.state !== 'listening') {
      socket.destroy();
      return;
    }
    const peer: PeerIdentity = { connectionId: id, pid: null, uid: null };
    const remote = this.o.tcp !== undefined ? (socket.remoteAddress ?? 'unknown') : null;
    if (this.peerReader !== null) {
      try {
        const cred = this.peerReader.read(socket);
        peer.pid = cred.pid;
        peer.uid = cred.uid;
      } catch (err) {
        this.logger.warn({ conn: id, code: err instanceof CredproxyError ? err.code : undefined }, 'could not read peer credentials; connection refused');
        this.auditConnectRefused(peer, 'INTERNAL_ERROR');
        socket.destroy();
        return;
      }
      if (!isPeerAllowed({ pid: peer.pid, uid: peer.uid, gid: 0 }, this.ownUid, this.o.allowRoot ?? false)) {
        this.logger.warn({ conn: id, peerPid: peer.pid, peerUid: peer.uid }, 'refused a peer running as another user');
        this.auditConnectRefused(peer, 'UNAUTHORIZED');
        socket.destroy();
        return;
      }
    }
    const key = peerKey(peer, this.o.tcp !== undefined ? 'tcp' : 'unix');
    if (!this.makeRoom(key)) {
      this.logger.warn({ conn: id, peerPid: peer.pid }, 'refused a connection: every connection is busy');
      this.auditConnectRefused(peer, 'RATE_LIMITED');
      socket.destroy();
      return;
    }
    const peerAudit = this.peerAudit;
    const auditRemote = remote === null ? null : `${remote}:${socket.remotePort ?? 0}`;
    const conn = new Connection({
      id,
      socket,
      peer,
      peerLimiter: this.peers.limiterFor(key),
      idleTimeoutMs: this.o.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS,
      onReady: (c) => this.peers.add(key, c),
      remote: auditRemote,
      onHandshakeRefused: (code) => this.handshakeRefusals?.note('handshake', code),
      ...(peerAudit !== null
        ? {
            peerAudit: {
              refused: (code: string, op: string) => peerAudit.refused(key, peer, auditRemote, code, op),
              connection: (entry) => peerAudit.connection(key, entry, peer, auditRemote),
            },
          }
        : {}),
      capability: this.capability,
      dispatcher: this.dispatcher,
      limits: this.limits,
      handshakeTimeoutMs: this.timeouts.handshakeMs,
      frameTimeoutMs: this.timeouts.frameMs,
      maxOutputBytes: this.o.maxOutputBytes ?? DEFAULT_MAX_OUTPUT_BYTES,
      bytes: new ConnectionBytes(this.buffers, this.connectionBufferBytes),
      maxVersion: this.maxProtocolVersion,
      audit: this.audit,
      logger: this.logger,
      onClose: (c) => {
        this.connections.delete(c);
        this.peers.remove(key, c);
        this.o.login?.connectionClosed?.(c.peer);
        this.noteClosed();
      },
      ...(remote !== null ? { handshakeFailureDelayMs: () => this.tarpit(remote, socket) } : {}),
    });
    this.connections.add(conn);
    conn.start();
  }

  /** A login from the sandbox reached a milestone: one audit line (the launcher also says it on stderr). */
  recordLogin(event: LoginEvent): void {
    this.audit?.record({
      time: new Date().toISOString(),
      conn: event.peer.connectionId,
      peerPid: event.peer.pid,
      peerUid: event.peer.uid,
      op: `login_${event.phase}`,
      provider: event.provider,
      bucket: event.bucket,
      flow: event.flow,
      ...(event.account !== undefined ? { account: event.account } : {}),
      result: event.code ?? 'OK',
      durationMs: 0,
    });
  }

  /**
   * Connection caps (per peer, and in total) never lock a client out: at a
   * cap the longest-idle connection (nothing in flight) is closed for the
   * new one; its client reconnects on its next call. Only when every
   * connection is busy is the new one refused.
   */
  private makeRoom(key: string): boolean {
    if (this.peers.count(key) >= this.peers.maxConnections) {
      const victim = this.peers.longestIdle(key);
      if (victim === null) return false;
      this.evict(victim, 'peer connection cap');
    }
    const max = this.o.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
    if (this.connections.size < max) return true;
    // A connection still in its handshake first (oldest first), else the longest-idle one.
    let victim: Connection | null = null;
    for (const c of this.connections) {
      if (!c.isReady && !c.isClosed) {
        victim = c;
        break;
      }
    }
    victim ??= this.peers.longestIdle();
    if (victim === null) return false;
    this.evict(victim, 'connection cap');
    return true;
  }

  /**
   * After a burst of connections has gone (a flood, hundreds of clients that
   * never read), one full collection once things are quiet: V8 keeps a grown
   * heap for good otherwise, and an idle proxy would hold the burst's memory.
   */
  private noteClosed(): void {
    this.closedSinceCollect++;
    if (this.closedSinceCollect < BURST_CLOSES || this.state !== 'listening') return;
    if (this.collectTimer !== null) clearTimeout(this.collectTimer);
    this.collectTimer = setTimeout(() => {
      this.collectTimer = null;
      this.closedSinceCollect = 0;
      (this.o.afterBurst ?? collectGarbage)();
    }, 500);
    this.collectTimer.unref();
  }

  private evict(conn: Connection, why: string): void {
    this.logger.debug({ conn: conn.id, why }, 'closing an idle connection to admit a new one');
    // Counted as gone at once: the socket's close event comes later.
    this.connections.delete(conn);
    this.peers.remove(peerKey(conn.peer, this.o.tcp !== undefined ? 'tcp' : 'unix'), conn);
    conn.destroy();
  }

  /** TCP: a failed handshake's answer waits this long (the socket's tarpit slot is freed when it closes). */
  private tarpit(remote: string, socket: Socket): number {
    const delay = this.tcpThrottle.failure(remote);
    if (delay > 0) socket.once('close', () => this.tcpThrottle.release());
    return delay;
  }

  private auditConnectRefused(peer: PeerIdentity, result: string): void {
    const entry = { time: new Date().toISOString(), conn: peer.connectionId, peerPid: peer.pid, peerUid: peer.uid, op: 'connect', result, durationMs: 0 };
    this.peerAudit?.connection(peerKey(peer, this.o.tcp !== undefined ? 'tcp' : 'unix'), entry, peer, null);
  }

  /**
   * Stop accepting, give in-flight work up to shutdownGraceMs, close every
   * connection, remove the socket file and flush the audit log. Idempotent.
   */
  stop(): Promise<void> {
    if (this.stopPromise !== null) return this.stopPromise;
    if (this.state === 'new' || this.state === 'stopped') {
      this.state = 'stopped';
      this.stopPromise = Promise.resolve();
      return this.stopPromise;
    }
    this.stopPromise = this.doStop();
    return this.stopPromise;
  }

  private async doStop(): Promise<void> {
    // A stop that races start() lets it finish first, so nothing it opens leaks.
    if (this.state === 'starting') await this.startPromise?.catch(() => undefined);
    if (this.state === 'stopped') return;
    this.state = 'stopping';
    const server = this.server;
    const closed = server === null ? Promise.resolve() : new Promise<void>((resolve) => server.close(() => resolve()));
    const idle = Promise.all([...this.connections].map((c) => c.beginShutdown()));
    let graceTimer: NodeJS.Timeout | undefined;
    // Not unref'd: this timer is the shutdown itself.
    const grace = new Promise<void>((resolve) => {
      graceTimer = setTimeout(resolve, this.timeouts.shutdownGraceMs);
    });
    await Promise.race([idle, grace]);
    clearTimeout(graceTimer);
    if (this.collectTimer !== null) clearTimeout(this.collectTimer);
    for (const c of this.connections) c.destroy();
    await closed;
    this.removeSocketFile();
    this.peerAudit?.flush();
    this.handshakeRefusals?.flush();
    await this.audit?.close();
    this.audit = null;
    this.server = null;
    this.state = 'stopped';
    this.logger.info('credproxy server stopped');
  }

  /** Synchronous last resort when the process must exit right now. */
  removeSocketNow(): void {
    this.removeSocketFile();
  }
}

export interface SignalHandlerOptions {
  /** Default process.exit. */
  exit?: (code: number) => void;
  logger?: Logger;
}

/**
 * SIGINT/SIGTERM: stop the server (socket removed) and exit with 128+signal.
 * A second signal while stopping removes the socket and exits at once.
 * Returns a function that uninstalls the handlers.
 */
export function installSignalHandlers(server: ProxyServer, options: SignalHandlerOptions = {}): () => void {
  const exit = options.exit ?? ((code: number) => process.exit(code));
  let stopping = false;
  const handler = (signal: NodeJS.Signals): void => {
    const code = 128 + (osConstants.signals[signal] ?? 0);
    if (stopping) {
      server.removeSocketNow();
      exit(code);
      return;
    }
    stopping = true;
    server.stop().then(
      () => exit(code),
      (err: unknown) => {
        options.logger?.error({ code: err instanceof CredproxyError ? err.code : undefined }, 'server stop failed');
        server.removeSocketNow();
        exit(1);
      },
    );
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  return () => {
    process.off('SIGINT', handler);
    process.off('SIGTERM', handler);
  };
}
