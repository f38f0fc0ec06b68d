import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';

/**
 * vitest globalSetup: a private D-Bus session bus with an unlocked
 * gnome-keyring, so the keyring backend is tested against a real Secret
 * Service without a desktop session. Workers inherit the bus address.
 * Missing binaries fail the run loudly: nothing is skipped.
 */
export default async function setup(): Promise<() => Promise<void>> {
  for (const bin of ['dbus-daemon', 'gnome-keyring-daemon']) {
    if (spawnSync('sh', ['-c', `command -v ${bin}`]).status !== 0) {
      throw new Error(`${bin} is not installed; the keyring tests need it: apt-get install -y gnome-keyring dbus dbus-x11 libsecret-tools`);
    }
  }
  const home = mkdtempSync('/tmp/cp-keyring-');
  const env = {
    ...process.env,
    HOME: home,
    XDG_DATA_HOME: join(home, 'data'),
    XDG_RUNTIME_DIR: home,
    XDG_CONFIG_HOME: join(home, 'config'),
  };
  const bus = spawnSync('dbus-daemon', ['--session', '--fork', '--nopidfile', '--print-address=1', '--print-pid=1'], { env, encoding: 'utf8' });
  const [address, pidText] = bus.stdout.trim().split('\n');
  if (bus.status !== 0 || !address || !pidText) throw new Error(`could not start a private dbus-daemon: ${bus.stderr}`);
  const busPid = Number(pidText);
  const keyringEnv = { ...env, DBUS_SESSION_BUS_ADDRESS: address };
  await new Promise<void>((resolve, reject) => {
    const daemon = spawn('gnome-keyring-daemon', ['--unlock', '--components=secrets'], { env: keyringEnv, stdio: ['pipe', 'pipe', 'pipe'] });
    let err = '';
    daemon.stderr.on('data', (d: Buffer) => (err += d.toString()));
    daemon.on('error', reject);
    daemon.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`gnome-keyring-daemon failed (${code}): ${err}`))));
    daemon.stdin.end('credproxy-test');
  });
  process.env.CREDPROXY_TEST_DBUS_ADDRESS = address;
  process.env.DBUS_SESSION_BUS_ADDRESS = address;
  return async () => {
    try {
      process.kill(busPid, 'SIGTERM');
    } catch {
      /* already gone */
    }
    // gnome-keyring-daemon exits on its own when its bus goes away.
    rmSync(home, { recursive: true, force: true });
  };
}
