/**
 * openid-client, loaded on the first OAuth work (a refresh, a login, a
 * discovery) rather than at start: an idle proxy serving cached tokens never
 * needs it, and it is one of the larger modules the process would keep.
 */
type OidcModule = typeof import('openid-client');

let loaded: OidcModule | undefined;
let loading: Promise<OidcModule> | undefined;

export async function openidClient(): Promise<OidcModule> {
  if (loaded) return loaded;
  loading ??= import('openid-client').then((m) => (loaded = m));
  return loading;
}

/** The module if something already loaded it: an error can only be one of its classes then. */
export function openidClientIfLoaded(): OidcModule | undefined {
  return loaded;
}
