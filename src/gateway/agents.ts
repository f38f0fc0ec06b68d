import { accessSync, constants, realpathSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { CredproxyError } from '../errors.js';
import type { Policy } from '../server/policy.js';
import { OPENAI_AUTH_CLAIM, unsignedJwt } from '../oauth/jwt.js';
import { KEY_ROUTE_PREFIX } from './routes.js';
import { GATEWAY_URL_MARK, PLACEHOLDER_MARK, type AgentEnvPlan, type AgentFile } from './agent-env.js';

export { prepareAgentEnv, type AgentEnvPlan } from './agent-env.js';

export const AGENTS = ['claude', 'codex', 'gemini', 'qwen'] as const;
export type Agent = (typeof AGENTS)[number];

/** A preset's plan, with what it is for (`run --agent NAME --explain`). */
export interface AgentSetup {
  agent: Agent;
  /** Which credential it runs on, and the flag that chose it. */
  mode: string;
  plan: AgentEnvPlan;
  /** Variable name, or `file:<path>` for a config file -> why it is there. */
  why: Record<string, string>;
}

const key = (name: string): string => `${KEY_ROUTE_PREFIX}/${name}`;

/** `--allow-key NAME` named explicitly (not just through --allow-all). */
function namesKey(policy: Policy, name: string): boolean {
  return policy.describe().keys.includes(name);
}

/**
 * Claude Code (2.1.x): it honours ANTHROPIC_BASE_URL with a path prefix;
 * with CLAUDE_CODE_OAUTH_TOKEN it sends Authorization: Bearer and never
 * calls a token endpoint; with ANTHROPIC_API_KEY it sends x-api-key.
 * Without CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC it would also send the
 * placeholder straight to api.anthropic.com for telemetry.
 *
 * Key mode when the policy names the `anthropic` key explicitly
 * (`--allow-key anthropic`), else the Claude login (`--allow anthropic`).
 */
function claude(policy: Policy): AgentSetup {
  const quiet = { CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: 'without it Claude Code sends the placeholder to api.anthropic.com for telemetry, error reports and update checks' };
  if (namesKey(policy, 'anthropic')) {
    return {
      agent: 'claude',
      mode: 'Anthropic API key (--allow-key anthropic)',
      plan: { route: key('anthropic'), set: { CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1' }, fromGatewayUrl: { ANTHROPIC_BASE_URL: `/${key('anthropic')}` }, placeholder: ['ANTHROPIC_API_KEY'] },
      why: { ANTHROPIC_BASE_URL: 'every API call goes to the gateway', ANTHROPIC_API_KEY: 'Claude Code sends it as x-api-key; the gateway swaps in the real key', ...quiet },
    };
  }
  if (policy.allowsToken('anthropic')) {
    return {
      agent: 'claude',
      mode: 'Claude login (--allow anthropic)',
      plan: { route: 'anthropic', set: { CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1' }, fromGatewayUrl: { ANTHROPIC_BASE_URL: '/anthropic' }, placeholder: ['CLAUDE_CODE_OAUTH_TOKEN'] },
      why: { ANTHROPIC_BASE_URL: 'every API call goes to the gateway', CLAUDE_CODE_OAUTH_TOKEN: 'Claude Code sends it as a Bearer token and never refreshes it; the host refreshes the real one', ...quiet },
    };
  }
  throw new CredproxyError('USAGE', '--agent claude needs an Anthropic credential: --allow anthropic (the Claude login, `credproxy login anthropic`) or --allow-key anthropic (an API key, `credproxy key set anthropic`)');
}

/** TOML for the Codex config: plain ASCII values only, so basic strings need no escaping. */
function codexToml(provider: Record<string, string | boolean>, top: Record<string, string> = {}): string {
  const value = (v: string | boolean): string => (typeof v === 'boolean' ? String(v) : `"${v}"`);
  return [
    '# Written by credproxy for this run only: every model call goes through its gateway.',
    'model_provider = "credproxy"',
    ...Object.entries(top).map(([k, v]) => `${k} = ${value(v)}`),
    '',
    '[model_providers.credproxy]',
    ...Object.entries(provider).map(([k, v]) => `${k} = ${value(v)}`),
    '',
    '# Side traffic off: plugin and app directories, analytics.',
    '[features]',
    'plugins = false',
    'apps = false',
    '',
    '[analytics]',
    'enabled = false',
    '',
  ].join('\n');
}

/** An unsigned, claims-only JWT for codex's auth.json: it reads the plan type from the id_token; nothing in it is secret. */
function placeholderIdToken(): string {
  return unsignedJwt({ email: 'sandbox@credproxy.invalid', [OPENAI_AUTH_CLAIM]: { chatgpt_plan_type: 'plus', chatgpt_account_id: 'credproxy-placeholder' } }, 'credproxy-placeholder');
}

/**
 * The Codex CLI (0.17x) ignores OPENAI_BASE_URL/OPENAI_API_KEY for its
 * built-in provider, so both modes use a custom provider in
 * `$CODEX_HOME/config.toml`, CODEX_HOME being a fresh directory.
 * - ChatGPT login (`--allow codex`): `requires_openai_auth` with a
 *   placeholder auth.json. Its access token is the placeholder (not a JWT:
 *   codex never refreshes it) and `last_refresh` is far in the future (an
 *   old one makes codex refresh on start). It calls `GET {base}/models` and
 *   `POST {base}/responses` with Bearer and `chatgpt-account-id`; the
 *   gateway replaces both (the real account id from the stored id_token).
 *   `chatgpt_base_url` points at the gateway too (account and settings
 *   look-ups; codex carries on when they fail), and a refresh it tries
 *   anyway (after a 401) goes to a gateway path that is refused, never to
 *   auth.openai.com.
 * - API key (`--allow-key openai`): `env_key = "OPENAI_API_KEY"` holding
 *   the placeholder, base_url the gateway's `keys/openai` route.
 */
function codex(policy: Policy): AgentSetup {
  const home = { CODEX_HOME: 'codex reads config.toml (and auth.json) from here instead of ~/.codex: a fresh directory in the sandbox, gone with it' };
  const sideTraffic = 'features.plugins, features.apps and analytics off: no calls besides the model API';
  if (namesKey(policy, 'openai')) {
    const route = key('openai');
    const files: AgentFile[] = [{ path: 'config.toml', template: codexToml({ name: 'credproxy gateway (OpenAI API key)', base_url: `${GATEWAY_URL_MARK}/${route}`, env_key: 'OPENAI_API_KEY', wire_api: 'responses' }) }];
    return {
      agent: 'codex',
      mode: 'OpenAI API key (--allow-key openai)',
      plan: { route, set: {}, fromGatewayUrl: {}, placeholder: ['OPENAI_API_KEY'], configDir: { env: { CODEX_HOME: '' }, files } },
      why: {
        ...home,
        OPENAI_API_KEY: 'the provider’s env_key: codex sends it as a Bearer token; the gateway swaps in the real key',
        'file:config.toml': `a custom provider "credproxy" (codex ignores OPENAI_BASE_URL for its built-in one): base_url <gateway>/${route}, wire_api responses; ${sideTraffic}`,
      },
    };
  }
  if (policy.allowsToken('codex')) {
    const auth = {
      OPENAI_API_KEY: null,
      tokens: { id_token: placeholderIdToken(), access_token: PLACEHOLDER_MARK, refresh_token: 'credproxy-placeholder-never-refreshed', account_id: 'credproxy-placeholder' },
      last_refresh: '2999-01-01T00:00:00Z',
    };
    const files: AgentFile[] = [
      { path: 'config.toml', template: codexToml({ name: 'credproxy gateway (ChatGPT login)', base_url: `${GATEWAY_URL_MARK}/codex`, requires_openai_auth: true, wire_api: 'responses' }, { chatgpt_base_url: `${GATEWAY_URL_MARK}/codex`, cli_auth_credentials_store: 'file' }) },
      { path: 'auth.json', template: `${JSON.stringify(auth, null, 2)}\n` },
    ];
    return {
      agent: 'codex',
      mode: 'ChatGPT login (--allow codex)',
      plan: { route: 'codex', set: {}, fromGatewayUrl: { CODEX_REFRESH_TOKEN_URL_OVERRIDE: '/credproxy-no-refresh/oauth/token' }, placeholder: [], configDir: { env: { CODEX_HOME: '' }, files } },
      why: {
        ...home,
        'file:config.toml': `a custom provider "credproxy" with requires_openai_auth: base_url and chatgpt_base_url <gateway>/codex (ChatGPT's backend-api/codex), wire_api responses; auth kept in the file; ${sideTraffic}`,
        'file:auth.json': 'a placeholder login: the access token is the placeholder (not a JWT, so codex never refreshes it), no real refresh token or account id; the gateway puts in the real token and chatgpt-account-id and the host refreshes',
        CODEX_REFRESH_TOKEN_URL_OVERRIDE: 'a refresh codex tries anyway (after a 401) goes to the gateway, which refuses it, never to auth.openai.com',
      },
    };
  }
  throw new CredproxyError('USAGE', '--agent codex needs an OpenAI credential: --allow codex (the ChatGPT login, `credproxy login codex` or `credproxy import codex`) or --allow-key openai (an API key, `credproxy key set openai`)');
}

/** Gemini CLI's settings.json: usage statistics and update checks off, and the auth type when the environment alone is not enough. */
function geminiSettings(selectedType?: string): AgentFile {
  const settings = {
    ...(selectedType === undefined ? {} : { security: { auth: { selectedType } } }),
    privacy: { usageStatisticsEnabled: false },
    general: { enableAutoUpdate: false, enableAutoUpdateNotification: false },
  };
  return { path: '.gemini/settings.json', template: `${JSON.stringify(settings, null, 2)}\n` };
}

/**
 * Gemini CLI (0.61). GEMINI_CLI_HOME replaces the home it keeps `.gemini/`
 * under (settings, chats, its installation id), so the user's own is never
 * read or written. GEMINI_CLI_TRUST_WORKSPACE: headless runs otherwise stop
 * at the folder-trust question.
 * - Google login (`--allow gemini`): Code Assist with a given access token
 *   (GOOGLE_GENAI_USE_GCA, GOOGLE_CLOUD_ACCESS_TOKEN, CODE_ASSIST_ENDPOINT):
 *   it calls `v1internal:loadCodeAssist`, `:generateContent`,
 *   `:streamGenerateContent?alt=sse`… with Bearer. No oauth_creds.json: with
 *   one it insists on oauth2.googleapis.com/tokeninfo. It also fetches
 *   www.googleapis.com/oauth2/v2/userinfo with the placeholder (to cache the
 *   account's email), outside the gateway: that fails in the sandbox and it
 *   carries on.
 * - API key (`--allow-key gemini`): GEMINI_API_KEY and
 *   GOOGLE_GEMINI_BASE_URL, plus `security.auth.selectedType` in
 *   settings.json (non-interactive mode refuses the environment alone); it
 *   sends x-goog-api-key.
 */
function gemini(policy: Policy): AgentSetup {
  const common = {
    GEMINI_CLI_HOME: 'Gemini CLI keeps .gemini/ (settings, chats) here instead of ~/.gemini: a fresh directory in the sandbox',
    GEMINI_CLI_TRUST_WORKSPACE: 'a headless run otherwise stops at the folder-trust check',
  };
  const quiet = 'usage statistics (their logging calls) and update checks off';
  if (namesKey(policy, 'gemini')) {
    const route = key('gemini');
    return {
      agent: 'gemini',
      mode: 'Gemini API key (--allow-key gemini)',
      plan: {
        route,
        set: { GEMINI_CLI_TRUST_WORKSPACE: 'true' },
        fromGatewayUrl: { GOOGLE_GEMINI_BASE_URL: `/${route}` },
        placeholder: ['GEMINI_API_KEY'],
        configDir: { env: { GEMINI_CLI_HOME: '' }, files: [geminiSettings('gemini-api-key')] },
      },
      why: {
        ...common,
        GOOGLE_GEMINI_BASE_URL: 'the Gemini API calls go to the gateway',
        GEMINI_API_KEY: 'sent as x-goog-api-key; the gateway swaps in the real key',
        'file:.gemini/settings.json': `security.auth.selectedType "gemini-api-key" (non-interactive mode refuses the environment alone); ${quiet}`,
      },
    };
  }
  if (policy.allowsToken('gemini')) {
    return {
      agent: 'gemini',
      mode: 'Google login (--allow gemini)',
      plan: {
        route: 'gemini',
        set: { GOOGLE_GENAI_USE_GCA: 'true', GEMINI_CLI_TRUST_WORKSPACE: 'true' },
        fromGatewayUrl: { CODE_ASSIST_ENDPOINT: '/gemini' },
        placeholder: ['GOOGLE_CLOUD_ACCESS_TOKEN'],
        configDir: { env: { GEMINI_CLI_HOME: '' }, files: [geminiSettings()] },
      },
      why: {
        ...common,
        GOOGLE_GENAI_USE_GCA: 'the Google login’s API (Code Assist); Gemini CLI also asks www.googleapis.com/oauth2/v2/userinfo for the account’s email with the token it holds, the placeholder: the gateway has no route there, the sandbox no network to it (do not --allow-host it), and Gemini CLI carries on without it',
        CODE_ASSIST_ENDPOINT: 'Code Assist calls (v1internal:…) go to the gateway',
        GOOGLE_CLOUD_ACCESS_TOKEN: 'used as the Bearer token as it is, never refreshed (no oauth_creds.json, so no tokeninfo call to Google); the host refreshes the real one',
        'file:.gemini/settings.json': quiet,
      },
    };
  }
  throw new CredproxyError('USAGE', '--agent gemini needs a Google credential: --allow gemini (the Gemini CLI login, `credproxy login gemini` or `credproxy import gemini`) or --allow-key gemini (an API key, `credproxy key set gemini`)');
}

/** The model qwen asks for unless given `-m`: one the key's API serves. */
const QWEN_DEFAULT_MODELS: Readonly<Record<string, string>> = { qwen: 'qwen3-coder-plus', openai: 'gpt-4.1' };

/**
 * Qwen Code (0.24, Node 22 or later) in its OpenAI-compatible mode:
 * OPENAI_BASE_URL, OPENAI_API_KEY, OPENAI_MODEL. Its own Qwen OAuth mode is
 * refused by the client itself ("free tier discontinued"), so this preset
 * serves API keys only: `--allow-key qwen` (DashScope or any
 * OpenAI-compatible API: its route comes from keys.qwen.route in
 * config.json) or `--allow-key openai`. QWEN_HOME is its config directory.
 */
function qwen(policy: Policy): AgentSetup {
  const name = ['qwen', 'openai'].find((k) => namesKey(policy, k));
  if (name === undefined) {
    const oauth = policy.allowsToken('qwen') ? ' (Qwen Code refuses its own Qwen OAuth login: the free tier is discontinued, so --allow qwen cannot serve it)' : '';
    throw new CredproxyError('USAGE', `--agent qwen needs an API key${oauth}: --allow-key qwen (with keys.qwen.route in config.json, e.g. DashScope's OpenAI-compatible API) or --allow-key openai`);
  }
  const route = key(name);
  const settings = { security: { auth: { selectedType: 'openai' } }, privacy: { usageStatisticsEnabled: false }, general: { enableAutoUpdate: false } };
  return {
    agent: 'qwen',
    mode: `API key ${name} (--allow-key ${name}), OpenAI-compatible`,
    plan: {
      route,
      set: { OPENAI_MODEL: QWEN_DEFAULT_MODELS[name]! },
      fromGatewayUrl: { OPENAI_BASE_URL: `/${route}` },
      placeholder: ['OPENAI_API_KEY'],
      configDir: { env: { QWEN_HOME: '' }, files: [{ path: 'settings.json', template: `${JSON.stringify(settings, null, 2)}\n` }] },
    },
    why: {
      QWEN_HOME: 'Qwen Code reads settings.json and keeps its sessions here instead of ~/.qwen: a fresh directory in the sandbox',
      OPENAI_BASE_URL: 'its OpenAI-compatible calls (chat/completions) go to the gateway',
      OPENAI_API_KEY: 'sent as a Bearer token; the gateway swaps in the real key',
      OPENAI_MODEL: 'the model it needs in this mode; `qwen -m MODEL` chooses another',
      'file:settings.json': 'security.auth.selectedType "openai"; usage statistics and update checks off',
    },
  };
}

/** What `credproxy providers` says about a built-in provider an agent preset cannot serve. */
export const PROVIDER_AGENT_NOTES: Readonly<Record<string, string>> = {
  qwen: 'Qwen Code refuses its own Qwen OAuth login (free tier discontinued): `run --agent qwen` serves API keys only (--allow-key qwen or --allow-key openai)',
};

const PRESETS: Readonly<Record<Agent, (policy: Policy) => AgentSetup>> = { claude, codex, gemini, qwen };

/** The agent's setup for this policy; USAGE when the policy has no credential it can run on. */
export function agentSetup(agent: Agent, policy: Policy): AgentSetup {
  return PRESETS[agent](policy);
}

export function agentEnvPlan(agent: Agent, policy: Policy): AgentEnvPlan {
  return agentSetup(agent, policy).plan;
}

/** `run --agent NAME --explain`: what the preset sets inside the sandbox, and why. The placeholder is never printed. */
export function explainAgent(setup: AgentSetup): string[] {
  const { plan, why } = setup;
  const lines = [`agent ${setup.agent}: ${setup.mode}; model calls go to the gateway route /${plan.route}/ (implies --gateway)`];
  const entry = (name: string, value: string): string => `  ${name}=${value}${why[name] === undefined ? '' : `  (${why[name]})`}`;
  for (const [name, value] of Object.entries(plan.set)) lines.push(entry(name, value));
  for (const [name, suffix] of Object.entries(plan.fromGatewayUrl)) lines.push(entry(name, `<gateway>${suffix}`));
  for (const name of plan.placeholder) lines.push(entry(name, '<placeholder>'));
  if (plan.configDir !== undefined) {
    for (const [name, sub] of Object.entries(plan.configDir.env)) lines.push(entry(name, `<fresh 0700 directory on the sandbox's tmpfs home>${sub === '' ? '' : `/${sub}`}`));
    for (const file of plan.configDir.files) lines.push(`  file ${file.path}${why[`file:${file.path}`] === undefined ? '' : `  (${why[`file:${file.path}`]})`}`);
  }
  return lines;
}

/**
 * The agent's program as the sandbox must start it. Claude Code usually
 * lives under the home directory (~/.local/bin -> ~/.local/share/claude,
 * an npm prefix, nvm), which bwrap masks: a bare command name is resolved
 * on the host's PATH to its real file, whose directory (for a file in a
 * node_modules tree: that tree) is then bound read-only. Throws USAGE when
 * it cannot be found.
 */
function executableFile(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

export function locateAgentCommand(command: readonly string[], env: NodeJS.ProcessEnv): { command: string[]; dir: string } {
  const name = command[0]!;
  let path = name;
  if (!name.includes('/')) {
    // A file on PATH, as execvp finds it: a shell's `command -v` answers builtins (`true`) by name.
    path = (env.PATH ?? '/usr/bin:/bin').split(':').filter((d) => d.startsWith('/')).map((d) => join(d, name)).find(executableFile) ?? '';
    if (path === '') {
      throw new CredproxyError('USAGE', `${name} is not on PATH; install it (\`npm install -g\` @anthropic-ai/claude-code, @openai/codex, @google/gemini-cli or @qwen-code/qwen-code) or give its full path after --`);
    }
  }
  let real: string;
  try {
    real = realpathSync(path);
  } catch {
    throw new CredproxyError('USAGE', `${name} does not exist`);
  }
  // An npm-installed CLI needs its package and its dependencies beside it (codex.js starts the binary of
  // @openai/codex-linux-x64): bind the outermost node_modules it lives in, read-only like the rest.
  const nm = real.indexOf('/node_modules/');
  return { command: [real, ...command.slice(1)], dir: nm > 0 ? real.slice(0, nm + '/node_modules'.length) : dirname(real) };
}
