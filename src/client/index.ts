export {
  ProxySocketClient,
  DEFAULT_CONNECT_TIMEOUT_MS,
  DEFAULT_IDLE_TIMEOUT_MS,
  DEFAULT_REQUEST_TIMEOUT_MS,
  type ProxySocketClientOptions,
  type ProxySocketClientTimeouts,
} from './socket-client.js';
export { CONNECTION_LOST_MESSAGE } from './proxy-connection.js';
export { ProxyTokenStore } from './proxy-token-store.js';
export { ProxyKeyStore, KEY_MANAGEMENT_UNAVAILABLE } from './proxy-key-store.js';
export { parseSocketAddress, describeAddress, type SocketAddress } from './socket-address.js';
