import { randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { CredproxyError } from '../errors.js';

/**
 * sun_path holds 108 bytes on Linux and 104 on macOS/BSD, NUL included.
 * A longer path would be truncated by the kernel and the client would
 * connect to a different file, so it is refused instead.
 */
export function maxSocketPathBytes(platform: NodeJS.Platform = process.platform): number {
  return platform === 'linux' || platform === 'android' ? 107 : 103;
}

/** `<dir>/credproxy-<pid>-<16 hex random>.sock` (SPEC §5). */
export function makeSocketPath(dir: string, pid: number = process.pid): string {
  return join(dir, `credproxy-${pid}-${randomBytes(8).toString('hex')}.sock`);
}

/** Throws USAGE naming the length limit and asking for a shorter --socket-dir. */
export function assertSocketPathLength(path: string, platform: NodeJS.Platform = process.platform): void {
  const bytes = Buffer.byteLength(path, 'utf8');
  const max = maxSocketPathBytes(platform);
  if (bytes > max) {
    throw new CredproxyError(
      'USAGE',
      `socket path ${path} is ${bytes} bytes, longer than the ${max} bytes this platform allows; choose a shorter --socket-dir (e.g. one under /tmp)`,
    );
  }
}

/**
 * Create the socket directory 0700, or accept an existing one only when it is
 * a directory of ours that nobody else can enter. An existing looser directory
 * is refused rather than tightened: `--socket-dir /tmp` must not chmod /tmp.
 */
export function prepareSocketDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = lstatSync(dir);
  if (!st.isDirectory()) throw new CredproxyError('USAGE', `socket directory ${dir} is not a directory; choose another --socket-dir`);
  const uid = typeof process.getuid === 'function' ? process.getuid() : st.uid;
  if (st.uid !== uid) {
    throw new CredproxyError('USAGE', `socket directory ${dir} is owned by uid ${st.uid}, not by you (${uid}); choose another --socket-dir`);
  }
  if ((st.mode & 0o077) !== 0) {
    throw new CredproxyError(
      'USAGE',
      `socket directory ${dir} has mode ${(st.mode & 0o777).toString(8)}, it must be 0700; choose another --socket-dir or run chmod 700 on it`,
    );
  }
}

/** True when something accepts connections on the socket at `path`. */
function socketIsLive(path: string, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect(path);
    const timer = setTimeout(() => finish(true), timeoutMs);
    timer.unref();
    // A listener that does not answer within the timeout is treated as live:
    // removing a socket someone still serves would silently hijack it.
    function finish(live: boolean): void {
      clearTimeout(timer);
      sock.destroy();
      resolve(live);
    }
    sock.once('connect', () => finish(true));
    sock.once('error', () => finish(false));
  });
}

/**
 * Remove a stale socket file left at `path` by a server that died. A socket
 * somebody still listens on, or a file that is not a socket, is refused.
 */
export async function removeStaleSocket(path: string, probeTimeoutMs = 1000): Promise<boolean> {
  let st;
  try {
    st = lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
  if (!st.isSocket()) {
    throw new CredproxyError('USAGE', `${path} exists and is not a socket; refusing to replace it`);
  }
  if (await socketIsLive(path, probeTimeoutMs)) {
    throw new CredproxyError('USAGE', `another server is listening on ${path}`);
  }
  unlinkSync(path);
  return true;
}

/** Unlink our socket file on stop; a file already gone is fine. */
export function unlinkSocket(path: string): void {
  try {
    if (lstatSync(path).isSocket()) unlinkSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}
