import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { EVENT_FIELD } from '../contracts/index.js';
import type { Db, Executor } from '../db/database.js';
import { listenForCommits } from '../db/repositories/command.repository.js';
import { markAndClaim, releaseRelayLock, tryRelayLock } from '../db/repositories/outbox.repository.js';
import { eventsPublished } from './metrics.js';

export interface RelayOptions {
  stream: string;
  maxLen: number;
  /** Events per round trip. */
  batchSize?: number;
  /** How often a relay that does not lead tries to, and a leader looks without being woken. */
  pollIntervalMs?: number;
}

/**
 * Publishes committed outbox rows to the Redis Stream, at least once, in outbox order.
 *
 * One relay leads at a time: it holds the relay lock (a session-level advisory lock) on a
 * connection of its own, LISTENs there for the NOTIFY of every command commit (of any worker
 * process, its own included). A round is two round
 * trips: one statement marks the batch just put on the stream and reads the next, and one XADD
 * pipeline (MAXLEN ~) publishes it. A relay that does not lead tries to every poll interval, so
 * another process takes over within about a second when the leader's process or connection dies
 * (its lock goes with its session). If Redis fails, nothing is marked and the batch is read again
 * (after a backoff, on a fresh connection); if a mark is lost after the XADD, the batch is
 * published twice (consumers dedupe on event_id).
 */
export class OutboxRelay {
  private running = false;
  private kicked = false;
  private leading = false;
  /** The leader's connection (a pool of one), kept while leading or trying to lead. */
  private session: Db | undefined;
  private wake: (() => void) | undefined;
  private loop: Promise<void> | undefined;
  private failures = 0;
  published = 0;

  /**
   * `db` serves one-off publishPending calls; `connect` opens the relay's own connection (a pool
   * of one whose notifications reach `kick`).
   */
  constructor(
    private readonly db: Db,
    private readonly connect: () => Db,
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

  /** Asks the leader for a round now (a commit wrote events). Ignored by a relay that does not lead. */
  kick(): void {
    this.kicked = true;
    if (this.leading) this.wake?.();
  }

  /** Publishes what is pending, lets the lead go, then stops. */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.wake?.();
    await this.loop;
    await this.publishPending().catch((error) => this.logger.warn({ err: error }, 'outbox flush on stop failed'));
  }

  /**
   * One-off: takes the relay lock on a connection of `db` if it is free, publishes every pending
   * event, and releases it. Returns how many it published; 0 also when another relay leads.
   */
  async publishPending(): Promise<number> {
    return this.db.connection().execute(async (connection) => {
      if (!(await tryRelayLock(connection))) return 0;
      try {
        return await this.publishAll(connection);
      } finally {
        await releaseRelayLock(connection).catch(() => {});
      }
    });
  }

  /** For the holder of the relay lock: rounds until nothing is left. Returns how many it published. */
  private async publishAll(db: Executor): Promise<number> {
    const limit = this.options.batchSize ?? 500;
    let total = 0;
    let published: string[] = [];
    for (;;) {
      const rows = await markAndClaim(db, published, limit);
      if (rows.length === 0) return total;
      const pipeline = this.redis.pipeline();
      for (const row of rows) pipeline.xadd(this.options.stream, 'MAXLEN', '~', String(this.options.maxLen), '*', EVENT_FIELD, row.event);
      const results = await pipeline.exec();
      const failed = results?.find(([error]) => error);
      if (!results || failed) throw failed?.[0] ?? new Error('XADD pipeline returned nothing');
      published = rows.map((r) => r.id);
      total += rows.length;
      this.published += rows.length;
      eventsPublished.inc(rows.length);
    }
  }

  /** Tries to lead (on the relay's own connection) if it does not; returns whether it leads. */
  private async lead(): Promise<boolean> {
    if (this.leading) return true;
    this.session ??= this.connect();
    if (!(await tryRelayLock(this.session))) return false;
    await listenForCommits(this.session);
    this.leading = true;
    return true;
  }

  /** Closes the relay's own connection: its lock and its LISTEN end with the session. */
  private async dropSession(): Promise<void> {
    const session = this.session;
    this.session = undefined;
    this.leading = false;
    await session?.destroy().catch(() => {});
  }

  private async run(): Promise<void> {
    const poll = this.options.pollIntervalMs ?? 1000;
    while (this.running) {
      this.kicked = false;
      try {
        if (await this.lead()) await this.publishAll(this.session!);
        this.failures = 0;
      } catch (error) {
        this.failures++;
        if (this.failures === 1 || this.failures % 30 === 0) this.logger.warn({ err: error, failures: this.failures }, 'outbox relay could not publish; retrying');
        await this.dropSession();
      }
      if (!this.running) break;
      if (this.kicked && this.leading && this.failures === 0) continue;
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
    // stopping: a leader publishes what is left, then lets the lead go
    if (this.leading) await this.publishAll(this.session!).catch((error) => this.logger.warn({ err: error }, 'outbox flush on stop failed'));
    await this.dropSession();
  }
}
