import type pg from 'pg';

/**
 * A statement whose text carries this mark is the last of its transaction: the COMMIT is sent
 * right behind it, without waiting for its answer (see pipelineTransactionBoundaries).
 */
export const LAST_IN_TRANSACTION = '/* last in transaction */ ';

type QueryFn = (config: unknown, values?: unknown, callback?: unknown) => unknown;
type Result = { command: string; rowCount: number | null; rows: unknown[] };

/** Kysely's BEGIN statements (its PostgresDriver.beginTransaction). */
const isBegin = (text: string) => text === 'begin' || text.startsWith('start transaction');

/** Raised when a transaction whose last statement committed it is asked to roll back: a caller ran JS that failed after it. */
export class CommittedAhead extends Error {
  constructor() {
    super('the transaction was committed with its last statement (LAST_IN_TRANSACTION), then asked to roll back');
    this.name = 'CommittedAhead';
  }
}

/**
 * Saves two of a transaction's round trips on a client in pg's pipeline mode (`pipeline: true`),
 * keeping its statements prepared: Kysely sends BEGIN, waits, sends the first statement, waits
 * ..., sends the last, waits, sends COMMIT, waits. Here
 *
 * - BEGIN is held back and goes out together with the transaction's first statement (nothing
 *   depends on its answer: if it failed, so does the statement behind it, and the error is
 *   BEGIN's);
 * - a statement marked LAST_IN_TRANSACTION goes out with the COMMIT right behind it; Kysely's
 *   COMMIT then gets that answer. If the statement fails, Postgres answers the COMMIT of the
 *   aborted transaction with ROLLBACK: nothing is committed, and Kysely's ROLLBACK is answered
 *   with that. A caller MUST NOT run anything in the transaction after such a statement: another
 *   statement is refused, and a ROLLBACK after the statement succeeded throws CommittedAhead (the
 *   transaction committed).
 *
 * Statements not so marked, and everything outside transactions, go as before.
 */
export function pipelineTransactionBoundaries(client: pg.PoolClient): void {
  const query = client.query.bind(client) as QueryFn;
  const answer = (command: string) => Promise.resolve({ command, rowCount: null, rows: [], fields: [] });
  /** Kysely's BEGIN, not sent yet. */
  let begin: string | undefined;
  /** Inside a transaction Kysely began (BEGIN sent or held). */
  let open = false;
  /** The COMMIT sent behind the transaction's last statement, for Kysely's COMMIT or ROLLBACK. */
  let commit: Promise<Result> | undefined;
  client.query = ((config: unknown, values?: unknown, callback?: unknown) => {
    if (typeof config !== 'string' || callback !== undefined) return query(config, values, callback);
    const bare = values === undefined || (Array.isArray(values) && values.length === 0);
    const ends = bare && (config === 'commit' || config === 'rollback');
    if (commit) {
      const pending = commit;
      commit = undefined;
      open = false;
      if (config === 'commit') return pending;
      if (config === 'rollback') return pending.then((result) => (result.command === 'COMMIT' ? Promise.reject(new CommittedAhead()) : result));
      return Promise.reject(new Error(`a statement after the transaction's last one (LAST_IN_TRANSACTION): ${config.slice(0, 80)}`));
    }
    if (bare && isBegin(config)) {
      begin = config;
      open = true;
      return answer('BEGIN');
    }
    const held = begin;
    begin = undefined;
    if (ends) open = false;
    // a transaction that ran no statement: nothing was sent, nothing to end
    if (held !== undefined && ends) return answer(config.toUpperCase());
    const started = held === undefined ? undefined : (query(held) as Promise<Result>);
    const statement = query(config, values) as Promise<Result>;
    if (open && config.includes(LAST_IN_TRANSACTION)) {
      commit = query('commit') as Promise<Result>;
      commit.catch(() => {}); // its answer goes to Kysely's COMMIT or ROLLBACK
    }
    return started ? Promise.all([started, statement]).then(([, result]) => result) : statement;
  }) as typeof client.query;
}
