import type { Logger } from 'pino';
import type { Db } from '../db/database.js';
import { sweepExpiredAccessTokens, sweepRevokedTemporaryTokens } from '../db/repositories/access-token.repository.js';

export interface SweeperOptions {
  intervalMs: number;
  graceSeconds: number;
  /** Rows per batch: each batch is its own short statement. */
  batchSize?: number;
}

/**
 * Deletes dead access tokens in small batches: temporary tokens revoked by a generation bump
 * (they already fail authentication; this only reclaims space) and expired tokens. Revocation
 * never waits for it: rows held by other transactions are skipped.
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
      this.round = this.sweepOnce()
        .catch((error) => this.logger.warn({ err: error }, 'sweep failed; will try again'))
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
}
