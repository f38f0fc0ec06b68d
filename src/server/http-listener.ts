import net, { type AddressInfo, type Socket } from 'node:net';
import { isForeignLoopbackPeer } from './tcp-peer.js';

/** A Unix socket path, or a TCP address (the host's loopback in practice). */
export type ListenAt = { host: string; port: number } | { path: string };

export interface HttpListenerOptions {
  maxConnections: number;
  /** Stream buffers of the accepted sockets (http.createServer's own option never reaches them). */
  highWaterMark?: number;
  /** A TCP connection from another uid's process, closed before a byte was read. */
  onForeignPeer(): void;
  /** Every other connection, to hand to the HTTP server. */
  onConnection(socket: Socket): void;
}

/**
 * The listener behind the gateway and the egress proxy: accepts on a Unix
 * socket path or a TCP address and hands each connection on. On TCP, where
 * any local user can connect, only our own uid's processes get through.
 * Resolves with the server and what clients use to reach it: the path, or
 * an http:// base URL.
 */
export async function listenForHttp(where: ListenAt, o: HttpListenerOptions): Promise<{ server: net.Server; address: string }> {
  const tcp = !('path' in where);
  const server = net.createServer({ noDelay: true, ...(o.highWaterMark === undefined ? {} : { highWaterMark: o.highWaterMark }) }, (socket) => {
    if (tcp && isForeignLoopbackPeer(socket)) {
      o.onForeignPeer();
      socket.destroy();
      return;
    }
    o.onConnection(socket);
  });
  server.maxConnections = o.maxConnections;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    if ('path' in where) server.listen(where.path, () => resolve());
    else server.listen(where.port, where.host, () => resolve());
  });
  if ('path' in where) return { server, address: where.path };
  const addr = server.address() as AddressInfo;
  return { server, address: `http://${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}` };
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
