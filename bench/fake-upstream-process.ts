// The fake HTTPS API of test/support/fake-upstream.ts in a process of its own,
// so the gateway bench does not share a core between the API and its client.
// Prints `URL=...`; reads `hold` / `open` lines on stdin for the /sse-gate stream.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { FakeUpstream } from '../test/support/fake-upstream.js';

const dir = process.argv[2]!;
const fake = await FakeUpstream.start({
  dir,
  caPath: join(dir, 'ca.pem'),
  caPem: readFileSync(join(dir, 'ca.pem'), 'utf8'),
  certPem: readFileSync(join(dir, 'leaf.pem'), 'utf8'),
  keyPem: readFileSync(join(dir, 'leaf.key'), 'utf8'),
  remove: () => undefined,
});
process.stdout.write(`URL=${fake.url}\n`);
createInterface({ input: process.stdin }).on('line', (line) => {
  if (line === 'hold') fake.holdGate();
  if (line === 'open') fake.openGate();
  process.stdout.write(`OK ${line}\n`);
});
process.stdin.on('end', () => {
  void fake.close().then(() => process.exit(0));
});
