import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import type { Writable } from 'node:stream';
import { isatty } from 'node:tty';
import { fileURLToPath } from 'node:url';
import { Option, type Command } from 'commander';
import { CredproxyError } from '../../errors.js';
import { bwrapArgs, commandExited, encodeFdArgs, sandboxEnvironment } from '../../sandbox/bwrap.js';
import { afterRun, layoutInput, missingPlaceholders, type LayoutRequest } from '../../sandbox/layout.js';
import { formatPlan, planMounts, type MountInput, type MountPlan } from '../../sandbox/mounts.js';
import { canonicalPath } from '../../sandbox/paths.js';
import { describeFilter, seccompFilter } from '../../sandbox/seccomp.js';
import { probeBwrap } from '../../sandbox/bwrap-features.js';
import { bwrapCommandPid, closeInheritableFds, mountNamespace, SignalRelay, spawnChild, type ChildRun } from '../../sandbox/child.js';
import { containerArgs } from '../../sandbox/container.js';
import { TOKEN_FILE_NAME } from '../../client/capability-token.js';
import { capabilityFdBytes, llxprtEnv, llxprtMode, llxprtWanted, LLXPRT_TOKEN_ENV } from '../../sandbox/llxprt.js';
import { gatewayPlan } from '../../gateway/sandbox.js';
import { proxyEnv } from '../../egress/env.js';
import { agentHosts, egressRules, describeRules } from '../../egress/cli.js';
import type { HostRule } from '../../egress/hosts.js';
import { AGENTS, agentEnvPlan, agentSetup, explainAgent, locateAgentCommand, prepareAgentEnv, type Agent, type AgentEnvPlan } from '../../gateway/agents.js';
import { engineEnv, sandboxEnv, type SandboxKind, type SandboxSpec } from '../../sandbox/spec.js';
import type { CliContext } from '../context.js';
import { addPolicyOptions, policyFromFlags } from '../policy-flags.js';
import { addGatewayOptions, parseTransport, startProxy, type ProxyFlags, type RunningProxy } from '../proxy.js';
import { createSocketDir } from '../socket-dir.js';

interface RunFlags extends ProxyFlags {
  agent?: Agent;
  sandbox?: SandboxKind;
  image?: string;
  workdir: boolean;
  shareNet?: boolean;
  engineArg: string[];
  llxprt?: boolean;
  roBind: string[];
  bind: string[];
  unprotect: string[];
  explain?: boolean;
  allowHost: string[];
}

/** bwrap's fds beyond stdio: 3 and 4 stay free for the command's own use (a capability fd). */
const BWRAP_FDS = { status: 5, args: 6, seccomp: 7 } as const;

/** `run` failures of its own, as docker/podman do: never mistaken for the command's status. */
export const RUN_FAILURE_EXIT = 125;

const collect = (value: string, previous: string[]): string[] => [...previous, value];

