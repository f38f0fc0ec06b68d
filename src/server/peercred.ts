import type { Socket } from 'node:net';
import { CredproxyError } from '../errors.js';
import { libcFunction } from '../libc.js';

/** The connecting process as the kernel reports it (struct ucred). */
export interface PeerCred {
  pid: number;
  uid: number;
  gid: number;
}

export interface PeerCredReader {
  /** Throws CredproxyError INTERNAL_ERROR when the kernel does not answer. */
  read(socket: Socket): PeerCred;
}

export type PeerCredLoadResult = { ok: true; reader: PeerCredReader } | { ok: false; reason: string };

const SOL_SOCKET = 1;
const SO_PEERCRED = 17;
const UCRED_SIZE = 12;

type GetSockOpt = (fd: number, level: number, name: number, val: Buffer, len: number[]) => number;

/** Node keeps the descriptor on the libuv handle; there is no public accessor. */
function socketFd(socket: Socket): number {
  const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  if (typeof fd !== 'number' || !Number.isInteger(fd) || fd < 0) {
    throw new CredproxyError('INTERNAL_ERROR', 'socket has no file descriptor');
  }
  return fd;
}

class KoffiPeerCredReader implements PeerCredReader {
  constructor(private readonly getsockopt: GetSockOpt) {}

  read(socket: Socket): PeerCred {
    const buf = Buffer.alloc(UCRED_SIZE);
    const len = [UCRED_SIZE];
    const rc = this.getsockopt(socketFd(socket), SOL_SOCKET, SO_PEERCRED, buf, len);
    if (rc !== 0 || len[0] !== UCRED_SIZE) {
      throw new CredproxyError('INTERNAL_ERROR', 'getsockopt(SO_PEERCRED) failed');
    }
    return { pid: buf.readInt32LE(0), uid: buf.readUInt32LE(4), gid: buf.readUInt32LE(8) };
  }
}

/**
 * SO_PEERCRED through koffi (Node has no API for it). Only Linux has this
 * option; elsewhere, or when the FFI cannot load, the result says why.
 */
export function loadPeerCredReader(platform: NodeJS.Platform = process.platform): PeerCredLoadResult {
  if (platform !== 'linux') return { ok: false, reason: `SO_PEERCRED is not available on ${platform}` };
  const getsockopt = libcFunction<GetSockOpt>('int getsockopt(int fd, int level, int name, _Out_ void *val, _Inout_ uint32_t *len)');
  if (getsockopt === null) return { ok: false, reason: 'the koffi FFI could not load getsockopt' };
  return { ok: true, reader: new KoffiPeerCredReader(getsockopt) };
}

/** SPEC §5: only our own uid, plus root when explicitly allowed. */
export function isPeerAllowed(peer: PeerCred, ownUid: number, allowRoot: boolean): boolean {
  return peer.uid === ownUid || (allowRoot && peer.uid === 0);
}
