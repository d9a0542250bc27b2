import { sql } from 'kysely';
import type { JobProgress, JobState, StoredError } from '../../contracts/index.js';
import type { CommandRow, NewCommand } from '../command.table.js';
import type { Executor } from '../database.js';

/**
 * Inserts a command. With an idempotency key already used by the same submitter, inserts
 * nothing and returns `{ inserted: false, row: <the earlier command> }`. Concurrent inserts with
 * one key wait on each other's unique-index entry, so exactly one command is created.
 */
export async function insertCommand(db: Executor, command: NewCommand): Promise<{ inserted: boolean; row: CommandRow }> {
  const inserted = await db
    .insertInto('commands')
    .values(command)
    .onConflict((oc) => oc.columns(['submitter_id', 'idempotency_key']).where('idempotency_key', 'is not', null).doNothing())
    .returningAll()
    .executeTakeFirst();
  if (inserted) return { inserted: true, row: inserted };
  const existing = await db
    .selectFrom('commands')
    .selectAll()
    .where('submitter_id', '=', command.submitter_id)
    .where('idempotency_key', '=', command.idempotency_key ?? null)
    .executeTakeFirstOrThrow();
  return { inserted: false, row: existing };
}

/** Takes a command ID; returns the command or undefined. */
export async function findCommand(db: Executor, id: string): Promise<CommandRow | undefined> {
  return db.selectFrom('commands').selectAll().where('id', '=', id).executeTakeFirst();
}

/** Locks the command row for the rest of the transaction; returns it or undefined. */
export async function lockCommand(trx: Executor, id: string): Promise<CommandRow | undefined> {
  return trx.selectFrom('commands').selectAll().where('id', '=', id).forUpdate().executeTakeFirst();
}

/**
 * Marks a delivery of the command: state running, attempts + 1, started_at on the first one.
 * Returns the row after the update; a terminal command is returned unchanged.
 */
export async function markRunning(db: Executor, id: string): Promise<CommandRow | undefined> {
  const updated = await db
    .updateTable('commands')
    .set((eb) => ({ state: 'running', attempts: eb('attempts', '+', 1), started_at: sql`coalesce(started_at, now())` }))
    .where('id', '=', id)
    .where('state', 'in', ['queued', 'running'])
    .returningAll()
    .executeTakeFirst();
  return updated ?? findCommand(db, id);
}

/** Saves a batched command's progress and resume point (same transaction as the batch). */
export async function saveCheckpoint(trx: Executor, id: string, progress: JobProgress | null, checkpoint: Record<string, unknown>): Promise<void> {
  await trx
    .updateTable('commands')
    .set({ progress: progress === null ? null : JSON.stringify(progress), checkpoint: JSON.stringify(checkpoint) })
    .where('id', '=', id)
    .execute();
}

/** Ends the command: succeeded with a result, or failed with an error. */
export async function finishCommand(
  trx: Executor,
  id: string,
  outcome: { state: Extract<JobState, 'succeeded'>; result: Record<string, unknown>; progress?: JobProgress | null } | { state: Extract<JobState, 'failed'>; error: StoredError },
): Promise<void> {
  await trx
    .updateTable('commands')
    .set({
      state: outcome.state,
      result: outcome.state === 'succeeded' ? JSON.stringify(outcome.result) : null,
      error: outcome.state === 'failed' ? JSON.stringify(outcome.error) : null,
      ...(outcome.state === 'succeeded' && outcome.progress !== undefined ? { progress: outcome.progress === null ? null : JSON.stringify(outcome.progress) } : {}),
      finished_at: sql`now()`,
    })
    .where('id', '=', id)
    .execute();
}

/** Non-terminal commands accepted before `olderThan`, oldest first (the reconciler's list). */
export async function listUnfinishedCommands(db: Executor, olderThan: Date, limit: number): Promise<{ id: string; state: JobState }[]> {
  return db
    .selectFrom('commands')
    .select(['id', 'state'])
    .where('state', 'in', ['queued', 'running'])
    .where('created_at', '<', olderThan)
    .orderBy('created_at')
    .limit(limit)
    .execute();
}

/** The channel a transaction NOTIFYs with `done:<id>` or `step:<id>` when it commits a command step. */
export const COMMAND_CHANNEL = 'revocation_commands';

/** Sends NOTIFY on `channel` with `payload`; delivered when the transaction commits. */
export async function notify(trx: Executor, channel: string, payload: string): Promise<void> {
  await sql`select pg_notify(${channel}, ${payload})`.execute(trx);
}
