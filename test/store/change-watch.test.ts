import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ChangeWatch } from '../../src/store/change-watch.js';

const dir = mkdtempSync('/tmp/cp-watch-');
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const until = async (cond: () => boolean): Promise<void> => {
  for (let i = 0; i < 100 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
};

describe('ChangeWatch', () => {
  it('vouches for a name until the kernel reports a change to it, and only for that name', async () => {
    const w = new ChangeWatch(dir);
    try {
      expect(w.active).toBe(true);
      expect(w.isVerified('a')).toBe(false);
      w.markVerified('a');
      w.markVerified('b');
      writeFileSync(join(dir, 'a'), 'x');
      await until(() => !w.isVerified('a'));
      expect(w.isVerified('a')).toBe(false);
      expect(w.isVerified('b')).toBe(true);
      w.forget('b');
      expect(w.isVerified('b')).toBe(false);
    } finally {
      w.close();
    }
  });

  it('vouches for nothing without a watcher (a missing directory, or closed)', () => {
    const missing = new ChangeWatch(join(dir, 'nope'));
    missing.markVerified('a');
    expect(missing.active).toBe(false);
    expect(missing.isVerified('a')).toBe(false);
    const w = new ChangeWatch(dir);
    w.markVerified('a');
    w.close();
    expect(w.isVerified('a')).toBe(false);
  });
});