export function registerRunCommand(program: Command, ctx: CliContext): void {
  const cmd = program
    .command('run')
    .description('start the proxy, then CMD in a sandbox that sees only the proxy socket; exit with CMD’s status')
    .addOption(new Option('--sandbox <kind>', 'bwrap (default when installed), docker, podman, or none (no sandbox: run as root, the command can still type into a terminal it holds)').choices(['bwrap', 'docker', 'podman', 'none']))
    .option('--image <image>', 'container image (docker/podman)')
    .option('--engine-arg <arg>', 'extra argument for docker/podman run (repeatable)', collect, [])
    .option('--socket-dir <dir>', 'directory for the socket (default: a fresh one under the run dir)')
    .option('--transport <spec>', 'unix (default), or tcp[:HOST[:PORT]] for VM-based engines (docker/podman/none only)')
    .option('--no-workdir', 'do not bind the current directory into the sandbox')
    .option('--share-net', 'keep network access inside the sandbox (host network, including abstract Unix sockets such as X11’s)')
    .option('--ro-bind <path>', 'bwrap: also show PATH read-only inside, at its own path (repeatable)', collect, [])
    .option('--bind <path>', 'bwrap: also bind PATH read-write inside, at its own path (repeatable)', collect, [])
    .option('--unprotect <path>', 'bwrap: leave PATH (e.g. .git, .vscode) writable inside (repeatable)', collect, [])
    .option('--explain', 'print the sandbox’s mount table and environment names, and exit')
    .option('--allow-host <host[:port]>', 'let the command reach HOST (ports 80 and 443, or :PORT, or :*) through the egress proxy; *.domain, literal addresses, @npm, @pypi, @github (repeatable)', collect, [])
    .option('--no-peer-check', 'do not require SO_PEERCRED peer checks (Linux)')
    .option('--llxprt', "give CMD llxprt-code's contract (LLXPRT_CREDENTIAL_SOCKET, the token on fd 3) instead of CREDPROXY_*; default when CMD is llxprt")
    .option('--no-llxprt', 'never use the llxprt-code contract, even when CMD is llxprt')
    .addOption(new Option('--agent <name>', 'set up the sandbox for this agent (implies --gateway)').choices([...AGENTS]))
    .argument('<command...>', 'the command to run, after --')
    .passThroughOptions();
  addGatewayOptions(addPolicyOptions(cmd)).action(async (command: string[], flags: RunFlags) => {
    try {
      ctx.exitCode = await run(ctx, command, flags);
    } catch (err) {
      if (err instanceof CredproxyError && err.code === 'USAGE') throw err;
      ctx.notice(`run failed: ${err instanceof CredproxyError ? `${err.code}: ${err.message}` : err instanceof Error ? err.message : 'unexpected failure'}`);
      ctx.exitCode = RUN_FAILURE_EXIT;
    }
  });
}

function onPath(bin: string, env: NodeJS.ProcessEnv): boolean {
  return spawnSync('sh', ['-c', `command -v ${bin}`], { env: { PATH: env.PATH ?? '/usr/bin:/bin' }, stdio: 'ignore' }).status === 0;
}

function isUnder(path: string, dir: string): boolean {
  return path === dir || path.startsWith(dir.endsWith('/') ? dir : `${dir}/`);
}

function chooseSandbox(flags: RunFlags, env: NodeJS.ProcessEnv): SandboxKind {
  if (flags.sandbox) {
    if (flags.sandbox !== 'none' && !onPath(flags.sandbox === 'bwrap' ? 'bwrap' : flags.sandbox, env)) {
      throw new CredproxyError('STORE_UNAVAILABLE', `${flags.sandbox} is not installed or not on PATH`);
    }
    return flags.sandbox;
  }
  if (onPath('bwrap', env)) return 'bwrap';
  throw new CredproxyError(
    'USAGE',
    'bubblewrap (bwrap) is not installed, and run never falls back silently: install it (e.g. `apt-get install bubblewrap`), or choose `--sandbox docker|podman`, or `--sandbox none` to run without a sandbox',
  );
}

/** The package root (…/credproxy), so the same binary is reachable inside the sandbox. */
function packageRoot(): string {
  return resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
}

