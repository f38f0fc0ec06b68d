import { Command, Option } from 'commander';
import { CliContext } from './context.js';
import type { CliIO } from './io.js';
import { registerKeyCommands } from './commands/key.js';
import { registerTokenCommands } from './commands/token.js';
import { registerStatusCommand } from './commands/status.js';
import { registerProvidersCommand } from './commands/providers.js';
import { registerServeCommand } from './commands/serve.js';
import { registerRunCommand } from './commands/run.js';
import { registerExecCommand } from './commands/exec.js';
import { registerLoginCommands } from './commands/login.js';
import { registerImportCommand } from './commands/import.js';

export interface CliProgram {
  /** Parse and run; resolves with the process exit code. */
  run(argv: string[]): Promise<number>;
  close(): Promise<void>;
}

export function buildProgram(io: CliIO): CliProgram {
  const ctx = new CliContext(io);
  const program = new Command('credproxy')
    .description('Keep OAuth tokens and API keys on the host; give sandboxes short-lived access over a socket.')
    .version('0.1.0')
    .addOption(new Option('--store <backend>', 'host store backend').choices(['auto', 'keyring', 'file']).env('CREDPROXY_STORE'))
    .showHelpAfterError('(run with --help for usage)')
    .configureOutput({
      writeOut: (s) => io.stdout.write(s),
      writeErr: (s) => io.stderr.write(s),
    })
    .exitOverride()
    .enablePositionalOptions()
    .hook('preAction', (cmd) => {
      ctx.storeChoice = cmd.opts<{ store?: string }>().store;
    });

  registerKeyCommands(program, ctx);
  registerTokenCommands(program, ctx);
  registerStatusCommand(program, ctx);
  registerProvidersCommand(program, ctx);
  registerServeCommand(program, ctx);
  registerRunCommand(program, ctx);
  registerExecCommand(program, ctx);
  registerLoginCommands(program, ctx);
  registerImportCommand(program, ctx);

  // Subcommands inherit the output and exit behaviour of the root.
  for (const cmd of allCommands(program)) {
    cmd.exitOverride().configureOutput({
      writeOut: (s) => io.stdout.write(s),
      writeErr: (s) => io.stderr.write(s),
    });
  }

  return {
    async run(argv: string[]): Promise<number> {
      await program.parseAsync(argv);
      return ctx.exitCode;
    },
    close: () => ctx.close(),
  };
}

function allCommands(cmd: Command): Command[] {
  return cmd.commands.flatMap((c) => [c, ...allCommands(c)]);
}
