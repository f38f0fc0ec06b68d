import type { Command } from 'commander';
import { CredproxyError } from '../errors.js';
import type { CredproxyConfig } from '../config.js';
import { Policy } from '../server/policy.js';
import { UsageError } from './io.js';

export interface PolicyFlags {
  allow: string[];
  allowKey: string[];
  allowAll?: boolean;
  readOnly?: boolean;
  allowWrite?: boolean;
  /** Commander's `--no-login`: false when given, true otherwise. */
  login?: boolean;
  profile?: string;
}

const collect = (value: string, previous: string[]): string[] => [...previous, value];

/** The policy flags shared by `serve` and `run`. */
export function addPolicyOptions(cmd: Command): Command {
  return cmd
    .option('--allow <provider[:bucket]>', 'serve this provider (default bucket), PROVIDER:BUCKET, or PROVIDER:* (repeatable)', collect, [])
    .option('--allow-key <name>', 'serve this API key (repeatable)', collect, [])
    .option('--allow-all', 'serve every provider, bucket and key')
    .option('--allow-write', 'let the sandbox save and remove tokens (off by default)')
    .option('--no-login', 'refuse logins started from the sandbox (on by default)')
    .option('--read-only', 'refuse token writes and logins from the sandbox (both of the above off)')
    .option('--profile <name>', 'policy from a profile in config.json (flags add to it)');
}

/**
 * Flags and an optional profile combine: allowed sets are united, read-only
 * if either says so, writes when either allows them, logins unless either
 * turns them off.
 */
export function policyFromFlags(flags: PolicyFlags, config: CredproxyConfig): Policy {
  let allow = [...flags.allow];
  let keys = [...flags.allowKey];
  let readOnly = Boolean(flags.readOnly);
  let allowWrite = Boolean(flags.allowWrite);
  let login = flags.login !== false;
  if (flags.profile !== undefined) {
    const profile = config.profiles[flags.profile];
    if (!profile) {
      const known = Object.keys(config.profiles);
      throw new UsageError(`no profile '${flags.profile}' in config.json (${known.length ? `known: ${known.join(', ')}` : 'no profiles defined'})`);
    }
    allow = [...profile.allow, ...allow];
    keys = [...profile.keys, ...keys];
    readOnly ||= profile.readOnly;
    allowWrite ||= profile.allowWrite;
    login &&= profile.login;
  }
  try {
    return Policy.from({ allow, keys, allowAll: Boolean(flags.allowAll), readOnly, allowWrite, login });
  } catch (err) {
    if (err instanceof CredproxyError) throw new UsageError(err.message);
    throw err;
  }
}
