import { createHash } from 'node:crypto';
import { CompiledQuery } from 'kysely';
import type pg from 'pg';
import type { Executor } from './database.js';

/** Statements whose text begins with this mark run as named prepared statements. */
const MARK = '/* prepared */ ';

/**
 * Runs a compiled query as a named prepared statement of the connection: Postgres parses it once
 * per connection and may keep its plan, where an unnamed statement is parsed and planned on every
 * call (for the worker's short statements, most of their cost). Only for statements of a fixed
 * shape whose best plan does not depend on the values: each distinct text stays prepared on each
 * connection it ran on, for the life of the connection. (After a migration that changes the
 * columns such a statement returns, restart the processes.)
 */
export async function executePrepared<R>(db: Executor, query: CompiledQuery<R>): Promise<R[]> {
  const result = await db.executeQuery<R>(CompiledQuery.raw(MARK + query.sql, [...query.parameters]));
  return result.rows;
}

const names = new Map<string, string>();

/** The statement name of a text: the same on every connection, distinct per text. */
function statementName(text: string): string {
  let name = names.get(text);
  if (name === undefined) {
    name = `p_${createHash('sha1').update(text).digest('hex').slice(0, 24)}`;
    names.set(text, name);
  }
  return name;
}

/** Makes a new pool client run marked statements (see executePrepared) as named statements. */
export function usePreparedStatements(client: pg.PoolClient): void {
  const query = client.query.bind(client) as (config: unknown, values?: unknown, callback?: unknown) => unknown;
  client.query = ((config: unknown, values?: unknown, callback?: unknown) => {
    if (typeof config === 'string' && config.startsWith(MARK)) return query({ name: statementName(config), text: config, values }, undefined, callback);
    return query(config, values, callback);
  }) as typeof client.query;
}
