import { CredproxyError, isCredproxyError } from '../errors.js';
import { assertKeyName } from '../names.js';
import type { KeyStore } from '../store/types.js';
import { isStringArray, malformedData, storeFailure } from './failure.js';
import type { ProxySocketClient } from './socket-client.js';

/** SPEC §6: the sandbox may read keys it is allowed, never change them. */
export const KEY_MANAGEMENT_UNAVAILABLE = 'API key management is not available in sandbox mode. Manage keys on the host.';

/** KeyStore inside a sandbox: reads go through the proxy, writes are refused locally. */
export class ProxyKeyStore implements KeyStore {
  constructor(private readonly client: ProxySocketClient) {}

  async getKey(name: string): Promise<string | null> {
    assertKeyName(name);
    let data: { key?: unknown };
    try {
      data = await this.client.request('get_api_key', { name });
    } catch (err) {
      if (isCredproxyError(err, 'NOT_FOUND')) return null;
      throw storeFailure(`get_api_key ${name}`, err);
    }
    if (typeof data.key !== 'string') throw malformedData('get_api_key');
    return data.key;
  }

  async listKeys(): Promise<string[]> {
    let data: { keys?: unknown };
    try {
      data = await this.client.request('list_api_keys', {});
    } catch (err) {
      throw storeFailure('list_api_keys', err);
    }
    if (!isStringArray(data.keys)) throw malformedData('list_api_keys');
    return data.keys;
  }

  /**
   * has_api_key when version 2 is agreed; an older proxy answers from the
   * (policy-filtered) key list. Either way no key value crosses the socket
   * just to test presence.
   */
  async hasKey(name: string): Promise<boolean> {
    assertKeyName(name);
    if ((await this.client.protocolVersion()) < 2) return (await this.listKeys()).includes(name);
    let data: { exists?: unknown };
    try {
      data = await this.client.request('has_api_key', { name });
    } catch (err) {
      throw storeFailure(`has_api_key ${name}`, err);
    }
    if (typeof data.exists !== 'boolean') throw malformedData('has_api_key');
    return data.exists;
  }

  async saveKey(_name: string, _value: string): Promise<void> {
    throw new CredproxyError('UNAUTHORIZED', KEY_MANAGEMENT_UNAVAILABLE);
  }

  async deleteKey(_name: string): Promise<void> {
    throw new CredproxyError('UNAUTHORIZED', KEY_MANAGEMENT_UNAVAILABLE);
  }
}