async function run(ctx: CliContext, command: string[], flags: RunFlags): Promise<number> {
  const env = ctx.io.env;
  const kind = chooseSandbox(flags, env);
  if ((kind === 'docker' || kind === 'podman') && !flags.image) throw new CredproxyError('USAGE', `--sandbox ${kind} needs --image`);
  const tcp = parseTransport(flags.transport);
  if (tcp && kind === 'bwrap') throw new CredproxyError('USAGE', 'bwrap shares the Unix socket and has no network; --transport tcp is for docker, podman (VM-based engines) and none');
  const llxprt = llxprtWanted(llxprtMode(flags.llxprt), command);
  if (llxprt && tcp) throw new CredproxyError('USAGE', 'llxprt-code reaches the proxy only through a Unix socket: drop --transport tcp, or pass --no-llxprt');
  const dirs = ctx.dirs();
  const home = env.HOME || homedir();
  const cwd = process.cwd();
  const config = await ctx.config();
  const profile = flags.profile === undefined ? undefined : config.profiles[flags.profile];
  // Found before the mount plan: the agent's install dir becomes a read-only tool dir inside.
  // In a container the agent is the image's: nothing of the host's to find or show.
  const agentTool = flags.agent === undefined || kind === 'docker' || kind === 'podman' ? undefined : locateAgentCommand(command, env);
  const layout: LayoutRequest = {
    cwd,
    bindWorkdir: flags.workdir,
    env,
    dirs,
    roBinds: [...(profile?.roBind ?? []), ...flags.roBind],
    rwBinds: [...(profile?.bind ?? []), ...flags.bind],
    unprotect: [...(profile?.unprotect ?? []), ...flags.unprotect],
    packageRoot: packageRoot(),
    nodeBinary: process.execPath,
    ...(agentTool === undefined ? {} : { agentDir: agentTool.dir }),
  };
  // Egress allowlist (issue 15): flags, the profile's, and what the agent needs; bad entries are usage errors.
  const hostRules = egressRules([...(profile?.allowHost ?? []), ...flags.allowHost, ...(flags.agent === undefined ? [] : agentHosts(flags.agent))]);
  if (hostRules.length > 0 && flags.shareNet) throw new CredproxyError('USAGE', '--allow-host limits the network to an allowlist and --share-net gives all of it: choose one');
  if (kind !== 'bwrap' && (layout.roBinds.length || layout.rwBinds.length || layout.unprotect.length || flags.explain)) {
    throw new CredproxyError('USAGE', '--ro-bind, --bind, --unprotect and --explain are for --sandbox bwrap');
  }
  let input: MountInput | undefined;
  if (kind !== 'none') {
    input = layoutInput(layout); // refuses an unsafe workdir or bind with exit 2 (a container's /work as well)
    if (flags.explain) {
      // With --agent: what its preset sets inside and why (the policy decides the mode; a policy it cannot run on is a usage error).
      const agentLines = flags.agent === undefined ? [] : explainAgent(agentSetup(flags.agent, policyFromFlags(flags, config)));
      return explain(ctx, planMounts({ ...input, socketDir: '<socket dir, made per run>' }), command, env, home, hostRules, agentLines);
    }
  } else {
    noneAsRootNotice(ctx);
    const own = [dirs.config, dirs.data, dirs.state].find((d) => isUnder(d, cwd));
    if (flags.workdir && (cwd === '/' || cwd === home || own)) {
      throw new CredproxyError(
        'USAGE',
        `refusing to bind ${cwd} into the sandbox (${cwd === '/' ? 'the root directory' : cwd === home ? 'your home directory' : `it contains credproxy's own ${own}`}); cd into a project directory or pass --no-workdir`,
      );
    }
  }

  const policy = policyFromFlags(flags, config); // bad rules are usage errors (2); past this point failures are run's own (125)
  const agent = flags.agent === undefined ? undefined : agentEnvPlan(flags.agent, policy);
  if (agent) flags.gateway = true;
  const egress = hostRules.length > 0;
  const container = kind === 'docker' || kind === 'podman';
  if ((flags.gateway || egress) && container && llxprt) throw new CredproxyError('USAGE', `--gateway and --allow-host with --sandbox ${kind} do not take llxprt-code images yet; pass --no-llxprt or use --sandbox bwrap`);
  const gateway = flags.gateway || egress ? gatewayPlan(kind, packageRoot(), process.execPath, agent, { gateway: Boolean(flags.gateway), egress, fd3: llxprt, tcp: Boolean(tcp) }) : undefined;
  if (gateway === null) throw new CredproxyError('USAGE', `--gateway and --allow-host reach a container through the run's socket directory: drop --transport tcp`);
  let proxy: RunningProxy;
  try {
    // The command owns the terminal: the proxy only speaks up for warnings (the audit log has the rest).
    proxy = await startProxy(ctx, flags, {
      logLevel: 'warn',
      policy,
      ...(gateway?.listen ? { gateway: { listen: gateway.listen } } : {}),
      ...(gateway?.egressListen ? { egress: { rules: hostRules, listen: gateway.egressListen } } : {}),
    });
  } catch (err) {
    if (err instanceof CredproxyError) throw new CredproxyError(err.code === 'USAGE' ? 'INTERNAL_ERROR' : err.code, `the proxy could not start: ${err.message}`);
    throw err;
  }
  const root = layout.packageRoot;
  const nodeDir = dirname(process.execPath);
  const spec: SandboxSpec = {
    socketDir: tcp ? '' : dirname(proxy.socketPath),
    socketName: tcp ? '' : basename(proxy.socketPath),
    tcpPort: tcp ? Number(new URL(proxy.socketPath).port) : null,
    capabilityToken: proxy.capabilityToken,
    command: gateway ? gateway.wrap(agentTool?.command ?? command) : command,
    workdir: flags.workdir ? (input?.workdir ?? cwd) : null, // canonical: the path the mount plan protects
    shareNet: Boolean(flags.shareNet),
    home,
    env: sandboxEnv(env, [join(root, 'bin'), nodeDir]),
    llxprt,
  };
  let plan: MountPlan | undefined;
  let created: string[] = [];
  if (kind === 'bwrap') {
    plan = planMounts({ ...input!, socketDir: canonicalPath(spec.socketDir) });
    for (const w of plan.warnings) ctx.notice(`warning: ${w}`);
    created = missingPlaceholders(plan);
  }
  let envDir: string | undefined;
  let launched: ChildRun | undefined;
  let commandPid: () => number | null = () => null;
  let bwrapStatus = '';
  let sandboxNamespace: string | null = null;
  let statusDone: Promise<void> = Promise.resolve();
  const cleanup = async (): Promise<void> => {
    if (envDir) rmSync(envDir, { recursive: true, force: true });
    // A --socket-dir of the user's outlives the run: the token file must not.
    if ((kind === 'docker' || kind === 'podman') && spec.socketDir !== '') rmSync(join(spec.socketDir, TOKEN_FILE_NAME), { force: true });
    if (plan) for (const w of afterRun(created, plan, sandboxNamespace === null ? [] : [sandboxNamespace])) ctx.notice(`warning: ${w}`);
    await proxy.stop();
  };
  // Started before the spawn, so a signal in between is held for the command instead of killing the launcher.
  const relay = new SignalRelay({ target: () => commandPid(), jobControl: true, sharesTerminal: false }).start();
  try {
    launched = launch(kind, spec, plan, proxy, flags, dirs.run, (d) => (envDir = d), agent, gateway?.relayMounts);
    const child = launched.child;
    if (kind === 'bwrap') {
      let infoPid: number | null = null;
      const statusStream = (child.stdio as unknown as Array<NodeJS.ReadableStream | null>)[BWRAP_FDS.status];
      statusStream?.on('data', (d: Buffer) => {
        bwrapStatus += d.toString('utf8');
        const m = /"child-pid"\s*:\s*(\d+)/.exec(bwrapStatus);
        if (m && infoPid === null) {
          infoPid = Number(m[1]);
          // Ours, which may outlive bwrap by a moment: its mounts are not another run's (see afterRun).
          sandboxNamespace = mountNamespace(infoPid);
        }
      });
      statusDone = statusStream ? new Promise<void>((r) => statusStream.once('close', () => r())) : Promise.resolve();
      // Until bwrap reports its helper and the helper has started the command, there is nobody to signal yet.
      commandPid = () => (infoPid === null ? null : bwrapCommandPid(infoPid));
    } else {
      commandPid = () => child.pid ?? null;
    }
  } catch (err) {
    relay.stop();
    await cleanup();
    throw err;
  }
  let status: number;
  try {
    status = await launched.status;
  } catch (err) {
    relay.stop();
    await cleanup();
    throw new CredproxyError('INTERNAL_ERROR', `could not start the ${kind} sandbox: ${(err as NodeJS.ErrnoException).code ?? 'unknown error'}`);
  }
  if (kind === 'bwrap') {
    await statusDone;
    if (launched.child.signalCode === null && !commandExited(bwrapStatus)) {
      relay.stop();
      await cleanup();
      throw new CredproxyError('INTERNAL_ERROR', 'bwrap could not set up the sandbox (its message is above)');
    }
  }
  relay.stop();
  await cleanup();
  return status;
}

