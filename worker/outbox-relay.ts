import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { EVENT_FIELD } from '../contracts/index.js';
import type { Db } from '../db/database.js';
import { claimUnpublished, markPublished } from '../db/repositories/outbox.repository.js';
import { eventsPublished } from './metrics.js';

export interface RelayOptions {
  stream: string;
  maxLen: number;
  /** Events per round trip. */
  batchSize?: number;
  /** Fallback poll, for events committed by other processes. */
  pollIntervalMs?: number;
}

/**
 * Publishes committed outbox rows to the Redis Stream, at least once, in commit order: one
 * relay at a time holds an advisory lock, XADDs a batch in one pipeline (MAXLEN ~), then marks
 * it published in the same transaction. If Redis fails, nothing is marked and the batch is
 * tried again with backoff; if the commit fails after XADD, the batch is published twice
 * (consumers dedupe on event_id).
 */
export class OutboxRelay {
  private running = false;
  private kicked = false;
  private wake: (() => void) | undefined;
  private loop: Promise<void> | undefined;
  private failures = 0;
  published = 0;

  constructor(
    private readonly db: Db,
    private readonly redis: Redis,
    private readonly logger: Logger,
    private readonly options: RelayOptions,
  ) {}

  /** Starts the loop; returns at once. */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.run();
  }

  /** Asks for a publish round now (after a commit that wrote events). */
  kick(): void {
    this.kicked = true;
    this.wake?.();
  }

  /** Publishes what is pending (one more round), then stops. */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.wake?.();
    await this.loop;
    await this.publishPending().catch((error) => this.logger.warn({ err: error }, 'outbox flush on stop failed'));
  }

  /**
   * Publishes every pending event the relay can claim. Returns how many it published; 0 also
   * when another relay holds the lock.
   */
  async publishPending(): Promise<number> {
    let total = 0;
    for (;;) {
      const n = await this.publishBatch();
      total += n;
      if (n < (this.options.batchSize ?? 500)) return total;
    }
  }

  private async publishBatch(): Promise<number> {
    const limit = this.options.batchSize ?? 500;
    return this.db.transaction().execute(async (trx) => {
      const rows = await claimUnpublished(trx, limit);
      if (rows.length === 0) return 0;
      const pipeline = this.redis.pipeline();
      for (const row of rows) {
        pipeline.xadd(this.options.stream, 'MAXLEN', '~', String(this.options.maxLen), '*', EVENT_FIELD, row.event);
      }
      const results = await pipeline.exec();
      const failed = results?.find(([error]) => error);
      if (!results || failed) throw failed?.[0] ?? new Error('XADD pipeline returned nothing');
      await markPublished(trx, rows.map((r) => r.id));
      this.published += rows.length;
      eventsPublished.inc(rows.length);
      return rows.length;
    });
  }

  private async run(): Promise<void> {
    const poll = this.options.pollIntervalMs ?? 1000;
    while (this.running) {
      this.kicked = false;
      try {
        await this.publishPending();
        this.failures = 0;
      } catch (error) {
        this.failures++;
        if (this.failures === 1 || this.failures % 30 === 0) this.logger.warn({ err: error, failures: this.failures }, 'outbox relay could not publish; retrying');
      }
      if (!this.running) break;
      if (this.kicked && this.failures === 0) continue;
      const delay = this.failures === 0 ? poll : Math.min(5000, 100 * 2 ** Math.min(this.failures, 6));
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, delay);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = undefined;
    }
  }
}
