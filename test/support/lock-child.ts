// A separate process that takes a refresh lock, reports it on stdout, then holds it
// until killed or told to release on stdin.
import { RefreshLocks } from '../../src/store/locks.js';

const [dir, provider, bucket, staleMs, waitMs] = process.argv.slice(2);
const locks = new RefreshLocks({ dir: dir!, staleMs: Number(staleMs) });
const got = await locks.acquire(provider!, bucket!, Number(waitMs));
process.stdout.write(`${got ? 'locked' : 'busy'} ${Date.now()}\n`);
if (!got) process.exit(0);
process.stdin.on('data', async () => {
  await locks.release(provider!, bucket!);
  process.stdout.write('released\n');
  process.exit(0);
});
