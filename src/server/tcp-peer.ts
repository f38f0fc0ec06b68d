import { readFileSync } from 'node:fs';
import { isIPv4, isIPv6, type Socket } from 'node:net';
import { ipv6ToBytes } from '../ip.js';
import { libcFunction } from '../libc.js';

/**
 * The uid that owns the other end of a loopback TCP connection, the way
 * SO_PEERCRED answers it for a Unix socket. null when it cannot be told:
 * not Linux, not loopback, or the client already gone.
 *
 * The kernel is asked for that one socket (sock_diag, what `ss` uses): the
 * cost stays the same however many connections a flood leaves behind.
 * Where netlink cannot be used, /proc/net/tcp is scanned instead. A kernel
 * without the inet_diag module answers "no such socket" to everything, so
 * until sock_diag has once named a uid, its "no such socket" is checked
 * against /proc.
 */
export function loopbackPeerUid(socket: Socket, diag: SockDiag | null = sockDiag(), read: (path: string) => string = readProc): number | null {
  if (process.platform !== 'linux') return null;
  const answer = diagPeerUid(socket, diag);
  if (typeof answer === 'number') {
    if (diag !== null) diag.answered = true;
    return answer;
  }
  if (answer === null && diag?.answered === true) return null;
  return procPeerUid(socket, read);
}

const readProc = (path: string): string => readFileSync(path, 'utf8');

interface Tuple {
  family: typeof AF_INET | typeof AF_INET6;
  /** Their address and port: the client socket's local end. */
  src: Buffer;
  sport: number;
  /** Ours: the client socket's remote end. */
  dst: Buffer;
  dport: number;
}

function tupleOf(socket: Socket): Tuple | null {
  const { localAddress, localPort, remoteAddress, remotePort } = socket;
  if (localAddress === undefined || localPort === undefined || remoteAddress === undefined || remotePort === undefined) return null;
  const theirs = addressBytes(remoteAddress);
  const ours = addressBytes(localAddress);
  if (theirs === null || ours === null || theirs.length !== ours.length) return null;
  return { family: theirs.length === 4 ? AF_INET : AF_INET6, src: theirs, sport: remotePort, dst: ours, dport: localPort };
}

/** Network-order bytes; an IPv4-mapped IPv6 address as its IPv4 (the kernel finds either socket by it). */
function addressBytes(address: string): Buffer | null {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  const v4 = mapped ? mapped[1]! : isIPv4(address) ? address : null;
  if (v4 !== null) return Buffer.from(v4.split('.').map(Number));
  const bytes = ipv6ToBytes(address);
  return bytes === null ? null : Buffer.from(bytes);
}

const AF_INET = 2;
const AF_INET6 = 10;
const AF_NETLINK = 16;
const SOCK_DGRAM_CLOEXEC = 2 | 0o2000000;
const NETLINK_SOCK_DIAG = 4;
const SOCK_DIAG_BY_FAMILY = 20;
const NLM_F_REQUEST = 1;
const NLMSG_ERROR = 2;
const ENOENT = 2;
const MSG_DONTWAIT = 0x40;
const IPPROTO_TCP = 6;
const TCP_TIME_WAIT = 6;
const TCP_LISTEN = 10;
/** nlmsghdr (16) + inet_diag_req_v2 (8 + inet_diag_sockid 48). */
const REQUEST_SIZE = 72;
/** nlmsghdr (16) + inet_diag_msg up to idiag_uid (64): family, state, timer, retrans, the sockid (at 20), expires, queues. */
const UID_OFFSET = 16 + 64;

export interface SockDiag {
  /** Set once the kernel has named a uid: its "no such socket" is then believed. */
  answered?: boolean;
  socket(domain: number, type: number, protocol: number): number;
  send(fd: number, buf: Buffer, len: number, flags: number): number;
  recv(fd: number, buf: Buffer, len: number, flags: number): number;
  close(fd: number): number;
}

let loaded: SockDiag | null | undefined;

export function sockDiag(): SockDiag | null {
  if (loaded === undefined) {
    const socket = libcFunction<SockDiag['socket']>('int socket(int domain, int type, int protocol)');
    const send = libcFunction<SockDiag['send']>('long send(int fd, const void *buf, size_t len, int flags)');
    const recv = libcFunction<SockDiag['recv']>('long recv(int fd, _Out_ void *buf, size_t len, int flags)');
    const close = libcFunction<SockDiag['close']>('int close(int fd)');
    loaded = socket && send && recv && close ? { socket, send, recv, close } : null;
  }
  return loaded;
}

