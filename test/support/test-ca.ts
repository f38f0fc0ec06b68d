import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * A throwaway certificate authority and a server certificate for
 * 127.0.0.1/localhost, made with the openssl CLI for this test run only.
 * Trusted by nothing but what a test hands `caPath`/`caPem` to.
 */
export interface TestCa {
  dir: string;
  caPath: string;
  caPem: string;
  certPem: string;
  keyPem: string;
  remove(): void;
}

/** `ips`: the server certificate's IP addresses (default 127.0.0.1; the egress tests serve on 127.0.0.2). */
export function createTestCa(options: { ips?: string[] } = {}): TestCa {
  const dir = mkdtempSync(join(tmpdir(), 'credproxy-ca-'));
  const p = (name: string): string => join(dir, name);
  const ossl = (args: string[]): void => {
    execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  };
  ossl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', p('ca.key'), '-out', p('ca.pem'), '-days', '2',
    '-subj', '/CN=credproxy test CA', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  ossl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', p('leaf.key'), '-out', p('leaf.csr'), '-subj', '/CN=127.0.0.1']);
  const ips = (options.ips ?? ['127.0.0.1']).map((ip) => `IP:${ip}`).join(',');
  writeFileSync(p('leaf.ext'), `subjectAltName=${ips},DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n`);
  ossl(['x509', '-req', '-in', p('leaf.csr'), '-CA', p('ca.pem'), '-CAkey', p('ca.key'), '-CAcreateserial', '-out', p('leaf.pem'), '-days', '2', '-extfile', p('leaf.ext')]);
  return {
    dir,
    caPath: p('ca.pem'),
    caPem: readFileSync(p('ca.pem'), 'utf8'),
    certPem: readFileSync(p('leaf.pem'), 'utf8'),
    keyPem: readFileSync(p('leaf.key'), 'utf8'),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}
