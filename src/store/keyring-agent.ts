import { spawn, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';

/**
 * @napi-rs/keyring connects to D-Bus synchronously on the calling thread
 * when an entry is created (measured: 5–15 ms on a healthy bus, ~25 s when
 * the keyring daemon is stopped, forever when the bus itself hangs), and a
 * worker thread stuck in native code blocks process exit. So every keyring
 * call runs in a small helper process that can be killed when it does not
 * answer in time; the caller's event loop never blocks on D-Bus.
 */

export type AgentRequest =
  | { op: 'get'; service: string; entry: string }
  | { op: 'set'; service: string; entry: string; value: string }
  | { op: 'delete'; service: string; entry: string }
  | { op: 'list'; service: string };

type AgentReply = { id: number; ok: true; value: unknown } | { id: number; ok: false; error: string };

// CommonJS run with `node -e`: no file to locate, no loader needed, the same in src and dist.
// Entries are cached per name because creating one costs a D-Bus connect; a failed
// call drops its entry so a restarted keyring daemon is picked up again.
const AGENT_SOURCE = `
'use strict';
const { AsyncEntry, findCredentialsAsync } = require(process.env.CREDPROXY_KEYRING_MODULE);
const options = process.platform === 'linux' ? { linux: { store: 'secret-service' } } : {};
const entries = new Map();
function entry(service, name) {
  const k = service + '\\u0000' + name;
  let e = entries.get(k);
  if (!e) { e = new AsyncEntry(service, name, options); entries.set(k, e); }
  return e;
}
async function run(m) {
  switch (m.op) {
    case 'get': return entry(m.service, m.entry).getPassword();
    case 'set': await entry(m.service, m.entry).setPassword(m.value); return null;
    case 'delete': return entry(m.service, m.entry).deleteCredential();
    case 'list': return (await findCredentialsAsync(m.service, null)).map((c) => c.account);
    default: throw new Error('unknown operation');
  }
}
process.on('message', (m) => {
  run(m).then(
    (value) => process.send({ id: m.id, ok: true, value }),
    (err) => {
      if (m.entry !== undefined) entries.delete(m.service + '\\u0000' + m.entry);
      const text = String((err && err.message) || err).split('\\n')[0].slice(0, 300);
      process.send({ id: m.id, ok: false, error: text });
    },
  );
});
process.on('disconnect', () => process.exit(0));
`;

// Secrets of the host process that the helper has no use for.
const WITHHELD_ENV = ['CREDPROXY_PASSPHRASE', 'CREDPROXY_TOKEN', 'NODE_OPTIONS'];

interface Pending {
  resolve(value: unknown): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
}

/** Failure of one agent call, before it is phrased for the user by the backend. */
export class AgentFailure extends Error {
  constructor(
    message: string,
    readonly kind: 'timeout' | 'library' | 'agent',
  ) {
    super(message);
  }
}

export interface KeyringAgentOptions {
  /** Environment of the helper (D-Bus address, XDG_RUNTIME_DIR, HOME). */
  env?: NodeJS.ProcessEnv;
}

/**
 * Owns one helper process, started on the first call. It holds the caller's
 * event loop open only while calls are in flight; close() ends it.
 */
export class KeyringAgent {
  private child: ChildProcess | undefined;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private readonly env: NodeJS.ProcessEnv;

  constructor(options: KeyringAgentOptions = {}) {
    const env = { ...(options.env ?? process.env) };
    for (const name of WITHHELD_ENV) delete env[name];
    env.CREDPROXY_KEYRING_MODULE = createRequire(import.meta.url).resolve('@napi-rs/keyring');
    this.env = env;
  }

  /** pid of the running helper, if any. */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  call(request: AgentRequest, timeoutMs: number): Promise<unknown> {
    let child: ChildProcess;
    try {
      child = this.ensureChild();
    } catch (err) {
      return Promise.reject(new AgentFailure(`cannot start the keyring helper (${(err as NodeJS.ErrnoException).code ?? 'unknown error'})`, 'agent'));
    }
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        // A hung call cannot be aborted inside the library: end the helper; the next call starts a new one.
        this.stop(child, new AgentFailure(`did not answer within ${timeoutMs / 1000} s`, 'timeout'));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      this.holdOpen(child, true);
      try {
        child.send({ ...request, id });
      } catch {
        this.stop(child, new AgentFailure('the keyring helper is not running', 'agent'));
      }
    });
  }

  /** Stop the helper; calls still in flight fail. */
  close(): void {
    if (this.child) this.stop(this.child, new AgentFailure('the keyring store was closed', 'agent'));
  }

  private ensureChild(): ChildProcess {
    if (this.child) return this.child;
    const child = spawn(process.execPath, ['-e', AGENT_SOURCE], { stdio: ['ignore', 'ignore', 'ignore', 'ipc'], env: this.env });
    this.child = child;
    child.on('message', (m: AgentReply) => this.settle(m));
    child.on('error', (err: NodeJS.ErrnoException) => this.stop(child, new AgentFailure(`keyring helper failed (${err.code ?? 'unknown error'})`, 'agent')));
    child.on('exit', (code, signal) => this.stop(child, new AgentFailure(`keyring helper exited (${signal ?? `code ${code}`})`, 'agent')));
    this.holdOpen(child, false);
    return child;
  }

  private settle(reply: AgentReply): void {
    const p = this.pending.get(reply.id);
    if (!p) return;
    this.pending.delete(reply.id);
    clearTimeout(p.timer);
    if (reply.ok) p.resolve(reply.value);
    else p.reject(new AgentFailure(reply.error, 'library'));
    if (this.pending.size === 0 && this.child) this.holdOpen(this.child, false);
  }

  /** An idle helper must not keep the caller's process alive. */
  private holdOpen(child: ChildProcess, hold: boolean): void {
    if (hold) {
      child.ref();
      child.channel?.ref();
    } else {
      child.unref();
      child.channel?.unref();
    }
  }

  private stop(child: ChildProcess, failure: AgentFailure): void {
    if (this.child !== child) return;
    this.child = undefined;
    child.removeAllListeners('message');
    child.kill('SIGKILL');
    this.holdOpen(child, false);
    const all = [...this.pending.values()];
    this.pending.clear();
    for (const p of all) {
      clearTimeout(p.timer);
      p.reject(failure);
    }
  }
}
