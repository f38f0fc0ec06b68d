import { readFileSync } from 'node:fs';
import type { PeerIdentity } from '../server/context.js';

/** A process's start time, to tell a pid apart from a later process that reuses it; null when unknown. */
export type ProcessStartTime = (pid: number) => string | null;

/**
 * Linux: field 22 of /proc/<pid>/stat (clock ticks since boot). Elsewhere,
 * or when the process is gone (a zombie is gone: its sockets are closed and
 * it will never ask again): null.
 */
export function procStartTime(pid: number): string | null {
  if (process.platform !== 'linux') return null;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses; the fields after its last ')' are fixed.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (fields[0] === 'Z' || fields[0] === 'X') return null;
    return fields[19] ?? null;
  } catch {
    return null;
  }
}

/**
 * Who owns a login session. With peer credentials, the peer process
 * (uid + pid + start time): its sessions survive the client's idle
 * reconnect (a new connection from the same process), while any other
 * process, including one that later reuses the pid, is a stranger. Without
 * peer credentials (peer checks off, TCP), the connection itself.
 *
 * The capability is implicit: a session manager belongs to one server, and
 * that server admits only holders of its own capability token.
 */
export function ownerKey(peer: PeerIdentity, startTimeOf: ProcessStartTime = procStartTime): string {
  if (peer.pid === null || peer.uid === null) return `conn:${peer.connectionId}`;
  return `proc:${peer.uid}:${peer.pid}:${startTimeOf(peer.pid) ?? '-'}`;
}

/**
 * Whether the owner of a session is gone: without peer credentials, its
 * connection closed; with them, the peer's process no longer has the owner
 * key it had (it exited, or its pid now names another process).
 */
export function ownerGone(owner: string, peer: PeerIdentity, closedConnectionId: number | null, startTimeOf: ProcessStartTime = procStartTime): boolean {
  if (peer.pid === null || peer.uid === null) return peer.connectionId === closedConnectionId;
  return ownerKey(peer, startTimeOf) !== owner;
}
