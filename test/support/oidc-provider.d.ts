// oidc-provider ships no type declarations; this covers only what the test
// harness (test/support/oidc-server.ts) touches.
declare module 'oidc-provider' {
  import type { IncomingMessage, ServerResponse } from 'node:http';

  export interface KoaContextLike {
    method: string;
    path: string;
    status: number;
    body: unknown;
    type: string;
    set(field: string, value: string): void;
    oidc?: { params?: Record<string, unknown> };
  }

  export type Middleware = (ctx: KoaContextLike, next: () => Promise<void>) => Promise<void>;

  export default class Provider {
    constructor(issuer: string, configuration?: Record<string, unknown>);
    readonly issuer: string;
    proxy: boolean;
    callback(): (req: IncomingMessage, res: ServerResponse) => void;
    use(middleware: Middleware): void;
    on(event: 'grant.success', listener: (ctx: KoaContextLike) => void): this;
    on(event: 'grant.error', listener: (ctx: KoaContextLike, error: { error?: string; message?: string }) => void): this;
    on(event: string, listener: (...args: unknown[]) => void): this;
  }
}
