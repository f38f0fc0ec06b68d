import { readFileSync } from 'node:fs';
import { isIPv4, isIPv6, type Socket } from 'node:net';

/**
 * The uid that owns the other end of a loopback TCP connection, the way
 * SO_PEERCRED answers it for a Unix socket. Linux lists every TCP socket in
 * /proc/net/tcp{,6} with its owner; the client's socket is the one whose
 * local address is our remote one and whose remote address is our local
 * one. null when it cannot be told: not Linux, not loopback, or the client
 * already gone.
 */
export function loopbackPeerUid(socket: Socket, read: (path: string) => string = (p) => readFileSync(p, 'utf8')): number | null {
  if (process.platform !== 'linux') return null;
  const { localAddress, localPort, remoteAddress, remotePort } = socket;
  if (localAddress === undefined || localPort === undefined || remoteAddress === undefined || remotePort === undefined) return null;
  const theirs = procAddress(remoteAddress, remotePort);
  const ours = procAddress(localAddress, localPort);
  if (theirs === null || ours === null) return null;
  // An IPv4 client of a dual-stack listener has an IPv4 socket (in tcp) though we see it as ::ffff:a.b.c.d.
  for (const table of theirs.v4Form === null ? ['/proc/net/tcp6'] : ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = read(table);
    } catch {
      continue;
    }
    const want = table.endsWith('6') ? [theirs.v6Form, ours.v6Form] : [theirs.v4Form, ours.v4Form ?? ''];
    for (const line of text.split('\n')) {
      const f = line.trim().split(/\s+/);
      // sl local rem st tx:rx tr:when retrnsmt uid ...
      if (f.length > 7 && f[1] === want[0] && f[2] === want[1]) {
        const uid = Number(f[7]);
        return Number.isInteger(uid) ? uid : null;
      }
    }
  }
  return null;
}

interface ProcForms {
  /** As /proc/net/tcp writes it (IPv4 and IPv4-mapped only). */
  v4Form: string | null;
  /** As /proc/net/tcp6 writes it (an IPv4 client of a dual-stack socket appears there as ::ffff:a.b.c.d). */
  v6Form: string;
}

function hex(n: number, width: number): string {
  return n.toString(16).toUpperCase().padStart(width, '0');
}

/** The kernel prints each 32-bit word of the address in host (little-endian) byte order. */
function word(bytes: number[]): string {
  return bytes
    .slice()
    .reverse()
    .map((b) => hex(b, 2))
    .join('');
}

function procAddress(address: string, port: number): ProcForms | null {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  const v4 = mapped ? mapped[1]! : isIPv4(address) ? address : null;
  const p = hex(port, 4);
  if (v4 !== null) {
    const b = v4.split('.').map(Number);
    return { v4Form: `${word(b)}:${p}`, v6Form: `${word([0, 0, 0, 0])}${word([0, 0, 0, 0])}${word([0, 0, 0xff, 0xff])}${word(b)}:${p}` };
  }
  if (!isIPv6(address)) return null;
  const bytes = ipv6Bytes(address);
  if (bytes === null) return null;
  const words = [0, 4, 8, 12].map((i) => word(bytes.slice(i, i + 4))).join('');
  return { v4Form: null, v6Form: `${words}:${p}` };
}

function ipv6Bytes(address: string): number[] | null {
  const [head, tail] = address.split('::') as [string, string | undefined];
  const parts = (s: string | undefined): number[] => (s === undefined || s === '' ? [] : s.split(':').map((h) => parseInt(h, 16)));
  const a = parts(head);
  const b = parts(tail);
  const groups = tail === undefined ? a : [...a, ...Array<number>(8 - a.length - b.length).fill(0), ...b];
  if (groups.length !== 8 || groups.some((g) => !Number.isInteger(g) || g < 0 || g > 0xffff)) return null;
  return groups.flatMap((g) => [g >> 8, g & 0xff]);
}

/**
 * For a loopback TCP listener of ours (the gateway and the egress proxy
 * with `--sandbox none` or `serve --gateway`): whether to turn a connection
 * away because another user's process made it. Elsewhere than Linux there
 * is no table to ask, and the placeholder stays the only check.
 */
export function isForeignLoopbackPeer(socket: Socket, ownUid: number | undefined = process.getuid?.()): boolean {
  if (process.platform !== 'linux' || ownUid === undefined) return false;
  return loopbackPeerUid(socket) !== ownUid;
}
