import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveDirs } from '../../src/paths.js';
import { openHostStores } from '../../src/store/open.js';
import { BIN, makeHostEnv, waitForStderr, type HostEnv } from '../support/cli.js';
import { loginProviders, OidcTestServer } from '../support/oidc-server.js';

/**
 * The loopback-redirect login with a real browser: headless Chromium
 * (Debian's `chromium`, installed by scripts/setup; playwright-core drives it
 * and downloads nothing) opens the authorization URL `credproxy login`
 * printed, signs in and consents on the local oidc-provider's pages, is
 * redirected to credproxy's loopback listener and shows its landing page.
 * Screenshots go to .tmp/artifacts/ (gitignored).
 */
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const ARTIFACTS = fileURLToPath(new URL('../../.tmp/artifacts/', import.meta.url));

describe('loopback login in a real browser', () => {
  let oidc: OidcTestServer;
  let host: HostEnv;
  let browser: Browser;

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM}: run scripts/setup (it installs Debian's chromium) or set CHROMIUM_PATH`);
    oidc = await OidcTestServer.start();
    host = makeHostEnv();
    mkdirSync(join(host.home, 'config'), { recursive: true });
    const providers = loginProviders(oidc.issuer);
    // Without prompt=consent this server drops offline_access: a login that cannot be renewed.
    writeFileSync(join(host.home, 'config', 'config.json'), JSON.stringify({ providers: { ...providers, short: { ...providers.loop, offline_consent: false } } }));
    mkdirSync(ARTIFACTS, { recursive: true });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      // Loopback only: every other host resolves to nothing, and whatever is not loopback (which
      // Chromium never proxies) goes to a closed proxy port.
      args: ['--no-sandbox', '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1', '--proxy-server=http://127.0.0.1:9', '--disable-component-update', '--no-first-run'],
    });
  });
  afterAll(async () => {
    await browser?.close();
    await oidc?.close();
    host?.cleanup();
  });

  /** Run `credproxy login PROVIDER` on the host and complete it in Chromium; returns the landing page. */
  async function loginInBrowser(provider: string, shot: string): Promise<{ page: Page; text: string; cli: string; code: number | null }> {
    const child = spawn(process.execPath, [BIN, 'login', provider, '--no-browser'], { env: host.env, stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
    const { match, text } = await waitForStderr(child, /(http:\/\/127\.0\.0\.1:\d+\/auth\?\S+)\n/, 'authorization URL');
    const auth = new URL(match[1]!);
    const callback = new URL(auth.searchParams.get('redirect_uri')!);
    const page = await browser.newPage();
    try {
      await page.goto(auth.href);
      // The provider's sign-in page, then its consent page, as a person would click through them.
      for (let step = 0; step < 5 && new URL(page.url()).origin !== callback.origin; step++) {
        if (await page.locator('input[name=login]').count()) {
          await page.fill('input[name=login]', 'alice');
          await page.fill('input[name=password]', 'any-password');
        }
        await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
      }
      expect(new URL(page.url()).origin).toBe(callback.origin);
      await page.screenshot({ path: join(ARTIFACTS, shot), fullPage: true });
      const body = await page.innerText('body');
      const code = await exited;
      return { page, text: body, cli: text(), code };
    } finally {
      await page.close();
    }
  }

  it('signs in, lands on the loopback listener, and the page says what happened and what to do next', async () => {
    const { text, cli, code } = await loginInBrowser('loop', 'browser-login.png');
    expect(text).toContain('Logged in');
    expect(text).toContain('You are logged in to loop.');
    expect(text).toMatch(/close this tab and return to the terminal/);
    expect(text).not.toMatch(/cannot be renewed/);
    // Nothing from the redirect (code, state) is shown.
    expect(text).not.toMatch(/code=|state=/);
    expect(code).toBe(0);
    expect(cli).toMatch(/logged in to loop:default/);
    const stores = await openHostStores({ choice: 'file', dirs: resolveDirs(host.env), env: host.env });
    try {
      expect(typeof (await stores.tokens.getToken('loop', 'default'))?.refresh_token).toBe('string');
    } finally {
      await stores.close();
    }
  }, 60_000);

  it('a login without a refresh token says on the page that it cannot be renewed, and until when', async () => {
    const { text, cli, code } = await loginInBrowser('short', 'browser-login-unrenewable.png');
    expect(code).toBe(0);
    expect(text).toContain('You are logged in to short.');
    expect(text).toMatch(/Note: this login cannot be renewed; it expires at \d{4}-\d\d-\d\dT[\d:.]+Z/);
    expect(cli).toMatch(/warning: this login cannot be renewed/);
  }, 60_000);
});
