import { Redis } from 'ioredis';
import { vi } from 'vitest';

export const TEST_REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

/** Deletes every key under `prefix:` and the named keys, on the shared Redis. */
export async function deleteKeys(redisUrl: string, prefix: string, extra: string[] = []): Promise<void> {
  const redis = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
  try {
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length > 0) await redis.del(...keys);
    } while (cursor !== '0');
    if (extra.length > 0) await redis.del(...extra);
  } finally {
    redis.disconnect();
  }
}

/**
 * Counts the writes a connection's socket hands to the kernel from now on (`_writev` for chunks
 * held together, `_write` for one): what holdWritesForTurn saves. The connection must be
 * connected. Returns the count so far; `restore()` removes the spies.
 */
export function countSocketWrites(redis: Redis): { count: () => number; restore: () => void } {
  const socket = redis.stream as unknown as Record<'_write' | '_writev', (...args: unknown[]) => void>;
  const spies = [vi.spyOn(socket, '_writev'), vi.spyOn(socket, '_write')];
  return {
    count: () => spies.reduce((n, spy) => n + spy.mock.calls.length, 0),
    restore: () => spies.forEach((spy) => spy.mockRestore()),
  };
}
