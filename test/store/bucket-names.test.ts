import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { isBucketName, MAX_BUCKET_NAME_BYTES } from '../../src/names.js';
import { OP_PAYLOADS } from '../../src/protocol/messages.js';
import { FileCooldownStore } from '../../src/refresh/cooldown.js';
import { Policy } from '../../src/server/policy.js';
import type { SecretBackend } from '../../src/store/backend.js';
import { decodeBucket, encodeBucket } from '../../src/store/entry-name.js';
import { EncryptedFileBackend } from '../../src/store/file.js';
import { HostTokenStore } from '../../src/store/host-stores.js';
import { KeyringBackend } from '../../src/store/keyring.js';
import { RefreshLocks } from '../../src/store/locks.js';

const dirs: string[] = [];
function tmp(): string {
  const d = mkdtempSync('/tmp/cp-names-');
  dirs.push(d);
  return d;
}
const keyrings: KeyringBackend[] = [];
afterAll(() => {
  for (const k of keyrings) k.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** Names llxprt-code accepts that SPEC §2 did not. */
const WIDE = ['my work', 'team+ci', 'user@example.com', 'x'.repeat(100), 'Äpfel & Birnen', '日本語', 'emoji 😀 ok', '~abc', "it's", 'a,b;c=d', '%2F', 'a..b'];
const LONGEST = 'é'.repeat(MAX_BUCKET_NAME_BYTES / 2);

describe('bucket names (SPEC §8)', () => {
  it('accepts what llxprt-code accepts, and every SPEC §2 name still', () => {
    for (const name of [...WIDE, LONGEST, 'default', 'a', 'b.c', 'user@host', 'x'.repeat(64), 'x'.repeat(MAX_BUCKET_NAME_BYTES)]) {
      expect(isBucketName(name), name).toBe(true);
      expect(OP_PAYLOADS.get_token.safeParse({ provider: 'p', bucket: name }).success, name).toBe(true);
    }
  });

  it('refuses separators, path and shell characters, control and invisible characters, traversal, reserved words, blanks at the ends and absurd lengths', () => {
    const bad = [
      '', 'a:b', 'a/b', '../etc', '..', '.', 'a\\b', '<x>', 'a"b', 'a|b', 'what?', 'a*', 'tab\there', 'nl\nx', 'nul\0x', 'del\x7f', 'c1\x85',
      'line\u2028sep', 'bidi\u202eevil', 'bom\ufeff', 'lone\ud800', ' lead', 'trail ', 'CON', 'nul', 'com1', 'lpt9.txt', 'Aux.json',
      'x'.repeat(MAX_BUCKET_NAME_BYTES + 1), 'é'.repeat(MAX_BUCKET_NAME_BYTES / 2 + 1),
    ];
    for (const name of bad) {
      expect(isBucketName(name), JSON.stringify(name)).toBe(false);
      expect(OP_PAYLOADS.get_token.safeParse({ provider: 'p', bucket: name }).success, JSON.stringify(name)).toBe(false);
    }
    expect(() => Policy.from({ allow: ['p:a/b'], keys: [], allowAll: false, readOnly: true })).toThrow(/bad bucket name/);
    expect(Policy.from({ allow: ['p:my work'], keys: [], allowAll: false, readOnly: true }).allowsToken('p', 'my work')).toBe(true);
  });

  it('maps SPEC §2 names to themselves (existing entries keep their file and keyring entry) and every other name to one safe, reversible form', () => {
    for (const name of ['default', 'work', 'user@example', 'a.b_c-d', 'x'.repeat(100)]) expect(encodeBucket(name)).toBe(name);
    const seen = new Set<string>();
    for (const name of [...WIDE, LONGEST]) {
      const enc = encodeBucket(name);
      expect(enc).toMatch(/^(~[A-Za-z0-9_-]+|[A-Za-z0-9._@-]+)$/);
      expect(enc.length).toBeLessThanOrEqual(161);
      expect(decodeBucket(enc)).toBe(name);
      expect(seen.has(enc)).toBe(false);
      seen.add(enc);
    }
    // A literal '~' name cannot pose as an encoded one, and forged encodings are refused.
    expect(encodeBucket('~abc')).not.toBe('~abc');
    expect(decodeBucket('~abc')).toBe(null); // base64url of bytes that are not a canonical name
    expect(decodeBucket(`~${Buffer.from('a/b').toString('base64url')}`)).toBeNull();
    expect(decodeBucket(`~${Buffer.from('default').toString('base64url')}`)).toBeNull(); // plain names have one form only
    expect(decodeBucket('~bXkgd29yaw==')).toBeNull();
  });

  it('locks and cooldown records of wide names are files inside their directory; SPEC §2 names keep their old file names', async () => {
    const dir = tmp();
    const locks = new RefreshLocks({ dir: join(dir, 'locks') });
    for (const name of [...WIDE, LONGEST]) {
      expect(await locks.acquire('anthropic', name)).toBe(true);
      await locks.release('anthropic', name);
    }
    expect(await locks.acquire('anthropic', 'work')).toBe(true);
    expect(readdirSync(join(dir, 'locks'))).toContain('anthropic:work.lock');
    await locks.releaseAll();
    const cooldown = new FileCooldownStore(join(dir, 'cooldown'));
    await cooldown.recordRefresh('anthropic', 'my work', 1234);
    await cooldown.recordRefresh('anthropic', 'work', 99);
    expect(await cooldown.lastRefresh('anthropic', 'my work')).toBe(1234);
    expect(readdirSync(join(dir, 'cooldown')).sort()).toEqual(['anthropic~work.last-refresh', `anthropic~${encodeBucket('my work')}.last-refresh`].sort());
    expect(readdirSync(dir).sort()).toEqual(['cooldown', 'locks']);
  });
});

const backends: Array<[string, () => SecretBackend]> = [
  ['file', () => new EncryptedFileBackend({ dir: join(tmp(), 'data') })],
  [
    'keyring',
    () => {
      const k = new KeyringBackend({ service: `credproxy-names-${randomBytes(6).toString('hex')}` });
      keyrings.push(k);
      return k;
    },
  ],
];

describe.each(backends)('%s store: wide bucket names round-trip', (kind, make) => {
  it('saves, reads, lists and removes every wide name; an entry written under an old-style name is still read', async () => {
    const backend = make();
    const tokens = new HostTokenStore(backend, new RefreshLocks({ dir: join(tmp(), 'locks') }));
    const names = [...WIDE, LONGEST];
    for (const [i, name] of names.entries()) await tokens.saveToken('anthropic', { access_token: `at-${i}`, expiry: 1000 + i }, name);
    for (const [i, name] of names.entries()) expect(await tokens.getToken('anthropic', name), name).toMatchObject({ access_token: `at-${i}` });
    expect(await tokens.listBuckets('anthropic')).toEqual([...names].sort());
    // Written the way every earlier version did: the entry name is the plain bucket.
    await backend.set('token:anthropic:legacy.bucket', JSON.stringify({ access_token: 'old', expiry: 5 }));
    expect(await tokens.getToken('anthropic', 'legacy.bucket')).toMatchObject({ access_token: 'old' });
    expect(await tokens.listBuckets('anthropic')).toContain('legacy.bucket');
    for (const name of names) await tokens.removeToken('anthropic', name);
    expect(await tokens.listBuckets('anthropic')).toEqual(['legacy.bucket']);
    if (kind === 'file') {
      const files = readdirSync(join((backend as EncryptedFileBackend).dir, 'entries'));
      expect(files).toEqual(['token:anthropic:legacy.bucket.enc']);
    }
  });

  if (kind === 'keyring') {
    it('stores a wide name as its encoded entry, visible to secret-tool under that name', async () => {
      const backend = make() as KeyringBackend;
      const tokens = new HostTokenStore(backend, new RefreshLocks({ dir: join(tmp(), 'locks') }));
      await tokens.saveToken('anthropic', { access_token: 'at-sp', expiry: 9 }, 'my work');
      const lookup = spawnSync('secret-tool', ['lookup', 'service', backend.service, 'username', `token:anthropic:${encodeBucket('my work')}`], { encoding: 'utf8' });
      expect(lookup.status, lookup.stderr).toBe(0);
      expect(JSON.parse(lookup.stdout)).toMatchObject({ access_token: 'at-sp' });
    });
  }
});
