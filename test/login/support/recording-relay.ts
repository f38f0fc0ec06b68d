import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';

/**
 * A Unix-socket relay between clients and a real proxy socket that keeps
 * every byte in both directions, so a test can sweep all frames a client
 * received, whatever client library produced them. The proxy sees the relay
 * (this process) as the peer.
 */
/** What crossed one relayed connection, in order. */
export interface RelayedConnection {
  n: number;
  /** client -> proxy */
  up: Buffer[];
  /** proxy -> client */
  down: Buffer[];
}

export class RecordingRelay {
  /** Bytes the proxy sent to clients. */
  readonly toClient: Buffer[] = [];
  /** Bytes clients sent to the proxy. */
  readonly toProxy: Buffer[] = [];
  /** The same bytes, per connection. */
  readonly conns: RelayedConnection[] = [];
  private readonly sockets = new Set<Socket>();

  private constructor(
    private readonly server: Server,
    private readonly dir: string,
    readonly path: string,
  ) {}

  static async start(target: string): Promise<RecordingRelay> {
    const dir = mkdtempSync('/tmp/cprelay-');
    const path = join(dir, 'relay.sock');
    const server = createServer();
    const relay = new RecordingRelay(server, dir, path);
    server.on('connection', (client) => {
      const rec: RelayedConnection = { n: relay.conns.length, up: [], down: [] };
      relay.conns.push(rec);
      const upstream = connect(target);
      for (const s of [client, upstream]) {
        relay.sockets.add(s);
        s.on('error', () => undefined);
        s.on('close', () => {
          relay.sockets.delete(s);
          client.destroy();
          upstream.destroy();
        });
      }
      client.on('data', (d: Buffer) => {
        relay.toProxy.push(d);
        rec.up.push(d);
        upstream.write(d);
      });
      upstream.on('data', (d: Buffer) => {
        relay.toClient.push(d);
        rec.down.push(d);
        client.write(d);
      });
    });
    await new Promise<void>((resolve) => server.listen(path, resolve));
    return relay;
  }

  get toClientText(): string {
    return Buffer.concat(this.toClient).toString('utf8');
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    rmSync(this.dir, { recursive: true, force: true });
  }
}
