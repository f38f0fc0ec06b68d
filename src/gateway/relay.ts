import { spawn, type ChildProcess } from 'node:child_process';
import { constants } from 'node:os';
import net, { type AddressInfo } from 'node:net';
import { pathToFileURL } from 'node:url';
import { readFileSync } from 'node:fs';
import { configDirProblem, prepareAgentEnv, sandboxConfigParent, type AgentEnvPlan } from './agent-env.js';

/**
 * The in-sandbox half of the gateway and the egress proxy for bwrap, which
 * has no network: loopback listeners inside the sandbox's own network
 * namespace whose every connection is carried to a host server over a Unix
 * socket in the run's (read-only bound) socket directory: the gateway's
 * (CREDPROXY_GATEWAY_URL) and the egress proxy's (HTTPS_PROXY, HTTP_PROXY
 * and their lower-case forms, NO_PROXY for loopback). It is the command's
 * parent: it starts the command with those variables pointing at itself,
 * forwards the launcher's signals to it, and exits with its status.
 *
 * Usage: relay.js RELAY_CONFIG_JSON -- COMMAND [ARGS...]
 * The config names the gateway and/or egress socket paths and an optional
 * agent plan (agents.ts): variables built from the gateway's URL and copies
 * of the placeholder, which bwrap passed in CREDPROXY_TOKEN.
 */

export interface RelayConfig {
  /** The host gateway's socket, inside the sandbox. */
  gateway?: string;
  /** The host egress proxy's socket, inside the sandbox. */
  egress?: string;
  plan?: AgentEnvPlan;
  /** Pass the relay's fd 3 on to the command (llxprt-code's capability descriptor). */
  fd3?: boolean;
}

/** What the launcher relays (see sandbox/child.ts); ^Z stops the whole process group, this relay included. */
const FORWARDED: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGWINCH', 'SIGUSR1', 'SIGUSR2'];

/** `run`'s own failure status (as docker/podman): never mistaken for the command's. */
const RELAY_FAILURE_EXIT = 125;

export function relayCommand(options: { node: string; relayScript: string; config: RelayConfig; command: readonly string[] }): string[] {
  return [options.node, options.relayScript, JSON.stringify(options.config), '--', ...options.command];
}

function isPlan(p: unknown): p is AgentEnvPlan {
  const strings = (o: unknown): boolean => typeof o === 'object' && o !== null && Object.values(o).every((v) => typeof v === 'string');
  if (typeof p !== 'object' || p === null) return false;
  const q = p as Partial<AgentEnvPlan>;
  return strings(q.set) && strings(q.fromGatewayUrl) && Array.isArray(q.placeholder) && q.placeholder.every((v) => typeof v === 'string') && (q.configDir === undefined || configDirProblem(q.configDir) === null);
}

function parseConfig(text: string | undefined): RelayConfig | null {
  if (text === undefined) return null;
  try {
    const c = JSON.parse(text) as RelayConfig;
    if (typeof c !== 'object' || c === null) return null;
    if (c.gateway !== undefined && typeof c.gateway !== 'string') return null;
    if (c.egress !== undefined && typeof c.egress !== 'string') return null;
    if (c.gateway === undefined && c.egress === undefined) return null;
    if (c.plan !== undefined && (!isPlan(c.plan) || c.gateway === undefined)) return null;
    if (c.fd3 !== undefined && typeof c.fd3 !== 'boolean') return null;
    return c;
  } catch {
    return null;
  }
}

/** Hosts that never go through the egress proxy: the sandbox's own loopback, where the gateway listens. */
export const NO_PROXY_HOSTS = 'localhost,127.0.0.1,::1';

/**
 * The variables that send a command's HTTP(S) traffic through the egress
 * proxy (issue 15). Both cases: libcurl (curl, git) reads only the
 * lower-case http_proxy, most other tools the upper-case ones. Defined here,
 * not in egress/, so that the relay needs nothing outside its directory.
 */
export function proxyEnv(proxyUrl: string): Record<string, string> {
  return { HTTPS_PROXY: proxyUrl, HTTP_PROXY: proxyUrl, https_proxy: proxyUrl, http_proxy: proxyUrl, NO_PROXY: NO_PROXY_HOSTS, no_proxy: NO_PROXY_HOSTS };
}

/**
 * Carry bytes both ways between two sockets until both are closed. A side
 * that ends cleanly (FIN) has its end passed on once everything before it
 * is written (never cut short: destroying the other side there would drop
 * what it still buffers); a side that fails or goes without a FIN takes the
 * other down at once.
 */
export function splice(a: net.Socket, b: net.Socket, onClosed?: () => void): void {
  let open = 2;
  const wire = (from: net.Socket, to: net.Socket): void => {
    let ended = false;
    from.once('end', () => (ended = true));
    from.on('error', () => {
      from.destroy();
      to.destroy();
    });
    from.once('close', () => {
      if (!ended) to.destroy();
      else if (!to.writableEnded) to.end();
      if (--open === 0) onClosed?.();
    });
    from.pipe(to);
  };
  wire(a, b);
  wire(b, a);
}

