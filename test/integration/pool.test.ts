import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createDb } from '../../db/create-db.js';
import { type TestDatabase, createTestDatabase } from '../helpers/database.js';
import { sleep } from '../helpers/sleep.js';

/**
 * createDb's pool keeps what it has opened (db/create-db.ts): pg-pool's default closes a
 * connection idle for 10 s, and the next burst then pays a new backend, a login and every
 * prepared statement again on a request's path.
 */
describe('the connection pool', () => {
  let database: TestDatabase;

  beforeAll(async () => {
    database = await createTestDatabase();
  });
  afterAll(async () => {
    await database?.drop();
  });

  /** The backends (pids) serving a pool, from pg_stat_activity. */
  const backends = async (applicationName: string) =>
    (await sql<{ pid: number }>`select pid from pg_stat_activity where datname = ${database.name} and application_name = ${applicationName} order by pid`.execute(database.db)).rows.map((r) => r.pid);

  it('keeps the connections a burst opened once they are idle, and reuses them for the next burst', async () => {
    // the pool's timers (pg-pool arms one when a connection goes idle; its default closes it after
    // 10 s) run on a fake clock, moved a minute on below; the connections' I/O is real
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const db = createDb(database.url, { max: 3, applicationName: 'revocation-test-pool' });
    try {
      const burst = () => Promise.all([1, 2, 3].map(() => sql`select pg_sleep(0.05)`.execute(db)));
      await burst();
      const opened = await backends('revocation-test-pool');
      expect(opened).toHaveLength(3);

      vi.advanceTimersByTime(60_000);
      vi.useRealTimers();
      await sleep(200);
      expect(await backends('revocation-test-pool')).toEqual(opened);

      await burst();
      expect(await backends('revocation-test-pool')).toEqual(opened); // the same three backends served it
    } finally {
      vi.useRealTimers();
      await db.destroy();
    }
    await expect.poll(async () => (await backends('revocation-test-pool')).length, { timeout: 5000, interval: 50 }).toBe(0);
  });
});
