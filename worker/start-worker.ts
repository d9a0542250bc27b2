import { Queue } from 'bullmq';
import type { Logger } from 'pino';
import { COMMAND_QUEUE, type CommandJobData, type Config, redisTopology } from '../contracts/index.js';
import { createDb } from '../db/create-db.js';
import { connectRedis, evictionWarnings, pingRedis, type RedisClient } from '../db/redis-connection.js';
import { assertMigrated } from '../db/migrate.js';
import { queueTelemetry } from '../observability/tracing.js';
import { startCommandWorker } from './command-worker.js';
import { commandsFinished, groupCommitSize, jobDuration, setMetricsSource, transactionRetries } from './metrics.js';
import type { OutboxEvent } from '../db/repositories/outbox.repository.js';
import { EventPublisher } from './event-publisher.js';
import { OutboxRelay } from './outbox-relay.js';
import { Reconciler } from './reconciler.js';
import { Sweeper } from './sweeper.js';
import { GroupCommit } from './group-commit.js';

export interface WorkerStats {
  /** Transactions retried after a conflict, by SQLSTATE. */
  conflictRetries: Record<string, number>;
}

export interface RunningWorker {
  stats: WorkerStats;
  publisher: EventPublisher;
  relay: OutboxRelay;
  reconciler: Reconciler;
  sweeper: Sweeper;
  /**
   * Stops taking jobs; lets active one-step jobs finish and releases multi-step ones (a bulk
   * delete) after their current batch commits, back to the wait list for another worker;
   * then puts the events it committed on the stream, and closes connections.
   */
  close(): Promise<void>;
}

/**
 * Starts a BullMQ worker, its event publisher, the outbox relay, the reconciler and the sweeper,
 * sharing one pool. Throws, leaving nothing open, if Postgres or Redis cannot be reached.
 */
export async function startWorker(config: Config, logger: Logger): Promise<RunningWorker> {
  // the connections below wait for Redis in silence: find out now whether it answers
  const topology = redisTopology(config);
  await pingRedis(topology, 'revocation-worker');
  // Jobs waiting for a group hold no connection, so the pool need not grow with the concurrency:
  // the lanes, up to 16 commands running alone (bulk deletes, each with its progress count at
  // times), the reconciler and the sweeper. More jobs than that wait for a connection.
  const db = createDb(config.DATABASE_URL, { max: Math.min(config.WORKER_CONCURRENCY, 16) + config.GROUP_COMMIT_LANES + 2, applicationName: 'revocation-worker' });
  await assertMigrated(db).catch(async (error: unknown) => {
    await db.destroy();
    throw error;
  });
  const workerRedis = connectRedis(topology, { name: 'revocation-worker', whenDown: 'wait' });
  const redis = connectRedis(topology, { name: 'revocation-relay', whenDown: 'wait' });
  // the publisher's own: its WAIT for replicas (EVENTS_MIN_REPLICAS) holds the connection until they answer
  const publisherRedis = connectRedis(topology, { name: 'revocation-publisher', whenDown: 'wait' });
  const connections = [workerRedis, redis, publisherRedis];
  for (const r of connections) r.on('error', (error) => logger.debug({ err: error }, 'worker redis error'));
  await warnOnEvictionPolicy(redis, logger);

  // events go on the stream from the process that committed them, right after the commit; the
  // relay (one leader among the worker processes, on a connection of its own that holds the relay
  // lock) publishes only what a worker left behind (it died between its commit and its XADD)
  const stream = { stream: config.EVENTS_STREAM, maxLen: config.EVENTS_STREAM_MAXLEN, minReplicas: config.EVENTS_MIN_REPLICAS };
  const publisher = new EventPublisher(db, publisherRedis, logger, stream);
  const onCommitted = (events: readonly OutboxEvent[]) => publisher.publish(events);
  const relaySession = () => createDb(config.DATABASE_URL, { max: 1, applicationName: 'revocation-worker' });
  const relay = new OutboxRelay(db, relaySession, redis, logger, stream);
  const queue = new Queue<CommandJobData>(COMMAND_QUEUE, { connection: redis, prefix: config.QUEUE_PREFIX, ...queueTelemetry() });
  // without a listener BullMQ prints each error raw on stderr, outside the JSON log
  queue.on('error', (error) => logger.debug({ err: error }, 'worker queue error'));
  const reconciler = new Reconciler(db, queue, logger, { intervalMs: 15_000, graceMs: 2_000 });
  const stats: WorkerStats = { conflictRetries: {} };
  const onConflictRetry = (sqlState: string) => {
    stats.conflictRetries[sqlState] = (stats.conflictRetries[sqlState] ?? 0) + 1;
    transactionRetries.inc({ sqlstate: sqlState });
  };
  const onFinished = (type: string, outcome: string, seconds: number) => {
    commandsFinished.inc({ type, outcome });
    jobDuration.observe({ type }, seconds);
  };
  setMetricsSource(db, queue);
  // aborted by close(): a bulk delete stops after its current batch and is released, so a
  // shutdown waits for one transaction per active job, not for the rest of a breach
  const shutdown = new AbortController();
  // short commands delivered together share a transaction (one commit for the group)
  const group =
    config.GROUP_COMMIT_MAX > 1
      ? new GroupCommit(db, {
          lanes: config.GROUP_COMMIT_LANES,
          spareLaneAfterMs: config.GROUP_COMMIT_SPARE_LANE_MS,
          maxSize: config.GROUP_COMMIT_MAX,
          onConflictRetry,
          onCommitted,
          onGroupCommitted: (steps) => groupCommitSize.observe(steps),
        })
      : undefined;
  const worker = startCommandWorker(
    { db, logger, settings: { deleteBatchSize: config.DELETE_BATCH_SIZE }, onConflictRetry, onFinished, onCommitted, ...(group ? { group } : {}) },
    { connection: workerRedis, prefix: config.QUEUE_PREFIX, concurrency: config.WORKER_CONCURRENCY, stop: shutdown.signal },
  );
  const sweeper = new Sweeper(db, logger, {
    intervalMs: config.SWEEPER_INTERVAL_SECONDS * 1000,
    graceSeconds: config.SWEEPER_GRACE_SECONDS,
    outboxRetentionSeconds: config.OUTBOX_RETENTION_SECONDS,
    jobRetentionDays: config.JOB_RETENTION_DAYS,
  });
  relay.start();
  reconciler.start();
  sweeper.start();
  return {
    stats,
    publisher,
    relay,
    reconciler,
    sweeper,
    async close() {
      shutdown.abort();
      await worker.close();
      await reconciler.stop();
      await sweeper.stop();
      await publisher.close();
      await relay.stop();
      await queue.close().catch(() => {});
      for (const r of connections) r.disconnect();
      await db.destroy();
    },
  };
}

/** BullMQ loses jobs if Redis evicts keys: say so loudly. */
async function warnOnEvictionPolicy(redis: RedisClient, logger: Logger): Promise<void> {
  for (const warning of await evictionWarnings(redis)) logger.warn(`${warning} (under memory pressure Redis may evict queued jobs; the reconciler re-enqueues them from Postgres, at a delay)`);
}
