// The proxy variables live with the relay, which sets them inside the sandbox and must load nothing outside its directory.
export { NO_PROXY_HOSTS, proxyEnv } from '../gateway/relay.js';
