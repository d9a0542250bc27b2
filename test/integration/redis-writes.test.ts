import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { holdWritesForTurn } from '../../db/redis-writes.js';
import { countSocketWrites, deleteKeys, TEST_REDIS_URL } from '../helpers/redis.js';

/**
 * holdWritesForTurn (db/redis-writes.ts): the commands sent on a connection in one turn of the
 * event loop go out in one socket write, each with its own reply and its own error, in order.
 */
describe('holdWritesForTurn', () => {
  const prefix = `test-writes-${randomUUID()}`;
  let redis: Redis;
  beforeAll(async () => {
    redis = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: 1 });
    await redis.ping();
  });
  afterAll(async () => {
    await deleteKeys(TEST_REDIS_URL, prefix);
    redis?.disconnect();
  });

  it('sends the commands of one turn in one write, in order, each with its own reply and error', async () => {
    const key = `${prefix}:list`;
    const text = `${prefix}:text`;
    await redis.set(text, 'not a list');
    const writes = countSocketWrites(redis);
    holdWritesForTurn(redis);
    holdWritesForTurn(redis); // again in the same turn: nothing more
    const replies = await Promise.allSettled([redis.rpush(key, 'a'), redis.rpush(text, 'x'), redis.rpush(key, 'b'), redis.lrange(key, 0, -1)]);
    expect(writes.count()).toBe(1);
    expect(replies.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled', 'fulfilled']);
    expect(String((replies[1] as PromiseRejectedResult).reason)).toMatch(/WRONGTYPE/);
    expect((replies[3] as PromiseFulfilledResult<string[]>).value).toEqual(['a', 'b']);
    writes.restore();
  });

  it('holds one turn only: commands of the next turn go out as usual', async () => {
    const key = `${prefix}:turns`;
    const writes = countSocketWrites(redis);
    holdWritesForTurn(redis);
    const first = Promise.all([redis.incr(key), redis.incr(key)]);
    await new Promise((resolve) => setImmediate(resolve));
    expect(writes.count()).toBe(1);
    const second = await Promise.all([redis.incr(key), redis.incr(key)]);
    expect(writes.count()).toBe(3); // not held: one write each
    expect([...(await first), ...second]).toEqual([1, 2, 3, 4]);
    writes.restore();
  });

  it('does nothing on a connection with no socket yet: its commands wait for the connection as always', async () => {
    const lazy = new Redis(TEST_REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 });
    try {
      expect(lazy.stream).toBeUndefined();
      holdWritesForTurn(lazy);
      expect(await lazy.set(`${prefix}:lazy`, '1')).toBe('OK');
      expect(await lazy.get(`${prefix}:lazy`)).toBe('1');
    } finally {
      lazy.disconnect();
    }
  });
});
