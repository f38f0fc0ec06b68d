import { chmod, mkdir, open, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Logger } from '../log.js';
import { fileSize, resolveAuditRotation, rotateFiles, type AuditRotation } from './audit-rotate.js';

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
  /** TCP transport: the client's address and port. */
  remote?: string;
  /** op 'login': the flow, and the account (id_token email or sub) of a completed login. */
  flow?: string;
  account?: string;
  /** op 'refused': refused requests of one second, by result code and by op. */
  refused?: Record<string, number>;
  ops?: Record<string, number>;
  /** op 'refused' of a peer: how many of its connections the counts come from, when more than one. */
  connections?: number;
  /** op 'aggregated': connection events of one second past the per-peer share of single lines, by `op:result`. */
  counts?: Record<string, number>;
  /** 'OK' or the error code answered; CANCELLED / DISCONNECTED when no answer went out. */
  result: string;
  durationMs: number;
}

/** Entries that are written at once, without waiting for the flush delay. */
const FLUSH_BATCH = 1000;

/** Where the server records entries; AuditLog is the file-backed one. */
export interface AuditSink<E extends object = AuditEntry> {
  record(entry: E): void;
  /** The writer is behind: stop reading new requests until whenDrained(). */
  readonly congested?: boolean;
  whenDrained?(): Promise<void>;
}

export interface AuditLogOptions {
  path: string;
  logger: Logger;
  /** How long entries may wait before a batched append (default 200 ms). */
  flushDelayMs?: number;
  /**
   * Queued entries beyond which `congested` is true: connections stop
   * reading until the queue drains (default 5000). Entries are never dropped.
   */
  highWater?: number;
  /** Size cap and retention (default 10 MiB, 5 rotated files). */
  rotation?: Partial<AuditRotation>;
}

/**
 * Append-only audit file written off the reply path: record() only queues;
 * a timer appends the queue in one write. Nothing recorded is ever dropped:
 * when the writer falls behind, `congested` tells connections to stop
 * reading (backpressure) until `whenDrained()` resolves. The file is
 * rotated before it would pass the size cap. close() flushes what is left.
 */
export class AuditLog<E extends object = AuditEntry> implements AuditSink<E> {
  private readonly path: string;
  private readonly logger: Logger;
  private readonly flushDelayMs: number;
  private readonly highWater: number;
  private readonly rotation: AuditRotation;
  private file: FileHandle | null = null;
  private size = 0;
  private queue: string[] = [];
  private timer: NodeJS.Timeout | null = null;
  private writing: Promise<void> = Promise.resolve();
  private writeWaiting = false;
  private closed = false;
  private drainWaiters: Array<() => void> = [];
  private linesWritten = 0;

  constructor(options: AuditLogOptions) {
    this.path = options.path;
    this.logger = options.logger;
    this.flushDelayMs = options.flushDelayMs ?? 200;
    this.highWater = options.highWater ?? 5000;
    this.rotation = resolveAuditRotation(options.rotation);
  }

  async open(): Promise<void> {
    await mkdir(dirname(this.path), { recursive: true, mode: 0o700 });
    this.file = await open(this.path, 'a', 0o600);
    // An audit file created earlier with looser permissions is tightened.
    await chmod(this.path, 0o600);
    this.size = await fileSize(this.path);
  }

  /** Entries written to the file so far (the benchmark compares it with requests served). */
  get written(): number {
    return this.linesWritten;
  }

  /** The writer is behind: callers should stop taking new work until whenDrained(). */
  get congested(): boolean {
    return this.queue.length >= this.highWater;
  }

  /** Resolves once the queue is below the high-water mark again. */
  whenDrained(): Promise<void> {
    if (!this.congested) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  record(entry: E): void {
    if (this.closed || this.file === null) return;
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
    if (this.file === null || this.queue.length === 0) {
      this.wakeDrained();
      return;
    }
    let lines = this.queue;
    this.queue = [];
    try {
      while (lines.length > 0) {
        // As many lines as fit under the cap (at least one, so an oversized line still goes out).
        let bytes = 0;
        let n = 0;
        while (n < lines.length) {
          const b = Buffer.byteLength(lines[n]!) + 1;
          if (n > 0 && this.size + bytes + b > this.rotation.maxFileBytes) break;
          bytes += b;
          n++;
        }
        if (this.size > 0 && this.size + bytes > this.rotation.maxFileBytes) {
          await this.rotate();
          continue;
        }
        await this.file!.appendFile(`${lines.slice(0, n).join('\n')}\n`, 'utf8');
        this.size += bytes;
        this.linesWritten += n;
        lines = lines.slice(n);
      }
    } catch (err) {
      // Kept for the next attempt rather than lost: served requests must all be on record.
      this.queue = lines.concat(this.queue);
      this.logger.error({ code: (err as NodeJS.ErrnoException).code, lines: lines.length }, 'audit log write failed; will retry');
      if (!this.closed && this.timer === null) {
        this.timer = setTimeout(() => {
          this.timer = null;
          void this.flush();
        }, 1000);
        this.timer.unref();
      }
    }
    this.wakeDrained();
    // Whatever arrived while writing goes out next, not after the flush delay.
    if (this.queue.length >= FLUSH_BATCH) void this.flush();
  }

  private async rotate(): Promise<void> {
    await this.file?.close();
    this.file = null;
    await rotateFiles(this.path, this.rotation.keepFiles);
    this.file = await open(this.path, 'a', 0o600);
    this.size = 0;
  }

  private wakeDrained(): void {
    if (this.congested || this.drainWaiters.length === 0) return;
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const w of waiters) w();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.flush();
    // A failed write left lines queued: one last attempt.
    if (this.queue.length > 0) await this.writeQueued();
    const file = this.file;
    this.file = null;
    await file?.close();
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const w of waiters) w();
  }
}
