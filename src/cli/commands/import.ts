import { Argument, type Command } from 'commander';
import { CredproxyError } from '../../errors.js';
import { AGENT_NAMES, IMPORTERS, mapSource, readAgentSource, replaceSource, sourceMoveRefusal, sourceWarnings, type AgentName, type CredentialSource, type MappedCredential } from '../../agents/import/index.js';
import { placeholderValue, printable } from '../../agents/import/common.js';
import { accountOf } from '../../login/account.js';
import type { OAuthToken } from '../../store/types.js';
import type { CliContext } from '../context.js';
import { UsageError, writeJson, writeLine } from '../io.js';
import { bucketArg } from '../names.js';
import { importedSummary, saveImportedToken, validateToken } from './token.js';

interface ImportOptions {
  bucket?: string;
  move?: boolean;
  yes?: boolean;
  dryRun?: boolean;
  json?: boolean;
  force?: boolean;
}

/** What an import did or would do; never a secret (token values are left out, only field names). */
interface ImportReport {
  agent: AgentName;
  source: string;
  provider: string;
  bucket: string;
  dryRun: boolean;
  token?: {
    fields: string[];
    expiry: number;
    expiresIn: number;
    refreshable: boolean;
    scope?: string;
    account?: string;
    resource_url?: string;
  };
  key?: { name: string; from: string };
  /** none: --move not given; would-move: --dry-run --move; moved: the original now holds a placeholder. */
  move: 'none' | 'would-move' | 'moved';
  placeholder?: string;
  notes: string[];
}

function whyMove(tool: string): string {
  return (
    `Why --move matters: providers rotate refresh tokens (each refresh answers a new one and retires the old). ` +
    `When ${tool} and credproxy both hold this login, whichever refreshes second presents a retired refresh token; ` +
    `the provider answers invalid_grant and may revoke the whole grant, logging both out. ` +
    `--move leaves the refresh token only in credproxy's store, so only credproxy refreshes.`
  );
}

export function registerImportCommand(program: Command, ctx: CliContext): void {
  program
    .command('import')
    .description("store an AI tool's existing login (Claude Code, Codex, Gemini CLI, Qwen Code) in credproxy; --move takes it away from the tool")
    .addArgument(new Argument('<agent>', 'whose login to import').choices(AGENT_NAMES))
    .option('--bucket <bucket>', 'bucket (account) name', 'default')
    .option('--move', "then replace the tool's credential file with a placeholder, so the refresh token exists only in credproxy (asks first)")
    .option('-y, --yes', 'confirm --move without asking (needed when stdin is not a terminal)')
    .option('--force', 'replace a login or key credproxy already holds that differs from the tool\'s')
    .option('--dry-run', 'show what would be stored and what --move would do; change nothing')
    .option('--json', 'print the report as JSON on stdout')
    .addHelpText(
      'after',
      `\nPlaces read: Claude Code $CLAUDE_CONFIG_DIR/.credentials.json (default ~/.claude; the Keychain item on macOS),\n` +
        `Codex $CODEX_HOME/auth.json (default ~/.codex), Gemini CLI ~/.gemini/oauth_creds.json, Qwen Code ~/.qwen/oauth_creds.json.\n\n${whyMove('the tool')}\n`,
    )
    .action(async (agent: AgentName, opts: ImportOptions) => {
      await runImport(ctx, agent, opts);
    });
}

