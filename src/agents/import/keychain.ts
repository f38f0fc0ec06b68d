import { execFile } from 'node:child_process';
import { CredproxyError } from '../../errors.js';
import { MAX_CREDENTIAL_FILE_BYTES } from './common.js';

/**
 * A generic password in the macOS Keychain, through Apple's `security` tool
 * (the way Claude Code itself reads and writes its item). No value ever goes
 * on a command line, where every local user sees it (`ps`): the secret is
 * read back on the child's stdout, a pipe to us, and written by a command
 * sent on the stdin of `security -i`. The placeholder written by --move is
 * a secret too: it keeps every other entry of the item as it was (Claude
 * Code's `mcpOAuth` holds MCP servers' access and refresh tokens).
 */

export interface KeychainItem {
  service: string;
  account: string;
}

/** `security` exits 44 when no such item exists. */
const ITEM_NOT_FOUND = 44;
const TIMEOUT_MS = 15_000;

/**
 * `security -i` reads each command line into a 4096-byte buffer
 * (MAX_LINE_LEN in Apple's SecurityTool): a longer line is cut, its first
 * part run as a command (a truncated item!) and the rest as another one. So
 * a command line, newline included, is kept well under it.
 */
export const MAX_SECURITY_LINE_BYTES = 4032;

export const SECURITY_BIN = '/usr/bin/security';

function run(bin: string, args: string[], what: string, input?: string): Promise<{ code: number; stdout: string }> {
  return new Promise((resolve, reject) => {
    const child = execFile(bin, args, { timeout: TIMEOUT_MS, maxBuffer: MAX_CREDENTIAL_FILE_BYTES, encoding: 'utf8' }, (err, stdout) => {
      if (!err) return resolve({ code: 0, stdout });
      const code = (err as { code?: unknown }).code;
      if (typeof code === 'number') return resolve({ code, stdout: '' });
      // Spawn failures and timeouts: name the tool, never its output (nor its input).
      reject(new CredproxyError('INVALID_REQUEST', `cannot run ${bin} to ${what} (${typeof code === 'string' ? code : 'failed'})`));
    });
    // A child that exits before reading its stdin (or never started): the callback above reports it.
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(input ?? '');
  });
}

/** How messages name the item. */
export function keychainLabel(item: KeychainItem): string {
  return `the macOS Keychain item '${item.service}' (account '${item.account}')`;
}

/** The item's secret as text, or null when the item does not exist. */
export async function readKeychainItem(item: KeychainItem, bin = SECURITY_BIN): Promise<string | null> {
  const { code, stdout } = await run(bin, ['find-generic-password', '-a', item.account, '-s', item.service, '-w'], 'read the macOS Keychain');
  if (code === ITEM_NOT_FOUND) return null;
  if (code !== 0) throw new CredproxyError('INVALID_REQUEST', `cannot read ${keychainLabel(item)} (security exited ${code}; is the Keychain locked?)`);
  const text = stdout.replace(/\n$/, '');
  // `security -w` prints a value that is not plain text as hex.
  if (/^(?:[0-9a-f]{2})+$/i.test(text) && !/^[\s{[]/.test(text)) {
    const decoded = Buffer.from(text, 'hex').toString('utf8');
    if (/^\s*[{[]/.test(decoded)) return decoded;
  }
  return text;
}

/**
 * One argument for `security -i`'s line parser (split_line): in double
 * quotes, a backslash escapes the next character. A line break or NUL
 * cannot be sent at all (it would end the line or the argument).
 */
function quoteArg(s: string): string | null {
  if (/[\x00-\x1f\x7f]/.test(s)) return null;
  return `"${s.replace(/[\\"]/g, '\\$&')}"`;
}

/** The `security -i` command line (with its newline) that sets the item's secret to `value`, or why there is none. */
function addCommand(item: KeychainItem, value: string): { line: string } | { refusal: string } {
  const account = quoteArg(item.account);
  const service = quoteArg(item.service);
  if (account === null || service === null) return { refusal: `${keychainLabel(item)} has a control character in its name; credproxy cannot update it` };
  // -X: the value as hex, one plain token whatever it holds.
  const line = `add-generic-password -U -a ${account} -s ${service} -X ${Buffer.from(value, 'utf8').toString('hex')}\n`;
  const bytes = Buffer.byteLength(line, 'utf8');
  if (bytes > MAX_SECURITY_LINE_BYTES) {
    return {
      refusal:
        `the placeholder for ${keychainLabel(item)} would be ${Buffer.byteLength(value, 'utf8')} bytes (it keeps the item's other entries, such as MCP servers' logins): ` +
        `too long for one 'security -i' command line (${MAX_SECURITY_LINE_BYTES} bytes, the value in hex), and as an argument every local user could read it, ` +
        `so --move cannot replace this item`,
    };
  }
  return { line };
}

/** Why writeKeychainItem cannot write `value`, or null when it can. Checked before anything is stored. */
export function keychainWriteRefusal(item: KeychainItem, value: string): string | null {
  const cmd = addCommand(item, value);
  return 'refusal' in cmd ? cmd.refusal : null;
}

/** Replace the item's secret (same service and account). */
export async function writeKeychainItem(item: KeychainItem, value: string, bin = SECURITY_BIN): Promise<void> {
  const cmd = addCommand(item, value);
  if ('refusal' in cmd) throw new CredproxyError('INVALID_REQUEST', `${cmd.refusal}; it was left in place`);
  // One command, then end of input: `security -i` exits with that command's status.
  const { code } = await run(bin, ['-i'], 'update the macOS Keychain', cmd.line);
  if (code !== 0) throw new CredproxyError('INVALID_REQUEST', `cannot update ${keychainLabel(item)} (security exited ${code}); it was left in place`);
}
