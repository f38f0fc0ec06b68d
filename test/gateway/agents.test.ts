import { lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { AGENTS, agentEnvPlan, agentSetup, explainAgent, locateAgentCommand, prepareAgentEnv, type Agent } from '../../src/gateway/agents.js';
import { configDirProblem, fillTemplate, GATEWAY_URL_MARK, PLACEHOLDER_MARK, resolveAgentEnv, sandboxConfigParent, type AgentEnvPlan } from '../../src/gateway/agent-env.js';
import { AGENT_HOSTS } from '../../src/egress/cli.js';
import { buildRoutes } from '../../src/gateway/routes.js';
import { Policy } from '../../src/server/policy.js';
import { CredproxyError } from '../../src/errors.js';

const policy = (allow: string[], keys: string[] = []): Policy => Policy.from({ allow, keys, allowAll: false, readOnly: false });
const GW = 'http://127.0.0.1:41234';
const PH = 'a'.repeat(64);

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
function scratch(): string {
  const d = mkdtempSync(join(tmpdir(), 'agents-test-'));
  dirs.push(d);
  return d;
}

/** Writes the plan's files like the relay does, and returns the env and the files' text. */
function prepared(plan: AgentEnvPlan): { env: Record<string, string>; dir: string; files: Record<string, string> } {
  const { env, dir } = prepareAgentEnv(plan, scratch(), GW, PH);
  expect(dir).not.toBeNull();
  const files: Record<string, string> = {};
  for (const f of plan.configDir?.files ?? []) files[f.path] = readFileSync(join(dir!, f.path), 'utf8');
  return { env, dir: dir!, files };
}

describe('agent presets', () => {
  it('every agent has a preset, an egress entry, and its route is one the gateway builds from the same policy', () => {
    const cases: Array<[Agent, Policy]> = [
      ['claude', policy(['anthropic'])],
      ['claude', policy([], ['anthropic'])],
      ['codex', policy(['codex'])],
      ['codex', policy([], ['openai'])],
      ['gemini', policy(['gemini'])],
      ['gemini', policy([], ['gemini'])],
      ['qwen', policy([], ['openai'])],
      ['qwen', policy([], ['qwen'])],
    ];
    for (const [agent, p] of cases) {
      expect(AGENT_HOSTS[agent]).toEqual([]);
      const plan = agentEnvPlan(agent, p);
      const config = { providers: {}, keys: { qwen: { route: { api_base: 'https://dashscope-intl.aliyuncs.com/compatible-mode/v1', header: 'authorization' as const } } } };
      expect([...buildRoutes({ policy: p, config }).routes.keys()], `${agent}`).toContain(plan.route);
      // Every gateway-relative value starts with the route (or is a deliberately refused path).
      for (const [name, suffix] of Object.entries(plan.fromGatewayUrl)) {
        if (name === 'CODEX_REFRESH_TOKEN_URL_OVERRIDE') expect(buildRoutes({ policy: p, config }).routes.has(suffix.split('/')[1]!)).toBe(false);
        else expect(suffix).toBe(`/${plan.route}`);
      }
    }
    expect([...AGENTS].sort()).toEqual(Object.keys(AGENT_HOSTS).sort());
  });

  it('gemini, Google login: Code Assist at the gateway, the placeholder as the access token, no oauth_creds.json, statistics off', () => {
    const plan = agentEnvPlan('gemini', policy(['gemini']));
    expect(plan.route).toBe('gemini');
    const { env, dir, files } = prepared(plan);
    expect(env).toMatchObject({ GOOGLE_GENAI_USE_GCA: 'true', GEMINI_CLI_TRUST_WORKSPACE: 'true', CODE_ASSIST_ENDPOINT: `${GW}/gemini`, GOOGLE_CLOUD_ACCESS_TOKEN: PH, GEMINI_CLI_HOME: dir });
    expect(Object.keys(files)).toEqual(['.gemini/settings.json']);
    const settings = JSON.parse(files['.gemini/settings.json']!) as Record<string, Record<string, unknown>>;
    expect(settings.privacy).toEqual({ usageStatisticsEnabled: false });
    expect(settings.security).toBeUndefined();
    expect(readdirSync(join(dir, '.gemini'))).toEqual(['settings.json']);
  });

  it('gemini, API key: base URL and key, and selectedType in settings.json (the environment alone is refused headless)', () => {
    // The key named explicitly wins over an allowed login.
    const plan = agentEnvPlan('gemini', policy(['gemini'], ['gemini']));
    expect(plan.route).toBe('keys/gemini');
    const { env, files } = prepared(plan);
    expect(env).toMatchObject({ GOOGLE_GEMINI_BASE_URL: `${GW}/keys/gemini`, GEMINI_API_KEY: PH, GEMINI_CLI_TRUST_WORKSPACE: 'true' });
    expect(env.GOOGLE_GENAI_USE_GCA).toBeUndefined();
    expect(JSON.parse(files['.gemini/settings.json']!).security).toEqual({ auth: { selectedType: 'gemini-api-key' } });
  });

  it('codex, ChatGPT login: a custom provider with requires_openai_auth and a placeholder auth.json that codex never refreshes', () => {
    const plan = agentEnvPlan('codex', policy(['codex']));
    expect(plan.route).toBe('codex');
    expect(plan.placeholder).toEqual([]);
    const { env, dir, files } = prepared(plan);
    expect(env.CODEX_HOME).toBe(dir);
    expect(env.CODEX_REFRESH_TOKEN_URL_OVERRIDE).toBe(`${GW}/credproxy-no-refresh/oauth/token`);
    const toml = files['config.toml']!;
    expect(toml).toContain('model_provider = "credproxy"');
    expect(toml).toContain(`chatgpt_base_url = "${GW}/codex"`);
    expect(toml).toMatch(/\[model_providers\.credproxy\][^[]*base_url = "http:\/\/127\.0\.0\.1:41234\/codex"\nrequires_openai_auth = true\nwire_api = "responses"/);
    expect(toml).toMatch(/\[features\]\nplugins = false\napps = false/);
    expect(toml).toMatch(/\[analytics\]\nenabled = false/);
    // Top-level keys come before the first table (TOML would put them in the table otherwise).
    expect(toml.indexOf('chatgpt_base_url')).toBeLessThan(toml.indexOf('['));
    const auth = JSON.parse(files['auth.json']!) as { OPENAI_API_KEY: null; tokens: Record<string, string>; last_refresh: string };
    expect(auth.OPENAI_API_KEY).toBeNull();
    expect(auth.tokens.access_token).toBe(PH);
    expect(auth.tokens.access_token!.split('.')).toHaveLength(1); // not a JWT: codex never refreshes it
    expect(Date.parse(auth.last_refresh)).toBeGreaterThan(Date.now() + 50 * 365 * 86_400_000);
    const claims = JSON.parse(Buffer.from(auth.tokens.id_token!.split('.')[1]!, 'base64url').toString('utf8')) as Record<string, Record<string, string>>;
    expect(claims['https://api.openai.com/auth']!.chatgpt_plan_type).toBe('plus');
    expect(statSync(join(dir, 'auth.json')).mode & 0o777).toBe(0o600);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
  });

  it('codex, API key: env_key OPENAI_API_KEY holds the placeholder; no auth.json', () => {
    const plan = agentEnvPlan('codex', policy(['codex'], ['openai']));
    expect(plan.route).toBe('keys/openai');
    const { env, files } = prepared(plan);
    expect(env.OPENAI_API_KEY).toBe(PH);
    expect(Object.keys(files)).toEqual(['config.toml']);
    expect(files['config.toml']).toContain(`base_url = "${GW}/keys/openai"\nenv_key = "OPENAI_API_KEY"\nwire_api = "responses"`);
    expect(files['config.toml']).not.toContain(PH);
  });

  it('qwen serves API keys only (its own OAuth is refused by the client), qwen before openai', () => {
    expect(agentEnvPlan('qwen', policy([], ['openai', 'qwen'])).route).toBe('keys/qwen');
    const plan = agentEnvPlan('qwen', policy([], ['openai']));
    const { env, dir, files } = prepared(plan);
    expect(env).toMatchObject({ OPENAI_BASE_URL: `${GW}/keys/openai`, OPENAI_API_KEY: PH, QWEN_HOME: dir });
    expect(env.OPENAI_MODEL).toBeTruthy();
    expect(JSON.parse(files['settings.json']!).security).toEqual({ auth: { selectedType: 'openai' } });
    let err: unknown;
    try {
      agentEnvPlan('qwen', policy(['qwen']));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CredproxyError);
    expect((err as CredproxyError).code).toBe('USAGE');
    expect((err as Error).message).toContain('free tier is discontinued');
    expect((err as Error).message).toContain('--allow-key qwen');
  });

  it('each agent refuses a policy without a credential it can run on, naming the flags', () => {
    const expected: Record<Agent, string[]> = {
      claude: ['--allow anthropic', '--allow-key anthropic'],
      codex: ['--allow codex', '--allow-key openai'],
      gemini: ['--allow gemini', '--allow-key gemini'],
      qwen: ['--allow-key qwen', '--allow-key openai'],
    };
    for (const agent of AGENTS) {
      expect(() => agentEnvPlan(agent, policy(['github'], ['other']))).toThrow(CredproxyError);
      try {
        agentEnvPlan(agent, policy(['github'], ['other']));
      } catch (e) {
        for (const flag of expected[agent]) expect((e as Error).message).toContain(flag);
      }
    }
  });

  it('the placeholder never appears in a plan (it travels on the relay command line), only in what is prepared inside', () => {
    for (const [agent, p] of [['codex', policy(['codex'])], ['gemini', policy(['gemini'])], ['qwen', policy([], ['openai'])]] as const) {
      const plan = agentEnvPlan(agent, p);
      const text = JSON.stringify(plan);
      expect(text).not.toMatch(/[0-9a-f]{64}/);
      expect(text).not.toContain(GW);
    }
  });

  it('--explain lines name every variable and file with a reason, and never a value of the placeholder', () => {
    for (const [agent, p] of [['claude', policy(['anthropic'])], ['codex', policy(['codex'])], ['codex', policy([], ['openai'])], ['gemini', policy(['gemini'])], ['gemini', policy([], ['gemini'])], ['qwen', policy([], ['openai'])]] as const) {
      const setup = agentSetup(agent, p);
      const lines = explainAgent(setup);
      expect(lines[0]).toContain(`agent ${agent}: ${setup.mode}`);
      const names = [...Object.keys(setup.plan.set), ...Object.keys(setup.plan.fromGatewayUrl), ...setup.plan.placeholder, ...Object.keys(setup.plan.configDir?.env ?? {})];
      for (const name of names) expect(lines.some((l) => new RegExp(`^  ${name}=.+  \\(.+\\)$`).test(l)), `${agent} ${name}`).toBe(true);
      for (const f of setup.plan.configDir?.files ?? []) expect(lines.some((l) => l.startsWith(`  file ${f.path}  (`)), `${agent} ${f.path}`).toBe(true);
      for (const name of setup.plan.placeholder) expect(lines.find((l) => l.startsWith(`  ${name}=`))).toContain('<placeholder>');
    }
  });
});

describe('agent config directory', () => {
  it('fills the marks literally (no $ patterns) and refuses values that could break out of a string', () => {
    expect(() => fillTemplate('x', 'http://h:1', "a'b")).toThrow();
    expect(fillTemplate(`a ${GATEWAY_URL_MARK}/x ${PLACEHOLDER_MARK} ${GATEWAY_URL_MARK}`, 'http://h:1', '$&b')).toBe('a http://h:1/x $&b http://h:1');
    for (const bad of ['http://h:1"', 'http://h:1\\', 'http://h:1\nx = 1']) expect(() => fillTemplate('x', bad, PH)).toThrow();
  });

  it('refuses file paths that leave the directory before making anything', () => {
    for (const path of ['../x', '/etc/passwd', 'a/../../x', 'a//b', './x', '']) {
      expect(configDirProblem({ env: {}, files: [{ path, template: '' }] }), path).not.toBeNull();
    }
    expect(configDirProblem({ env: { X: '../up' }, files: [] })).not.toBeNull();
    expect(configDirProblem({ env: { X: '' }, files: [{ path: '.gemini/settings.json', template: '{}' }] })).toBeNull();
    const plan: AgentEnvPlan = { route: 'r', set: {}, fromGatewayUrl: {}, placeholder: [], configDir: { env: {}, files: [{ path: '../escape', template: 'x' }] } };
    const parent = scratch();
    expect(() => prepareAgentEnv(plan, parent, GW, PH)).toThrow(/malformed/);
    expect(readdirSync(parent)).toEqual([]);
  });

  it('leaves nothing behind when a file cannot be written (a value that cannot go into a config file)', () => {
    const parent = scratch();
    expect(() => prepareAgentEnv(agentEnvPlan('codex', policy(['codex'])), parent, GW, 'not"hex')).toThrow(/cannot be written/);
    expect(readdirSync(parent)).toEqual([]);
  });

  it('makes a fresh directory per call, so two runs never share or overwrite one', () => {
    const plan = agentEnvPlan('codex', policy(['codex']));
    const parent = scratch();
    const a = prepareAgentEnv(plan, parent, GW, PH);
    const b = prepareAgentEnv(plan, parent, GW, 'b'.repeat(64));
    expect(a.dir).not.toBe(b.dir);
    expect(readFileSync(join(a.dir!, 'auth.json'), 'utf8')).toContain(PH);
    expect(readFileSync(join(b.dir!, 'auth.json'), 'utf8')).toContain('b'.repeat(64));
  });

  it('without a config directory, prepareAgentEnv is resolveAgentEnv and writes nothing', () => {
    const plan = agentEnvPlan('claude', policy(['anthropic']));
    const parent = scratch();
    const r = prepareAgentEnv(plan, parent, GW, PH);
    expect(r).toEqual({ env: resolveAgentEnv(plan, GW, PH), dir: null });
    expect(readdirSync(parent)).toEqual([]);
  });

  it('the sandbox parent is HOME when it exists there, else the sandbox /tmp', () => {
    const home = scratch();
    expect(sandboxConfigParent({ HOME: home })).toBe(home);
    expect(sandboxConfigParent({ HOME: join(home, 'missing') })).toBe(tmpdir());
    expect(sandboxConfigParent({})).toBe(tmpdir());
    expect(sandboxConfigParent({ HOME: 'relative' })).toBe(tmpdir());
  });

  it('a HOME the relay may not write (a container run as a uid its image does not know) falls back to /tmp', () => {
    expect(process.getuid?.()).toBe(0); // to run the check as another uid (MACHINE-NOTES: the tests run as root)
    const theirs = scratch(); // 0700, root's
    const built = fileURLToPath(new URL('../../dist/gateway/agent-env.js', import.meta.url));
    const asNobody = (home: string): string =>
      execFileSync(process.execPath, ['--input-type=module', '-e', `import { sandboxConfigParent } from ${JSON.stringify(built)}; process.stdout.write(sandboxConfigParent({ HOME: ${JSON.stringify(home)} }));`], {
        uid: 65534,
        gid: 65534,
        cwd: '/',
        encoding: 'utf8',
      });
    expect(asNobody(theirs)).toBe(tmpdir());
    expect(asNobody(tmpdir())).toBe(tmpdir());
  });
});

describe('locateAgentCommand', () => {
  it('binds the outermost node_modules of an npm-installed CLI (its dependencies beside it), else the file’s directory', () => {
    const root = scratch();
    const pkg = join(root, 'lib', 'node_modules', '@openai', 'codex', 'bin');
    const bin = join(root, 'bin');
    mkdirSync(pkg, { recursive: true });
    mkdirSync(bin, { recursive: true });
    writeFileSync(join(pkg, 'codex.js'), '#!/bin/sh\n', { mode: 0o755 });
    symlinkSync(join(pkg, 'codex.js'), join(bin, 'codex'));
    const found = locateAgentCommand(['codex', 'exec', 'hi'], { PATH: `${bin}:/usr/bin:/bin` });
    expect(found.command).toEqual([join(pkg, 'codex.js'), 'exec', 'hi']);
    expect(found.dir).toBe(join(root, 'lib', 'node_modules'));
    expect(lstatSync(join(bin, 'codex')).isSymbolicLink()).toBe(true);
    const plain = locateAgentCommand(['sh', '-c', 'true'], { PATH: '/usr/bin:/bin' });
    expect(plain.dir).toMatch(/^\/(usr\/)?bin$/);
    expect(() => locateAgentCommand(['no-such-agent-cli'], { PATH: bin })).toThrow(/not on PATH/);
    // A shell builtin is found as the file on PATH; a directory or a file that is not executable is passed over.
    expect(locateAgentCommand(['true'], { PATH: '/usr/bin:/bin' }).command[0]).toMatch(/^\/(usr\/)?bin\/true$/);
    mkdirSync(join(root, 'd1', 'tool'), { recursive: true });
    mkdirSync(join(root, 'd2'));
    writeFileSync(join(root, 'd2', 'tool'), 'x', { mode: 0o644 });
    mkdirSync(join(root, 'd3'));
    writeFileSync(join(root, 'd3', 'tool'), '#!/bin/sh\n', { mode: 0o755 });
    expect(locateAgentCommand(['tool'], { PATH: `${join(root, 'd1')}:${join(root, 'd2')}:relative:${join(root, 'd3')}` }).command[0]).toBe(join(root, 'd3', 'tool'));
  });
});
