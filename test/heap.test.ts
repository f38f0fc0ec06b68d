import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

/**
 * src/heap.ts sets V8 flags at run time; what a flag does differs between
 * V8 versions, so this runs in a fresh child of the Node under test (CI runs
 * it on Node 20, 22 and 24).
 */
const run = promisify(execFile);
const HEAP = new URL('../src/heap.ts', import.meta.url).href;

async function child(body: string): Promise<Record<string, unknown>> {
  const script = `import { getHeapSpaceStatistics } from 'node:v8';
const { keepYoungGenerationSmall, collectGarbage } = await import(${JSON.stringify(HEAP)});
const newSpace = () => getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size;
${body}`;
  const { stdout } = await run(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script]);
  return JSON.parse(stdout) as Record<string, unknown>;
}

describe(`heap flags on Node ${process.version}`, () => {
  it('keepYoungGenerationSmall: a burst of surviving allocations does not grow the young generation', async () => {
    const out = await child(`
const burst = () => { const keep = []; for (let i = 0; i < 400000; i++) keep.push({ i, s: 'x' + i }); return keep.length; };
keepYoungGenerationSmall();
const before = newSpace();
burst();
console.log(JSON.stringify({ before, after: newSpace() }));`);
    expect(out.after).toBe(out.before);
    // Without the flag the same burst does grow it: the check above is not vacuous on this Node.
    const control = await child(`
const before = newSpace();
const keep = []; for (let i = 0; i < 400000; i++) keep.push({ i, s: 'x' + i });
console.log(JSON.stringify({ before, after: newSpace(), n: keep.length }));`);
    expect(control.after as number).toBeGreaterThan(control.before as number);
  });

  it('collectGarbage frees a dropped burst and leaves no global gc behind', async () => {
    const out = await child(`
let big = Array.from({ length: 300000 }, (_, i) => ({ i, s: 'y' + i }));
const full = process.memoryUsage().heapUsed;
big = null;
collectGarbage();
console.log(JSON.stringify({ full, after: process.memoryUsage().heapUsed, globalGc: typeof globalThis.gc }));`);
    expect(out.after as number).toBeLessThan((out.full as number) / 2);
    expect(out.globalGc).toBe('undefined');
  });
});
