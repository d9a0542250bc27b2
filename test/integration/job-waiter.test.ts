import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { COMMAND_CHANNEL } from '../../db/repositories/command.repository.js';
import { JobWaiter } from '../../producer/services/job-waiter.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';

/**
 * The JobWaiter (Prefer: wait) LISTENs for command commits only while someone waits: a producer
 * nobody waits on is not woken by every commit of every worker.
 */
describe('JobWaiter', () => {
  let database: TestDatabase;
  let waiter: JobWaiter;

  beforeAll(async () => {
    database = await createTestDatabase();
    waiter = new JobWaiter(database.url, database.db, pino({ level: 'silent' }), { lingerMs: 100 });
    await waiter.start();
  });
  afterAll(async () => {
    await waiter?.close();
    await database?.drop();
  });

  async function queuedCommand(): Promise<string> {
    const id = randomUUID();
    await sql`insert into commands (id, type, payload, payload_hash, submitter_id, audit) values (${id}, 'tokens.delete', '{}', 'h', 'admin', '{}')`.execute(database.db);
    return id;
  }
  /** What a worker's commit does: the terminal state, and a NOTIFY delivered at commit. */
  async function finish(id: string): Promise<void> {
    await database.db.transaction().execute(async (trx) => {
      await sql`update commands set state = 'succeeded', result = '{"deleted":1}', finished_at = now() where id = ${id}`.execute(trx);
      await sql`select pg_notify(${COMMAND_CHANNEL}, ${`done:${id}`})`.execute(trx);
    });
  }

  it('listens only while a wait is in progress, and answers once the command ends', async () => {
    expect(waiter.isListening).toBe(false);
    const id = await queuedCommand();
    const waiting = waiter.wait(id, 20_000);
    await expect.poll(() => waiter.isListening, { timeout: 5_000, interval: 10 }).toBe(true);
    await finish(id);
    expect(await waiting).toMatchObject({ id, state: 'succeeded', result: { deleted: 1 } });
    // nobody waits any more: it stops listening after the linger
    await expect.poll(() => waiter.isListening, { timeout: 5_000, interval: 20 }).toBe(false);
  });

  it('listens again for the next wait, and answers a command already finished at once', async () => {
    const done = await queuedCommand();
    await finish(done);
    expect(await waiter.wait(done, 20_000)).toMatchObject({ id: done, state: 'succeeded' });

    const id = await queuedCommand();
    const waiting = waiter.wait(id, 20_000);
    await expect.poll(() => waiter.isListening, { timeout: 5_000, interval: 10 }).toBe(true);
    await finish(id);
    expect(await waiting).toMatchObject({ id, state: 'succeeded' });
  });

  it('returns the latest row when the command does not end in time', async () => {
    const id = await queuedCommand();
    expect(await waiter.wait(id, 200)).toMatchObject({ id, state: 'queued' });
  });
});
