import { spawn } from 'node:child_process';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { diagPeerUid, isForeignLoopbackPeer, loopbackPeerUid, procPeerUid, sockDiag, type SockDiag } from '../../src/server/tcp-peer.js';

/** A uid no process of the test runs as (the tests run as root here; see MACHINE-NOTES). */
const NOBODY = 65534;

const servers: Server[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.close();
});

/** A listener on `host` that hands over its first accepted socket. */
async function listen(host: string): Promise<{ port: number; accepted: Promise<Socket> }> {
  let hand: (s: Socket) => void = () => undefined;
  const accepted = new Promise<Socket>((r) => (hand = r));
  const server = createServer((s) => hand(s));
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, host, () => r()));
  return { port: (server.address() as { port: number }).port, accepted };
}

/** A real client process, as `uid`, that connects and holds the connection for a while. */
function clientAs(uid: number | undefined, host: string, port: number): void {
  const child = spawn(process.execPath, ['-e', `const s = require('net').connect(${port}, ${JSON.stringify(host)}); s.on('error', () => {}); setTimeout(() => process.exit(0), 3000);`], {
    stdio: 'ignore',
    cwd: '/',
    ...(uid === undefined ? {} : { uid, gid: uid }),
  });
  child.unref();
}

/** The server side of a connection a real client process (as `uid`; ours when undefined) made from `connectTo` to a listener on `listenOn`. */
async function acceptedFrom(uid: number | undefined, listenOn: string, connectTo = listenOn): Promise<Socket> {
  const l = await listen(listenOn);
  clientAs(uid, connectTo, l.port);
  return l.accepted;
}

describe('loopback TCP peer uid (sock_diag, and /proc/net/tcp where netlink cannot be used)', () => {
  it('names the uid of the process at the other end, over IPv4 and IPv6, and tells a foreign one', async () => {
    expect(process.getuid?.()).toBe(0); // the foreign client below needs root to take another uid
    for (const host of ['127.0.0.1', '::1']) {
      const mine = await acceptedFrom(undefined, host);
      expect(loopbackPeerUid(mine), host).toBe(0);
      expect(diagPeerUid(mine), host).toBe(0);
      expect(procPeerUid(mine), host).toBe(0);
      expect(isForeignLoopbackPeer(mine)).toBe(false);
      mine.destroy();

      const theirs = await acceptedFrom(NOBODY, host);
      expect(loopbackPeerUid(theirs), host).toBe(NOBODY);
      expect(diagPeerUid(theirs), host).toBe(NOBODY);
      expect(procPeerUid(theirs), host).toBe(NOBODY);
      expect(isForeignLoopbackPeer(theirs)).toBe(true);
      theirs.destroy();
    }
  });

  it('an IPv4 client of a dual-stack listener is found in tcp6 as ::ffff:a.b.c.d', async () => {
    const s = await acceptedFrom(NOBODY, '::', '127.0.0.1');
    expect(s.remoteAddress).toBe('::ffff:127.0.0.1');
    expect(diagPeerUid(s)).toBe(NOBODY);
    expect(procPeerUid(s)).toBe(NOBODY);
    s.destroy();
  });

  it('an IPv6 socket connected to ::ffff:127.0.0.1 of an IPv4 listener is found too', async () => {
    const s = await acceptedFrom(NOBODY, '127.0.0.1', '::ffff:127.0.0.1');
    expect(s.remoteAddress).toBe('127.0.0.1');
    expect(diagPeerUid(s)).toBe(NOBODY);
    expect(procPeerUid(s)).toBe(NOBODY);
    s.destroy();
  });

  it('is null, so foreign, when the table has no such connection', async () => {
    const s = await acceptedFrom(undefined, '127.0.0.1');
    expect(procPeerUid(s, () => '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid\n')).toBeNull();
    s.destroy();
  });

  it('is null from the kernel too when no socket has that address and port', async () => {
    const s = await acceptedFrom(undefined, '127.0.0.1');
    expect(diagPeerUid(s)).toBe(0);
    // The same connection as seen from a port no client holds.
    const ghost = { localAddress: s.localAddress, localPort: s.localPort, remoteAddress: s.remoteAddress, remotePort: s.localPort } as Socket;
    expect(diagPeerUid(ghost)).toBeNull();
    expect(isForeignLoopbackPeer(ghost)).toBe(true);
    s.destroy();
  });

  it('a client socket in TIME_WAIT names no one (the kernel shows such sockets as uid 0, which is root, which we are here)', async () => {
    const own = await listen('127.0.0.1');
    const client = connect(own.port, '127.0.0.1');
    const s = await own.accepted;
    const tuple = { localAddress: s.localAddress, localPort: s.localPort, remoteAddress: s.remoteAddress, remotePort: s.remotePort } as Socket;
    expect(diagPeerUid(tuple)).toBe(0);
    // The client closes first, so its side is the one that waits.
    await new Promise<void>((resolve) => {
      s.on('end', () => s.end());
      client.on('close', () => resolve());
      client.end();
    });
    await new Promise((r) => setTimeout(r, 50));
    expect(diagPeerUid(tuple)).toBeNull();
    expect(procPeerUid(tuple)).toBeNull();
  });

  it('falls back to /proc when netlink cannot be used, and until sock_diag has once named a uid', async () => {
    const theirs = await acceptedFrom(NOBODY, '127.0.0.1');
    let reads = 0;
    const counting = (path: string): string => {
      reads++;
      return readFileSync(path, 'utf8');
    };
    const cannot: SockDiag = { socket: () => -1, send: () => -1, recv: () => -1, close: () => 0 };
    expect(loopbackPeerUid(theirs, cannot, counting)).toBe(NOBODY);
    expect(reads).toBeGreaterThan(0);
    // A kernel without inet_diag answers "no such socket" (an NLMSG_ERROR) to every request.
    const real = sockDiag()!;
    const blind: SockDiag = {
      ...real,
      answered: undefined,
      recv: (fd, buf, len, flags) => {
        real.recv(fd, buf, len, flags);
        buf.writeUInt16LE(2, 4); // NLMSG_ERROR
        buf.writeInt32LE(-2, 16); // -ENOENT
        return 36;
      },
    };
    expect(diagPeerUid(theirs, blind)).toBeNull();
    reads = 0;
    expect(loopbackPeerUid(theirs, blind, counting)).toBe(NOBODY);
    expect(reads).toBeGreaterThan(0);
    // Any other error means the kernel could not be asked.
    const failing: SockDiag = {
      ...blind,
      recv: (fd, buf, len, flags) => {
        blind.recv(fd, buf, len, flags);
        buf.writeInt32LE(-1, 16); // -EPERM
        return 36;
      },
    };
    expect(diagPeerUid(theirs, failing)).toBeUndefined();
    // Once the kernel has named a uid, its "no such socket" is believed: a flood of gone clients costs no scan.
    const fresh: SockDiag = { ...real, answered: undefined };
    reads = 0;
    expect(loopbackPeerUid(theirs, fresh, counting)).toBe(NOBODY);
    const ghost = { localAddress: theirs.localAddress, localPort: theirs.localPort, remoteAddress: theirs.remoteAddress, remotePort: theirs.localPort } as Socket;
    expect(loopbackPeerUid(ghost, fresh, counting)).toBeNull();
    expect(reads).toBe(0);
    theirs.destroy();
  });
});
