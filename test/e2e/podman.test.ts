import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeHostEnv, runCli, type HostEnv } from '../support/cli.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url)).replace(/\/$/, '');
const IMAGE = 'localhost/credproxy-test:latest';
const TOKEN = `at-podman-${process.pid}`;
const KEY = `sk-podman-${process.pid}`;

/**
 * A real container (podman with runc, image built locally with `podman import`,
 * no registry). The image is only a skeleton; the host's /usr (node, sh) and
 * this checkout are mounted read-only through --engine-arg.
 */
describe('credproxy run --sandbox podman', () => {
  let host: HostEnv;
  let scratch: string;
  let env: NodeJS.ProcessEnv;

  beforeAll(() => {
    if (spawnSync('podman', ['--version']).status !== 0) {
      throw new Error('podman is not installed: apt-get install -y podman runc (.ci/run does this); this test is not skipped');
    }
    scratch = mkdtempSync('/tmp/cp-podman-');
    writeFileSync(join(scratch, 'containers.conf'), '[containers]\ndefault_ulimits=["nofile=1024:1024","nproc=1024:1024"]\n[engine]\nruntime="runc"\n');
    const rootfs = join(scratch, 'rootfs');
    for (const d of ['etc', 'tmp', 'run', 'work', 'proc', 'dev', 'sys', 'usr', 'opt/credproxy']) mkdirSync(join(rootfs, d), { recursive: true });
    for (const d of ['bin', 'lib', 'lib64', 'sbin']) symlinkSync(`usr/${d}`, join(rootfs, d));
    writeFileSync(join(rootfs, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
    writeFileSync(join(rootfs, 'etc/group'), 'root:x:0:\n');
    execFileSync('tar', ['-C', rootfs, '-cf', join(scratch, 'rootfs.tar'), '.']);
    host = makeHostEnv({ CONTAINERS_CONF: join(scratch, 'containers.conf') });
    env = host.env;
    execFileSync('podman', ['import', join(scratch, 'rootfs.tar'), IMAGE], { env: { ...process.env, CONTAINERS_CONF: env.CONTAINERS_CONF }, stdio: 'ignore' });
  });
  afterAll(() => {
    host?.cleanup();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  it('gives the container a token and a key through the mounted socket, and nothing else of the host', async () => {
    expect((await runCli(['token', 'import', 'acme'], { env, input: JSON.stringify({ access_token: TOKEN, expiry: 4102444800, refresh_token: 'rt' }) })).code).toBe(0);
    expect((await runCli(['key', 'set', 'openai'], { env, input: KEY })).code).toBe(0);
    const work = mkdtempSync('/tmp/cpw-');
    try {
      const r = await runCli(
        [
          'run', '--sandbox', 'podman', '--image', IMAGE, '--allow', 'acme', '--allow-key', 'openai',
          '--engine-arg=-v', '--engine-arg=/usr:/usr:ro', '--engine-arg=-v', `--engine-arg=${ROOT}:/opt/credproxy:ro`,
          '--', 'sh', '-c',
          [
            '/opt/credproxy/bin/credproxy token get acme',
            '/opt/credproxy/bin/credproxy key get openai',
            'echo "socket=$CREDPROXY_SOCKET"',
            `test -e ${host.home} && echo SEE-HOME`,
            'pwd',
            `node -e "console.log('ifaces=' + Object.keys(require('os').networkInterfaces()).join(','))"`,
          ].join('; '),
        ],
        { env, cwd: work, timeoutMs: 60_000 },
      );
      expect(r.code, r.stderr).toBe(0);
      const lines = r.stdout.trim().split('\n');
      expect(lines[0]).toBe(TOKEN);
      expect(lines[1]).toBe(KEY);
      expect(lines[2]).toMatch(/^socket=\/run\/credproxy\/credproxy-\d+-[0-9a-f]{16}\.sock$/);
      expect(r.stdout).not.toContain('SEE-HOME');
      expect(lines).toContain('/work');
      expect(lines).toContain('ifaces=lo'); // --network none: loopback only
      // Nothing left behind: no socket dir, no env file.
      const left = spawnSync('sh', ['-c', `ls -A ${join(host.home, 'run')}`], { encoding: 'utf8' }).stdout.trim();
      expect(left).toBe('');
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  }, 90_000);
});
