import type { Command } from 'commander';
import { CredproxyError } from '../../errors.js';
import type { CliContext } from '../context.js';
import { readAll, stripOneNewline, writeJson, writeLine } from '../io.js';
import { keyNameArg } from '../names.js';

export function registerKeyCommands(program: Command, ctx: CliContext): void {
  const key = program.command('key').description('manage named API keys');

  key
    .command('set')
    .description('store an API key; the value is read from stdin (never from the command line)')
    .argument('<name>', 'key name')
    .action(async (rawName: string) => {
      const name = keyNameArg(rawName);
      const keys = await ctx.hostOnlyKeyStore();
      const value = await readKeyValue(ctx);
      await keys.saveKey(name, value);
      ctx.notice(`saved key '${name}'`);
    });

  key
    .command('get')
    .description('print an API key')
    .argument('<name>', 'key name')
    .action(async (rawName: string) => {
      const name = keyNameArg(rawName);
      const value = await (await ctx.keyStore()).getKey(name);
      if (value === null) throw new CredproxyError('NOT_FOUND', `no key named '${name}'`);
      writeLine(ctx.io.stdout, value);
    });

  key
    .command('list')
    .description('list key names')
    .option('--json', 'machine-readable output')
    .action(async (opts: { json?: boolean }) => {
      const names = await (await ctx.keyStore()).listKeys();
      if (opts.json) writeJson(ctx.io.stdout, names);
      else for (const n of names) writeLine(ctx.io.stdout, n);
    });

  key
    .command('rm')
    .description('delete an API key')
    .argument('<name>', 'key name')
    .action(async (rawName: string) => {
      const name = keyNameArg(rawName);
      const keys = await ctx.hostOnlyKeyStore();
      if (!(await keys.hasKey(name))) throw new CredproxyError('NOT_FOUND', `no key named '${name}'`);
      await keys.deleteKey(name);
      ctx.notice(`removed key '${name}'`);
    });
}

async function readKeyValue(ctx: CliContext): Promise<string> {
  let value: string;
  if (ctx.io.stdin.isTTY) {
    const { password, isCancel } = await import('@clack/prompts');
    const answer = await password({ message: 'Key value (input hidden)', input: ctx.io.stdin as NodeJS.ReadStream, output: ctx.io.stderr as NodeJS.WriteStream });
    if (isCancel(answer)) throw new CredproxyError('INVALID_REQUEST', 'cancelled');
    value = answer;
  } else {
    value = stripOneNewline(await readAll(ctx.io.stdin));
  }
  if (value.length === 0) throw new CredproxyError('INVALID_REQUEST', 'empty key value on stdin');
  return value;
}