/** Carry one accepted connection to the host socket, both ways, until both sides are done. */
function carry(client: net.Socket, socketPath: string): void {
  splice(client, net.connect({ path: socketPath, allowHalfOpen: true }));
}

async function startRelayListener(socketPath: string): Promise<{ server: net.Server; url: string }> {
  // Half-open both ways: a client that ends its side still gets the answer, and its end is passed on.
  const server = net.createServer({ noDelay: true, allowHalfOpen: true }, (client) => carry(client, socketPath));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

/**
 * bwrap hands the placeholder over in CREDPROXY_TOKEN; containers as a 0400
 * file in the socket mount. Without one the agent's files would carry an
 * empty key and every request would come back 401: stop here instead.
 */
function placeholder(): string {
  const inEnv = process.env.CREDPROXY_TOKEN;
  const file = process.env.CREDPROXY_TOKEN_FILE;
  let value = inEnv ?? '';
  if (value === '' && file !== undefined && file !== '') {
    try {
      value = readFileSync(file, 'utf8').trim();
    } catch (err) {
      process.stderr.write(`credproxy relay: cannot read the token file (${(err as NodeJS.ErrnoException).code ?? 'error'})\n`);
      process.exit(RELAY_FAILURE_EXIT);
    }
  }
  if (value === '') {
    process.stderr.write('credproxy relay: no placeholder for the agent\'s config files (neither CREDPROXY_TOKEN nor CREDPROXY_TOKEN_FILE has one)\n');
    process.exit(RELAY_FAILURE_EXIT);
  }
  return value;
}

async function main(argv: string[]): Promise<void> {
  const sep = argv.indexOf('--');
  const command = sep < 0 ? [] : argv.slice(sep + 1);
  const config = sep === 1 ? parseConfig(argv[0]) : null;
  if (config === null || command.length === 0) {
    process.stderr.write('credproxy relay: usage: relay.js RELAY_CONFIG_JSON -- COMMAND [ARGS...]\n');
    process.exit(RELAY_FAILURE_EXIT);
  }
  const servers: net.Server[] = [];
  const env: Record<string, string> = {};
  for (const [what, socketPath] of [['gateway', config.gateway], ['egress proxy', config.egress]] as const) {
    if (socketPath === undefined) continue;
    let listening: { server: net.Server; url: string };
    try {
      listening = await startRelayListener(socketPath);
    } catch (err) {
      process.stderr.write(`credproxy relay: cannot listen for the ${what} on 127.0.0.1 inside the sandbox (${(err as NodeJS.ErrnoException).code ?? 'error'})\n`);
      process.exit(RELAY_FAILURE_EXIT);
    }
    listening.server.unref();
    servers.push(listening.server);
    if (what === 'gateway') {
      env.CREDPROXY_GATEWAY_URL = listening.url;
      if (config.plan !== undefined) {
        // The agent's config directory goes on the sandbox's own home (a tmpfs in bwrap), never the user's real one.
        try {
          Object.assign(env, prepareAgentEnv(config.plan, sandboxConfigParent(process.env), listening.url, placeholder()).env);
        } catch (err) {
          process.stderr.write(`credproxy relay: cannot write the agent's config files (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})\n`);
          process.exit(RELAY_FAILURE_EXIT);
        }
      }
    } else {
      Object.assign(env, proxyEnv(listening.url));
    }
  }
  // Handlers before the spawn: a signal that arrives while the child is starting is held, then delivered.
  let child: ChildProcess | null = null;
  const held: NodeJS.Signals[] = [];
  for (const s of FORWARDED) {
    process.on(s, () => {
      if (child === null) held.push(s);
      else if (child.exitCode === null && child.signalCode === null) child.kill(s);
    });
  }
  // fd 3 only when the launcher put one there: otherwise that number may be one of Node's own descriptors.
  child = spawn(command[0]!, command.slice(1), { stdio: config.fd3 === true ? ['inherit', 'inherit', 'inherit', 3] : 'inherit', env: { ...process.env, ...env } });
  for (const s of held.splice(0)) child.kill(s);
  child.on('error', (err) => {
    process.stderr.write(`credproxy relay: cannot start ${command[0]}: ${(err as NodeJS.ErrnoException).code ?? 'error'}\n`);
    process.exit((err as NodeJS.ErrnoException).code === 'ENOENT' ? 127 : 126);
  });
  child.on('exit', (code, signal) => {
    for (const server of servers) server.close();
    if (signal !== null) {
      // Die of the same signal, so the launcher sees what the command saw.
      for (const s of FORWARDED) process.removeAllListeners(s);
      process.kill(process.pid, signal);
      process.exit(128 + (constants.signals[signal] ?? 0));
    }
    process.exit(code ?? RELAY_FAILURE_EXIT);
  });
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  void main(process.argv.slice(2));
}
