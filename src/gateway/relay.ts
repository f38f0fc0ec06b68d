import { spawn } from 'node:child_process';
import { constants } from 'node:os';
import net, { type AddressInfo } from 'node:net';
import { pathToFileURL } from 'node:url';
import { resolveAgentEnv, type AgentEnvPlan } from './agents.js';

/**
 * The in-sandbox half of the gateway for bwrap, which has no network: a
 * loopback listener inside the sandbox's own network namespace whose every
 * connection is carried to the host gateway over a Unix socket in the run's
 * (read-only bound) socket directory. It is the command's parent: it starts
 * the command with CREDPROXY_GATEWAY_URL pointing at itself, forwards the
 * launcher's signals to it, and exits with its status.
 *
 * Usage: relay.js SOCKET_PATH [AGENT_ENV_PLAN_JSON] -- COMMAND [ARGS...]
 * The optional plan (agents.ts) names variables built from the relay's URL
 * and copies of the placeholder, which bwrap passed in CREDPROXY_TOKEN.
 */

/** What the launcher relays (see sandbox/child.ts); ^Z stops the whole process group, this relay included. */
const FORWARDED: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGWINCH', 'SIGUSR1', 'SIGUSR2'];

/** `run`'s own failure status (as docker/podman): never mistaken for the command's. */
const RELAY_FAILURE_EXIT = 125;

export function relayCommand(options: { node: string; relayScript: string; socketPath: string; command: readonly string[]; plan?: AgentEnvPlan }): string[] {
  const plan = options.plan === undefined ? [] : [JSON.stringify(options.plan)];
  return [options.node, options.relayScript, options.socketPath, ...plan, '--', ...options.command];
}

function parsePlan(text: string | undefined): AgentEnvPlan | null | undefined {
  if (text === undefined) return undefined;
  try {
    const p = JSON.parse(text) as AgentEnvPlan;
    const strings = (o: unknown): boolean => typeof o === 'object' && o !== null && Object.values(o).every((v) => typeof v === 'string');
    if (strings(p.set) && strings(p.fromGatewayUrl) && Array.isArray(p.placeholder) && p.placeholder.every((v) => typeof v === 'string')) return p;
  } catch {
    /* reported below */
  }
  return null;
}

/** Carry one accepted connection to the host gateway socket, both ways, until either side ends. */
function carry(client: net.Socket, socketPath: string): void {
  const host = net.connect(socketPath);
  const end = (): void => {
    client.destroy();
    host.destroy();
  };
  client.on('error', end);
  host.on('error', end);
  client.on('close', end);
  host.on('close', end);
  client.pipe(host);
  host.pipe(client);
}

export async function startRelayListener(socketPath: string): Promise<{ server: net.Server; url: string }> {
  const server = net.createServer({ noDelay: true }, (client) => carry(client, socketPath));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

async function main(argv: string[]): Promise<void> {
  const sep = argv.indexOf('--');
  const socketPath = argv[0];
  const command = sep < 0 ? [] : argv.slice(sep + 1);
  const plan = parsePlan(sep === 2 ? argv[1] : undefined);
  if (socketPath === undefined || (sep !== 1 && sep !== 2) || command.length === 0 || plan === null) {
    process.stderr.write('credproxy gateway relay: usage: relay.js SOCKET_PATH [AGENT_ENV_PLAN_JSON] -- COMMAND [ARGS...]\n');
    process.exit(RELAY_FAILURE_EXIT);
  }
  let url: string;
  let server: net.Server;
  try {
    ({ server, url } = await startRelayListener(socketPath));
  } catch (err) {
    process.stderr.write(`credproxy gateway relay: cannot listen on 127.0.0.1 inside the sandbox (${(err as NodeJS.ErrnoException).code ?? 'error'})\n`);
    process.exit(RELAY_FAILURE_EXIT);
  }
  server.unref();
  const agentEnv = plan === undefined ? {} : resolveAgentEnv(plan, url, process.env.CREDPROXY_TOKEN ?? '');
  const child = spawn(command[0]!, command.slice(1), { stdio: 'inherit', env: { ...process.env, CREDPROXY_GATEWAY_URL: url, ...agentEnv } });
  for (const s of FORWARDED) {
    process.on(s, () => {
      if (child.exitCode === null && child.signalCode === null) child.kill(s);
    });
  }
  child.on('error', (err) => {
    process.stderr.write(`credproxy gateway relay: cannot start ${command[0]}: ${(err as NodeJS.ErrnoException).code ?? 'error'}\n`);
    process.exit((err as NodeJS.ErrnoException).code === 'ENOENT' ? 127 : 126);
  });
  child.on('exit', (code, signal) => {
    server.close();
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
