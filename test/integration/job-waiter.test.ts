import { randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { COMMAND_CHANNEL } from '../../db/repositories/command.repository.js';
import { JobWaiter } from '../../producer/services/job-waiter.js';
import { createTestDatabase, type TestDatabase } from '../helpers/database.js';

/**
 * The JobWaiter (synchronous seed routes, Prefer: wait) LISTENs for command commits only while
 * someone waits, and needs no read of a command recorded while it listened.
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
  /** What a worker's commit does: the terminal state, and a NOTIFY (`payload`) delivered at commit. */
  async function finish(id: string, payload: string | null = `done:${id}:succeeded`): Promise<void> {
    await database.db.transaction().execute(async (trx) => {
      await sql`update commands set state = 'succeeded', result = '{"deleted":1}', finished_at = now() where id = ${id}`.execute(trx);
      if (payload !== null) await sql`select pg_notify(${COMMAND_CHANNEL}, ${payload})`.execute(trx);
    });
  }

  it('listens only while a ticket is held, and hears the end of the command it was taken for without reading it', async () => {
    expect(waiter.isListening).toBe(false);
    // no such row: only the notification can tell
    const id = randomUUID();
    const ticket = await waiter.ticket(id);
    expect(waiter.isListening).toBe(true);
    const waiting = waiter.wait(id, 20_000, ticket);
    await sql`select pg_notify(${COMMAND_CHANNEL}, ${`done:${id}:failed`})`.execute(database.db);
    expect(await waiting).toBe('failed');
    waiter.release(ticket);
    // nobody waits any more: it stops listening after the linger
    await expect.poll(() => waiter.isListening, { timeout: 5_000, interval: 20 }).toBe(false);
  });

  it('hears an end that came before its wait began; reads a command it holds no ticket for', async () => {
    const id = await queuedCommand();
    const ticket = await waiter.ticket(id);
    try {
      await finish(id);
      await expect.poll(() => waiter.wait(id, 0, ticket)).toBe('succeeded');
      // another command (an Idempotency-Key replay, say), ended without a word: read
      const silent = await queuedCommand();
      await finish(silent, null);
      expect(await waiter.wait(silent, 20_000, ticket)).toBe('succeeded');
    } finally {
      waiter.release(ticket);
    }
  });

  it('reads the command when a notification carries no state', async () => {
    const id = await queuedCommand();
    const ticket = await waiter.ticket(id);
    try {
      const waiting = waiter.wait(id, 20_000, ticket);
      await finish(id, `done:${id}`);
      expect(await waiting).toBe('succeeded');
    } finally {
      waiter.release(ticket);
    }
  });

  it('falls back to reading when the LISTEN of its ticket is lost', async () => {
    const id = await queuedCommand();
    const ticket = await waiter.ticket(id);
    try {
      const waiting = waiter.wait(id, 20_000, ticket);
      await sql`select pg_terminate_backend(pid) from pg_stat_activity where datname = current_database() and application_name = 'revocation-waiter'`.execute(database.db);
      // the end is committed with no notification at all: only a read finds it
      await finish(id, null);
      expect(await waiting).toBe('succeeded');
    } finally {
      waiter.release(ticket);
    }
  });

  it('answers undefined when the command does not end in time', async () => {
    const id = await queuedCommand();
    const ticket = await waiter.ticket(id);
    try {
      expect(await waiter.wait(id, 200, ticket)).toBeUndefined();
    } finally {
      waiter.release(ticket);
    }
  });
});