/**
 * One exact-match SOCK_DIAG_BY_FAMILY request (no dump) for the client's
 * socket: its owner's uid, null when the kernel has no such live socket,
 * undefined when the kernel could not be asked.
 */
export function diagPeerUid(socket: Socket, diag: SockDiag | null = sockDiag()): number | null | undefined {
  if (diag === null) return undefined;
  const t = tupleOf(socket);
  if (t === null) return null;
  const req = Buffer.alloc(REQUEST_SIZE);
  req.writeUInt32LE(REQUEST_SIZE, 0);
  req.writeUInt16LE(SOCK_DIAG_BY_FAMILY, 4);
  req.writeUInt16LE(NLM_F_REQUEST, 6);
  req.writeUInt32LE(1, 8);
  req[16] = t.family;
  req[17] = IPPROTO_TCP;
  req.writeUInt32LE(0xffffffff, 20); // every state
  req.writeUInt16BE(t.sport, 24);
  req.writeUInt16BE(t.dport, 26);
  t.src.copy(req, 28);
  t.dst.copy(req, 44);
  req.writeUInt32LE(0xffffffff, 64); // INET_DIAG_NOCOOKIE
  req.writeUInt32LE(0xffffffff, 68);
  const fd = diag.socket(AF_NETLINK, SOCK_DGRAM_CLOEXEC, NETLINK_SOCK_DIAG);
  if (fd < 0) return undefined;
  try {
    if (diag.send(fd, req, REQUEST_SIZE, 0) !== REQUEST_SIZE) return undefined;
    // The kernel answers within send(); nothing to wait for.
    const res = Buffer.alloc(512);
    const n = diag.recv(fd, res, res.length, MSG_DONTWAIT);
    if (n < 16) return undefined;
    if (res.readUInt16LE(4) === NLMSG_ERROR) return n >= 20 && res.readInt32LE(16) === -ENOENT ? null : undefined;
    if (n < UID_OFFSET + 4 || res.readUInt16LE(4) !== SOCK_DIAG_BY_FAMILY) return undefined;
    // With no connection of that address the kernel falls back to a listener
    // on it, and a TIME_WAIT socket has no owner (it reads as uid 0): only
    // the client's own, live socket names a uid.
    const state = res[17]!;
    if (state === TCP_LISTEN || state === TCP_TIME_WAIT) return null;
    if (res.readUInt16BE(20) !== t.sport || res.readUInt16BE(22) !== t.dport) return null;
    // An IPv6 socket connected to ::ffff:a.b.c.d is found by the IPv4 address and reported in the mapped form.
    const width = res[16] === AF_INET6 ? 16 : 4;
    if (!res.subarray(24, 24 + width).equals(widen(t.src, width)) || !res.subarray(40, 40 + width).equals(widen(t.dst, width))) return null;
    return res.readUInt32LE(UID_OFFSET);
  } finally {
    diag.close(fd);
  }
}

/** An address in `width` bytes: an IPv4 one as ::ffff:a.b.c.d when 16 are wanted. */
function widen(address: Buffer, width: number): Buffer {
  if (address.length === width) return address;
  if (address.length === 4 && width === 16) return Buffer.concat([Buffer.alloc(10), Buffer.from([0xff, 0xff]), address]);
  return Buffer.alloc(0);
}

/**
 * Linux lists every TCP socket in /proc/net/tcp{,6} with its owner; the
 * client's socket is the one whose local address is our remote one and
 * whose remote address is our local one. Its cost grows with the table.
 */
export function procPeerUid(socket: Socket, read: (path: string) => string = readProc): number | null {
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
        // As above: a TIME_WAIT socket has no owner.
        if (parseInt(f[3]!, 16) === TCP_TIME_WAIT) return null;
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
  const bytes = ipv6ToBytes(address);
  if (bytes === null) return null;
  const words = [0, 4, 8, 12].map((i) => word([...bytes.subarray(i, i + 4)])).join('');
  return { v4Form: null, v6Form: `${words}:${p}` };
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
