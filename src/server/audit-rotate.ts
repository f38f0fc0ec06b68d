import { rename, rm, stat } from 'node:fs/promises';
import { CredproxyError } from '../errors.js';

/** Size cap and retention of audit.jsonl (config.json `audit`). */
export interface AuditRotation {
  /** The live file is rotated before it would grow past this (default 10 MiB). */
  maxFileBytes: number;
  /** Rotated files kept: audit.jsonl.1 (newest) .. audit.jsonl.N (default 5). */
  keepFiles: number;
}

export const DEFAULT_AUDIT_ROTATION: AuditRotation = { maxFileBytes: 10 * 1024 * 1024, keepFiles: 5 };

export function resolveAuditRotation(over: Partial<AuditRotation> = {}): AuditRotation {
  const r = { ...DEFAULT_AUDIT_ROTATION, ...over };
  if (!Number.isSafeInteger(r.maxFileBytes) || r.maxFileBytes < 4096) throw new CredproxyError('USAGE', 'audit maxFileBytes must be a whole number of at least 4096');
  if (!Number.isSafeInteger(r.keepFiles) || r.keepFiles < 1 || r.keepFiles > 100) throw new CredproxyError('USAGE', 'audit keepFiles must be a whole number from 1 to 100');
  return r;
}

/** Bytes in the file now (0 when it does not exist). */
export async function fileSize(path: string): Promise<number> {
  try {
    return (await stat(path)).size;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw err;
  }
}

/**
 * Shift `path` to `path.1`, `path.1` to `path.2`, ... dropping the oldest
 * beyond keepFiles. The caller has closed `path` and reopens it afterwards.
 */
export async function rotateFiles(path: string, keepFiles: number): Promise<void> {
  await rm(`${path}.${keepFiles}`, { force: true });
  for (let i = keepFiles - 1; i >= 1; i--) {
    await rename(`${path}.${i}`, `${path}.${i + 1}`).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
  }
  await rename(path, `${path}.1`).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw err;
  });
}
