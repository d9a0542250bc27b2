import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { Migrator } from 'kysely';
import pino from 'pino';
import { loadConfig } from '../../contracts/index.js';
import { createDb } from '../../db/create-db.js';
import { DatabaseNotMigrated, ensureDatabase, migrateToLatest, pendingMigrations } from '../../db/migrate.js';
import { startWorker } from '../../worker/start-worker.js';
import { TEST_REDIS_URL } from '../helpers/redis.js';
import { migrations } from '../../db/migrations/index.js';
import { databaseUrl, dropDatabase, TEST_SERVER_URL, uniqueName } from '../helpers/database.js';

/** Every migration, in the order they apply. */
const ALL = Object.keys(migrations).sort();
const TABLES = ['access_tokens', 'audit_log', 'collections', 'commands', 'outbox', 'subjects', 'vault_tokens'];

/** Every database this file creates; all are dropped at the end. */
const created: string[] = [];

function freshName(): string {
  const name = uniqueName('rev_migrate');
  created.push(name);
  return name;
}

async function withClient<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

async function databaseExists(name: string): Promise<boolean> {
  return withClient(TEST_SERVER_URL, async (c) => (await c.query('select 1 from pg_database where datname = $1', [name])).rowCount === 1);
}

/** Our tables in the public schema, sorted; a table created twice would show twice. */
async function publicTables(name: string): Promise<string[]> {
  return withClient(databaseUrl(name), async (c) => {
    const r = await c.query<{ table_name: string }>(`select table_name from information_schema.tables where table_schema = 'public' and table_name = any($1) order by table_name`, [TABLES]);
    return r.rows.map((row) => row.table_name);
  });
}

async function appliedMigrations(name: string): Promise<string[]> {
  return withClient(databaseUrl(name), async (c) => (await c.query<{ name: string }>('select name from kysely_migration order by name')).rows.map((r) => r.name));
}

