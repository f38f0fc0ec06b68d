import { execFile } from 'node:child_process';
import { CredproxyError } from '../../errors.js';
import { MAX_CREDENTIAL_FILE_BYTES } from './common.js';

/**
 * A generic password in the macOS Keychain, through Apple's `security` tool
 * (the way Claude Code itself reads and writes its item). The secret comes
 * back on the child's stdout, a pipe to us; it is never on a command line.
 * The placeholder written by --move holds no secret, so passing it as an
 * argument is safe.
 */

export interface KeychainItem {
  service: string;
  account: string;
}

/** `security` exits 44 when no such item exists. */
const ITEM_NOT_FOUND = 44;
const TIMEOUT_MS = 15_000;

export const SECURITY_BIN = '/usr/bin/security';

function run(bin: string, args: string[]): Promise<{ code: number; stdout: string }> {
  return new Promise((resolve, reject) => {
    execFile(bin, args, { timeout: TIMEOUT_MS, maxBuffer: MAX_CREDENTIAL_FILE_BYTES, encoding: 'utf8' }, (err, stdout) => {
      if (!err) return resolve({ code: 0, stdout });
      const code = (err as { code?: unknown }).code;
      if (typeof code === 'number') return resolve({ code, stdout: '' });
      // Spawn failures and timeouts: name the tool, never its output.
      reject(new CredproxyError('INVALID_REQUEST', `cannot run ${bin} to read the macOS Keychain (${typeof code === 'string' ? code : 'failed'})`));
    });
  });
}

function describe(item: KeychainItem): string {
  return `the macOS Keychain item '${item.service}' (account '${item.account}')`;
}

/** The item's secret as text, or null when the item does not exist. */
export async function readKeychainItem(item: KeychainItem, bin = SECURITY_BIN): Promise<string | null> {
  const { code, stdout } = await run(bin, ['find-generic-password', '-a', item.account, '-s', item.service, '-w']);
  if (code === ITEM_NOT_FOUND) return null;
  if (code !== 0) throw new CredproxyError('INVALID_REQUEST', `cannot read ${describe(item)} (security exited ${code}; is the Keychain locked?)`);
  const text = stdout.replace(/\n$/, '');
  // `security -w` prints a value that is not plain text as hex.
  if (/^(?:[0-9a-f]{2})+$/i.test(text) && !/^[\s{[]/.test(text)) {
    const decoded = Buffer.from(text, 'hex').toString('utf8');
    if (/^\s*[{[]/.test(decoded)) return decoded;
  }
  return text;
}

/** Replace the item's secret (same service and account). */
export async function writeKeychainItem(item: KeychainItem, value: string, bin = SECURITY_BIN): Promise<void> {
  const { code } = await run(bin, ['add-generic-password', '-U', '-a', item.account, '-s', item.service, '-w', value]);
  if (code !== 0) throw new CredproxyError('INVALID_REQUEST', `cannot update ${describe(item)} (security exited ${code}); it was left in place`);
}

export function keychainLabel(item: KeychainItem): string {
  return describe(item);
}
