import type { RedisClient } from '../db/redis-connection.js';
import type { Logger } from 'pino';
import type { Db, Executor } from '../db/database.js';
import { holdsRelayLock, markAndClaim, releaseRelayLock, tryRelayLock } from '../db/repositories/outbox.repository.js';
import { appendToStream, type StreamOptions } from './event-publisher.js';
import { eventsPublished } from './metrics.js';

const DEFAULT_GRACE_MS = 5000;

export interface RelayOptions extends StreamOptions {
  /** Events per round trip. */
  batchSize?: number;
  /** How often a relay that does not lead tries to, and the leader looks for what is left. */
  pollIntervalMs?: number;
  /**
   * The leader publishes only events written at least this long ago: younger ones are the
   * committing worker's to publish (EventPublisher), and it marks them within a few
   * milliseconds. publishPending takes every event, whatever its age.
   */
  graceMs?: number;
}

/**
 * Publishes, at least once and in outbox order, the committed outbox rows that no worker put on
 * the stream: normally each worker publishes its own events right after its commit
 * (EventPublisher) and the relay finds nothing; the relay is there for the events of a worker
 * that died between its commit and its XADD, or that could not reach Redis for longer than the
 * grace period.
 *
 * One relay leads at a time: it holds the relay lock (a session-level advisory lock) on a
 * connection of its own and looks every poll interval. A round is two round trips: one statement
 * marks the batch just put on the stream and reads the next, and one batch of XADDs (MAXLEN ~),
 * sent together, publishes it. A relay that does not lead tries to every poll interval, so another process takes
 * over within about a second when the leader's process or connection dies (its lock goes with
 * its session; a leader whose connection was replaced finds out at its next round and leads
 * again only if it takes the lock again). If Redis fails, nothing is marked and the batch is read again (after a backoff,
 * on a fresh connection); if a mark is lost after the XADD, the batch is published twice
 * (consumers dedupe on event_id).
 */
export class OutboxRelay {
  private running = false;
  private leading = false;
  /** The leader's connection (a pool of one), kept while leading or trying to lead. */
  private session: Db | undefined;
  private wake: (() => void) | undefined;
  private loop: Promise<void> | undefined;
  private failures = 0;
  published = 0;

  /** `db` serves one-off publishPending calls; `connect` opens the relay's own connection (a pool of one). */
  constructor(
    private readonly db: Db,
    private readonly connect: () => Db,
    private readonly redis: RedisClient,
    private readonly logger: Logger,
    private readonly options: RelayOptions,
  ) {}

  /** Starts the loop; returns at once. */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.run();
  }

  /**
   * Publishes what is left past the grace period, lets the lead go, then stops. (Younger events
   * belong to the publishers of live workers; this process's own were published before: see
   * RunningWorker.close.)
   */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.wake?.();
    await this.loop;
    await this.publishPending(this.options.graceMs ?? DEFAULT_GRACE_MS).catch((error) => this.logger.warn({ err: error }, 'outbox flush on stop failed'));
  }

  /**
   * One-off: takes the relay lock on a connection of `db` if it is free, publishes every pending
   * event written at least `minAgeMs` ago (by default all), and releases it. Returns how many it
   * published; 0 also when another relay leads.
   */
  async publishPending(minAgeMs = 0): Promise<number> {
    return this.db.connection().execute(async (connection) => {
      if (!(await tryRelayLock(connection))) return 0;
      try {
        return await this.publishAll(connection, minAgeMs);
      } finally {
        await releaseRelayLock(connection).catch(() => {});
      }
    });
  }

  /**
   * For the holder of the relay lock: rounds until nothing at least `minAgeMs` old is left.
   * Returns how many it published.
   */
  private async publishAll(db: Executor, minAgeMs: number): Promise<number> {
    const limit = this.options.batchSize ?? 500;
    let total = 0;
    let published: string[] = [];
    for (;;) {
      const rows = await markAndClaim(db, published, limit, minAgeMs);
      if (rows.length === 0) return total;
      await appendToStream(
        this.redis,
        this.options,
        rows.map((r) => r.event),
      );
      published = rows.map((r) => r.id);
      total += rows.length;
      this.published += rows.length;
      eventsPublished.inc(rows.length);
    }
  }

  /**
   * Tries to lead (on the relay's own connection) if it does not; returns whether it leads. A
   * leader checks that its session still holds the lock: when the server closed the connection
   * between two rounds, the pool opened a new one without it, and another relay may lead now.
   */
  private async lead(): Promise<boolean> {
    if (this.leading) {
      if (await holdsRelayLock(this.session!)) return true;
      this.logger.warn('outbox relay lost the relay lock with its connection; trying to lead again');
      await this.dropSession();
    }
    this.session ??= this.connect();
    if (!(await tryRelayLock(this.session))) return false;
    this.leading = true;
    return true;
  }

  /** Closes the relay's own connection: its lock ends with the session. */
  private async dropSession(): Promise<void> {
    const session = this.session;
    this.session = undefined;
    this.leading = false;
    await session?.destroy().catch(() => {});
  }

  private async run(): Promise<void> {
    const poll = this.options.pollIntervalMs ?? 1000;
    const grace = this.options.graceMs ?? DEFAULT_GRACE_MS;
    while (this.running) {
      try {
        if (await this.lead()) await this.publishAll(this.session!, grace);
        this.failures = 0;
      } catch (error) {
        this.failures++;
        if (this.failures === 1 || this.failures % 30 === 0) this.logger.warn({ err: error, failures: this.failures }, 'outbox relay could not publish; retrying');
        await this.dropSession();
      }
      if (!this.running) break;
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
    if (this.leading) await this.publishAll(this.session!, grace).catch((error) => this.logger.warn({ err: error }, 'outbox flush on stop failed'));
    await this.dropSession();
  }
}
