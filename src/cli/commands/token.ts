import type { Command } from 'commander';
import { CredproxyError } from '../../errors.js';
import { TokenSchema } from '../../protocol/messages.js';
import type { OAuthToken } from '../../store/types.js';
import type { CliContext } from '../context.js';
import { readAll, writeJson, writeLine } from '../io.js';
import { bucketArg, providerArg } from '../names.js';

export function registerTokenCommands(program: Command, ctx: CliContext): void {
  const token = program.command('token').description('OAuth tokens');

  token
    .command('get')
    .description('print the access token, refreshing it first when it is about to expire')
    .argument('<provider>', 'provider name')
    .option('--bucket <bucket>', 'bucket (account) name', 'default')
    .option('--json', 'print the whole token (without its refresh token) as JSON')
    .action(async (rawProvider: string, opts: { bucket?: string; json?: boolean }) => {
      const provider = providerArg(rawProvider);
      const bucket = bucketArg(opts.bucket);
      const t = await ctx.accessToken(provider, bucket);
      if (opts.json) writeJson(ctx.io.stdout, t);
      else writeLine(ctx.io.stdout, t.access_token);
    });

  token
    .command('import')
    .description('store a token read as JSON from stdin, replacing any stored one')
    .argument('<provider>', 'provider name')
    .option('--bucket <bucket>', 'bucket (account) name', 'default')
    .action(async (rawProvider: string, opts: { bucket?: string }) => {
      const provider = providerArg(rawProvider);
      const bucket = bucketArg(opts.bucket);
      const tokens = await ctx.hostOnlyTokenStore('token import');
      const parsed = parseTokenJson(await readAll(ctx.io.stdin));
      await tokens.saveToken(provider, parsed, bucket);
      const left = Math.round(parsed.expiry - Date.now() / 1000);
      ctx.notice(
        `imported ${provider}:${bucket} (${left > 0 ? `expires in ${left} s` : 'already expired'}${parsed.refresh_token ? ', refreshable' : ', no refresh token'})`,
      );
    });
}

/** Parse token JSON from stdin; errors name the field, never echo the input. */
export function parseTokenJson(text: string): OAuthToken {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new CredproxyError('INVALID_REQUEST', 'stdin is not valid JSON (expected a token object)');
  }
  const result = TokenSchema.safeParse(value);
  if (!result.success) {
    const issue = result.error.issues[0];
    const where = issue && issue.path.length > 0 ? issue.path.join('.') : 'token';
    throw new CredproxyError('INVALID_REQUEST', `invalid token JSON: ${where}: ${issue?.message ?? 'invalid'}`);
  }
  return result.data as OAuthToken;
}
