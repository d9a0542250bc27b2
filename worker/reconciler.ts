import type { Queue } from 'bullmq';
import type { Logger } from 'pino';
import { addCommandJob, type CommandJobData } from '../contracts/index.js';
import type { Db } from '../db/database.js';
import { listUnfinishedCommands } from '../db/repositories/command-list.repository.js';
import { reconcilerRequeued } from './metrics.js';

export interface ReconcilerOptions {
  intervalMs: number;
  /** Commands younger than this are left to the producer's own enqueue. */
  graceMs: number;
  /** Commands looked at per round. */
  pageSize?: number;
}

/** How soon a round that failed is tried again. */
const RETRY_MS = 1000;

/** BullMQ states in which a job will still run (or is running). */
const liveStates = new Set(['waiting', 'active', 'delayed', 'prioritized', 'waiting-children', 'wait']);

/**
 * Makes Postgres the truth for what must run: every non-terminal command whose BullMQ job is
 * missing (Redis flushed or restarted, enqueue failed after commit) or dead (failed or removed
 * while the command had not ended) is enqueued again under its own ID. A command with a live
 * job is left alone, so running it twice never happens through here; and the executor makes a
 * second delivery harmless anyway.
 */
export class Reconciler {
  private timer: NodeJS.Timeout | undefined;
  private round: Promise<number> | undefined;
  requeued = 0;

  constructor(
    private readonly db: Db,
    private readonly queue: Queue<CommandJobData>,
    private readonly logger: Logger,
    private readonly options: ReconcilerOptions,
  ) {}

  start(): void {
    let failures = 0;
    const tick = () => {
      this.round = this.reconcileOnce().then(
        (requeued) => {
          failures = 0;
          return requeued;
        },
        (error: unknown) => {
          if (failures++ % 30 === 0) this.logger.warn({ err: error, failures }, 'reconciler round failed; will try again');
          return 0;
        },
      );
      // after a failed round (Postgres or Redis out of reach) the next comes within RETRY_MS: the
      // jobs that used up their attempts during an outage run again soon after it ends
      void this.round.finally(() => {
        if (this.timer !== undefined) this.timer = setTimeout(tick, failures > 0 ? Math.min(RETRY_MS, this.options.intervalMs) : this.options.intervalMs);
      });
    };
    this.timer = setTimeout(tick, 0);
  }

  async stop(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.round;
  }

  /** One round. Returns how many commands it enqueued again. */
  async reconcileOnce(): Promise<number> {
    const pending = await listUnfinishedCommands(this.db, new Date(Date.now() - this.options.graceMs), this.options.pageSize ?? 5000);
    let requeued = 0;
    for (let i = 0; i < pending.length; i += 100) {
      const page = pending.slice(i, i + 100);
      const done = await Promise.all(page.map((c) => this.ensureJob(c.id)));
      requeued += done.filter(Boolean).length;
    }
    if (requeued > 0) this.logger.info({ requeued }, 'reconciler enqueued commands again');
    this.requeued += requeued;
    reconcilerRequeued.inc(requeued);
    return requeued;
  }

  private async ensureJob(commandId: string): Promise<boolean> {
    // one script call, without reading the job: a round may look at thousands of queued commands
    const state = await this.queue.getJobState(commandId);
    if (liveStates.has(state)) return false;
    if (state !== 'unknown') await this.queue.remove(commandId);
    await addCommandJob(this.queue, { command_id: commandId });
    return true;
  }
}
