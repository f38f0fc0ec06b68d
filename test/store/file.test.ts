import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, describe, expect, it } from 'vitest';
import { EncryptedFileBackend, scryptKdf, type Kdf } from '../../src/store/file.js';

const dirs: string[] = [];
function tmp(): string {
  const d = mkdtempSync('/tmp/cp-file-');
  dirs.push(d);
  return d;
}
afterAll(() => {
  for (const d of dirs) {
    spawnSync('umount', [d]);
    rmSync(d, { recursive: true, force: true });
  }
});

const FILE_MODULE = JSON.stringify(new URL('../../src/store/file.ts', import.meta.url).href);

function countingKdf(): { kdf: Kdf; calls: () => number } {
  let n = 0;
  return {
    kdf: (p, s, o) => {
      n++;
      return scryptKdf(p, s, o);
    },
    calls: () => n,
  };
}

describe('encrypted file backend', () => {
  it('creates 0700 directories and 0600 files holding only ciphertext', async () => {
    const dir = join(tmp(), 'data');
    const b = new EncryptedFileBackend({ dir });
    await b.set('key:k', 'plain-secret-value');
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(statSync(join(dir, 'entries')).mode & 0o777).toBe(0o700);
    for (const f of ['master.key', 'store.json', 'entries/key:k.enc']) {
      expect(statSync(join(dir, f)).mode & 0o777).toBe(0o600);
    }
    expect(readFileSync(join(dir, 'entries/key:k.enc'), 'utf8')).not.toContain('plain-secret');
    expect(readdirSync(join(dir, 'entries'))).toEqual(['key:k.enc']); // no temp files left behind
  });

  it('binds each file to its entry name: a swapped file is reported corrupt', async () => {
    const dir = join(tmp(), 'data');
    const b = new EncryptedFileBackend({ dir });
    await b.set('key:a', 'A');
    await b.set('key:b', 'B');
    renameSync(join(dir, 'entries/key:a.enc'), join(dir, 'entries/key:b.enc'));
    const fresh = new EncryptedFileBackend({ dir });
    await expect(fresh.get('key:b')).rejects.toMatchObject({ code: 'CORRUPT_ENTRY' });
  });

  it('reports a corrupt entry by name, does not delete it, and keeps serving the others', async () => {
    const dir = join(tmp(), 'data');
    const b = new EncryptedFileBackend({ dir });
    await b.set('token:p:default', '{"access_token":"a","expiry":1}');
    await b.set('key:ok', 'fine');
    const path = join(dir, 'entries/token:p:default.enc');
    writeFileSync(path, '{"v":1,"iv":"AAAA","tag":"AAAA","ct":"AAAA"}');
    const err = await b.get('token:p:default').catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'CORRUPT_ENTRY' });
    expect((err as Error).message).toContain('token:p:default');
    expect(readFileSync(path, 'utf8')).toContain('"iv":"AAAA"');
    expect(await b.get('key:ok')).toBe('fine');
  });

  it('derives the passphrase key once per process and detects a wrong passphrase without overwriting', async () => {
    const dir = join(tmp(), 'data');
    const counter = countingKdf();
    const b = new EncryptedFileBackend({ dir, passphrase: 'correct horse', kdf: counter.kdf });
    await b.set('key:x', 'v1');
    for (let i = 0; i < 20; i++) await b.set(`key:y${i}`, 'v');
    for (let i = 0; i < 20; i++) expect(await b.get('key:x')).toBe('v1');
    expect(counter.calls()).toBe(1);
    const before = readFileSync(join(dir, 'store.json'), 'utf8');
    const entryBefore = readFileSync(join(dir, 'entries/key:x.enc'), 'utf8');

    const wrong = new EncryptedFileBackend({ dir, passphrase: 'wrong' });
    await expect(wrong.get('key:x')).rejects.toMatchObject({ code: 'BAD_PASSPHRASE' });
    await expect(wrong.set('key:x', 'evil')).rejects.toMatchObject({ code: 'BAD_PASSPHRASE' });
    const none = new EncryptedFileBackend({ dir });
    await expect(none.get('key:x')).rejects.toMatchObject({ code: 'BAD_PASSPHRASE', message: expect.stringMatching(/CREDPROXY_PASSPHRASE/) });
    expect(readFileSync(join(dir, 'store.json'), 'utf8')).toBe(before);
    expect(readFileSync(join(dir, 'entries/key:x.enc'), 'utf8')).toBe(entryBefore);
    expect(await new EncryptedFileBackend({ dir, passphrase: 'correct horse' }).get('key:x')).toBe('v1');
  });

  it('notices when another process rewrites an entry (cache invalidated by the file changing)', async () => {
    const dir = join(tmp(), 'data');
    const a = new EncryptedFileBackend({ dir });
    await a.set('key:shared', 'one');
    expect(await a.get('key:shared')).toBe('one');
    // A real second process writes through its own backend instance.
    const script = `
      const { EncryptedFileBackend } = await import(${FILE_MODULE});
      await new EncryptedFileBackend({ dir: ${JSON.stringify(dir)} }).set('key:shared', 'two');`;
    execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script]);
    expect(await a.get('key:shared')).toBe('two');
  });

  it('instances creating the store at the same time agree on one key (master key and passphrase)', async () => {
    for (const passphrase of [undefined, 'pw']) {
      const dir = join(tmp(), 'data');
      const counter = countingKdf();
      const all = Array.from({ length: 6 }, () => new EncryptedFileBackend({ dir, passphrase, kdf: counter.kdf }));
      await Promise.all(all.map((b, i) => b.set(`key:k${i}`, `v${i}`)));
      const fresh = new EncryptedFileBackend({ dir, passphrase });
      for (let i = 0; i < all.length; i++) expect(await fresh.get(`key:k${i}`)).toBe(`v${i}`);
      expect(readdirSync(dir).filter((f) => f.startsWith('.tmp'))).toEqual([]);
    }
  });

  it('completes a store whose creation stopped after the master key was written', async () => {
    const dir = join(tmp(), 'data');
    await new EncryptedFileBackend({ dir }).set('key:a', 'A');
    unlinkSync(join(dir, 'store.json'));
    expect(await new EncryptedFileBackend({ dir }).get('key:a')).toBe('A');
    expect(existsSync(join(dir, 'store.json'))).toBe(true);
  });

  it('refuses to start over when a passphrase store lost store.json but holds entries', async () => {
    const dir = join(tmp(), 'data');
    await new EncryptedFileBackend({ dir, passphrase: 'pw' }).set('key:a', 'A');
    unlinkSync(join(dir, 'store.json'));
    const err = await new EncryptedFileBackend({ dir, passphrase: 'pw' }).get('key:a').catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'CORRUPT_ENTRY', message: expect.stringMatching(/store\.json is missing/) });
    expect(existsSync(join(dir, 'store.json'))).toBe(false);
  });

  it('reports a damaged store.json without touching anything', async () => {
    const dir = join(tmp(), 'data');
    await new EncryptedFileBackend({ dir }).set('key:a', 'A');
    writeFileSync(join(dir, 'store.json'), '{"v":1,"mode":"passphrase"}');
    await expect(new EncryptedFileBackend({ dir }).get('key:a')).rejects.toMatchObject({ code: 'CORRUPT_ENTRY', message: expect.stringMatching(/store\.json is corrupt/) });
    expect(readFileSync(join(dir, 'store.json'), 'utf8')).toBe('{"v":1,"mode":"passphrase"}');
  });

  it('a writer killed at any moment leaves either the old or the new entry, never a mix', async () => {
    const dir = join(tmp(), 'data');
    const size = 256 * 1024;
    await new EncryptedFileBackend({ dir }).set('key:big', 'A'.repeat(size));
    const script = `
      const { EncryptedFileBackend } = await import(${FILE_MODULE});
      const b = new EncryptedFileBackend({ dir: ${JSON.stringify(dir)} });
      await b.key();
      process.stdout.write('writing\\n');
      for (let i = 0; ; i++) await b.set('key:big', (i % 2 ? 'A' : 'B').repeat(${size}));`;
    for (let round = 0; round < 4; round++) {
      const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
      await createInterface({ input: child.stdout })[Symbol.asyncIterator]().next();
      await new Promise((r) => setTimeout(r, 20 + Math.random() * 80));
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await exited;
      const value = await new EncryptedFileBackend({ dir }).get('key:big');
      expect(value === 'A'.repeat(size) || value === 'B'.repeat(size)).toBe(true);
    }
  });

  it('clears temp files left by a killed writer once they are old, and keeps fresh ones', async () => {
    const dir = join(tmp(), 'data');
    await new EncryptedFileBackend({ dir }).set('key:a', 'A');
    const old = join(dir, 'entries', '.tmp-1-aaaaaaaaaaaa');
    const fresh = join(dir, 'entries', '.tmp-2-bbbbbbbbbbbb');
    writeFileSync(old, 'x');
    writeFileSync(fresh, 'y');
    utimesSync(old, new Date(Date.now() - 2 * 3600_000), new Date(Date.now() - 2 * 3600_000));
    expect(await new EncryptedFileBackend({ dir }).list()).toEqual(['key:a']);
    expect(existsSync(old)).toBe(false);
    expect(existsSync(fresh)).toBe(true);
  });

  it('refuses entry names that could escape the entries directory', async () => {
    const b = new EncryptedFileBackend({ dir: join(tmp(), 'data') });
    await expect(b.get('key:../../x')).rejects.toMatchObject({ code: 'INVALID_REQUEST' });
    await expect(b.set('.hidden', 'v')).rejects.toMatchObject({ code: 'INVALID_REQUEST' });
  });

  it('refuses an unreadable data directory with one clear line', async () => {
    const parent = tmp();
    writeFileSync(join(parent, 'data'), 'not a dir');
    const b = new EncryptedFileBackend({ dir: join(parent, 'data') });
    const err = await b.get('key:x').catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'STORE_UNAVAILABLE' });
    expect((err as Error).message).toContain(join(parent, 'data'));
  });

  it('on a full disk, reports the error and leaves the previous entry intact', async () => {
    const mnt = tmp();
    const mount = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64k,mode=0700', 'tmpfs', mnt], { encoding: 'utf8' });
    if (mount.status !== 0) throw new Error(`this test needs to mount a small tmpfs (root): ${mount.stderr}`);
    const dir = join(mnt, 'data');
    const b = new EncryptedFileBackend({ dir });
    await b.set('key:big', 'original');
    // Fill the disk.
    mkdirSync(join(mnt, 'fill'));
    let i = 0;
    try {
      for (;;) writeFileSync(join(mnt, 'fill', `f${i++}`), Buffer.alloc(4096, 1));
    } catch {
      /* ENOSPC reached */
    }
    const err = await b.set('key:big', 'x'.repeat(32 * 1024)).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'STORE_UNAVAILABLE', message: expect.stringMatching(/ENOSPC/) });
    expect(await new EncryptedFileBackend({ dir }).get('key:big')).toBe('original');
    expect(readdirSync(join(dir, 'entries')).filter((f) => f.startsWith('.tmp'))).toEqual([]);
  });
});

