import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createDb } from '../../db/create-db.js';
import type { Database, Db } from '../../db/database.js';
import { CommittedAhead, LAST_IN_TRANSACTION, pipelineTransactionBoundaries } from '../../db/pipelined.js';
import { executePrepared, usePreparedStatements } from '../../db/prepared.js';
import { type TestDatabase, createTestDatabase } from '../helpers/database.js';

/**
 * The worker's pool runs in pg's pipeline mode with pipelineTransactionBoundaries (db/pipelined.ts):
 * BEGIN goes out with a transaction's first statement, COMMIT right behind a statement marked
 * LAST_IN_TRANSACTION. These tests hold it to what Kysely's transactions promise without it:
 * what commits, commits; what fails, leaves nothing; the connection is clean afterwards.
 */
describe('pipelined transaction boundaries', () => {
  let database: TestDatabase;
  let db: Db;

  beforeAll(async () => {
    database = await createTestDatabase();
    // one connection: every transaction below runs on the client the one before it left
    db = createDb(database.url, { max: 1, pipeline: true, applicationName: 'revocation-test-pipelined' });
    await sql`create table pipelined (id int primary key, note text)`.execute(database.db);
  });
  afterAll(async () => {
    await db?.destroy();
    await database?.drop();
  });
  beforeEach(async () => {
    await sql`truncate pipelined`.execute(database.db);
  });

  const last = (id: number, note = 'last') => executePrepared(db, sql`${sql.raw(LAST_IN_TRANSACTION)}insert into pipelined (id, note) values (${id}, ${note}) returning id`.compile(db));
  const lastIn = (trx: Db, id: number, note = 'last') =>
    executePrepared(trx, sql<{ id: number }>`${sql.raw(LAST_IN_TRANSACTION)}insert into pipelined (id, note) values (${id}, ${note}) returning id`.compile(trx));
  const rows = async () => (await sql<{ id: number; note: string }>`select id, note from pipelined order by id`.execute(database.db)).rows;
  const inTransaction = async () => (await sql<{ status: string }>`select case when now() = statement_timestamp() then 'no' else 'yes' end as status`.execute(db)).rows[0]?.status;

  it('commits a transaction whose last statement is marked: its statements, in order, in one transaction', async () => {
    const result = await db
      .transaction()
      .setIsolationLevel('repeatable read')
      .execute(async (trx) => {
        const [row] = (await sql<{ now: Date }>`select now() as now`.execute(trx)).rows;
        await sql`insert into pipelined (id, note) values (1, 'first')`.execute(trx);
        const [inserted] = await lastIn(trx, 2);
        return { now: row!.now, inserted };
      });
    expect(result.inserted).toEqual({ id: 2 });
    expect(await rows()).toEqual([
      { id: 1, note: 'first' },
      { id: 2, note: 'last' },
    ]);
    // both rows were written by one transaction: they carry its xmin
    const xmins = (await sql<{ xmin: string }>`select xmin::text as xmin from pipelined`.execute(database.db)).rows.map((r) => r.xmin);
    expect(new Set(xmins).size).toBe(1);
    expect(await inTransaction()).toBe('no');
  });

  it('commits nothing when the marked statement fails: the error is the statement’s, the rows before it are rolled back, the connection is clean', async () => {
    await sql`insert into pipelined (id, note) values (7, 'there before')`.execute(database.db);
    const attempt = db
      .transaction()
      .setIsolationLevel('repeatable read')
      .execute(async (trx) => {
        await sql`insert into pipelined (id, note) values (1, 'rolled back')`.execute(trx);
        await lastIn(trx, 7); // duplicate key
      });
    await expect(attempt).rejects.toMatchObject({ code: '23505' });
    expect(await rows()).toEqual([{ id: 7, note: 'there before' }]);
    // the next transaction on the same connection starts afresh
    await db.transaction().execute(async (trx) => {
      await lastIn(trx, 8);
    });
    expect((await rows()).map((r) => r.id)).toEqual([7, 8]);
  });

  it('commits nothing when a statement before the marked one fails (the caller rolls back; BEGIN went out with the first statement)', async () => {
    const attempt = db.transaction().execute(async (trx) => {
      await sql`insert into pipelined (id, note) values (1, 'first')`.execute(trx);
      await sql`select 1 / 0`.execute(trx);
      await lastIn(trx, 2);
    });
    await expect(attempt).rejects.toMatchObject({ code: '22012' });
    expect(await rows()).toEqual([]);
    expect(await inTransaction()).toBe('no');
  });

  it('a transaction that runs no statement sends nothing and leaves nothing open', async () => {
    await db.transaction().execute(async () => {});
    await expect(
      db.transaction().execute(async () => {
        throw new Error('before any statement');
      }),
    ).rejects.toThrow('before any statement');
    expect(await inTransaction()).toBe('no');
  });

  it('runs a marked statement outside a transaction as any other (no COMMIT behind it)', async () => {
    await last(3);
    await last(4);
    expect(await inTransaction()).toBe('no');
    await db.transaction().execute(async (trx) => {
      await lastIn(trx, 5);
    });
    expect((await rows()).map((r) => r.id)).toEqual([3, 4, 5]);
  });

  it('refuses a statement after the marked one, and says so when the caller fails after it: the transaction has committed', async () => {
    await expect(
      db.transaction().execute(async (trx) => {
        await lastIn(trx, 1);
        await sql`insert into pipelined (id, note) values (2, 'after the last')`.execute(trx);
      }),
    ).rejects.toMatchObject({ name: 'CommittedAhead', cause: { message: expect.stringMatching(/after the transaction's last one/) } });
    expect((await rows()).map((r) => r.id)).toEqual([1]);

    await expect(
      db.transaction().execute(async (trx) => {
        await lastIn(trx, 3);
        throw new Error('JS failed after the last statement');
      }),
    ).rejects.toBeInstanceOf(CommittedAhead);
    expect((await rows()).map((r) => r.id)).toEqual([1, 3]);
    expect(await inTransaction()).toBe('no');
  });

  it('leaves statements outside transactions, and transactions without a marked statement, as they were', async () => {
    await sql`insert into pipelined (id, note) values (1, 'autocommit')`.execute(db);
    await db.transaction().execute(async (trx) => {
      await sql`insert into pipelined (id, note) values (2, 'plain')`.execute(trx);
    });
    await expect(
      db.transaction().execute(async (trx) => {
        await sql`insert into pipelined (id, note) values (3, 'rolled back')`.execute(trx);
        throw new Error('rollback');
      }),
    ).rejects.toThrow('rollback');
    expect((await rows()).map((r) => r.id)).toEqual([1, 2]);
  });

  it('refuses every statement after the marked one until the transaction ends, when the caller carries on after a refusal: none runs in autocommit', async () => {
    const outcome = await db
      .transaction()
      .execute(async (trx) => {
        await lastIn(trx, 1);
        await expect(sql`insert into pipelined (id, note) values (2, 'refused')`.execute(trx)).rejects.toThrow(/after the transaction's last one/);
        await sql`insert into pipelined (id, note) values (3, 'after a refusal')`.execute(trx);
      })
      .then(
        () => 'committed',
        (error: unknown) => error,
      );
    expect((await rows()).map((r) => r.id)).toEqual([1]);
    expect(outcome).toBeInstanceOf(CommittedAhead);
    expect(await inTransaction()).toBe('no');
    // the connection serves the next transaction as usual
    await db.transaction().execute(async (trx) => {
      await sql`insert into pipelined (id, note) values (4, 'next')`.execute(trx);
      await lastIn(trx, 5);
    });
    expect((await rows()).map((r) => r.id)).toEqual([1, 4, 5]);
  });
});

/**
 * pg takes a statement as a text or as a query config (`{ name, text, values }`, as
 * usePreparedStatements passes it on). Installed beneath that wrapper, the boundaries see prepared
 * statements as configs: they must still run inside the transaction, and a marked one still ends it.
 */
describe('pipelined transaction boundaries, with statements arriving as query configs', () => {
  let database: TestDatabase;
  let db: Db;

  beforeAll(async () => {
    database = await createTestDatabase();
    const pool = new pg.Pool({ connectionString: database.url, max: 1, pipeline: true, application_name: 'revocation-test-pipelined-configs' });
    pool.on('connect', (client) => {
      pipelineTransactionBoundaries(client);
      usePreparedStatements(client); // on top: marked statements reach the boundaries as configs
    });
    db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
    await sql`create table pipelined (id int primary key, note text)`.execute(database.db);
  });
  afterAll(async () => {
    await db?.destroy();
    await database?.drop();
  });
  beforeEach(async () => {
    await sql`truncate pipelined`.execute(database.db);
  });

  const prepared = (trx: Db, id: number, mark = '') => executePrepared(trx, sql`${sql.raw(mark)}insert into pipelined (id, note) values (${id}, 'prepared') returning id`.compile(trx));
  const ids = async () => (await sql<{ id: number }>`select id from pipelined order by id`.execute(database.db)).rows.map((r) => r.id);

  it('a transaction’s first statement runs inside it (after BEGIN): rolled back with it', async () => {
    await expect(
      db.transaction().execute(async (trx) => {
        await prepared(trx, 1);
        throw new Error('the caller rolls back');
      }),
    ).rejects.toThrow('the caller rolls back');
    expect(await ids()).toEqual([]);
  });

  it('a marked statement ends its transaction: the statement after it is refused, not run in autocommit', async () => {
    await expect(
      db.transaction().execute(async (trx) => {
        await prepared(trx, 1);
        await prepared(trx, 2, LAST_IN_TRANSACTION);
        await prepared(trx, 3);
      }),
    ).rejects.toBeInstanceOf(CommittedAhead);
    expect(await ids()).toEqual([1, 2]);
  });
});
