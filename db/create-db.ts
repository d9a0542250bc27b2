import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import type { Database, Db } from './database.js';
import { usePreparedStatements } from './prepared.js';

// int8 (counts, identity keys) arrive as strings; we keep them that way and convert where a
// number is wanted. timestamptz arrives as Date.

export interface CreateDbOptions {
  /** Pool size. Each process keeps at most this many connections. */
  max?: number;
  /** Name shown in pg_stat_activity, to tell producer, worker and tests apart. */
  applicationName?: string;
  /** How long to wait for a connection before failing (default 5 s). */
  connectionTimeoutMillis?: number;
}

/** A Kysely instance over a pg Pool. `db.destroy()` ends the pool. */
export function createDb(databaseUrl: string, options: CreateDbOptions = {}): Db {
  const pool = new pg.Pool({
    connectionString: databaseUrl,
    max: options.max ?? 10,
    application_name: options.applicationName ?? 'revocation',
    connectionTimeoutMillis: options.connectionTimeoutMillis ?? 5000,
    // TCP keepalive: a connection to a vanished server is noticed (and a relay leader's lock is
    // given up) without waiting for the next query to time out
    keepAlive: true,
    // A pool that grows keeps its connections (pg-pool's default closes one idle for 10 s). A
    // service's load comes and goes; closing a connection in a lull and opening it again when the
    // load returns puts a backend fork, a login, cold catalog caches and every prepared statement's
    // parse and plan on the path of the request that needed it (the benchmark saw six sessions
    // opened in a 10 s row at a steady 1,175 commands/s, and none with this). `max` bounds it.
    idleTimeoutMillis: 0,
  });
  // A client that loses its connection must not crash the process. The pool's 'error' covers
  // idle clients; a checked-out client between queries (inside a transaction that awaits Redis,
  // say) emits 'error' on itself, so every client gets a listener too. Its next query then fails
  // like any other (the caller's retry handles it) and the pool drops it on release.
  pool.on('error', () => {});
  pool.on('connect', (client) => {
    client.on('error', () => {});
    // A FATAL error ends the session (its backend was terminated, the server shuts down), but pg
    // takes it as the failure of the query in flight and the pool would hand the client out again
    // until the socket closes: end the client now, so that the pool drops it when it comes back.
    client.connection.on('errorMessage', (message: { severity?: string }) => {
      if (message.severity === 'FATAL') client.end().catch(() => {});
    });
    usePreparedStatements(client);
  });
  return new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
}
