import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { createDb } from '../../db/create-db.js';
import type { Db } from '../../db/database.js';
import { migrateToLatest } from '../../db/migrate.js';

/** The server tests create their databases on (trust auth on this machine and in CI). */
export const TEST_SERVER_URL = process.env.TEST_DATABASE_SERVER_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

export function databaseUrl(name: string): string {
  const url = new URL(TEST_SERVER_URL);
  url.pathname = `/${name}`;
  return url.toString();
}

export function uniqueName(prefix: string): string {
  return `${prefix}_${randomBytes(6).toString('hex')}`;
}

/** Drops a database, disconnecting whoever is still on it. */
export async function dropDatabase(name: string): Promise<void> {
  const admin = new pg.Client({ connectionString: TEST_SERVER_URL });
  await admin.connect();
  try {
    await admin.query(`drop database if exists ${pg.escapeIdentifier(name)} with (force)`);
  } finally {
    await admin.end();
  }
}

export interface TestDatabase {
  name: string;
  url: string;
  db: Db;
  drop(): Promise<void>;
}

/** A new, migrated database of its own; `drop()` removes it. */
export async function createTestDatabase(): Promise<TestDatabase> {
  const name = uniqueName('rev_test');
  const url = databaseUrl(name);
  await migrateToLatest(url);
  const db = createDb(url, { max: 4, applicationName: 'revocation-test' });
  return {
    name,
    url,
    db,
    async drop() {
      await db.destroy();
      await dropDatabase(name);
    },
  };
}
