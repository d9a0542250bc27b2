import { describe, expect, it } from 'vitest';
import { isDatabaseUnavailable } from '../../db/database.js';

/** An error as pg (or Node's net) throws it: a message and, usually, a code. */
const error = (message: string, code?: string) => Object.assign(new Error(message), code === undefined ? {} : { code });

describe('isDatabaseUnavailable: the errors a Postgres out of reach throws (503 in the producer; the executor leaves the command to run again)', () => {
  it('a server stopping, starting, terminating sessions or out of resources (SQLSTATE classes 57P, 08, 53)', () => {
    expect(isDatabaseUnavailable(error('terminating connection due to administrator command', '57P01'))).toBe(true);
    expect(isDatabaseUnavailable(error('the database system is shutting down', '57P03'))).toBe(true);
    expect(isDatabaseUnavailable(error('the database system is starting up', '57P03'))).toBe(true);
    expect(isDatabaseUnavailable(error('sorry, too many clients already', '53300'))).toBe(true);
    expect(isDatabaseUnavailable(error('connection failure', '08006'))).toBe(true);
  });

  it('no connection: refused, reset, timed out, or lost under a transaction (its ROLLBACK then fails as "not queryable")', () => {
    expect(isDatabaseUnavailable(error('connect ECONNREFUSED 127.0.0.1:5432', 'ECONNREFUSED'))).toBe(true);
    expect(isDatabaseUnavailable(error('read ECONNRESET', 'ECONNRESET'))).toBe(true);
    expect(isDatabaseUnavailable(error('timeout exceeded when trying to connect'))).toBe(true);
    expect(isDatabaseUnavailable(error('Connection terminated unexpectedly'))).toBe(true);
    expect(isDatabaseUnavailable(error('Client was closed and is not queryable'))).toBe(true);
    expect(isDatabaseUnavailable(error('Client has encountered a connection error and is not queryable'))).toBe(true);
  });

  it('not errors of reach: conflicts, constraint violations, a cancelled statement, bugs', () => {
    expect(isDatabaseUnavailable(error('could not serialize access due to concurrent update', '40001'))).toBe(false);
    expect(isDatabaseUnavailable(error('duplicate key value violates unique constraint', '23505'))).toBe(false);
    expect(isDatabaseUnavailable(error('canceling statement due to statement timeout', '57014'))).toBe(false);
    expect(isDatabaseUnavailable(new TypeError("Cannot read properties of undefined (reading 'id')"))).toBe(false);
    expect(isDatabaseUnavailable(undefined)).toBe(false);
  });
});