/**
 * Every launcher starts in a session of its own (`detached`): it has no
 * controlling terminal, so the terminal's ^C reaches only the launcher,
 * which relays it once. bwrap's outer process, in the terminal's group,
 * would otherwise die of it and take the sandbox down with SIGKILL.
 */
function launch(
  kind: SandboxKind,
  spec: SandboxSpec,
  plan: MountPlan | undefined,
  proxy: RunningProxy,
  flags: RunFlags,
  runDir: string,
  setEnvDir: (d: string) => void,
  agent?: AgentEnvPlan,
  relayMounts?: Array<{ host: string; inside: string }>,
): ChildRun {
  if (kind === 'bwrap') {
    const { argv, fdArgs } = bwrapArgs(spec, plan!.ops, BWRAP_FDS, probeBwrap());
    // bwrap passes on every descriptor it gets: only stdio and the ones set up here may reach the command.
    closeInheritableFds();
    const run = spawnChild('bwrap', argv, {
      // fd 3 is the command's (llxprt-code's capability descriptor); bwrap's own start at 5.
      stdio: ['inherit', 'inherit', 'inherit', spec.llxprt ? 'pipe' : 'ignore', 'ignore', 'pipe', 'pipe', 'pipe'],
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
      detached: true,
    });
    // bwrap closes its ends on a failed start; the exit status reports that, not an EPIPE here.
    const feed = (fd: number, data: Buffer): void => {
      const pipe = (run.child.stdio as unknown as Array<Writable | null>)[fd] ?? null;
      pipe?.on('error', () => undefined);
      pipe?.end(data);
    };
    feed(BWRAP_FDS.args, encodeFdArgs(fdArgs));
    feed(BWRAP_FDS.seccomp, seccompFilter());
    if (spec.llxprt) sendCapabilityFd(run, spec.capabilityToken);
    return run;
  }
  if (kind === 'none') {
    const gatewayUrl = proxy.gateway?.addresses[0];
    // The agent's config directory: a private directory of this run's under the run dir, never the user's own.
    // It is removed with the run, and swept like a socket dir if the launcher is killed first.
    let agentEnv: ReturnType<typeof prepareAgentEnv> | undefined;
    if (agent !== undefined && gatewayUrl !== undefined) {
      const parent = createSocketDir(runDir);
      setEnvDir(parent);
      agentEnv = prepareAgentEnv(agent, parent, gatewayUrl, spec.capabilityToken);
    }
    const egressUrl = proxy.egress?.addresses[0];
    const env = {
      ...(egressUrl === undefined ? {} : proxyEnv(egressUrl)),
      ...spec.env,
      HOME: spec.home,
      ...(spec.llxprt ? llxprtEnv(proxy.socketPath) : { CREDPROXY_SOCKET: proxy.socketPath, CREDPROXY_TOKEN: spec.capabilityToken }),
      ...(gatewayUrl === undefined ? {} : { CREDPROXY_GATEWAY_URL: gatewayUrl }),
      ...(agentEnv?.env ?? {}),
    };
    const run = spawnChild(spec.command[0]!, spec.command.slice(1), { stdio: ['inherit', 'inherit', 'inherit', spec.llxprt ? 'pipe' : 'ignore'], env, cwd: spec.workdir ?? spec.home, detached: true });
    if (spec.llxprt) sendCapabilityFd(run, spec.capabilityToken);
    return run;
  }
  // docker/podman: the token goes through a 0600 env file in a private directory (swept like a socket dir if we are killed), never argv.
  const envDir = createSocketDir(runDir);
  setEnvDir(envDir);
  const cidFile = join(envDir, 'cid');
  // The token as a 0400 file in the read-only socket mount: nothing in the container's configuration holds it.
  // llxprt images read theirs from the environment, and the TCP transport has no mount to carry a file.
  const viaFile = !spec.llxprt && spec.tcpPort === null;
  const envFile = viaFile ? undefined : join(envDir, 'env');
  if (envFile === undefined) {
    // A run killed before its cleanup leaves its file in a --socket-dir of the user's; wx then never follows a planted link.
    const tokenFile = join(spec.socketDir, TOKEN_FILE_NAME);
    rmSync(tokenFile, { force: true });
    writeFileSync(tokenFile, `${spec.capabilityToken}\n`, { mode: 0o400, flag: 'wx' });
  }
  else writeFileSync(envFile, `${spec.llxprt ? LLXPRT_TOKEN_ENV : 'CREDPROXY_TOKEN'}=${spec.capabilityToken}\n`, { mode: 0o600 });
  const args = containerArgs(spec, {
    engine: kind,
    image: flags.image!,
    ...(envFile === undefined ? {} : { envFile }),
    cidFile,
    tty: isatty(0),
    uid: process.getuid?.() ?? 0,
    gid: process.getgid?.() ?? 0,
    engineArgs: flags.engineArg,
    ...(relayMounts === undefined ? {} : { relayMounts }),
  });
  const run = spawnChild(kind, args, { stdio: 'inherit', env: engineEnv(process.env), detached: true });
  if (envFile !== undefined) removeOnceCreated(envFile, cidFile, run);
  return run;
}

