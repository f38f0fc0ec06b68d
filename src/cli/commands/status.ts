import type { Command } from 'commander';
import { isCredproxyError } from '../../errors.js';
import type { CliContext } from '../context.js';
import { writeJson, writeLine } from '../io.js';

export interface TokenStatus {
  provider: string;
  bucket: string;
  expiry?: number;
  expiresIn?: number;
  /** Host only: a refresh token is stored and the provider is known. */
  canRefresh?: boolean;
  /** Host only: a refresh token is stored (false: the login dies at its expiry). */
  renewable?: boolean;
  /** A problem reading this entry (corrupt, needs login...): its code and safe text. */
  error?: { code: string; message: string };
}

export interface StatusReport {
  mode: 'host' | 'sandbox';
  backend?: string;
  backendReason?: string;
  socket?: string;
  tokens: TokenStatus[];
  keys: string[];
}

export function registerStatusCommand(program: Command, ctx: CliContext): void {
  program
    .command('status')
    .description('show the store backend, each token with its expiry, and key names (never a secret)')
    .option('--json', 'machine-readable output')
    .action(async (opts: { json?: boolean }) => {
      const report = ctx.inSandbox ? await sandboxStatus(ctx) : await hostStatus(ctx);
      if (opts.json) writeJson(ctx.io.stdout, report);
      else printStatus(ctx.io.stdout, report);
    });
}

const nowSeconds = (): number => Math.floor(Date.now() / 1000);

function entryError(err: unknown): { code: string; message: string } {
  if (isCredproxyError(err)) return { code: err.code, message: err.message };
  return { code: 'INTERNAL_ERROR', message: 'unreadable entry' };
}

async function hostStatus(ctx: CliContext): Promise<StatusReport> {
  const host = await ctx.host();
  const tokens: TokenStatus[] = [];
  for (const provider of await host.stores.tokens.listProviders()) {
    for (const bucket of await host.stores.tokens.listBuckets(provider)) {
      try {
        // Read the stored entry directly: status must not trigger a refresh.
        const t = await host.stores.tokens.getToken(provider, bucket);
        if (!t) continue;
        const renewable = typeof t.refresh_token === 'string' && t.refresh_token !== '';
        tokens.push({
          provider,
          bucket,
          expiry: t.expiry,
          expiresIn: Math.floor(t.expiry) - nowSeconds(),
          canRefresh: renewable && host.providers.has(provider),
          renewable,
        });
      } catch (err) {
        tokens.push({ provider, bucket, error: entryError(err) });
      }
    }
  }
  return {
    mode: 'host',
    backend: host.stores.backend,
    backendReason: host.stores.reason,
    tokens,
    keys: await host.stores.keys.listKeys(),
  };
}

async function sandboxStatus(ctx: CliContext): Promise<StatusReport> {
  const client = ctx.client();
  const tokens: TokenStatus[] = [];
  const { providers } = await client.request('list_providers', {});
  for (const provider of providers) {
    const { buckets } = await client.request('list_buckets', { provider });
    for (const bucket of buckets) {
      try {
        const t = await client.request('get_token', { provider, bucket });
        tokens.push({ provider, bucket, expiry: t.expiry, expiresIn: Math.floor(t.expiry) - nowSeconds() });
      } catch (err) {
        tokens.push({ provider, bucket, error: entryError(err) });
      }
    }
  }
  const { keys } = await client.request('list_api_keys', {});
  return { mode: 'sandbox', socket: ctx.io.env.CREDPROXY_SOCKET, tokens, keys };
}

function refreshText(t: TokenStatus): string {
  if (t.canRefresh === undefined) return '';
  if (t.canRefresh) return ', can refresh';
  if (t.renewable === false) return `, cannot be renewed (no refresh token): log in again with \`credproxy login ${t.provider}${t.bucket === 'default' ? '' : ` --bucket ${t.bucket}`}\` when it expires`;
  return `, cannot refresh (provider ${t.provider} is not configured)`;
}

function printStatus(out: NodeJS.WritableStream, r: StatusReport): void {
  if (r.mode === 'host') writeLine(out, `store: ${r.backend}${r.backendReason ? ` (${r.backendReason})` : ''}`);
  else writeLine(out, `proxy: ${r.socket}`);
  writeLine(out, r.tokens.length === 0 ? 'tokens: none' : 'tokens:');
  for (const t of r.tokens) {
    const name = `${t.provider}:${t.bucket}`;
    if (t.error) {
      writeLine(out, `  ${name}  ${t.error.code}: ${t.error.message}`);
      continue;
    }
    const when = new Date((t.expiry ?? 0) * 1000).toISOString();
    const left = t.expiresIn ?? 0;
    const state = left > 0 ? `expires ${when} (in ${left} s)` : `expired ${when}`;
    writeLine(out, `  ${name}  ${state}${refreshText(t)}`);
  }
  writeLine(out, r.keys.length === 0 ? 'keys: none' : `keys: ${r.keys.join(', ')}`);
}
