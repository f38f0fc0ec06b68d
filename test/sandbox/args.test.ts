import { describe, expect, it } from 'vitest';
import { bwrapArgs, commandExited, encodeFdArgs } from '../../src/sandbox/bwrap.js';
import { parseBwrapVersion } from '../../src/sandbox/bwrap-features.js';
import { planMounts, type MountInput } from '../../src/sandbox/mounts.js';
import { containerArgs } from '../../src/sandbox/container.js';
import { engineEnv, sandboxEnv, type SandboxSpec } from '../../src/sandbox/spec.js';

const spec = (over: Partial<SandboxSpec> = {}): SandboxSpec => ({
  socketDir: '/run/user/1000/credproxy/s-1-abcd',
  socketName: 'credproxy-1-00.sock',
  tcpPort: null,
  capabilityToken: 'c'.repeat(64),
  command: ['agent', '--flag'],
  workdir: '/home/u/project',
  shareNet: false,
  home: '/home/u',
  env: sandboxEnv({ PATH: '/usr/bin:/bin', TERM: 'xterm', CREDPROXY_PASSPHRASE: 'secret', AWS_SECRET_ACCESS_KEY: 'x', USER: 'u' }, ['/home/u/src/credproxy/bin']),
  ...over,
});

/** Pairs "--flag a b" into triples for readable assertions. */
function binds(args: string[], flag: string): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  args.forEach((a, i) => {
    if (a === flag) out.push([args[i + 1]!, args[i + 2]!]);
  });
  return out;
}
function singles(args: string[], flag: string): string[] {
  return args.flatMap((a, i) => (a === flag ? [args[i + 1]!] : []));
}

const FDS = { status: 5, args: 6, seccomp: 7 };
const input = (s: SandboxSpec): MountInput => ({
  workdir: s.workdir,
  homes: ['/home/u'],
  credproxyDirs: ['/home/u/.config/credproxy', '/home/u/.local/share/credproxy', '/srv/state/credproxy', '/run/user/1000/credproxy'],
  socketDir: s.socketDir,
  toolDirs: ['/home/u/src/credproxy', '/usr/bin'],
  binds: [],
  unprotect: [],
});
const invocation = (s: SandboxSpec) => bwrapArgs(s, planMounts(input(s)).ops, FDS);
const argv = (s: SandboxSpec): string[] => invocation(s).argv;

