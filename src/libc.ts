import { createRequire } from 'node:module';

/** A C function as koffi binds it; arguments and result as its declaration says. */
export type CFunction = (...args: never[]) => number;

let lib: { func(decl: string): CFunction } | null | undefined;

/**
 * Functions of the C library, for what Node has no API for (SO_PEERCRED,
 * sock_diag, malloc_trim). koffi's dlopen(NULL) gives the running process's
 * own symbols, so glibc and musl need no library name. null when koffi
 * cannot load here, or the symbol is missing (malloc_trim is glibc's).
 */
export function libcFunction<F extends CFunction>(declaration: string): F | null {
  if (lib === undefined) {
    try {
      const required = createRequire(import.meta.url)('koffi') as { default?: unknown };
      const koffi = (required.default ?? required) as { load(path: null): { func(decl: string): CFunction } };
      lib = koffi.load(null);
    } catch {
      lib = null;
    }
  }
  if (lib === null) return null;
  try {
    return lib.func(declaration) as F;
  } catch {
    return null;
  }
}
