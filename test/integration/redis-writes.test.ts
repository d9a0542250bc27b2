import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { holdWritesForTurn } from '../../db/redis-writes.js';
import { deleteKeys, TEST_REDIS_URL } from '../helpers/redis.js';

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

  /** Counts the socket's writes to the kernel: `_writev` for corked chunks, `_write` for one. */
  function countWrites(client: Redis) {
    const socket = client.stream as unknown as { _write: unknown; _writev: unknown };
    const writev = vi.spyOn(socket as { _writev: (...args: unknown[]) => void }, '_writev');
    const write = vi.spyOn(socket as { _write: (...args: unknown[]) => void }, '_write');
    return {
      count: () => writev.mock.calls.length + write.mock.calls.length,
      restore() {
        writev.mockRestore();
        write.mockRestore();
      },
    };
  }

  it('sends the commands of one turn in one write, in order, each with its own reply and error', async () => {
    const key = `${prefix}:list`;
    const text = `${prefix}:text`;
    await redis.set(text, 'not a list');
    const writes = countWrites(redis);
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
    const writes = countWrites(redis);
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
