import type { Logger } from 'pino';
import type { Db } from '../db/database.js';
import { sweepExpiredAccessTokens, sweepRevokedTemporaryTokens } from '../db/repositories/access-token-revocation.repository.js';
import { deleteFinishedCommands } from '../db/repositories/command-list.repository.js';
import { deletePublishedEvents } from '../db/repositories/outbox.repository.js';

export interface SweeperOptions {
  intervalMs: number;
  graceSeconds: number;
  /** Rows per batch: each batch is its own short statement. */
  batchSize?: number;
  /** Published outbox events older than this are deleted; undefined: the outbox is left alone. */
  outboxRetentionSeconds?: number;
  /** Commands that ended longer ago than this are deleted (their audit rows stay); undefined: none are. */
  jobRetentionDays?: number;
}

/**
 * Deletes, in small batches, what nothing needs any more: dead access tokens (temporary tokens
 * revoked by a generation bump, which already fail authentication, and expired tokens), and
 * outbox events published longer ago than the retention (they are on the stream, and their
 * facts in audit_log), and commands that ended longer ago than the job retention (with their
 * idempotency keys; their audit rows stay). Revocation never waits for it: rows held by other
 * transactions are skipped.
 */
export class Sweeper {
  private timer: NodeJS.Timeout | undefined;
  private round: Promise<unknown> | undefined;
  swept = 0;

  constructor(
    private readonly db: Db,
    private readonly logger: Logger,
    private readonly options: SweeperOptions,
  ) {}

  start(): void {
    const tick = () => {
      const warn = (error: unknown) => this.logger.warn({ err: error }, 'sweep failed; will try again');
      this.round = this.sweepOnce()
        .catch(warn)
        .then(() => this.sweepOutboxOnce())
        .catch(warn)
        .then(() => this.sweepJobsOnce())
        .catch(warn)
        .finally(() => {
          if (this.timer !== undefined) this.timer = setTimeout(tick, this.options.intervalMs);
        });
    };
    this.timer = setTimeout(tick, this.options.intervalMs);
  }

  async stop(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.round;
  }

  /** Sweeps until nothing is left to delete. Returns how many tokens it deleted. */
  async sweepOnce(): Promise<number> {
    const batch = this.options.batchSize ?? 1000;
    let total = 0;
    for (const sweep of [sweepRevokedTemporaryTokens, sweepExpiredAccessTokens]) {
      for (;;) {
        const n = await sweep(this.db, this.options.graceSeconds, batch);
        total += n;
        if (n < batch) break;
      }
    }
    if (total > 0) this.logger.info({ deleted: total }, 'swept dead access tokens');
    this.swept += total;
    return total;
  }

  /**
   * Deletes published outbox events past the retention, a batch at a time, until a batch finds
   * none (see deletePublishedEvents). Returns how many it deleted; 0 without a retention.
   */
  async sweepOutboxOnce(): Promise<number> {
    const retention = this.options.outboxRetentionSeconds;
    if (retention === undefined) return 0;
    const batch = this.options.batchSize ?? 1000;
    let total = 0;
    // a batch looks only at the `batch` oldest rows, so it may delete fewer while more are left
    for (;;) {
      const n = await deletePublishedEvents(this.db, retention, batch);
      total += n;
      if (n === 0) break;
    }
    if (total > 0) this.logger.info({ deleted: total }, 'deleted published outbox events past their retention');
    return total;
  }

  /**
   * Deletes commands that ended longer ago than the job retention, a batch at a time (each its
   * own statement), until a batch comes back short. Returns how many it deleted; 0 without a
   * retention.
   */
  async sweepJobsOnce(): Promise<number> {
    const days = this.options.jobRetentionDays;
    if (days === undefined) return 0;
    const batch = this.options.batchSize ?? 1000;
    let total = 0;
    for (;;) {
      const n = await deleteFinishedCommands(this.db, days, batch);
      total += n;
      if (n < batch) break;
    }
    if (total > 0) this.logger.info({ deleted: total, retention_days: days }, 'deleted jobs past their retention');
    return total;
  }
}
