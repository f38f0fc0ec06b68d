import { accessSync, constants, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

/**
 * What an agent needs in its environment, in three kinds: fixed values,
 * values built from the gateway's URL (known only inside the sandbox, where
 * the relay picks its port), and copies of the placeholder (which must never
 * be put on a command line); and optionally a config directory of its own
 * with files in it (codex's config.toml, gemini's settings.json).
 *
 * Only Node's own modules: the relay loads this inside the sandbox, where
 * only the relay's own directory is mounted (no node_modules).
 */
export interface AgentEnvPlan {
  /** The route the agent's API calls use. */
  route: string;
  set: Record<string, string>;
  /** NAME -> path appended to the gateway URL. */
  fromGatewayUrl: Record<string, string>;
  /** Variables that get the placeholder. */
  placeholder: string[];
  /**
   * A fresh private directory made where the command runs, just before it
   * starts: under the sandbox's own (tmpfs) home in bwrap, a private temp
   * directory for `--sandbox none`. Never the user's real ~/.codex or
   * ~/.gemini.
   */
  configDir?: AgentConfigDir;
}

export interface AgentConfigDir {
  /** NAME -> path inside the directory ('' for the directory itself), e.g. CODEX_HOME. */
  env: Record<string, string>;
  files: AgentFile[];
}

export interface AgentFile {
  /** Relative to the config directory; no `..` or empty segments. */
  path: string;
  /** The text; every GATEWAY_URL_MARK and PLACEHOLDER_MARK is replaced when it is written. */
  template: string;
}

/** Replaced by the gateway URL inside the sandbox (`http://127.0.0.1:PORT`). */
export const GATEWAY_URL_MARK = '{{CREDPROXY_GATEWAY_URL}}';
/** Replaced by the placeholder (the run's capability token), only ever in a 0600 file. */
export const PLACEHOLDER_MARK = '{{CREDPROXY_PLACEHOLDER}}';

/** The plan's variables, for whoever knows the gateway URL and the placeholder (without the config directory's). */
export function resolveAgentEnv(plan: AgentEnvPlan, gatewayUrl: string, placeholder: string): Record<string, string> {
  const env: Record<string, string> = { ...plan.set };
  for (const [name, suffix] of Object.entries(plan.fromGatewayUrl)) env[name] = `${gatewayUrl}${suffix}`;
  for (const name of plan.placeholder) env[name] = placeholder;
  return env;
}

/** A value spliced into a TOML or JSON string: nothing that could end the string or the line. */
function safeValue(what: string, value: string): string {
  if (/["'\\\u0000-\u001f\u007f]/.test(value) || value.length > 4096) throw new Error(`the ${what} cannot be written into a config file`);
  return value;
}

/** The template with its marks replaced (split/join: no `$` patterns as with String.replace). */
export function fillTemplate(template: string, gatewayUrl: string, placeholder: string): string {
  return template.split(GATEWAY_URL_MARK).join(safeValue('gateway URL', gatewayUrl)).split(PLACEHOLDER_MARK).join(safeValue('placeholder', placeholder));
}

/** Whether a plan's config directory is well formed: relative file paths without `..`, strings everywhere. */
export function configDirProblem(dir: unknown): string | null {
  if (typeof dir !== 'object' || dir === null) return 'not an object';
  const d = dir as Partial<AgentConfigDir>;
  if (typeof d.env !== 'object' || d.env === null || !Object.values(d.env).every((v) => typeof v === 'string' && !v.split('/').includes('..'))) return 'bad env';
  if (!Array.isArray(d.files)) return 'no files';
  for (const f of d.files as unknown[]) {
    const file = f as Partial<AgentFile>;
    if (typeof file !== 'object' || file === null || typeof file.path !== 'string' || typeof file.template !== 'string') return 'bad file entry';
    const parts = file.path.split('/');
    if (file.path.startsWith('/') || parts.some((p) => p === '' || p === '.' || p === '..')) return `bad file path ${JSON.stringify(file.path)}`;
  }
  return null;
}

/**
 * Where the relay makes the config directory inside the sandbox: the
 * sandbox's home (a tmpfs in bwrap), or its /tmp (also a tmpfs) when that
 * home is not there or not ours to write (a container run as a uid the
 * image does not know gets HOME=/).
 */
export function sandboxConfigParent(env: NodeJS.ProcessEnv): string {
  const home = env.HOME;
  if (home === undefined || !home.startsWith('/')) return tmpdir();
  try {
    accessSync(home, constants.W_OK | constants.X_OK);
    return home;
  } catch {
    return tmpdir();
  }
}

/**
 * The plan's whole environment, config directory included: makes a fresh
 * 0700 directory under `parent`, writes the files (0600, never following a
 * link: the directory is new and each file is created exclusively) and
 * points the plan's variables at it. Throws when anything cannot be made.
 */
export function prepareAgentEnv(plan: AgentEnvPlan, parent: string, gatewayUrl: string, placeholder: string): { env: Record<string, string>; dir: string | null } {
  const env = resolveAgentEnv(plan, gatewayUrl, placeholder);
  if (plan.configDir === undefined) return { env, dir: null };
  const problem = configDirProblem(plan.configDir);
  if (problem !== null) throw new Error(`the agent's config directory plan is malformed (${problem})`);
  // mkdtemp makes it 0700.
  const dir = mkdtempSync(join(parent, '.credproxy-agent-'));
  try {
    for (const file of plan.configDir.files) {
      const path = join(dir, file.path);
      mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
      writeFileSync(path, fillTemplate(file.template, gatewayUrl, placeholder), { mode: 0o600, flag: 'wx' });
    }
  } catch (err) {
    // Nothing half-written is left behind (under --sandbox none it would outlive the run).
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  for (const [name, sub] of Object.entries(plan.configDir.env)) env[name] = sub === '' ? dir : join(dir, sub);
  return { env, dir };
}
