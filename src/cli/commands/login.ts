import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { Command } from 'commander';
import { CredproxyError } from '../../errors.js';
import { loginThroughProxy } from '../../client/login-adapter.js';
import { startFlow } from '../../login/flows.js';
import type { OAuthInitiateData } from '../../protocol/messages.js';
import type { SanitizedToken } from '../../store/types.js';
import { sanitizeToken } from '../../store/sanitize.js';
import type { CliContext } from '../context.js';
import { bucketArg, providerArg } from '../names.js';
import { readAll } from '../io.js';

export function registerLoginCommands(program: Command, ctx: CliContext): void {
  program
    .command('login')
    .description('log in to an OAuth provider; inside a sandbox the login runs on the host')
    .argument('<provider>', 'provider name (see `credproxy providers`)')
    .option('--bucket <bucket>', 'bucket (account) name', 'default')
    .option('--no-browser', 'print the URL instead of opening a browser (host only)')
    .action(async (rawProvider: string, opts: { bucket?: string; browser: boolean }) => {
      const provider = providerArg(rawProvider);
      const bucket = bucketArg(opts.bucket);
      const abort = new AbortController();
      const onInt = (): void => abort.abort();
      process.once('SIGINT', onInt);
      try {
        const token = ctx.inSandbox ? await sandboxLogin(ctx, provider, bucket, abort.signal) : await hostLogin(ctx, provider, bucket, opts.browser, abort.signal);
        const left = Math.round(token.expiry - Date.now() / 1000);
        ctx.notice(`logged in to ${provider}:${bucket}; the access token expires ${new Date(token.expiry * 1000).toISOString()} (in ${left} s)`);
      } catch (err) {
        if (abort.signal.aborted) {
          ctx.notice('login cancelled');
          ctx.exitCode = 130;
          return;
        }
        throw err;
      } finally {
        process.off('SIGINT', onInt);
      }
    });

  program
    .command('logout')
    .description('remove a stored token (waits for a refresh in progress, then wins)')
    .argument('<provider>', 'provider name')
    .option('--bucket <bucket>', 'bucket (account) name', 'default')
    .action(async (rawProvider: string, opts: { bucket?: string }) => {
      const provider = providerArg(rawProvider);
      const bucket = bucketArg(opts.bucket);
      if (ctx.inSandbox) await (await ctx.tokenStore()).removeToken(provider, bucket);
      else await (await ctx.host()).credentials.remove(provider, bucket);
      ctx.notice(`logged out of ${provider}:${bucket}`);
    });
}

function describeStart(ctx: CliContext, info: Omit<OAuthInitiateData, 'session_id'>): void {
  if (info.user_code) ctx.notice(`open ${info.verification_url} and enter the code: ${info.user_code}`);
  else if (info.verification_url) ctx.notice(`open ${info.verification_url}`);
  if (info.auth_url) ctx.notice(`open this URL in your browser to log in:\n\n  ${info.auth_url}\n`);
  if (info.flow_type === 'pkce_redirect') ctx.notice('then paste the code the page shows you.');
}

async function readCode(ctx: CliContext, signal: AbortSignal): Promise<string> {
  if (!ctx.io.stdin.isTTY) {
    // Piped input (scripts, agents): the first line is the code.
    const first = (await readAll(ctx.io.stdin)).split(/\r?\n/)[0]!.trim();
    if (!first) throw new CredproxyError('INVALID_REQUEST', 'no code was entered');
    return first;
  }
  return new Promise((resolve, reject) => {
    const rl = createInterface({ input: ctx.io.stdin, output: ctx.io.stderr, terminal: Boolean(ctx.io.stdin.isTTY) });
    signal.addEventListener('abort', () => rl.close(), { once: true });
    rl.question('Code: ', (answer) => {
      rl.close();
      resolve(answer.trim());
    });
    rl.once('close', () => reject(new CredproxyError('INVALID_REQUEST', 'no code was entered')));
  });
}

/** A spinner on a terminal; nothing otherwise (logs stay clean). */
function waiter(ctx: CliContext): ((elapsedMs: number) => void) | undefined {
  const out = ctx.io.stderr as NodeJS.WriteStream;
  if (!out.isTTY) return undefined;
  const frames = ['|', '/', '-', '\\'];
  let i = 0;
  return (elapsed) => out.write(`\r${frames[i++ % frames.length]} waiting for the login to finish (${Math.round(elapsed / 1000)} s)`);
}

async function sandboxLogin(ctx: CliContext, provider: string, bucket: string, signal: AbortSignal): Promise<SanitizedToken> {
  const wait = waiter(ctx);
  return loginThroughProxy(ctx.client(), provider, bucket, {
    show: (info) => describeStart(ctx, info),
    promptCode: () => readCode(ctx, signal),
    ...(wait ? { waiting: wait } : {}),
    signal,
  });
}

function openBrowser(url: string): void {
  const cmd = process.platform === 'darwin' ? 'open' : 'xdg-open';
  const child = spawn(cmd, [url], { stdio: 'ignore', detached: true });
  child.on('error', () => undefined);
  child.unref();
}

/** On the host the flows run in this process; the token goes straight into the host store. */
async function hostLogin(ctx: CliContext, provider: string, bucket: string, browser: boolean, signal: AbortSignal): Promise<SanitizedToken> {
  const host = await ctx.host();
  const flow = await startFlow(host.providers.get(provider), signal);
  try {
    describeStart(ctx, flow.start);
    const url = flow.start.auth_url ?? flow.start.verification_url;
    if (browser && url && (ctx.io.env.DISPLAY || ctx.io.env.WAYLAND_DISPLAY || process.platform === 'darwin')) openBrowser(url);
    let token;
    if (flow.exchange) {
      token = await flow.exchange(await readCode(ctx, signal), signal);
    } else {
      const wait = waiter(ctx);
      const started = Date.now();
      // Also what keeps this process alive while the loopback listener (unref'd) waits for the browser.
      const timer = setInterval(() => wait?.(Date.now() - started), 500);
      const aborted = new Promise<never>((_, reject) => signal.addEventListener('abort', () => reject(new CredproxyError('INVALID_REQUEST', 'login cancelled')), { once: true }));
      try {
        const out = await Promise.race([flow.outcome!, aborted]);
        if (!out.ok) throw new CredproxyError(out.code, out.error);
        token = out.token;
      } finally {
        clearInterval(timer);
      }
    }
    await host.stores.tokens.saveToken(provider, token, bucket);
    return sanitizeToken(token);
  } finally {
    flow.cancel();
  }
}
