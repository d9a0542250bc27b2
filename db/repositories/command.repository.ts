import { type QueryCreator, sql } from 'kysely';
import type { AuditContext, JobProgress, JobState, RevocationEvent, StoredError } from '../../contracts/index.js';
import type { CommandRow, NewCommand } from '../command.table.js';
import type { Database, Executor } from '../database.js';
import { type AuditEntry, auditRows } from './audit-log.repository.js';
import { outboxRows } from './outbox.repository.js';

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

/** How a step leaves the command: ended (succeeded or failed), or checkpointed for the next step. */
export type StepEnd =
  | { state: Extract<JobState, 'succeeded'>; result: Record<string, unknown>; progress?: JobProgress | null }
  | { state: Extract<JobState, 'failed'>; error: StoredError }
  | { state: Extract<JobState, 'running'>; progress: JobProgress | null; checkpoint: Record<string, unknown> };

export interface StepRecord {
  id: string;
  audit: AuditContext;
  entries: readonly AuditEntry[];
  events: readonly RevocationEvent[];
  end: StepEnd;
}

/**
 * Writes what a command step leaves behind, in the caller's transaction and in ONE statement:
 * its audit rows and outbox events (data-modifying CTEs), the command's terminal state or
 * checkpoint, and a NOTIFY on COMMAND_CHANNEL (`done:<id>` or `step:<id>`, delivered at commit).
 * One round trip instead of four: the worker's cost per command is mostly round trips.
 */
export async function commitStep(trx: Executor, step: StepRecord): Promise<void> {
  const { id, end } = step;
  const audit = auditRows(id, step.audit, step.entries);
  const outbox = outboxRows(id, step.events);
  let writer: QueryCreator<Database> = trx;
  if (audit.length > 0) writer = writer.with('audit_rows', (qc) => qc.insertInto('audit_log').values(audit)) as unknown as QueryCreator<Database>;
  if (outbox.length > 0) writer = writer.with('outbox_rows', (qc) => qc.insertInto('outbox').values(outbox)) as unknown as QueryCreator<Database>;
  const json = (value: unknown) => (value === null ? null : JSON.stringify(value));
  const set =
    end.state === 'running'
      ? { progress: json(end.progress), checkpoint: JSON.stringify(end.checkpoint) }
      : {
          state: end.state,
          result: end.state === 'succeeded' ? JSON.stringify(end.result) : null,
          error: end.state === 'failed' ? JSON.stringify(end.error) : null,
          ...(end.state === 'succeeded' && end.progress !== undefined ? { progress: json(end.progress) } : {}),
          finished_at: sql<Date>`now()`,
        };
  const payload = `${end.state === 'running' ? 'step' : 'done'}:${id}`;
  await writer
    .updateTable('commands')
    .set(set)
    .where('id', '=', id)
    .returning(sql<string>`pg_notify(${COMMAND_CHANNEL}, ${payload})`.as('notified'))
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
