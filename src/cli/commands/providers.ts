import type { Command } from 'commander';
import { PROVIDER_AGENT_NOTES } from '../../gateway/agents.js';
import { ProviderRegistry } from '../../oauth/registry.js';
import type { CliContext } from '../context.js';
import { writeJson, writeLine } from '../io.js';

export function registerProvidersCommand(program: Command, ctx: CliContext): void {
  program
    .command('providers')
    .description('list the built-in and configured OAuth providers')
    .option('--json', 'machine-readable output')
    .action(async (opts: { json?: boolean }) => {
      // Only the config file is needed: listing providers must not open the keyring.
      const registry = new ProviderRegistry({ config: await ctx.config() });
      const rows = registry.names().map((name) => {
        const source = registry.source(name) ?? 'preset';
        const note = source === 'preset' ? PROVIDER_AGENT_NOTES[name] : undefined;
        return { name, flow: registry.get(name).flow, source, ...(note === undefined ? {} : { note }) };
      });
      if (opts.json) writeJson(ctx.io.stdout, rows);
      else for (const r of rows) writeLine(ctx.io.stdout, `${r.name.padEnd(16)} ${r.flow.padEnd(17)} ${r.source}${r.note === undefined ? '' : `  (${r.note})`}`);
    });
}
