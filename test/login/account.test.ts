import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { accountOf } from '../../src/login/account.js';
import { OidcTestServer } from '../support/oidc-server.js';

/**
 * The account a finished sandbox login is announced with on the host is
 * what lets the person there notice a swapped account. It comes from the
 * id_token, whose `sub` (or email) some providers let users pick: nothing in
 * it may make the terminal show something else than what it says.
 */
let oidc: OidcTestServer;
beforeAll(async () => {
  oidc = await OidcTestServer.start();
});
afterAll(async () => {
  await oidc.close();
});

async function accountFor(login: string): Promise<string | null> {
  const set = await oidc.issueTokens({ login });
  return accountOf({ access_token: set.access_token, expiry: 0, ...(set.id_token !== undefined ? { id_token: set.id_token } : {}) });
}

describe('the announced account', () => {
  it('is the sub oidc-provider puts in the id_token', async () => {
    expect(await accountFor('alice')).toBe('sub:alice');
  });

  it('carries no bidirectional override or other invisible formatting: it reads as it is', async () => {
    // Shown as "sub:alice@corp.example" by a terminal, while it is another account.
    const spoof = 'mallory\u202e\u2066elpmaxe.proc@ecila\u2069';
    const shown = await accountFor(spoof);
    expect(shown).not.toBeNull();
    expect(shown).not.toMatch(/[\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff\u061c]/);
    expect(shown).toContain('mallory');
  });
});
