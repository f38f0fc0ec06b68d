import { chmod, mkdir, open, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Logger } from '../log.js';

/**
 * One line of audit.jsonl. Only names that passed validation, codes and
 * numbers go in here: never a token, key, code, session id or capability.
 */
export interface AuditEntry {
  /** ISO 8601 time the request arrived. */
  time: string;
  conn: number;
  peerPid: number | null;
  peerUid: number | null;
  op: string;
  provider?: string;
  bucket?: string;
  key?: string;
  /** 'OK' or the error code answered; CANCELLED / DISCONNECTED when no answer went out. */
  result: string;
  durationMs: number;
}

/** Entries that are written at once, without waiting for the flush delay. */
const FLUSH_BATCH = 1000;

/** Where the server records entries; AuditLog is the file-backed one. */
export interface AuditSink<E extends object = AuditEntry> {
  record(entry: E): void;
}

export interface AuditLogOptions {
  path: string;
  logger: Logger;
  /** How long entries may wait before a batched append (default 200 ms). */
  flushDelayMs?: number;
  /** Entries kept while a write is slow; beyond it new ones are dropped and counted (default 10000). */
  maxBuffered?: number;
}

/**
 * Append-only audit file written off the reply path: record() only queues;
 * a timer appends the queue in one write. close() flushes what is left.
 */
export class AuditLog<E extends object = AuditEntry> implements AuditSink<E> {
  private readonly path: string;
  private readonly logger: Logger;
  private readonly flushDelayMs: number;
  private readonly maxBuffered: number;
  private file: FileHandle | null = null;
  private queue: string[] = [];
  private timer: NodeJS.Timeout | null = null;
  private writing: Promise<void> = Promise.resolve();
  private dropped = 0;
  private writeWaiting = false;
  private closed = false;

  constructor(options: AuditLogOptions) {
    this.path = options.path;
    this.logger = options.logger;
    this.flushDelayMs = options.flushDelayMs ?? 200;
    this.maxBuffered = options.maxBuffered ?? 10_000;
  }

  async open(): Promise<void> {
    await mkdir(dirname(this.path), { recursive: true, mode: 0o700 });
    this.file = await open(this.path, 'a', 0o600);
    // An audit file created earlier with looser permissions is tightened.
    await chmod(this.path, 0o600);
  }

  record(entry: E): void {
    if (this.closed || this.file === null) return;
    if (this.queue.length >= this.maxBuffered) {
      this.dropped++;
      return;
    }
    this.queue.push(JSON.stringify(entry));
    // Under load a full batch goes out at once rather than piling up until the timer.
    if (this.queue.length >= FLUSH_BATCH) {
      void this.flush();
      return;
    }
    if (this.timer === null) {
      this.timer = setTimeout(() => {
        this.timer = null;
        void this.flush();
      }, this.flushDelayMs);
      this.timer.unref();
    }
  }

  /** Append everything queued so far; resolves when it is on disk (written, not fsynced). */
  flush(): Promise<void> {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    // One write waiting behind the current one is enough: it takes the whole queue when it starts.
    if (!this.writeWaiting) {
      this.writeWaiting = true;
      this.writing = this.writing.then(() => {
        this.writeWaiting = false;
        return this.writeQueued();
      });
    }
    return this.writing;
  }

  private async writeQueued(): Promise<void> {
    const file = this.file;
    if (file === null) return;
    if (this.dropped > 0) {
      this.logger.warn({ dropped: this.dropped }, 'audit log could not keep up; entries dropped');
      this.dropped = 0;
    }
    if (this.queue.length === 0) return;
    const lines = this.queue;
    this.queue = [];
    try {
      await file.appendFile(`${lines.join('\n')}\n`, 'utf8');
    } catch (err) {
      this.logger.error({ code: (err as NodeJS.ErrnoException).code, lines: lines.length }, 'audit log write failed');
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.flush();
    const file = this.file;
    this.file = null;
    await file?.close();
  }
}
