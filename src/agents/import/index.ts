import { existsSync } from 'node:fs';
import { CredproxyError } from '../../errors.js';
import { claudeCredentialsPath, claudeImporter, claudeKeychainItem } from './claude.js';
import { codexAuthPath, codexImporter } from './codex.js';
import { moveRefusalNow, readCredentialFile, replaceCredentialFile, type AgentImporter, type AgentName, type CredentialFile, type MappedCredential } from './common.js';
import { geminiCredsPath, geminiImporter } from './gemini.js';
import { keychainLabel, keychainWriteRefusal, readKeychainItem, SECURITY_BIN, writeKeychainItem, type KeychainItem } from './keychain.js';
import { qwenCredsPath, qwenImporter } from './qwen.js';

export { PLACEHOLDER_PREFIX, isPlaceholder, type AgentName, type MappedCredential } from './common.js';

export const IMPORTERS: Readonly<Record<AgentName, AgentImporter>> = Object.freeze({
  claude: claudeImporter,
  codex: codexImporter,
  gemini: geminiImporter,
  qwen: qwenImporter,
});

export const AGENT_NAMES = Object.keys(IMPORTERS) as AgentName[];

/** The documented place of each tool's credential file. */
export function credentialPath(agent: AgentName, env: NodeJS.ProcessEnv): string {
  switch (agent) {
    case 'claude':
      return claudeCredentialsPath(env);
    case 'codex':
      return codexAuthPath(env);
    case 'gemini':
      return geminiCredsPath(env);
    case 'qwen':
      return qwenCredsPath(env);
  }
}

/** Where a login was read from. */
export type CredentialSource =
  | { kind: 'file'; label: string; file: CredentialFile }
  | { kind: 'keychain'; label: string; item: KeychainItem; text: string; securityBin: string; warnings: string[] };

export interface LocateOptions {
  env: NodeJS.ProcessEnv;
  platform: NodeJS.Platform;
  /** Apple's `security` tool (tests point it elsewhere). */
  securityBin?: string;
}

/**
 * Read a tool's login from its documented place. Claude Code on macOS: the
 * Keychain item first (where it keeps the login there), then the file.
 * Nothing found: NOT_FOUND naming every place looked at.
 */
export async function readAgentSource(agent: AgentName, options: LocateOptions): Promise<CredentialSource> {
  const tool = IMPORTERS[agent].tool;
  const path = credentialPath(agent, options.env);
  let keychainNote = '';
  if (agent === 'claude') {
    const item = claudeKeychainItem(options.env);
    if (options.platform === 'darwin') {
      const securityBin = options.securityBin ?? SECURITY_BIN;
      const text = await readKeychainItem(item, securityBin);
      if (text !== null) {
        const warnings = existsSync(path) ? [`${path} exists too; only the Keychain item (the login Claude Code uses on macOS) is imported and moved, the file is left as it is`] : [];
        return { kind: 'keychain', label: keychainLabel(item), item, text, securityBin, warnings };
      }
      keychainNote = `, and the macOS Keychain has no item '${item.service}' (account '${item.account}')`;
    } else {
      keychainNote = `. On macOS Claude Code keeps its login in the Keychain item '${item.service}', but the macOS Keychain is not available on ${options.platform}: only the file was looked at`;
    }
  }
  const file = await readCredentialFile(path);
  if (!file) {
    throw new CredproxyError('NOT_FOUND', `no ${tool} login found: ${path} does not exist${keychainNote}. Log ${tool} in first, or set ${hintVariable(agent)}.`);
  }
  return { kind: 'file', label: path, file };
}

function hintVariable(agent: AgentName): string {
  switch (agent) {
    case 'claude':
      return 'CLAUDE_CONFIG_DIR to its config dir';
    case 'codex':
      return 'CODEX_HOME to its home dir';
    default:
      return 'HOME to the home dir it was used in';
  }
}

/** Safe remarks about where the login was read (loose permissions, a link, a second copy). */
export function sourceWarnings(source: CredentialSource): string[] {
  return source.kind === 'file' ? source.file.warnings : source.warnings;
}

function sourceText(source: CredentialSource): string {
  return source.kind === 'file' ? source.file.text : source.text;
}

/** Parse and map a source; an error names the source, never its content. */
export function mapSource(agent: AgentName, source: CredentialSource): MappedCredential {
  const importer = IMPORTERS[agent];
  let value: unknown;
  try {
    value = JSON.parse(sourceText(source));
  } catch {
    throw new CredproxyError('INVALID_REQUEST', `${source.label}: not a ${importer.tool} credential file credproxy knows: it is not valid JSON`);
  }
  return importer.map(value, source.label);
}

/** Why --move cannot replace this source by `placeholder`, or null. Checked before anything is stored. */
export async function sourceMoveRefusal(source: CredentialSource, placeholder: string): Promise<string | null> {
  return source.kind === 'file' ? moveRefusalNow(source.file) : keychainWriteRefusal(source.item, keychainValue(placeholder));
}

/** The item holds JSON like the file, written compact: `security -i` takes it in one line of at most 4 KiB, in hex. */
function keychainValue(placeholder: string): string {
  return JSON.stringify(JSON.parse(placeholder));
}

/** --move: put the placeholder where the login was, if the source is unchanged since it was read. */
export async function replaceSource(source: CredentialSource, placeholder: string): Promise<void> {
  if (source.kind === 'file') return replaceCredentialFile(source.file, placeholder);
  const now = await readKeychainItem(source.item, source.securityBin);
  if (now !== source.text) {
    throw new CredproxyError('INVALID_REQUEST', `${source.label} changed while it was being imported (Claude Code may have refreshed its login): it was left in place. Run the import again`);
  }
  await writeKeychainItem(source.item, keychainValue(placeholder), source.securityBin);
}