describe('migrateToLatest', () => {
  afterAll(async () => {
    for (const name of created) await dropDatabase(name);
  });

  it('creates a database that does not exist yet and applies every migration in order', async () => {
    const name = freshName();
    expect(await databaseExists(name)).toBe(false);
    const { results } = await migrateToLatest(databaseUrl(name));
    expect(results).toEqual(ALL.map((migrationName) => expect.objectContaining({ migrationName, status: 'Success' })));
    expect(await databaseExists(name)).toBe(true);
    expect(await publicTables(name)).toEqual(TABLES);
    expect(await appliedMigrations(name)).toEqual(ALL);
    // the ID lists of audit rows and events are stored uncompressed (0002)
    const storage = await withClient(
      databaseUrl(name),
      async (c) =>
        (
          await c.query<{ attname: string; attstorage: string }>(
            "select attname, attstorage from pg_attribute where (attrelid, attname) in (('audit_log'::regclass, 'data'), ('outbox'::regclass, 'event')) order by attname",
          )
        ).rows,
    );
    expect(storage).toEqual([
      { attname: 'data', attstorage: 'e' },
      { attname: 'event', attstorage: 'e' },
    ]);
  });

  it('applies nothing when run again on an up-to-date database', async () => {
    const name = freshName();
    await migrateToLatest(databaseUrl(name));
    const again = await migrateToLatest(databaseUrl(name));
    expect(again.error).toBeUndefined();
    expect(again.results ?? []).toEqual([]);
    expect(await appliedMigrations(name)).toEqual(ALL);
    expect(await publicTables(name)).toEqual(TABLES);
  });

  it('lets two concurrent runs on a fresh database both succeed, applying the schema once', async () => {
    const name = freshName();
    const url = databaseUrl(name);
    const [a, b] = await Promise.all([migrateToLatest(url), migrateToLatest(url)]);
    const applied = [...(a.results ?? []), ...(b.results ?? [])].filter((r) => r.status === 'Success').map((r) => r.migrationName);
    expect(applied).toEqual(ALL);
    expect(await publicTables(name)).toEqual(TABLES);
    expect(await appliedMigrations(name)).toEqual(ALL);
  });

  it('a worker refuses to start against a database that lacks a migration, and says which and what to run', async () => {
    const name = freshName();
    const url = databaseUrl(name);
    await ensureDatabase(url);
    const db = createDb(url, { max: 1 });
    try {
      expect(await pendingMigrations(db)).toEqual(ALL);
      const migrator = new Migrator({ db, provider: { getMigrations: async () => migrations } });
      const last = ALL.at(-1)!;
      const upTo = await migrator.migrateTo(ALL.at(-2)!);
      expect(upTo.error).toBeUndefined();
      expect(await pendingMigrations(db)).toEqual([last]);
      const config = loadConfig({ DATABASE_URL: url, REDIS_URL: TEST_REDIS_URL, LOG_LEVEL: 'silent', QUEUE_PREFIX: `test-${name}`, BOOTSTRAP_ADMIN_TOKEN: 'x'.repeat(32) });
      const refused = await startWorker(config, pino({ level: 'silent' })).then(
        () => undefined,
        (error: unknown) => error,
      );
      expect(refused).toBeInstanceOf(DatabaseNotMigrated);
      expect((refused as Error).message).toBe(`the database lacks migration ${last}: run \`npm run migrate\` first`);
      await migrateToLatest(url);
      expect(await pendingMigrations(db)).toEqual([]);
    } finally {
      await db.destroy();
    }
  });

  it('0005 gives the vault tokens already stored type randomized, no scope and no props, and holds new ones to randomized or pointer', async () => {
    const name = freshName();
    const url = databaseUrl(name);
    await ensureDatabase(url);
    const db = createDb(url, { max: 1 });
    try {
      const migrator = new Migrator({ db, provider: { getMigrations: async () => migrations } });
      expect((await migrator.migrateTo('0004-outbox-written-at-insert')).error).toBeUndefined();
      await withClient(url, async (c) => {
        await c.query(`insert into collections (name) values ('old')`);
        await c.query(`insert into vault_tokens (collection, token_id, object_id, tags) values ('old', 'before-0005', 'o1', '{a}')`);
      });
      expect((await migrator.migrateTo('0005-vault-token-type-scope-props')).error).toBeUndefined();
      await withClient(url, async (c) => {
        const rows = (await c.query('select token_id, type, scope, props from vault_tokens')).rows;
        expect(rows).toEqual([{ token_id: 'before-0005', type: 'randomized', scope: '', props: [] }]);
        await c.query(`insert into vault_tokens (collection, token_id, object_id, type) values ('old', 'p', 'o2', 'pointer')`);
        await expect(c.query(`insert into vault_tokens (collection, token_id, object_id, type) values ('old', 'd', 'o3', 'deterministic')`)).rejects.toThrow(/vault_tokens_type/);
      });
      expect((await migrator.migrateDown()).error).toBeUndefined();
      await withClient(url, async (c) => {
        const columns = (await c.query(`select column_name from information_schema.columns where table_name = 'vault_tokens' and column_name in ('type', 'scope', 'props')`)).rows;
        expect(columns).toEqual([]);
      });
    } finally {
      await db.destroy();
    }
  });

  it('0007 lets a command end cancelled, keeps the commands already stored, and adds the cancel requests; down holds new rows to four states again', async () => {
    const name = freshName();
    const url = databaseUrl(name);
    await ensureDatabase(url);
    const db = createDb(url, { max: 1 });
    const command = (id: string, state: string) =>
      `insert into commands (id, type, payload, payload_hash, submitter_id, audit, state) values ('${id}', 'tokens.delete', '{}', 'h', 'me', '{}', '${state}')`;
    try {
      const migrator = new Migrator({ db, provider: { getMigrations: async () => migrations } });
      expect((await migrator.migrateTo('0005-vault-token-type-scope-props')).error).toBeUndefined();
      await withClient(url, async (c) => {
        await c.query(command('00000000-0000-4000-8000-000000000001', 'succeeded'));
        await expect(c.query(command('00000000-0000-4000-8000-000000000002', 'cancelled'))).rejects.toThrow(/commands_state_check/);
      });
      expect((await migrator.migrateTo('0007-command-cancel')).error).toBeUndefined();
      await withClient(url, async (c) => {
        await c.query(command('00000000-0000-4000-8000-000000000002', 'cancelled'));
        await expect(c.query(command('00000000-0000-4000-8000-000000000003', 'ended'))).rejects.toThrow(/commands_state_check/);
        expect((await c.query('select state from commands order by id')).rows).toEqual([{ state: 'succeeded' }, { state: 'cancelled' }]);
        await c.query(`insert into command_cancellations (command_id, requested_by) values ('00000000-0000-4000-8000-000000000001', '{"id":"me","kind":"user","request_id":null}')`);
      });
      expect((await migrator.migrateTo('0005-vault-token-type-scope-props')).error).toBeUndefined();
      await withClient(url, async (c) => {
        expect((await c.query(`select to_regclass('command_cancellations') as t`)).rows).toEqual([{ t: null }]);
        expect((await c.query('select state from commands order by id')).rows).toEqual([{ state: 'succeeded' }, { state: 'cancelled' }]);
        await expect(c.query(command('00000000-0000-4000-8000-000000000004', 'cancelled'))).rejects.toThrow(/commands_state_check/);
      });
    } finally {
      await db.destroy();
    }
  });

  it('leaves a working schema: the audit log refuses updates', async () => {
    const name = freshName();
    await migrateToLatest(databaseUrl(name));
    await withClient(databaseUrl(name), async (c) => {
      await c.query(`insert into audit_log (action, actor_id, actor_kind, source, data) values ('test', 'me', 'service', 'http', '{}')`);
      await expect(c.query(`update audit_log set action = 'changed'`)).rejects.toThrow(/append-only/);
    });
  });
});
