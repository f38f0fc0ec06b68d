import { describe, expect, it } from 'vitest';
import { canonicalIp, classifyAddress, isNumericHostForm } from '../../src/egress/address.js';
import { AuthorityError, DEFAULT_PORTS, HOST_PRESETS, HostRuleError, literallyAllowed, matchHost, parseAuthority, parseHostRule, parseHostRules, suggestFlag, type RequestHost } from '../../src/egress/hosts.js';
import { parseConfig } from '../../src/config.js';
import { agentHosts, describeRules, egressRules } from '../../src/egress/cli.js';
import { CredproxyError } from '../../src/errors.js';

const name = (n: string): RequestHost => ({ kind: 'name', name: n });
const allows = (entries: string[], host: string, port: number): boolean => {
  const target = parseAuthority(`${host}:${port}`);
  return matchHost(parseHostRules(entries), target.host, target.port) !== null;
};

describe('host rules', () => {
  it('a wildcard matches deeper names only, never the bare domain or a lookalike', () => {
    const rules = ['*.npmjs.org'];
    expect(allows(rules, 'registry.npmjs.org', 443)).toBe(true);
    expect(allows(rules, 'a.b.npmjs.org', 443)).toBe(true);
    expect(allows(rules, 'REGISTRY.NPMJS.ORG.', 443)).toBe(true); // case and the trailing dot are normalised
    expect(allows(rules, 'npmjs.org', 443)).toBe(false);
    expect(allows(rules, 'evilnpmjs.org', 443)).toBe(false);
    expect(allows(rules, 'registry.npmjs.org.evil.com', 443)).toBe(false);
    expect(allows(rules, 'npmjs.org.evil.com', 443)).toBe(false);
    expect(allows(rules, 'registry-npmjs.org', 443)).toBe(false);
  });

  it('an exact name matches itself only', () => {
    expect(allows(['github.com'], 'github.com', 443)).toBe(true);
    expect(allows(['github.com'], 'api.github.com', 443)).toBe(false);
    expect(allows(['github.com'], 'github.com.evil', 443)).toBe(false);
    expect(allows(['github.com'], 'xgithub.com', 443)).toBe(false);
  });

  it('ports: none given means 80 and 443; :PORT only that one; :* any', () => {
    expect(DEFAULT_PORTS).toEqual([80, 443]);
    expect(allows(['example.org'], 'example.org', 80)).toBe(true);
    expect(allows(['example.org'], 'example.org', 443)).toBe(true);
    expect(allows(['example.org'], 'example.org', 22)).toBe(false);
    expect(allows(['example.org:8443'], 'example.org', 8443)).toBe(true);
    expect(allows(['example.org:8443'], 'example.org', 443)).toBe(false);
    expect(allows(['example.org:*'], 'example.org', 22)).toBe(true);
  });

  it('address rules match that address only (IPv4-mapped IPv6 is the same address), never a name', () => {
    const rules = parseHostRules(['127.0.0.2:8080', '[::1]:9000']);
    expect(rules.map((r) => [r.kind, r.value])).toEqual([['address', '127.0.0.2'], ['address', '::1']]);
    expect(allows(['127.0.0.2:8080'], '127.0.0.2', 8080)).toBe(true);
    expect(allows(['127.0.0.2:8080'], '[::ffff:127.0.0.2]', 8080)).toBe(true);
    expect(allows(['127.0.0.2:8080'], '127.0.0.3', 8080)).toBe(false);
    expect(allows(['127.0.0.2:8080'], 'localhost', 8080)).toBe(false);
    expect(allows(['[::1]:9000'], '[0:0:0:0:0:0:0:1]', 9000)).toBe(true);
    expect(allows(['::1'], '[::1]', 443)).toBe(true); // a bare IPv6 address without port
    expect(literallyAllowed(rules, '127.0.0.2', 8080)).toBe(true);
    expect(literallyAllowed(rules, '127.0.0.2', 8081)).toBe(false);
    expect(literallyAllowed(rules, '127.0.0.1', 8080)).toBe(false);
  });

  it('presets expand to their documented lists', () => {
    const npm = parseHostRules(['@npm']);
    expect(npm.map((r) => r.value)).toEqual(['registry.npmjs.org', 'registry.yarnpkg.com']);
    expect(npm.every((r) => r.source === '@npm' && r.ports?.join() === '443')).toBe(true);
    expect(parseHostRules(['@pypi']).map((r) => r.value)).toEqual(['pypi.org', 'files.pythonhosted.org']);
    expect(parseHostRules(['@github']).map((r) => r.value)).toContain('codeload.github.com');
    expect(allows(['@github'], 'github.com', 443)).toBe(true);
    expect(allows(['@github'], 'github.com', 22)).toBe(false);
    expect(allows(['@npm'], 'registry.npmjs.org', 80)).toBe(false);
    expect(Object.keys(HOST_PRESETS)).toEqual(['npm', 'pypi', 'github']);
    expect(() => parseHostRules(['@nope'])).toThrow(/unknown preset.*@npm, @pypi, @github/);
    expect(() => parseHostRules(['@constructor'])).toThrow(HostRuleError);
    expect(() => parseHostRules(['@__proto__'])).toThrow(HostRuleError);
  });

  it('refuses rules that are not an allowlist or are ambiguous', () => {
    for (const bad of ['*', '*:443', '*.com', '*.', 'a.*.org', '*foo.org', 'foo*.org', '', 'exa mple.org', 'example.org:0', 'example.org:65536', 'example.org:http',
      '2130706433', '0x7f000001', '0177.0.0.1', '127.1', 'foo.123', '[::1', '[::1]x', '[127.0.0.1]', 'fe80::1%eth0', '-bad.org', 'a'.repeat(64) + '.org']) {
      expect(() => parseHostRule(bad), bad).toThrow(HostRuleError);
    }
    expect(() => parseHostRule('*.com')).toThrow(/two labels/);
    expect(() => parseHostRule('*')).toThrow(/--share-net/);
  });

  it('names the flag to add in refusals', () => {
    expect(suggestFlag(name('evil.example'), 443)).toBe('--allow-host evil.example');
    expect(suggestFlag(name('evil.example'), 8443)).toBe('--allow-host evil.example:8443');
    expect(suggestFlag({ kind: 'address', address: '::1', family: 6 }, 22)).toBe('--allow-host [::1]:22');
  });

  it('profiles take allowHost and refuse a bad entry naming the field', () => {
    const ok = parseConfig(JSON.stringify({ profiles: { dev: { allowHost: ['@npm', '*.example.org:8443'] } } }), '/x/config.json');
    expect(ok.profiles.dev!.allowHost).toEqual(['@npm', '*.example.org:8443']);
    expect(() => parseConfig(JSON.stringify({ profiles: { dev: { allowHost: ['*'] } } }), '/x/config.json')).toThrow(/profiles\.dev\.allowHost\.0/);
  });
});

