import type { Writable } from 'node:stream';
import type { Command } from 'commander';
import { CredproxyError } from '../../errors.js';
import { DEFAULT_BUCKET, isBucketName, isKeyName, isProviderName } from '../../names.js';
import { SignalRelay, spawnChild } from '../../sandbox/child.js';
import { capabilityFdBytes, llxprtEnv, llxprtMode, llxprtWanted } from '../../sandbox/llxprt.js';
import type { CliContext } from '../context.js';
import { UsageError } from '../io.js';
import { capabilityTokenFromEnv, TOKEN_FILE_ENV } from '../../client/capability-token.js';

export type EnvSource = { var: string; kind: 'token'; provider: string; bucket: string } | { var: string; kind: 'key'; name: string };

const VAR_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;
const collect = (value: string, previous: string[]): string[] => [...previous, value];

/** `VAR=token:PROVIDER[:BUCKET]` or `VAR=key:NAME`; anything else is a usage error. */
export function parseEnvSpec(spec: string): EnvSource {
  const eq = spec.indexOf('=');
  const name = eq > 0 ? spec.slice(0, eq) : '';
  if (!VAR_RE.test(name)) throw new UsageError(`--env ${JSON.stringify(spec.slice(0, 80))}: expected VAR=token:PROVIDER[:BUCKET] or VAR=key:NAME`);
  const [kind, a, b, ...rest] = spec.slice(eq + 1).split(':');
  if (kind === 'token' && isProviderName(a) && rest.length === 0 && (b === undefined || isBucketName(b))) {
    return { var: name, kind: 'token', provider: a, bucket: b ?? DEFAULT_BUCKET };
  }
  if (kind === 'key' && isKeyName(a) && b === undefined) return { var: name, kind: 'key', name: a };
  throw new UsageError(`--env ${name}=...: expected token:PROVIDER[:BUCKET] or key:NAME with valid names`);
}

export function registerExecCommand(program: Command, ctx: CliContext): void {
  program
    .command('exec')
    .description('run CMD with environment variables filled from the proxy (for tools that only read env vars)')
    .option('--env <VAR=SOURCE>', 'VAR=token:PROVIDER[:BUCKET] or VAR=key:NAME (repeatable)', collect, [])
    .option('--llxprt', "hand CMD this proxy the llxprt-code way (LLXPRT_CREDENTIAL_SOCKET, the token on fd 3, no CREDPROXY_*); default when CMD is llxprt")
    .option('--no-llxprt', 'never use the llxprt-code contract')
    .argument('<command...>', 'the command to run, after --')
    .passThroughOptions()
    .action(async (command: string[], opts: { env: string[]; llxprt?: boolean }) => {
      const sources = opts.env.map(parseEnvSpec);
      if (!ctx.inSandbox) throw new CredproxyError('USAGE', 'exec runs inside a sandbox started by `credproxy run` (CREDPROXY_SOCKET is not set)');
      const llxprt = llxprtWanted(llxprtMode(opts.llxprt), command);
      const token = capabilityTokenFromEnv(ctx.io.env) ?? '';
      // Checked before anything runs: a tcp:// proxy or a token of another shape cannot be handed on.
      const childEnv: NodeJS.ProcessEnv = { ...ctx.io.env };
      let fd3: Buffer | undefined;
      if (llxprt) {
        Object.assign(childEnv, llxprtEnv(ctx.io.env.CREDPROXY_SOCKET ?? ''));
        fd3 = capabilityFdBytes(token);
        // llxprt-code scrubs only its own names: ours would reach every tool it runs.
        delete childEnv.CREDPROXY_TOKEN;
        delete childEnv[TOKEN_FILE_ENV];
        delete childEnv.CREDPROXY_SOCKET;
      }
      const client = ctx.client();
      const values: Record<string, string> = {};
      for (const s of sources) {
        values[s.var] =
          s.kind === 'token'
            ? (await client.request('get_token', { provider: s.provider, bucket: s.bucket })).access_token
            : (await client.request('get_api_key', { name: s.name })).key;
      }
      await client.close();
      // CMD stays in our process group and keeps our terminal, as if exec'd in our place.
      const { child, status } = spawnChild(command[0]!, command.slice(1), { stdio: ['inherit', 'inherit', 'inherit', fd3 ? 'pipe' : 'ignore'], env: { ...childEnv, ...values } });
      if (fd3) {
        const pipe = child.stdio[3] as Writable | null;
        pipe?.on('error', () => undefined);
        pipe?.end(fd3);
      }
      const relay = new SignalRelay({ target: () => child.pid ?? null, jobControl: false, sharesTerminal: true }).start();
      try {
        ctx.exitCode = await status;
      } catch (err) {
        // As a shell would: 127 for a command that is not there, 126 for one that cannot run.
        const code = (err as NodeJS.ErrnoException).code;
        ctx.notice(`cannot start ${command[0]}: ${code ?? 'unknown error'}`);
        ctx.exitCode = code === 'ENOENT' ? 127 : 126;
      } finally {
        relay.stop();
      }
    });
}
