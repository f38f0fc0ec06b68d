import type { Command } from 'commander';
import { CredproxyError } from '../../errors.js';
import { TokenSchema } from '../../protocol/messages.js';
import type { OAuthToken, TokenStore } from '../../store/types.js';
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
      await saveImportedToken(tokens, provider, bucket, parsed);
      ctx.notice(importedSummary(provider, bucket, parsed));
    });
}

/**
 * The one path by which a token handed to the CLI is stored (`token import`
 * and `import <agent>`): checked against the token schema, then saved,
 * replacing the entry. Returns the token as stored.
 */
export async function saveImportedToken(tokens: TokenStore, provider: string, bucket: string, token: unknown): Promise<OAuthToken> {
  const parsed = validateToken(token);
  await tokens.saveToken(provider, parsed, bucket);
  return parsed;
}

/** "imported P:B (expires in N s, refreshable)": no secret. */
export function importedSummary(provider: string, bucket: string, token: OAuthToken): string {
  const left = Math.round(token.expiry - Date.now() / 1000);
  return `imported ${provider}:${bucket} (${left > 0 ? `expires in ${left} s` : 'already expired'}${token.refresh_token ? ', refreshable' : ', no refresh token'})`;
}

/** Parse token JSON from stdin; errors name the field, never echo the input. */
export function parseTokenJson(text: string): OAuthToken {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new CredproxyError('INVALID_REQUEST', 'stdin is not valid JSON (expected a token object)');
  }
  return validateToken(value);
}

/** Check a token object against the schema; errors name the field, never echo the input. */
export function validateToken(value: unknown): OAuthToken {
  const result = TokenSchema.safeParse(value);
  if (!result.success) {
    const issue = result.error.issues[0];
    const where = issue && issue.path.length > 0 ? issue.path.join('.') : 'token';
    throw new CredproxyError('INVALID_REQUEST', `invalid token JSON: ${where}: ${issue?.message ?? 'invalid'}`);
  }
  return result.data as OAuthToken;
}