describe('run wiring', () => {
  it('--agent claude adds no hosts (the gateway carries its model traffic)', () => {
    expect(agentHosts('claude')).toEqual([]);
  });

  it('bad entries are usage errors naming the entry; --explain lists every expanded rule', () => {
    expect(() => egressRules(['ok.example', '*'])).toThrow(CredproxyError);
    expect(() => egressRules(['*.'])).toThrow(/invalid --allow-host \*\./);
    const lines = describeRules(egressRules(['@pypi', '[::1]:8080']));
    expect(lines.slice(1)).toEqual([
      '  pypi.org port 443 (from @pypi)',
      '  files.pythonhosted.org port 443 (from @pypi)',
      '  [::1] port 8080, literal address (reachable even if loopback or private)',
      '  proxy variables: HTTPS_PROXY HTTP_PROXY https_proxy http_proxy NO_PROXY no_proxy',
    ]);
    expect(describeRules([])[0]).toMatch(/^egress: none/);
  });
});

describe('request targets (CONNECT host:port and absolute-URL authorities)', () => {
  it('parses names, dotted quads and bracketed IPv6', () => {
    expect(parseAuthority('Registry.NPMjs.org.:443')).toEqual({ host: name('registry.npmjs.org'), port: 443, display: 'registry.npmjs.org:443' });
    expect(parseAuthority('10.1.2.3:80').host).toEqual({ kind: 'address', address: '10.1.2.3', family: 4 });
    expect(parseAuthority('[::1]:22').host).toEqual({ kind: 'address', address: '::1', family: 6 });
    expect(parseAuthority('[::ffff:127.0.0.1]:22').host).toEqual({ kind: 'address', address: '127.0.0.1', family: 4 });
    expect(parseAuthority('[::ffff:7f00:1]:22').host).toEqual({ kind: 'address', address: '127.0.0.1', family: 4 });
    expect(parseAuthority('example.org', 80).port).toBe(80);
  });

  it('refuses numeric host forms, userinfo, zone ids, junk and over-long targets', () => {
    const bad = ['2130706433:80', '0x7f000001:80', '0x7f.0.0.1:80', '0177.0.0.1:80', '127.1:80', '127.0.0.1.:80', '017700000001:80', 'foo.0x10:80',
      'user@example.org:80', 'user:pw@example.org:80', 'example.org', 'example.org:', 'example.org:0', 'example.org:99999', 'example.org:+80', 'example.org:8 0',
      '::1:80', '[::1]', '[fe80::1%25eth0]:80', '[fe80::1%eth0]:80', '[zzz]:80', 'exa_mple..org:80', 'a/b:80', 'a\\b:80', '%65xample.org:80', 'ex\u00e4mple.org:80',
      'x'.repeat(271), `${'a'.repeat(64)}.org:80`, `${'abc.'.repeat(64)}org:80`];
    for (const t of bad) expect(() => parseAuthority(t), t).toThrow(AuthorityError);
  });
});