describe('bwrap arguments', () => {
  it('mounts the root read-only, masks home, /tmp, /var/tmp, /run and credproxy’s own dirs', () => {
    const a = argv(spec());
    expect(binds(a, '--ro-bind')[0]).toEqual(['/', '/']);
    const tmpfs = singles(a, '--tmpfs');
    for (const d of ['/tmp', '/var/tmp', '/run', '/home/u', '/srv/state/credproxy']) expect(tmpfs).toContain(d);
    // Dirs already under a masked path need no extra tmpfs.
    expect(tmpfs).not.toContain('/home/u/.config/credproxy');
    expect(a).toEqual(expect.arrayContaining(['--unshare-all', '--unshare-user', '--disable-userns', '--die-with-parent', '--clearenv', '--json-status-fd', '5', '--seccomp', '7']));
    // No controlling terminal inside: TIOCSTI cannot type into the user's shell.
    expect(a).toContain('--new-session');
    // Every option comes before the command, so none of them can be mistaken for its arguments.
    expect(a.indexOf('--new-session')).toBeLessThan(a.indexOf('--'));
    expect(a.slice(a.indexOf('--cap-drop'), a.indexOf('--cap-drop') + 2)).toEqual(['--cap-drop', 'ALL']);
    expect(a).not.toContain('--share-net');
    expect(a.slice(a.indexOf('--') + 1)).toEqual(['agent', '--flag']);
  });

  it('binds only the socket directory (read-only), the workdir and tools — never home, config or data', () => {
    const a = argv(spec());
    const ro = binds(a, '--ro-bind');
    const rw = binds(a, '--bind');
    expect(ro).toContainEqual(['/run/user/1000/credproxy/s-1-abcd', '/run/credproxy']);
    expect(ro).toContainEqual(['/home/u/src/credproxy', '/home/u/src/credproxy']); // tool under masked home comes back ro
    expect(ro).not.toContainEqual(['/usr/bin', '/usr/bin']); // already visible through the ro root
    expect(rw[0]).toEqual(['/home/u/project', '/home/u/project']);
    // Besides the workdir, read-write binds only pin dirs onto themselves (nothing else of the host).
    for (const [src, dest] of rw) expect(src).toBe(dest);
    for (const [src] of rw) expect(src.startsWith('/home/u/project')).toBe(true);
    for (const [src] of [...ro, ...rw]) {
      expect(src === '/home/u' || src.includes('.config/credproxy') || src.includes('.local/share/credproxy') || src === '/srv/state/credproxy').toBe(false);
    }
    // The socket dir is bound after /run is masked (bwrap applies mounts in order).
    expect(a.indexOf('/run/credproxy')).toBeGreaterThan(a.indexOf('/run'));
    const noWork = argv(spec({ workdir: null }));
    expect(binds(noWork, '--bind')).toEqual([]);
    expect(singles(noWork, '--chdir')).toEqual(['/']);
    expect(argv(spec({ shareNet: true }))).toContain('--share-net');
  });

  it('sets exactly the socket, the token and harmless variables; the token only through --args', () => {
    const { argv: a, fdArgs } = invocation(spec());
    // /proc/PID/cmdline is readable by every local user: the token must not be on it.
    expect(a.join('\0')).not.toContain('c'.repeat(64));
    expect(singles(a, '--args')).toEqual(['6']);
    expect(a.indexOf('--args')).toBeGreaterThan(a.indexOf('--clearenv')); // bwrap applies them in order
    expect(encodeFdArgs(fdArgs).toString('utf8')).toBe(`--setenv\0CREDPROXY_TOKEN\0${'c'.repeat(64)}\0`);
    const env = Object.fromEntries([...binds(a, '--setenv'), ...binds(fdArgs, '--setenv')]);
    expect(env).toEqual({
      PATH: '/home/u/src/credproxy/bin:/usr/bin:/bin',
      TERM: 'xterm',
      USER: 'u',
      HOME: '/home/u',
      CREDPROXY_SOCKET: '/run/credproxy/credproxy-1-00.sock',
      CREDPROXY_TOKEN: 'c'.repeat(64),
    });
  });
});

describe('bwrap features', () => {
  it('reads the version and leaves --disable-userns out where bwrap or the kernel lacks it', () => {
    expect(parseBwrapVersion('bubblewrap 0.8.0\n')).toEqual([0, 8, 0]);
    expect(parseBwrapVersion('bubblewrap 0.6\n')).toEqual([0, 6, 0]);
    expect(parseBwrapVersion('nonsense')).toBeNull();
    const old = bwrapArgs(spec(), planMounts(input(spec())).ops, FDS, { disableUserns: false }).argv;
    expect(old).not.toContain('--disable-userns');
    expect(old).toContain('--seccomp'); // the filter still refuses CLONE_NEWUSER
  });
});

describe('bwrap status', () => {
  it('tells a command that ran from a sandbox that never started', () => {
    expect(commandExited('{ "child-pid": 10, "mnt-namespace": 4 }\n{ "exit-code": 1 }\n')).toBe(true);
    expect(commandExited('{ "child-pid": 10, "mnt-namespace": 4 }\n')).toBe(false);
    expect(commandExited('')).toBe(false);
  });
});

