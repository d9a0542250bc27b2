import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import pino from 'pino';
import { type Config, EVENT_FIELD, loadConfig, RevocationEvent, redisTopology } from '../../contracts/index.js';
import { connectRedis, type RedisClient } from '../../db/redis-connection.js';
import { type RunningProducer, startProducer } from '../../producer/server.js';
import { type RunningWorker, startWorker } from '../../worker/start-worker.js';
import { createTestDatabase, type TestDatabase } from './database.js';
import { deleteKeys, TEST_REDIS_URL } from './redis.js';

export const ADMIN_TOKEN = 'test-admin-token-0123456789';

export interface Stack {
  config: Config;
  database: TestDatabase;
  producer: RunningProducer;
  /** Started unless `{ worker: false }`. */
  worker: RunningWorker | undefined;
  /** A Redis connection for reading the stream and the queue (a cluster client on a cluster). */
  redis: RedisClient;
  admin: Record<string, string>;
  /** Every event on this stack's stream so far, parsed and validated against the contract. */
  events(): Promise<RevocationEvent[]>;
  startWorker(): Promise<RunningWorker>;
  close(): Promise<void>;
}

export interface StackOptions {
  worker?: boolean;
  env?: Record<string, string>;
}

/**
 * A producer and (by default) a worker, as `npm start` runs them, on a database, queue prefix
 * and event stream of their own. `close()` stops both and removes the database and the keys.
 * On the shared Redis unless `env` names another: REDIS_URL, REDIS_CLUSTER_NODES (the prefix
 * is then a hash tag, `{test-…}`, and the stream in its slot) or REDIS_SENTINELS.
 */
export async function startStack(options: StackOptions = {}): Promise<Stack> {
  const database = await createTestDatabase();
  const id = randomBytes(6).toString('hex');
  const cluster = Boolean(options.env?.REDIS_CLUSTER_NODES);
  const prefix = cluster ? `{test-${id}}` : `test-${id}`;
  const config = loadConfig({
    DATABASE_URL: database.url,
    ...(options.env?.REDIS_CLUSTER_NODES || options.env?.REDIS_SENTINELS ? {} : { REDIS_URL: TEST_REDIS_URL }),
    PORT: '0',
    LOG_LEVEL: 'silent',
    QUEUE_PREFIX: prefix,
    EVENTS_STREAM: `${prefix}:events`,
    WORKER_CONCURRENCY: '4',
    BOOTSTRAP_ADMIN_TOKEN: ADMIN_TOKEN,
    RATE_LIMIT_MAX: '0', // tests that are about rate limits turn it on
    ...options.env,
  });
  const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
  const producer = await startProducer(config, logger);
  const workers: RunningWorker[] = [];
  const topology = redisTopology(config);
  const redis = topology.kind === 'single' ? new Redis(topology.url, { maxRetriesPerRequest: 1 }) : connectRedis(topology, { name: 'test-stack', whenDown: 'wait' });
  const stack: Stack = {
    config,
    database,
    producer,
    worker: undefined,
    redis,
    admin: { authorization: `Bearer ${ADMIN_TOKEN}` },
    async events() {
      const entries = await redis.xrange(config.EVENTS_STREAM, '-', '+');
      return entries.map(([, fields]) => RevocationEvent.parse(JSON.parse(fields[fields.indexOf(EVENT_FIELD) + 1] ?? 'null')));
    },
    async startWorker() {
      const worker = await startWorker(config, logger);
      workers.push(worker);
      return worker;
    },
    async close() {
      await producer.close();
      for (const worker of workers) await worker.close();
      redis.disconnect();
      await deleteKeys(topology, config.QUEUE_PREFIX, [config.EVENTS_STREAM]);
      await database.drop();
    },
  };
  if (options.worker !== false) stack.worker = await stack.startWorker();
  return stack;
}
