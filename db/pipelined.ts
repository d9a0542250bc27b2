/**
 * Pipelined transaction boundaries, for the worker's pool (pg's pipeline mode): BEGIN goes out
 * with a transaction's first statement, COMMIT right behind its last (LAST_IN_TRANSACTION). Every
 * worker transaction's atomicity rests on the one invariant this module keeps:
 *
 *   Between Kysely's BEGIN and its COMMIT or ROLLBACK, a statement on the connection runs inside
 *   the transaction or fails. None runs in autocommit, whatever form it comes in (a text, or a
 *   query config such as usePreparedStatements passes on), and whatever its caller does after a
 *   failure.
 */
import type pg from 'pg';

/**
 * A statement whose text carries this mark is the last of its transaction: the COMMIT is sent
 * right behind it, without waiting for its answer (see pipelineTransactionBoundaries).
 */
export const LAST_IN_TRANSACTION = '/* last in transaction */ ';

type QueryFn = (config: unknown, values?: unknown, callback?: unknown) => unknown;
type Result = { command: string; rowCount: number | null; rows: unknown[] };

/** Raised when a transaction whose last statement committed it is asked to roll back: a caller ran something that failed after it. */
export class CommittedAhead extends Error {
  constructor(options?: { cause: unknown }) {
    super('the transaction was committed with its last statement (LAST_IN_TRANSACTION), then asked to roll back', options);
    this.name = 'CommittedAhead';
  }
}

/** Kysely's transaction boundaries (its PostgresDriver's): a bare text, no values, no callback. */
function boundaryOf(config: unknown, values: unknown, callback: unknown): 'begin' | 'commit' | 'rollback' | undefined {
  if (typeof config !== 'string' || callback !== undefined || (values !== undefined && !(Array.isArray(values) && values.length === 0))) return undefined;
  const text = config.trim().toLowerCase();
  if (text === 'begin' || text.startsWith('start transaction')) return 'begin';
  return text === 'commit' || text === 'rollback' ? text : undefined;
}

/** The text of a statement however pg is given it: a string, or a config (`{ text, name, values }`). */
function textOf(config: unknown): string {
  const text = typeof config === 'string' ? config : (config as { text?: unknown } | null)?.text;
  return typeof text === 'string' ? text : '';
}

/**
 * Saves two of a transaction's round trips on a client in pg's pipeline mode (`pipeline: true`):
 * Kysely sends BEGIN, waits, sends the first statement, waits ..., sends the last, waits, sends
 * COMMIT, waits. Here
 *
 * - BEGIN is held back and goes out right before the transaction's first statement, whatever its
 *   form (nothing depends on its answer: if it failed, so does the statement behind it, and the
 *   error is BEGIN's);
 * - a statement marked LAST_IN_TRANSACTION goes out with the COMMIT right behind it; Kysely's
 *   COMMIT then gets that answer. If the statement fails, Postgres answers the COMMIT of the
 *   aborted transaction with ROLLBACK: nothing is committed, and Kysely's ROLLBACK is answered
 *   with that. A caller MUST NOT run anything in the transaction after such a statement: from
 *   then on until Kysely ends the transaction, every statement is refused (thrown, never sent),
 *   and a ROLLBACK throws CommittedAhead (the transaction committed).
 *
 * A BEGIN not recognised goes out as it is: its transaction runs without the COMMIT sent ahead.
 * Statements outside transactions go as before.
 */
export function pipelineTransactionBoundaries(client: pg.PoolClient): void {
  const query = client.query.bind(client) as QueryFn;
  const answer = (command: string) => Promise.resolve({ command, rowCount: null, rows: [], fields: [] });
  /**
   * Outside a transaction; inside one whose BEGIN is held back; inside one whose BEGIN was sent;
   * or past the COMMIT sent behind its last statement (with that COMMIT's answer for Kysely's
   * COMMIT or ROLLBACK, and the first statement refused since).
   */
  let state: { is: 'idle' } | { is: 'held'; begin: string } | { is: 'open' } | { is: 'committed'; commit: Promise<Result>; refused?: Error } = { is: 'idle' };
  client.query = ((config: unknown, values?: unknown, callback?: unknown) => {
    const boundary = boundaryOf(config, values, callback);
    const ends = boundary === 'commit' || boundary === 'rollback';
    if (state.is === 'committed') {
      const { commit, refused } = state;
      if (!ends) {
        const error = new Error(`a statement after the transaction's last one (LAST_IN_TRANSACTION): ${textOf(config).slice(0, 80)}`);
        state.refused ??= error;
        throw error;
      }
      state = { is: 'idle' };
      if (boundary === 'commit') return commit;
      return commit.then((result) => (result.command === 'COMMIT' ? Promise.reject(new CommittedAhead(refused ? { cause: refused } : undefined)) : result));
    }
    if (boundary === 'begin' && state.is === 'idle') {
      state = { is: 'held', begin: config as string };
      return answer('BEGIN');
    }
    // a transaction that ran no statement: nothing was sent, nothing to end
    if (state.is === 'held' && ends) {
      state = { is: 'idle' };
      return answer(boundary.toUpperCase());
    }
    const started = state.is === 'held' ? (query(state.begin) as Promise<Result>) : undefined;
    if (started) state = { is: 'open' };
    const statement = query(config, values, callback);
    if (ends) state = { is: 'idle' };
    else if (state.is === 'open' && textOf(config).includes(LAST_IN_TRANSACTION)) {
      const commit = query('commit') as Promise<Result>;
      commit.catch(() => {}); // its answer goes to Kysely's COMMIT or ROLLBACK
      state = { is: 'committed', commit };
    }
    if (!started) return statement;
    if (statement instanceof Promise) return Promise.all([started, statement]).then(([, result]) => result as unknown);
    // a callback or a submittable gets its own answer (BEGIN fails only with the connection, and the statement with it)
    started.catch(() => {});
    return statement;
  }) as typeof client.query;
}
