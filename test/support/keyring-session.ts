import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';

const INSTALL = 'apt-get install -y gnome-keyring dbus dbus-x11 libsecret-tools';

export interface KeyringSession {
  /** DBUS_SESSION_BUS_ADDRESS of the private bus. */
  address: string;
  busPid: number;
  keyringPid: number;
  /** Environment that reaches this bus and nothing of the host's session. */
  env: NodeJS.ProcessEnv;
  stop(): Promise<void>;
}

function requireBinaries(): void {
  for (const bin of ['dbus-daemon', 'gnome-keyring-daemon', 'dbus-send']) {
    if (spawnSync('sh', ['-c', `command -v ${bin}`]).status !== 0) {
      throw new Error(`${bin} is not installed; the keyring tests need a real Secret Service: ${INSTALL}`);
    }
  }
}

/** A zombie counts as dead: the daemons are reparented to an init that may reap them late. */
function alive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

async function killAndWait(pid: number): Promise<void> {
  if (!alive(pid)) return;
  process.kill(pid, 'SIGTERM');
  for (let i = 0; i < 100 && alive(pid); i++) await new Promise((r) => setTimeout(r, 20));
  if (alive(pid)) process.kill(pid, 'SIGKILL');
}

async function secretServiceOwner(env: NodeJS.ProcessEnv): Promise<number> {
  let last = '';
  for (let i = 0; i < 100; i++) {
    const owner = spawnSync(
      'dbus-send',
      ['--session', '--print-reply=literal', '--dest=org.freedesktop.DBus', '/org/freedesktop/DBus', 'org.freedesktop.DBus.GetConnectionUnixProcessID', 'string:org.freedesktop.secrets'],
      { env, encoding: 'utf8' },
    );
    const pid = Number(/uint32\s+(\d+)/.exec(owner.stdout ?? '')?.[1]);
    if (pid) return pid;
    last = owner.stderr;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`gnome-keyring-daemon did not register org.freedesktop.secrets: ${last}`);
}

/**
 * A private D-Bus session bus in a temp HOME with an unlocked
 * gnome-keyring on it: a real Secret Service without a desktop session.
 */
export async function startKeyringSession(): Promise<KeyringSession> {
  requireBinaries();
  const home = mkdtempSync('/tmp/cp-keyring-');
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: home,
    XDG_DATA_HOME: join(home, 'data'),
    XDG_CONFIG_HOME: join(home, 'config'),
    XDG_CACHE_HOME: join(home, 'cache'),
    XDG_RUNTIME_DIR: home,
  };
  const bus = spawnSync('dbus-daemon', ['--session', '--fork', '--nopidfile', '--print-address=1', '--print-pid=1'], { env, encoding: 'utf8' });
  const [address, pidText] = (bus.stdout ?? '').trim().split('\n');
  if (bus.status !== 0 || !address || !pidText) throw new Error(`could not start a private dbus-daemon: ${bus.stderr}`);
  const busPid = Number(pidText);
  env.DBUS_SESSION_BUS_ADDRESS = address;
  try {
    await new Promise<void>((resolve, reject) => {
      // --unlock reads the login password on stdin and creates an unlocked login collection.
      const daemon = spawn('gnome-keyring-daemon', ['--unlock', '--components=secrets'], { env, stdio: ['pipe', 'ignore', 'pipe'] });
      let err = '';
      daemon.stderr.on('data', (d: Buffer) => (err += d.toString()));
      daemon.on('error', reject);
      daemon.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`gnome-keyring-daemon failed (${code}): ${err}`))));
      daemon.stdin.end('credproxy-test');
    });
    // The daemon forks and registers on the bus a moment later; ask the bus which process owns the name.
    const keyringPid = await secretServiceOwner(env);
    return {
      address,
      busPid,
      keyringPid,
      env,
      async stop() {
        await killAndWait(keyringPid);
        await killAndWait(busPid);
        rmSync(home, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await killAndWait(busPid);
    rmSync(home, { recursive: true, force: true });
    throw err;
  }
}

/**
 * vitest globalSetup: every test worker inherits the private bus address,
 * so nothing in the suite can reach the developer's own keyring, and the
 * keyring backend is tested against a real Secret Service. Missing binaries
 * fail the run loudly: nothing is skipped.
 */
export default async function setup(): Promise<() => Promise<void>> {
  const session = await startKeyringSession();
  process.env.CREDPROXY_TEST_DBUS_ADDRESS = session.address;
  process.env.DBUS_SESSION_BUS_ADDRESS = session.address;
  return () => session.stop();
}