describe('address classes', () => {
  it('classifies IPv4 ranges', () => {
    const cases: Array<[string, string]> = [
      ['127.0.0.1', 'loopback'], ['127.255.255.254', 'loopback'], ['0.0.0.0', 'unspecified'], ['0.1.2.3', 'unspecified'],
      ['10.0.0.1', 'private'], ['172.16.0.1', 'private'], ['172.31.255.255', 'private'], ['172.32.0.1', 'public'], ['192.168.1.1', 'private'],
      ['100.64.0.1', 'private'], ['100.128.0.1', 'public'], ['169.254.169.254', 'link-local'], ['169.254.0.1', 'link-local'],
      ['224.0.0.1', 'multicast'], ['255.255.255.255', 'reserved'], ['240.0.0.1', 'reserved'], ['192.0.0.170', 'reserved'], ['198.18.0.1', 'reserved'],
      ['8.8.8.8', 'public'], ['93.184.216.34', 'public'], ['11.0.0.1', 'public'],
    ];
    for (const [ip, cls] of cases) expect(classifyAddress(ip), ip).toBe(cls);
  });

  it('classifies IPv6 ranges, seeing through IPv4-mapped, NAT64 and 6to4 forms', () => {
    const cases: Array<[string, string]> = [
      ['::1', 'loopback'], ['0:0:0:0:0:0:0:1', 'loopback'], ['::', 'unspecified'], ['::ffff:127.0.0.1', 'loopback'], ['::ffff:7f00:1', 'loopback'],
      ['::ffff:169.254.169.254', 'link-local'], ['::ffff:10.0.0.1', 'private'], ['::ffff:8.8.8.8', 'public'], ['::127.0.0.1', 'reserved'],
      ['64:ff9b::127.0.0.1', 'loopback'], ['64:ff9b::a9fe:a9fe', 'link-local'], ['64:ff9b::808:808', 'public'], ['2002:7f00:1::', 'loopback'], ['2002:a9fe:a9fe::1', 'link-local'],
      ['fe80::1', 'link-local'], ['febf::1', 'link-local'], ['fc00::1', 'private'], ['fd12:3456::1', 'private'], ['fec0::1', 'private'], ['ff02::1', 'multicast'],
      ['2001:db8::1', 'reserved'], ['2001::1', 'reserved'], ['100::1', 'reserved'], ['2606:4700:4700::1111', 'public'], ['2a00:1450:4001::200e', 'public'],
    ];
    for (const [ip, cls] of cases) expect(classifyAddress(ip), ip).toBe(cls);
  });

  it('IPv4-translated (SIIT, ::ffff:0:0:0/96) addresses are classified by their embedded IPv4 address, never public for a private one', () => {
    const cases: Array<[string, string]> = [
      ['::ffff:0:7f00:1', 'loopback'], ['::ffff:0:127.0.0.1', 'loopback'], ['0:0:0:0:ffff:0:a00:1', 'private'], ['::ffff:0:a00:1', 'private'],
      ['::ffff:0:a9fe:a9fe', 'link-local'], ['::ffff:0:0:0', 'unspecified'], ['::ffff:0:c0a8:101', 'private'], ['::ffff:0:808:808', 'public'],
    ];
    for (const [ip, cls] of cases) expect(classifyAddress(ip), ip).toBe(cls);
    for (const ip of ['::ffff:0:7f00:1', '::ffff:0:a00:1']) expect(classifyAddress(ip), ip).not.toBe('public');
  });

  it('canonicalises literals and rejects non-canonical ones', () => {
    expect(canonicalIp('::ffff:127.0.0.1')).toEqual({ address: '127.0.0.1', family: 4 });
    expect(canonicalIp('[0:0::1]')).toEqual({ address: '::1', family: 6 });
    expect(canonicalIp('2001:DB8:0:0:1:0:0:1')).toEqual({ address: '2001:db8::1:0:0:1', family: 6 });
    for (const bad of ['127.000.0.1', '127.0.0.01', '0x7f.0.0.1', '127.1', '2130706433', 'fe80::1%eth0', '[127.0.0.1]', 'localhost', '1.2.3.4.5', ':::1']) {
      expect(canonicalIp(bad), bad).toBeNull();
    }
    expect(classifyAddress('not an ip')).toBe('reserved');
  });

  it('recognises the inet_aton numeric forms', () => {
    for (const h of ['2130706433', '0x7f000001', '0177.0.0.1', '127.1', '127.0.0.1', '127.0.0.1.', '0x7f.1', 'foo.123', 'foo.0x1f']) expect(isNumericHostForm(h), h).toBe(true);
    for (const h of ['example.org', '1password.com', 'a1.b2', '123.example']) expect(isNumericHostForm(h), h).toBe(false);
  });
});
