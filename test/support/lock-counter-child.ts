// Increments a counter file `rounds` times under the refresh lock, with a pause between
// read and write so that any overlap with another process would lose an update.
// Prints each critical section as "start end" (ms, comparable across processes).
import { readFileSync, writeFileSync } from 'node:fs';
import { RefreshLocks } from '../../src/store/locks.js';

const [dir, counterFile, rounds] = process.argv.slice(2);
const now = (): number => performance.timeOrigin + performance.now();
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const locks = new RefreshLocks({ dir: dir! });
const sections: string[] = [];
for (let i = 0; i < Number(rounds); i++) {
  if (!(await locks.acquire('prov', 'shared', 20_000))) throw new Error('lock stayed busy');
  const start = now();
  const n = Number(readFileSync(counterFile!, 'utf8'));
  await sleep(2);
  writeFileSync(counterFile!, String(n + 1));
  const end = now();
  await locks.release('prov', 'shared');
  sections.push(`${start} ${end}`);
  // Give the other process a chance to get in between.
  await sleep(Math.random() * 60);
}
process.stdout.write(sections.join('\n') + '\n');
