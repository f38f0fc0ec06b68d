import type { NetConnectOpts } from 'node:net';
import { CredproxyError } from '../errors.js';

/** Where the proxy listens: a Unix socket path, or `tcp://HOST:PORT` for VM-based engines (SPEC §7). */
export type SocketAddress = { kind: 'unix'; path: string } | { kind: 'tcp'; host: string; port: number };

const TCP_PREFIX = 'tcp://';

/** Parse CREDPROXY_SOCKET-style text. Anything not starting with `tcp://` is a filesystem path. */
export function parseSocketAddress(text: string): SocketAddress {
  if (typeof text !== 'string' || text.length === 0) {
    throw new CredproxyError('CONFIG_INVALID', 'credential proxy socket address is empty');
  }
  if (!text.startsWith(TCP_PREFIX)) {
    if (text.includes('\0')) throw new CredproxyError('CONFIG_INVALID', 'credential proxy socket path contains a NUL byte');
    return { kind: 'unix', path: text };
  }
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new CredproxyError('CONFIG_INVALID', 'credential proxy address must look like tcp://HOST:PORT');
  }
  const port = Number(url.port);
  const bare = url.pathname === '' || url.pathname === '/';
  if (url.hostname === '' || !Number.isInteger(port) || port < 1 || port > 65535 || !bare || url.search !== '' || url.username !== '') {
    throw new CredproxyError('CONFIG_INVALID', 'credential proxy address must look like tcp://HOST:PORT');
  }
  // URL keeps the brackets of an IPv6 literal; net.connect wants the bare address.
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  return { kind: 'tcp', host, port };
}

export function describeAddress(address: SocketAddress): string {
  if (address.kind === 'unix') return address.path;
  const host = address.host.includes(':') ? `[${address.host}]` : address.host;
  return `${TCP_PREFIX}${host}:${address.port}`;
}

export function connectOptions(address: SocketAddress): NetConnectOpts {
  return address.kind === 'unix' ? { path: address.path } : { host: address.host, port: address.port };
}