/**
 * The engine has read the env file by the time it writes the container id
 * (docker creates the cid file empty and fills it after the create call):
 * remove the token file then rather than leave it for the whole run.
 */
/** The token, a newline, then EOF on the child's fd 3 (llxprt-code reads it once, to the end). */
function sendCapabilityFd(run: ChildRun, token: string): void {
  const pipe = (run.child.stdio as unknown as Array<Writable | null>)[3] ?? null;
  // A command that never reads fd 3 and exits is not an error of ours.
  pipe?.on('error', () => undefined);
  pipe?.end(capabilityFdBytes(token));
}

function removeOnceCreated(envFile: string, cidFile: string, run: ChildRun, intervalMs = 50): void {
  let done = false;
  const finish = (): void => {
    done = true;
    rmSync(envFile, { force: true });
  };
  run.status.then(finish, finish);
  const poll = (): void => {
    if (done) return;
    let created = false;
    try {
      created = readFileSync(cidFile, 'utf8').trim().length > 0;
    } catch {
      /* not yet */
    }
    if (created) finish();
    else setTimeout(poll, intervalMs).unref();
  };
  poll();
}

/** `run --explain`: the boundary as bwrap would build it, without starting anything. */
function explain(ctx: CliContext, plan: MountPlan, command: string[], env: NodeJS.ProcessEnv, home: string, hostRules: readonly HostRule[], agentLines: readonly string[] = []): number {
  const out = ctx.io.stdout;
  const spec = { env: sandboxEnv(env, [join(packageRoot(), 'bin'), dirname(process.execPath)]), home, socketName: '<socket>' };
  const lines = [
    'mounts (in order; a later line covers an earlier one):',
    ...formatPlan(plan.ops).map((l) => `  ${l}`),
    'environment:',
    `  ${[...Object.keys(sandboxEnvironment(spec)), 'CREDPROXY_TOKEN'].sort().join(' ')}`,
    ...describeRules(hostRules),
    ...agentLines,
    `namespaces: all unshared (network kept with --share-net), nested user namespaces ${probeBwrap().disableUserns ? 'disabled (--disable-userns) and ' : ''}refused by seccomp, no capabilities`,
    'seccomp:',
    ...describeFilter().map((l) => `  ${l}`),
    ...plan.warnings.map((w) => `warning: ${w}`),
    `command: ${command.join(' ')}`,
  ];
  out.write(`${lines.join('\n')}\n`);
  return 0;
}

/**
 * A child of `--sandbox none` runs in a session of its own, without a
 * controlling terminal, which stops TIOCSTI for ordinary users; root passes
 * the kernel's capability check and can still type into a terminal it holds.
 */
function noneAsRootNotice(ctx: CliContext): void {
  if (process.getuid?.() === 0 && isatty(0)) ctx.notice('warning: --sandbox none as root: the command can push keystrokes into this terminal (TIOCSTI); use bwrap for anything untrusted');
}