async function runImport(ctx: CliContext, agent: AgentName, opts: ImportOptions): Promise<void> {
  const importer = IMPORTERS[agent];
  if (ctx.inSandbox) throw new CredproxyError('UNAUTHORIZED', 'import is a host command; run it outside the sandbox.');
  const bucket = bucketArg(opts.bucket);
  const move = opts.move === true;
  const dryRun = opts.dryRun === true;
  if (move && !dryRun && !opts.yes && ctx.io.stdin.isTTY !== true) {
    throw new UsageError(`--move replaces ${importer.tool}'s credentials and asks for confirmation first, but stdin is not a terminal: pass --yes to confirm`);
  }

  const source = await readAgentSource(agent, { env: ctx.io.env, platform: process.platform });
  for (const w of sourceWarnings(source)) ctx.notice(`warning: ${w}`);
  const mapped = mapSource(agent, source);
  const token = mapped.token ? validateToken(mapped.token) : undefined;
  if (move) {
    const refusal = await sourceMoveRefusal(source, mapped.placeholder);
    if (refusal) throw new CredproxyError('INVALID_REQUEST', `${refusal}. Nothing was changed.`);
  }
  const report = buildReport(agent, source, mapped, token, bucket, move, dryRun);

  if (dryRun) {
    if (opts.json) writeJson(ctx.io.stdout, report);
    else printPlan(ctx, report, source, importer.tool);
    return;
  }

  if (move && !opts.yes) {
    const { confirm, isCancel } = await import('@clack/prompts');
    const answer = await confirm({
      message: `Replace ${source.label} with a placeholder? ${importer.tool} will no longer be able to refresh this login; credproxy will hold it.`,
      initialValue: false,
      input: ctx.io.stdin as NodeJS.ReadStream,
      output: ctx.io.stderr as NodeJS.WriteStream,
    });
    if (isCancel(answer) || answer !== true) throw new CredproxyError('CANCELLED', 'import cancelled; nothing was changed');
  }

  // After the question: opening the store creates it, and "no" changes nothing.
  const conflicts = await storedConflicts(ctx, mapped, token, bucket);
  if (conflicts.length > 0 && !opts.force) {
    throw new CredproxyError('INVALID_REQUEST', `${conflicts.join('; ')}. Nothing was changed; pass --force to replace it with ${importer.tool}'s.`);
  }

  if (token) {
    const tokens = await ctx.hostOnlyTokenStore('import');
    // An unreadable entry is replaced too, like `token import` does.
    const replacing = await tokens.getToken(mapped.provider, bucket).then((t) => t !== null, () => true);
    await saveImportedToken(tokens, mapped.provider, bucket, token);
    ctx.notice(`${importedSummary(mapped.provider, bucket, token)} from ${source.label}${replacing ? ', replacing the stored entry' : ''}`);
  }
  if (mapped.apiKey) {
    const keys = await ctx.hostOnlyKeyStore();
    const existed = await keys.hasKey(mapped.apiKey.name);
    await keys.saveKey(mapped.apiKey.name, mapped.apiKey.value);
    ctx.notice(`saved key '${mapped.apiKey.name}' from ${mapped.apiKey.field}${existed ? ' (replacing the stored one)' : ''}`);
  }
  for (const n of mapped.notes) ctx.notice(`note: ${n}`);

  if (move) {
    try {
      await replaceSource(source, mapped.placeholder);
    } catch (err) {
      if (err instanceof CredproxyError) {
        throw new CredproxyError(err.code, `${err.message} (credproxy's copy was stored; until the original is replaced, both hold the login)`);
      }
      throw err;
    }
    report.move = 'moved';
    const kept = source.kind === 'file' ? `, mode ${modeText(source.file.mode)} kept` : '';
    if (token) {
      ctx.notice(
        `moved: ${source.label} now holds a placeholder ('${placeholderValue(mapped.provider)}'${kept}); ` +
          `${importer.tool} can no longer refresh this login, only credproxy does. Use it through credproxy (credproxy run --allow ${mapped.provider} ...); ` +
          `logging ${importer.tool} in again would start a separate login.`,
      );
    } else if (mapped.apiKey) {
      ctx.notice(
        `moved: ${source.label} now holds a placeholder instead of the API key${kept}; use the key through credproxy (credproxy run --allow-key ${mapped.apiKey.name} ...).`,
      );
    }
  } else if (token?.refresh_token) {
    ctx.notice(`warning: ${importer.tool} still holds this login's refresh token. ${whyMove(importer.tool)} Run 'credproxy import ${agent} --move' to finish the move.`);
  }
  if (opts.json) writeJson(ctx.io.stdout, report);
}

/**
 * What the import would overwrite and lose. A stored login with a refresh token
 * of its own may be one credproxy has rotated since the tool wrote its file:
 * the file's refresh token is then retired, and presenting it can make the
 * provider revoke the whole grant. The same refresh token (a second import of
 * the same login) and an entry that cannot be read are replaced, as before.
 */
