import { Cluster, type ClusterOptions, Redis, type RedisOptions } from 'ioredis';
import type { RedisAuth, RedisTopology } from '../contracts/index.js';

/**
 * Every Redis connection of the service is made here, from the configured topology
 * (contracts/redis-topology.ts):
 *
 * - one server (`REDIS_URL`): an ioredis `Redis`;
 * - a Redis Cluster (`REDIS_CLUSTER_NODES`): an ioredis `Cluster` started from those nodes; it
 *   learns the slot map and follows MOVED and ASK. Settings of the connection to each node go
 *   in its `redisOptions` (BullMQ reads `maxRetriesPerRequest` there);
 * - Sentinel (`REDIS_SENTINELS`, `REDIS_SENTINEL_MASTER`): an ioredis `Redis` that asks the
 *   sentinels where the primary is, at every (re)connection.
 *
 * The rules every connection follows:
 * 1. `whenDown: 'wait'` (BullMQ workers, the event publisher, the relay, readers): a command
 *    sent while Redis is unreachable waits for the reconnection (`maxRetriesPerRequest: null`,
 *    which BullMQ requires of a Worker's connection). `whenDown: 'fail'` (the producer): it fails
 *    at once (no offline queue, one retry), so a request never hangs on Redis; the command is
 *    committed and the reconciler enqueues it later.
 * 2. `once` (a start-up probe): one connection attempt, no reconnection.
 * 3. With Sentinel, a command refused with READONLY reached a former primary, now a replica (a
 *    failover just happened): the connection is made again (the sentinels name the new primary)
 *    and the command sent again. It was not run, so sending it again is safe.
 * 4. Each connection names itself (CLIENT SETNAME): `CLIENT LIST` tells them apart.
 * 5. Never an ioredis `keyPrefix` (BullMQ refuses it): keys are named by QUEUE_PREFIX and
 *    EVENTS_STREAM, which with a cluster share a hash tag by default.
 */
export type RedisClient = Redis | Cluster;

export interface ConnectionOptions {
  /** CLIENT SETNAME, e.g. `revocation-worker`. */
  name: string;
  whenDown: 'wait' | 'fail';
  /** One attempt, not connected before connect() is called (lazyConnect), never reconnected. */
  once?: boolean;
  /** How long a connection attempt may take (ms). */
  connectTimeout?: number;
}

const reconnectOnReadOnly = (error: Error): 2 | false => (error.message.startsWith('READONLY') ? 2 : false);

/** Settings of the connection to one server (each node of a cluster, the primary of Sentinel). */
function serverOptions(options: ConnectionOptions, auth?: RedisAuth): RedisOptions {
  return {
    connectionName: options.name,
    maxRetriesPerRequest: options.whenDown === 'wait' ? null : options.once ? 0 : 1,
    ...(options.connectTimeout ? { connectTimeout: options.connectTimeout } : {}),
    ...(auth?.username ? { username: auth.username } : {}),
    ...(auth?.password ? { password: auth.password } : {}),
    ...(auth?.tls ? { tls: {} } : {}),
  };
}

/** A connection to `topology` following the rules above. It connects at once unless `once`. */
export function connectRedis(topology: RedisTopology, options: ConnectionOptions): RedisClient {
  const offlineQueue = options.whenDown === 'wait' && !options.once;
  const once = options.once ? { lazyConnect: true } : {};
  switch (topology.kind) {
    case 'single':
      return new Redis(topology.url, { ...serverOptions(options), enableOfflineQueue: offlineQueue, ...once, ...(options.once ? { retryStrategy: () => null } : {}) });
    case 'cluster': {
      const cluster: ClusterOptions = {
        redisOptions: serverOptions(options, topology.auth),
        enableOfflineQueue: offlineQueue,
        ...once,
        ...(options.once ? { clusterRetryStrategy: () => null } : {}),
      };
      return new Cluster(topology.nodes, cluster);
    }
    case 'sentinel':
      return new Redis({
        ...serverOptions(options, topology.auth),
        sentinels: topology.sentinels,
        name: topology.master,
        reconnectOnError: reconnectOnReadOnly,
        ...(topology.auth.username ? { sentinelUsername: topology.auth.username } : {}),
        ...(topology.auth.password ? { sentinelPassword: topology.auth.password } : {}),
        ...(topology.auth.tls ? { sentinelTLS: {}, enableTLSForSentinelMode: true } : {}),
        enableOfflineQueue: offlineQueue,
        ...once,
        ...(options.once ? { retryStrategy: () => null, sentinelRetryStrategy: () => null } : {}),
      });
  }
}

/** The connections that carry the commands: the client itself, or every node of a cluster it knows. */
export function serverConnections(client: RedisClient): Redis[] {
  return client instanceof Cluster ? client.nodes('all') : [client];
}

/**
 * One PING on a connection of its own that does not reconnect. Throws the connection's error
 * (ECONNREFUSED, a timeout, `max number of clients reached`, no sentinel knows the primary, …)
 * if Redis does not answer.
 */
export async function pingRedis(topology: RedisTopology, name: string): Promise<void> {
  const probe = connectRedis(topology, { name, whenDown: 'fail', once: true, connectTimeout: 5000 });
  // ioredis rejects with `Connection is closed`; the cause comes as an 'error' event
  let cause: unknown;
  probe.on('error', (error: unknown) => {
    cause ??= error;
  });
  try {
    await probe.connect();
    await probe.ping();
  } catch (error) {
    throw cause ?? error;
  } finally {
    probe.disconnect();
  }
}

/**
 * Warnings about a Redis setting that can lose queued jobs (an eviction policy other than
 * noeviction), for each server: every node of a cluster. Empty where CONFIG is not allowed
 * (managed Redis).
 */
export async function evictionWarnings(redis: RedisClient): Promise<string[]> {
  const warnings = await Promise.all(
    serverConnections(redis).map(async (server) => {
      const reply = (await server.config('GET', 'maxmemory-policy').catch(() => [])) as string[];
      const policy = reply[1];
      const where = redis === server ? '' : ` on ${server.options.host}:${server.options.port}`;
      return policy && policy !== 'noeviction' ? [`redis maxmemory-policy is ${policy}${where}; use noeviction so queued jobs are never evicted`] : [];
    }),
  );
  return warnings.flat();
}
