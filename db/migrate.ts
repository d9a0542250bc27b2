import { Migrator, type MigrationResultSet, sql } from 'kysely';
import pg from 'pg';
import { createDb } from './create-db.js';
import type { Db } from './database.js';
import { migrations } from './migrations/index.js';

/** Any number works as long as every process uses the same one. */
const MIGRATION_LOCK_KEY = 0x7265766f; // "revo"

/**
 * Creates the database named in `databaseUrl` if it does not exist. Safe when several
 * processes do it at once: a lost race is not an error.
 */
export async function ensureDatabase(databaseUrl: string): Promise<void> {
  const url = new URL(databaseUrl);
  const name = decodeURIComponent(url.pathname.slice(1));
  if (!name) throw new Error('DATABASE_URL must name a database');
  const probe = new pg.Client({ connectionString: databaseUrl });
  try {
    await probe.connect();
    return;
  } catch (error) {
    if ((error as { code?: string }).code !== '3D000') throw error; // invalid_catalog_name
  } finally {
    await probe.end().catch(() => {});
  }
  url.pathname = '/postgres';
  const admin = new pg.Client({ connectionString: url.toString() });
  await admin.connect();
  try {
    await admin.query(`create database ${pg.escapeIdentifier(name)}`);
  } catch (error) {
    const code = (error as { code?: string }).code;
    // 42P04 duplicate_database; 23505 when two creators race on pg_database's unique index
    if (code !== '42P04' && code !== '23505') throw error;
  } finally {
    await admin.end();
  }
}

/**
 * Creates the database if missing and applies every pending migration. Idempotent, and safe
 * when several processes run it at once: a session-level advisory lock serialises them, so the
 * second one finds nothing left to do. Throws if a migration fails; the failed migration's
 * transaction is rolled back.
 */
export async function migrateToLatest(databaseUrl: string): Promise<MigrationResultSet> {
  await ensureDatabase(databaseUrl);
  const lock = new pg.Client({ connectionString: databaseUrl, application_name: 'revocation-migrate' });
  await lock.connect();
  const db = createDb(databaseUrl, { max: 1, applicationName: 'revocation-migrate' });
  try {
    await lock.query('select pg_advisory_lock($1)', [MIGRATION_LOCK_KEY]);
    const migrator = new Migrator({ db, provider: { getMigrations: async () => migrations } });
    const resultSet = await migrator.migrateToLatest();
    if (resultSet.error) throw resultSet.error;
    return resultSet;
  } finally {
    await lock.query('select pg_advisory_unlock($1)', [MIGRATION_LOCK_KEY]).catch(() => {});
    await lock.end().catch(() => {});
    await db.destroy();
  }
}

/** The migrations of this code that the database has not applied, in order (all of them on a database never migrated). */
export async function pendingMigrations(db: Db): Promise<string[]> {
  const applied = await sql<{ name: string }>`select name from kysely_migration`.execute(db).then(
    (result) => new Set(result.rows.map((row) => row.name)),
    (error: unknown) => {
      if ((error as { code?: unknown }).code === '42P01') return new Set<string>(); // no kysely_migration: never migrated
      throw error;
    },
  );
  return Object.keys(migrations)
    .sort()
    .filter((name) => !applied.has(name));
}

/** Throws DatabaseNotMigrated if a migration of this code has not been applied: code on an older schema would fail at every step. */
export async function assertMigrated(db: Db): Promise<void> {
  const pending = await pendingMigrations(db);
  if (pending.length > 0) throw new DatabaseNotMigrated(pending);
}

/** Thrown by a process that needs a migration the database lacks. */
export class DatabaseNotMigrated extends Error {
  constructor(readonly pending: readonly string[]) {
    super(`the database lacks migration${pending.length > 1 ? 's' : ''} ${pending.join(', ')}: run \`npm run migrate\` first`);
    this.name = 'DatabaseNotMigrated';
  }
}
