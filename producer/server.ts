import { Queue } from 'bullmq';
import type { Logger } from 'pino';
import { COMMAND_QUEUE, type CommandJobData, type Config, redisTopology } from '../contracts/index.js';
import { createDb } from '../db/create-db.js';
import { connectRedis, evictionWarnings } from '../db/redis-connection.js';
import { queueTelemetry } from '../observability/tracing.js';
import { type App, buildApp } from './app.js';
import { CredentialCache } from './plugins/credential-cache.js';
import { CommandBus } from './services/command-bus.js';
import { JobWaiter } from './services/job-waiter.js';
import { ensureBootstrapAdmin } from './services/subjects.service.js';

export interface RunningProducer {
  app: App;
  /** The address it listens on, e.g. http://127.0.0.1:8080. */
  url: string;
  /**
   * Stops accepting (new connections refused; requests arriving on open ones get 503 PV1010),
   * lets in-flight requests finish (a `Prefer: wait` answers 202 at once), then closes every
   * connection.
   */
  close(): Promise<void>;
}

/**
 * Starts the HTTP producer: connects Postgres and Redis, makes the bootstrap admin, listens.
 * The producer's Redis connection fails fast when Redis is down (no offline queue), so a
 * request never hangs on it: the command is committed and the reconciler enqueues it later.
 */
export async function startProducer(config: Config, logger: Logger): Promise<RunningProducer> {
  // A short connect timeout: with Postgres unreachable, requests answer 503 quickly.
  const db = createDb(config.DATABASE_URL, { max: 10, applicationName: 'revocation-producer', connectionTimeoutMillis: 1500 });
  const redis = connectRedis(redisTopology(config), { name: 'revocation-producer', whenDown: 'fail' });
  redis.on('error', (error) => logger.debug({ err: error }, 'producer redis error'));
  const queue = new Queue<CommandJobData>(COMMAND_QUEUE, { connection: redis, prefix: config.QUEUE_PREFIX, ...queueTelemetry() });
  queue.on('error', (error) => logger.debug({ err: error }, 'producer queue error'));
  const waiter = new JobWaiter(config.DATABASE_URL, db, logger);
  await waiter.start();
  if (config.BOOTSTRAP_ADMIN_TOKEN) {
    const { wasLockedOut } = await ensureBootstrapAdmin(db, config.BOOTSTRAP_ADMIN_TOKEN);
    if (wasLockedOut) logger.warn('the bootstrap admin was locked out; this start enabled it again with BOOTSTRAP_ADMIN_TOKEN');
  } else logger.warn('BOOTSTRAP_ADMIN_TOKEN is not set: no admin credential was created');

  const app = await buildApp({
    config,
    db,
    logger,
    bus: new CommandBus(db, queue, logger, config.RECORD_BATCH_MAX),
    credentials: new CredentialCache(db, config.CREDENTIAL_CACHE_MAX),
    waiter,
    // a read of a key of the queue rather than PING, which a cluster client sends to any node:
    // this reaches the node serving the queue's slot
    probes: { redis: () => redis.exists(`${config.QUEUE_PREFIX}:${COMMAND_QUEUE}:meta`) },
    advisors: [() => evictionWarnings(redis)],
    rateLimitRedis: redis,
  });
  const url = await app.listen({ host: config.HOST, port: config.PORT });
  return {
    app,
    url,
    async close() {
      app.draining = true;
      waiter.drain();
      await app.close();
      await waiter.close();
      await queue.close().catch(() => {});
      redis.disconnect();
      await db.destroy();
    },
  };
}
