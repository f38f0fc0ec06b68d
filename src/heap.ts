import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { libcFunction } from './libc.js';

let collector: (() => void) | null | undefined;
let trimmer: (() => void) | null | undefined;

/**
 * For long-running server processes (serve, run): V8 doubles its young
 * generation under a burst of allocations (up to 2 × 16 MiB) and shrinks it
 * back only on idle-time GCs that Node does not run, so an idle proxy would
 * keep a burst's size for good. At its initial size the young generation is
 * scavenged more often, which costs little for a proxy whose requests leave
 * small, short-lived garbage (see bench/RESULTS.md).
 *
 * It only stops growth from then on: set after a burst, it keeps the grown
 * size. Loading the CLI's modules is the first burst (it grew the young
 * generation to 2 × 4 MiB), so bin/credproxy sets it before loading them;
 * one-shot commands allocate too little for it to matter either way.
 */
export function keepYoungGenerationSmall(): void {
  setFlagsFromString('--semi-space-growth-factor=1');
}

/**
 * Full garbage collection, for after a burst of objects has just been freed
 * (thousands of abandoned login sessions swept at once): an idle server
 * otherwise keeps the grown heap, since V8 starts a major collection only
 * under allocation pressure. Two passes: the second returns the pages the
 * first emptied; then the C heap is trimmed. Blocks for some ms: call it
 * rarely. The collector is the
 * one `--expose-gc` gives, obtained in a throwaway context so no global `gc`
 * appears in ours.
 */
export function collectGarbage(): void {
  if (collector === undefined) {
    try {
      setFlagsFromString('--expose-gc');
      collector = runInNewContext('gc') as () => void;
    } catch {
      collector = null;
    }
  }
  collector?.();
  collector?.();
  trimMalloc();
}

/**
 * glibc keeps the memory a burst freed (socket read buffers, parsed frames)
 * in its arenas and gives it back to the system only from the top of the
 * heap: malloc_trim(0) returns every free page. Absent elsewhere (musl,
 * other systems), where this does nothing.
 */
function trimMalloc(): void {
  if (trimmer === undefined) {
    const trim = process.platform === 'linux' ? libcFunction<(pad: number) => number>('int malloc_trim(size_t pad)') : null;
    trimmer = trim === null ? null : () => void trim(0);
  }
  trimmer?.();
}
