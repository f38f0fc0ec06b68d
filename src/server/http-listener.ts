import net, { type AddressInfo, type Socket } from 'node:net';
import { isForeignLoopbackPeer } from './tcp-peer.js';

/** A Unix socket path, or a TCP address (the host's loopback in practice). */
export type ListenAt = { host: string; port: number } | { path: string };

export interface HttpListenerOptions {
  maxConnections: number;
  /** Stream buffers of the accepted sockets (http.createServer's own option never reaches them). */
  highWaterMark?: number;
  /**
   * How long a connection may take to send a request's head, counted from
   * when it opened or from when its last request was answered
   * (headArrived / answered). A slowloris client, silent or trickling, is
   * closed when it runs out.
   * (http.Server's own headersTimeout is checked only for connections it
   * accepted through its own listen(), never for ones handed to it.)
   */
  headDeadlineMs: number;
  /** A head that did not arrive in time: answer and count it; the connection is closed after. */
  onHeadTimeout(socket: Socket): void;
  /** A connection turned away because maxConnections were open. */
  onBusy(): void;
  /** A TCP connection from another uid's process, closed before a byte was read. */
  onForeignPeer(): void;
  /** Every other connection, to hand to the HTTP server. */
  onConnection(socket: Socket): void;
}

interface ConnectionState {
  deadline: NodeJS.Timeout | null;
  inFlight: number;
}

/**
 * The listeners behind the gateway and the egress proxy: each accepts on a
 * Unix socket path or a TCP address and hands its connections on. On TCP,
 * where any local user can connect, only our own uid's processes get
 * through. Every accepted connection is tracked, so close() can end them
 * (idle keep-alive ones included) instead of waiting for them.
 */
export class HttpListeners {
  private readonly servers: net.Server[] = [];
  /** Every open connection: the deadline of the head it is waiting for, if any, and its requests not yet answered. */
  private readonly open = new Map<Socket, ConnectionState>();

  constructor(private readonly o: HttpListenerOptions) {}

  /** Connections open now. */
  get connections(): number {
    return this.open.size;
  }

  /** Listen at `where`; resolves with what clients use to reach it: the path, or an http:// base URL. */
  async listen(where: ListenAt): Promise<string> {
    const tcp = !('path' in where);
    // Half-open as http.Server itself makes them: a tunnel's client may end its side and still read the answer.
    const options = { noDelay: true, allowHalfOpen: true, ...(this.o.highWaterMark === undefined ? {} : { highWaterMark: this.o.highWaterMark }) };
    const server = net.createServer(options, (socket) => {
      if (tcp && isForeignLoopbackPeer(socket)) {
        this.o.onForeignPeer();
        socket.destroy();
        return;
      }
      const state: ConnectionState = { deadline: null, inFlight: 0 };
      this.open.set(socket, state);
      socket.once('close', () => {
        if (state.deadline) clearTimeout(state.deadline);
        this.open.delete(socket);
      });
      this.armHeadDeadline(socket, state);
      this.o.onConnection(socket);
    });
    server.maxConnections = this.o.maxConnections;
    server.on('drop', () => this.o.onBusy());
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      if ('path' in where) server.listen(where.path, () => resolve());
      else server.listen(where.port, where.host, () => resolve());
    });
    this.servers.push(server);
    if ('path' in where) return where.path;
    const addr = server.address() as AddressInfo;
    return `http://${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}`;
  }

  /** A request's head has been read from `socket`: no deadline until it is answered. */
  headArrived(socket: Socket): void {
    const state = this.open.get(socket);
    if (state === undefined) return;
    state.inFlight++;
    if (state.deadline) clearTimeout(state.deadline);
    state.deadline = null;
  }

  /**
   * A request on `socket` has been answered: once none is left (a client may
   * pipeline), the connection waits for its next head under the deadline.
   */
  answered(socket: Socket): void {
    const state = this.open.get(socket);
    if (state === undefined || socket.destroyed) return;
    state.inFlight = Math.max(0, state.inFlight - 1);
    if (state.inFlight === 0) this.armHeadDeadline(socket, state);
  }

  private armHeadDeadline(socket: Socket, state: ConnectionState): void {
    if (state.deadline) clearTimeout(state.deadline);
    state.deadline = setTimeout(() => {
      state.deadline = null;
      this.o.onHeadTimeout(socket);
      socket.destroySoon();
      // Whatever it does not read of the answer is not waited for.
      setTimeout(() => socket.destroy(), 1000).unref();
    }, this.o.headDeadlineMs);
    state.deadline.unref();
  }

  /** Stop accepting and end every connection; the connections are destroyed before this returns its promise. */
  close(): Promise<void> {
    const closed = Promise.all(this.servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
    for (const s of this.open.keys()) s.destroy();
    return closed.then(() => undefined);
  }
}

/** What listenAll drives: the gateway and the egress proxy. */
export interface HttpFront {
  listen(where: ListenAt): Promise<string>;
  stop(): Promise<void>;
}

/**
 * Start `front` on every address, with its (opened) audit log: on a failure
 * nothing is left running. `stop()` stops it once, then closes the log.
 */
export async function listenAll(front: HttpFront, audit: { close(): Promise<void> }, where: readonly ListenAt[]): Promise<{ addresses: string[]; stop(): Promise<void> }> {
  const addresses: string[] = [];
  try {
    for (const w of where) addresses.push(await front.listen(w));
  } catch (err) {
    await front.stop();
    await audit.close();
    throw err;
  }
  let stopped: Promise<void> | undefined;
  return {
    addresses,
    stop: () => (stopped ??= front.stop().finally(() => audit.close())),
  };
}
