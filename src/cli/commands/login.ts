import { ProxyTokenStore } from '../../client/proxy-token-store.js';
import { spawn } from 'node:child_process';
import { constants as osConstants } from 'node:os';
import { createInterface } from 'node:readline';
import type { Command } from 'commander';
import { CredproxyError, isCredproxyError } from '../../errors.js';
import { loginThroughProxy, runLogin, type LoginIO, type LoginOutput } from '../../client/login-adapter.js';
import { localLoginOps } from '../../login/local-ops.js';
import { LoginSessionManager, sessionTimeoutFromEnv } from '../../login/session-manager.js';
import type { OAuthInitiateData } from '../../protocol/messages.js';
import type { SanitizedToken } from '../../store/types.js';
import type { CliContext } from '../context.js';
import { bucketArg, providerArg } from '../names.js';

/** Signals that end a login in progress; the session is cancelled on the host first. SIGINT (Ctrl+C) first. */
const STOP_SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

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
      let stoppedBy: NodeJS.Signals = 'SIGINT';
      const handlers = STOP_SIGNALS.map((sig) => {
        const handler = (): void => {
          if (!abort.signal.aborted) stoppedBy = sig;
          abort.abort();
        };
        process.once(sig, handler);
        return [sig, handler] as const;
      });
      const io: LoginIO = {
        output: ctx.io.stderr as LoginOutput,
        prompt: (question, signal) => promptLine(ctx, question, signal, handlers[0]![1]),
        signal: abort.signal,
      };
      try {
        const token = ctx.inSandbox
          ? await loginThroughProxy(ctx.client(), provider, bucket, io)
          : await hostLogin(ctx, provider, bucket, { ...io, ...(opts.browser ? { onStart: (info) => openBrowser(ctx, info) } : {}) }, abort.signal);
        ctx.notice(`logged in to ${provider}:${bucket}; ${expiryText(token)}`);
        // The host says it in the answer; shown without control characters (it crossed the socket).
        const warning = token.login_warning;
        if (typeof warning === 'string') ctx.notice(`warning: ${warning.replace(/[^\x20-\x7e]/g, '?')}`);
      } catch (err) {
        if (!isCredproxyError(err, 'CANCELLED')) throw err;
        ctx.notice('login cancelled');
        // The shell convention for "ended by a signal": 130 after Ctrl+C.
        ctx.exitCode = 128 + osConstants.signals[stoppedBy];
      } finally {
        for (const [sig, handler] of handlers) process.off(sig, handler);
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
      if (!ctx.inSandbox) {
        await (await ctx.host()).credentials.remove(provider, bucket);
        ctx.notice(`logged out of ${provider}:${bucket}`);
        return;
      }
      const store = await ctx.tokenStore();
      const removed = store instanceof ProxyTokenStore ? await store.removeTokenReporting(provider, bucket) : (await store.removeToken(provider, bucket), 'entry');
      if (removed === 'access_token') {
        ctx.notice(`logged out of ${provider}:${bucket} in the sandbox; the host keeps its refresh token (run \`credproxy logout ${provider}${bucket === 'default' ? '' : ` --bucket ${bucket}`}\` on the host to remove it)`);
      } else {
        ctx.notice(`logged out of ${provider}:${bucket}`);
      }
    });
}

function expiryText(token: SanitizedToken): string {
  const left = Math.round(token.expiry - Date.now() / 1000);
  return `the access token expires ${new Date(token.expiry * 1000).toISOString()} (in ${left} s)`;
}

/**
 * On the host the flows run in this process, with the same session manager
 * `serve` uses; the token goes straight into the host store.
 */
async function hostLogin(ctx: CliContext, provider: string, bucket: string, io: LoginIO, signal: AbortSignal): Promise<SanitizedToken> {
  const host = await ctx.host();
  const sessions = new LoginSessionManager({
    tokens: host.stores.tokens,
    providers: host.providers,
    timeoutMs: sessionTimeoutFromEnv(ctx.io.env),
    // This command prints the outcome itself (a renewal warning included): at the default
    // level the same warning as a JSON log line would only repeat it.
    logger: ctx.io.env.CREDPROXY_LOG_LEVEL === undefined ? ctx.logger.child({}, { level: 'error' }) : ctx.logger,
  });
  try {
    return await runLogin(localLoginOps(sessions, signal), provider, bucket, io);
  } finally {
    sessions.close();
  }
}

/** xdg-open / open when a desktop is around; the URL is printed either way. */
function openBrowser(ctx: CliContext, info: OAuthInitiateData): void {
  const url = info.auth_url ?? info.verification_url;
  const desktop = process.platform === 'darwin' || Boolean(ctx.io.env.DISPLAY || ctx.io.env.WAYLAND_DISPLAY);
  if (!url || !desktop) return;
  const child = spawn(process.platform === 'darwin' ? 'open' : 'xdg-open', [url], { stdio: 'ignore', detached: true });
  child.on('error', () => undefined);
  child.unref();
}

/**
 * One line from stdin: typed at a terminal, or piped by a script or agent.
 * Blank lines are skipped (an early Enter must not burn the session).
 */
function promptLine(ctx: CliContext, question: string, signal: AbortSignal, onInterrupt: () => void): Promise<string> {
  return new Promise((resolve, reject) => {
    const tty = ctx.io.stdin.isTTY === true;
    ctx.io.stderr.write(question);
    const rl = createInterface({ input: ctx.io.stdin, ...(tty ? { output: ctx.io.stderr, terminal: true } : { terminal: false }) });
    let settled = false;
    const settle = (): void => {
      settled = true;
      signal.removeEventListener('abort', onAbort);
      rl.close();
    };
    const onAbort = (): void => {
      settle();
      reject(new CredproxyError('CANCELLED', 'login cancelled'));
    };
    signal.addEventListener('abort', onAbort, { once: true });
    // A terminal in raw mode hands Ctrl+C to readline instead of raising SIGINT.
    rl.on('SIGINT', onInterrupt);
    rl.on('line', (line) => {
      const answer = line.trim();
      if (answer === '' || settled) return;
      settle();
      resolve(answer);
    });
    rl.once('close', () => {
      if (settled) return;
      settle();
      reject(new CredproxyError('INVALID_REQUEST', 'no code was entered'));
    });
  });
}
