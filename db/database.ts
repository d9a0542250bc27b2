import { setTimeout as sleep } from 'node:timers/promises';
import type { Kysely, Transaction } from 'kysely';
import type { AccessTokenTable } from './access-token.table.js';
import type { AuditLogTable } from './audit-log.table.js';
import type { CollectionTable } from './collection.table.js';
import type { CommandCancellationTable } from './command-cancellation.table.js';
import type { CommandTable } from './command.table.js';
import type { OutboxTable } from './outbox.table.js';
import type { SubjectTable } from './subject.table.js';
import type { VaultTokenTable } from './vault-token.table.js';

export interface Database {
  collections: CollectionTable;
  vault_tokens: VaultTokenTable;
  subjects: SubjectTable;
  access_tokens: AccessTokenTable;
  commands: CommandTable;
  command_cancellations: CommandCancellationTable;
  audit_log: AuditLogTable;
  outbox: OutboxTable;
}

export type Db = Kysely<Database>;
export type Trx = Transaction<Database>;
/** Repositories take either: the caller decides whether a transaction is open. */
export type Executor = Db | Trx;

/**
 * The statement's connection died under it: the server ended the session (57P01 terminated by
 * an administrator or a restart, 57P02 a crash) or the socket closed. What the statement did
 * was rolled back, unless a COMMIT had been sent.
 */
export function isConnectionLost(error: unknown): boolean {
  const e = error as { code?: unknown; message?: unknown } | null;
  if (typeof e?.code === 'string' && connectionLostCodes.has(e.code)) return true;
  return typeof e?.message === 'string' && /Connection terminated|not queryable|Client was closed/i.test(e.message);
}

const connectionLostCodes = new Set(['57P01', '57P02', 'ECONNRESET', 'EPIPE']);

/**
 * The database is out of reach, the request or command not at fault: the connection was lost
 * (isConnectionLost; in a transaction, Kysely's ROLLBACK on the dead client then fails with pg's
 * "not queryable", which replaces the first error), none could be made (refused, timed out, no
 * such host, the pool's connect timeout), or the server takes no sessions for now (SQLSTATE
 * classes 08 connection exception, 53 insufficient resources, 57P shutting down or starting up).
 */
export function isDatabaseUnavailable(error: unknown): boolean {
  if (isConnectionLost(error)) return true;
  const e = error as { code?: unknown; message?: unknown } | null;
  if (typeof e?.code === 'string' && unavailableCodes.test(e.code)) return true;
  return typeof e?.message === 'string' && /timeout exceeded when trying to connect/i.test(e.message);
}

const unavailableCodes = /^(ECONNREFUSED|ETIMEDOUT|ENOTFOUND|EAI_AGAIN|(08|53)[0-9A-Z]{3}|57P[0-9A-Z]{2})$/;

/**
 * Runs a read that comes before any write of its request; if its connection was lost, runs it
 * once more, on another connection (createDb's pool drops the dead one). A restarted or
 * failed-over Postgres, or a terminated backend, then costs a retry, not an error. (Inside a
 * transaction the connection is the transaction's: the second try fails like the first.)
 */
export async function retryReadOnce<T>(read: () => Promise<T>): Promise<T> {
  try {
    return await read();
  } catch (error) {
    if (!isConnectionLost(error)) throw error;
    // the pool's idle connections to that server may have died with this one, and the pool drops
    // each only once it has read its closing: give it a moment, or the retry may take a dead one
    await sleep(SETTLE_MS);
    return read();
  }
}

/** How long a retry waits for the pool to notice the connections that died with the first try's. */
const SETTLE_MS = 50;

/** Orders bigint keys held as strings. */
export function compareKeys(a: string, b: string): number {
  return a.length - b.length || (a < b ? -1 : a > b ? 1 : 0);
}