describe('encrypted file backend: answering without waiting (peek)', () => {
  const until = async (cond: () => boolean): Promise<void> => {
    for (let i = 0; i < 100 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
  };

  it('answers only what it has checked against the disk, and sees other writers through change events', async () => {
    const dir = tmp();
    const reader = new EncryptedFileBackend({ dir });
    const writer = new EncryptedFileBackend({ dir });
    try {
      expect(reader.peek('key:a')).toBeUndefined(); // store not opened yet
      await writer.set('key:a', 'v1');
      expect(await reader.get('key:a')).toBe('v1');
      expect(reader.peek('key:a')).toBe('v1');
      expect(reader.peek('key:missing')).toBeNull();
      await writer.set('key:a', 'v2');
      // A moment later the kernel reports the rename; the stale value is no longer vouched for.
      await until(() => reader.peek('key:a') !== 'v1');
      expect(reader.peek('key:a')).toBeUndefined();
      expect(await reader.get('key:a')).toBe('v2');
      expect(reader.peek('key:a')).toBe('v2');
      await writer.delete('key:a');
      await until(() => reader.peek('key:a') !== 'v2');
      expect(reader.peek('key:a')).toBeNull();
    } finally {
      reader.close();
      writer.close();
    }
  });

  it('checks with stat when it cannot watch, so it is never wrong, only slower', async () => {
    const dir = tmp();
    const b = new EncryptedFileBackend({ dir });
    try {
      await b.set('key:a', 'v1');
      expect(await b.get('key:a')).toBe('v1');
      b.close(); // no watcher from here on
      expect(b.peek('key:a')).toBe('v1');
      const other = new EncryptedFileBackend({ dir });
      await other.set('key:a', 'v2');
      other.close();
      expect(b.peek('key:a')).toBeUndefined(); // the stat saw the new file at once
      expect(await b.get('key:a')).toBe('v2');
    } finally {
      b.close();
    }
  });
});