async function storedConflicts(ctx: CliContext, mapped: MappedCredential, token: OAuthToken | undefined, bucket: string): Promise<string[]> {
  const conflicts: string[] = [];
  if (token) {
    const tokens = await ctx.hostOnlyTokenStore('import');
    const stored = await tokens.getToken(mapped.provider, bucket).catch(() => null);
    if (stored?.refresh_token && stored.refresh_token !== token.refresh_token) {
      conflicts.push(
        `credproxy already holds a different login for ${mapped.provider}:${bucket}, with its own refresh token ` +
          `(if it is this same login, credproxy has rotated the token since the tool's copy was written, and the tool's copy is retired)`,
      );
    }
  }
  if (mapped.apiKey) {
    const keys = await ctx.hostOnlyKeyStore();
    const stored = await keys.getKey(mapped.apiKey.name).catch(() => null);
    if (stored !== null && stored !== mapped.apiKey.value) conflicts.push(`credproxy already holds a different key '${mapped.apiKey.name}'`);
  }
  return conflicts;
}

function modeText(mode: number): string {
  return mode.toString(8).padStart(4, '0');
}

function buildReport(
  agent: AgentName,
  source: CredentialSource,
  mapped: MappedCredential,
  token: OAuthToken | undefined,
  bucket: string,
  move: boolean,
  dryRun: boolean,
): ImportReport {
  const report: ImportReport = {
    agent,
    source: source.label,
    provider: mapped.provider,
    bucket,
    dryRun,
    move: move && dryRun ? 'would-move' : 'none',
    notes: [...mapped.notes],
  };
  if (token) {
    const account = typeof token.account_id === 'string' ? token.account_id : accountOf(token);
    report.token = {
      fields: Object.keys(token).sort(),
      expiry: token.expiry,
      expiresIn: Math.floor(token.expiry - Date.now() / 1000),
      refreshable: typeof token.refresh_token === 'string' && token.refresh_token !== '',
      ...(token.scope ? { scope: printable(token.scope, 1024) } : {}),
      ...(account ? { account: printable(account) } : {}),
      ...(typeof token.resource_url === 'string' ? { resource_url: printable(token.resource_url) } : {}),
    };
  }
  if (mapped.apiKey) report.key = { name: mapped.apiKey.name, from: mapped.apiKey.field };
  if (move) report.placeholder = placeholderValue(mapped.provider);
  return report;
}

function printPlan(ctx: CliContext, r: ImportReport, source: CredentialSource, tool: string): void {
  const out = (line = ''): void => writeLine(ctx.io.stdout, line);
  out(`would import ${tool}'s login from ${r.source}`);
  if (r.token) {
    const t = r.token;
    out(`  store as:    ${r.provider}:${r.bucket} (--dry-run does not open the store: a stored login with a different refresh token is replaced only with --force)`);
    out(`  fields:      ${t.fields.join(', ')}`);
    out(`  expires:     ${t.expiry > 0 ? new Date(t.expiry * 1000).toISOString() : 'unknown'} (${t.expiresIn > 0 ? `in ${t.expiresIn} s` : 'already expired'})`);
    out(`  refreshable: ${t.refreshable ? 'yes' : 'no (no refresh token: the login ends at its expiry)'}`);
    if (t.scope) out(`  scopes:      ${t.scope}`);
    if (t.account) out(`  account:     ${t.account}`);
    if (t.resource_url) out(`  resource:    ${t.resource_url}`);
  }
  if (r.key) out(`  api key:     ${r.key.from} -> key '${r.key.name}' (a different stored key is replaced only with --force)`);
  for (const n of r.notes) out(`  note:        ${n}`);
  if (r.move === 'would-move') {
    const mode = source.kind === 'file' ? `, mode ${modeText(source.file.mode)} kept` : '';
    out(`  --move:      would replace ${r.source} with a placeholder ('${r.placeholder}'${mode}) in place of this login's secrets, after the token is stored;`);
    out(`               ${tool} could then no longer refresh this login`);
  } else {
    out(`  --move:      not requested: ${tool} would keep its own copy of the refresh token`);
  }
  out(whyMove(tool));
  out('nothing was changed (--dry-run)');
}
