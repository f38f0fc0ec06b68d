import type { Command } from 'commander';
import { installSignalHandlers } from '../../server/server.js';
import type { CliContext } from '../context.js';
import { writeLine } from '../io.js';
import { addPolicyOptions } from '../policy-flags.js';
import { addGatewayOptions, startProxy, type ProxyFlags } from '../proxy.js';

interface ServeFlags extends ProxyFlags {
  shell?: boolean;
}

export function registerServeCommand(program: Command, ctx: CliContext): void {
  const cmd = program
    .command('serve')
    .description('run the proxy in the foreground for a sandbox started by another tool');
  addGatewayOptions(addPolicyOptions(cmd))
    .option('--socket-dir <dir>', 'directory for the socket (default: a fresh one under the run dir)')
    .option('--transport <spec>', 'unix (default), or tcp[:HOST[:PORT]] for VM-based engines (loopback by default)')
    .option('--shell', 'print `export VAR=...` lines for eval')
    .option('--no-peer-check', 'do not require SO_PEERCRED peer checks (Linux)')
    .option('--allow-root', 'also accept connections from uid 0')
    .option('--rate-limit <n>', 'requests per second per connection (default 60); raise it only to benchmark')
    .action(async (flags: ServeFlags) => {
      ctx.exitCode = await serve(ctx, flags);
    });
}

/** Quote for POSIX sh. */
export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

async function serve(ctx: CliContext, flags: ServeFlags): Promise<number> {
  const proxy = await startProxy(ctx, flags);
  const line = (name: string, value: string): string => (flags.shell ? `export ${name}=${shellQuote(value)}` : `${name}=${value}`);
  writeLine(ctx.io.stdout, line('CREDPROXY_SOCKET', proxy.socketPath));
  writeLine(ctx.io.stdout, line('CREDPROXY_TOKEN', proxy.capabilityToken));
  const gatewayUrl = proxy.gateway?.addresses[0];
  if (gatewayUrl !== undefined) writeLine(ctx.io.stdout, line('CREDPROXY_GATEWAY_URL', gatewayUrl));

  // Runs until SIGINT/SIGTERM; the server is stopped (socket removed) before `exit` is called.
  const code = await new Promise<number>((resolve) => {
    let signalled = false;
    installSignalHandlers(proxy.server, {
      logger: proxy.logger,
      exit: (c) => {
        if (!signalled) {
          signalled = true;
          resolve(c);
          return;
        }
        proxy.removeNow();
        process.exit(c);
      },
    });
  });
  await proxy.stop();
  return code;
}
