import { Cluster, Redis } from 'ioredis';
import type { RedisTopology } from '../../contracts/index.js';
import { connectRedis } from '../../db/redis-connection.js';

export const TEST_REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

/**
 * Deletes every key under `prefix:` and the named keys, on the shared Redis (a URL) or the
 * topology named: on a cluster, every master is scanned and each key deleted alone (keys of
 * different slots cannot share a DEL).
 */
export async function deleteKeys(target: string | RedisTopology, prefix: string, extra: string[] = []): Promise<void> {
  const client = typeof target === 'string' ? new Redis(target, { maxRetriesPerRequest: 1 }) : connectRedis(target, { name: 'test-cleanup', whenDown: 'wait' });
  try {
    const servers = client instanceof Cluster ? await mastersOf(client) : [client];
    const del = async (keys: string[]) => {
      if (client instanceof Cluster) await Promise.all(keys.map((key) => client.del(key)));
      else if (keys.length > 0) await client.del(...keys);
    };
    for (const server of servers) {
      let cursor = '0';
      do {
        const [next, keys] = await server.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
        cursor = next;
        await del(keys);
      } while (cursor !== '0');
    }
    await del(extra);
  } finally {
    client.disconnect();
  }
}

/** The masters of a cluster, once the client knows the slot map. */
async function mastersOf(cluster: Cluster): Promise<Redis[]> {
  if (cluster.status !== 'ready') await new Promise((resolve, reject) => cluster.once('ready', resolve).once('end', () => reject(new Error('cluster connection ended'))));
  return cluster.nodes('master');
}