describe('docker/podman arguments', () => {
  const base = { image: 'img:1', envFile: '/run/x/env-1/env', cidFile: '/run/x/env-1/cid', tty: false, uid: 1000, gid: 1000, engineArgs: ['--memory', '1g'] };

  it('without an env file the token is named by CREDPROXY_TOKEN_FILE in the read-only socket mount, never passed as a value', () => {
    const { envFile: _e, ...noEnvFile } = base;
    const a = containerArgs(spec(), { ...noEnvFile, engine: 'podman' });
    expect(a).not.toContain('--env-file');
    expect(singles(a, '-e')).toContain('CREDPROXY_TOKEN_FILE=/run/credproxy/token');
    expect(a.join(' ')).not.toContain('CREDPROXY_TOKEN=');
  });

  it('mounts only the socket dir and the workdir, passes the token through an env file, no network', () => {
    for (const engine of ['docker', 'podman'] as const) {
      const a = containerArgs(spec(), { ...base, engine });
      expect(singles(a, '-v')).toEqual(['/run/user/1000/credproxy/s-1-abcd:/run/credproxy:ro', '/home/u/project:/work']);
      expect(singles(a, '--env-file')).toEqual(['/run/x/env-1/env']);
      expect(singles(a, '-e').some((e) => e.startsWith('CREDPROXY_TOKEN_FILE='))).toBe(false);
      expect(singles(a, '--cidfile')).toEqual(['/run/x/env-1/cid']); // tells the launcher when the env file has been read
      expect(a.join(' ')).not.toContain('c'.repeat(64)); // never on the command line (visible in ps / inspect)
      expect(singles(a, '-e')).toContain('CREDPROXY_SOCKET=/run/credproxy/credproxy-1-00.sock');
      expect(a.join(' ')).not.toContain('CREDPROXY_PASSPHRASE');
      expect(singles(a, '--network')).toEqual(['none']);
      expect(singles(a, '--user')).toEqual(['1000:1000']);
      expect(a.slice(-5)).toEqual(['--memory', '1g', 'img:1', 'agent', '--flag']);
    }
    expect(containerArgs(spec(), { ...base, engine: 'podman' })).toContain('--userns=keep-id');
    expect(containerArgs(spec({ shareNet: true, workdir: null }), { ...base, engine: 'docker' })).not.toContain('--network');
    expect(singles(containerArgs(spec({ workdir: null }), { ...base, engine: 'docker' }), '-v')).toHaveLength(1);
  });
});

describe('docker/podman arguments with --transport tcp', () => {
  it('mounts no socket, needs the network, and points CREDPROXY_SOCKET at the host alias', () => {
    const base = { image: 'img', envFile: '/e', cidFile: '/c', tty: false, uid: 0, gid: 0, engineArgs: [] };
    const podman = containerArgs(spec({ tcpPort: 4711, socketDir: '', socketName: '' }), { ...base, engine: 'podman' });
    expect(singles(podman, '-v')).toEqual(['/home/u/project:/work']);
    expect(podman).not.toContain('--network');
    expect(singles(podman, '-e')).toContain('CREDPROXY_SOCKET=tcp://host.containers.internal:4711');
    const docker = containerArgs(spec({ tcpPort: 4711, socketDir: '', socketName: '' }), { ...base, engine: 'docker' });
    expect(singles(docker, '--add-host')).toEqual(['host.docker.internal:host-gateway']);
    expect(singles(docker, '-e')).toContain('CREDPROXY_SOCKET=tcp://host.docker.internal:4711');
  });
});

describe('sandbox environment', () => {
  it('passes only the harmless list', () => {
    const env = sandboxEnv({ PATH: '/bin', LANG: 'C', TZ: 'UTC', CREDPROXY_PASSPHRASE: 'p', GITHUB_TOKEN: 't', DBUS_SESSION_BUS_ADDRESS: 'x' });
    expect(env).toEqual({ PATH: '/bin', LANG: 'C', TZ: 'UTC' });
  });
});

describe('engine environment', () => {
  it('keeps what the engine needs and drops credproxy’s own variables', () => {
    const env = engineEnv({ PATH: '/bin', CONTAINERS_CONF: '/c', DOCKER_HOST: 'unix:///d', CREDPROXY_PASSPHRASE: 'p', CREDPROXY_HOME: '/h', CREDPROXY_TOKEN: 't' });
    expect(env).toEqual({ PATH: '/bin', CONTAINERS_CONF: '/c', DOCKER_HOST: 'unix:///d' });
  });
});
