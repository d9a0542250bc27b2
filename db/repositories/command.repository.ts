import { type QueryCreator, sql } from 'kysely';
import type { AuditContext, JobProgress, JobState, RevocationEvent, StoredError } from '../../contracts/index.js';
import type { CommandRow, NewCommand } from '../command.table.js';
import type { Database, Executor } from '../database.js';
import { executePrepared } from '../prepared.js';
import { type AuditEntry, auditRows } from './audit-log.repository.js';
import { outboxRows } from './outbox.repository.js';

/**
 * Inserts a command. With an idempotency key already used by the same submitter, inserts
 * nothing and returns `{ inserted: false, row: <the earlier command> }`. Concurrent inserts with
 * one key wait on each other's unique-index entry, so exactly one command is created.
 */
export async function insertCommand(db: Executor, command: NewCommand): Promise<{ inserted: boolean; row: CommandRow }> {
  const [inserted] = await executePrepared(
    db,
    db
      .insertInto('commands')
      .values({ ...command, idempotency_key: command.idempotency_key ?? null })
      .onConflict((oc) => oc.columns(['submitter_id', 'idempotency_key']).where('idempotency_key', 'is not', null).doNothing())
      .returningAll()
      .compile(),
  );
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
  const [row] = await executePrepared(db, db.selectFrom('commands').selectAll().where('id', '=', id).compile());
  return row;
}

/** Locks the command row for the rest of the transaction; returns it or undefined. */
export async function lockCommand(trx: Executor, id: string): Promise<CommandRow | undefined> {
  const [row] = await executePrepared(trx, trx.selectFrom('commands').selectAll().where('id', '=', id).forUpdate().compile());
  return row;
}

/** Keeps the rest of the transaction on one core (no parallel workers): for background work beside a command's steps. */
export async function useOneCore(trx: Executor): Promise<void> {
  await sql`set local max_parallel_workers_per_gather = 0`.execute(trx);
}

/** How a step leaves the command: ended (succeeded or failed), or checkpointed for the next step. */
export type StepEnd =
  | { state: Extract<JobState, 'succeeded'>; result: Record<string, unknown>; progress?: JobProgress | null }
  | { state: Extract<JobState, 'failed'>; error: StoredError }
  | { state: Extract<JobState, 'running'>; progress: JobProgress | null; checkpoint: Record<string, unknown> };

export interface StepRecord {
  id: string;
  /** The first step of a delivery: count the attempt (attempts + 1, started_at on the first one). */
  start: boolean;
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
  const started = step.start ? { attempts: sql<number>`attempts + 1`, started_at: sql<Date>`coalesce(started_at, now())` } : {};
  const set =
    end.state === 'running'
      ? { ...started, state: 'running' as const, progress: json(end.progress), checkpoint: JSON.stringify(end.checkpoint) }
      : {
          ...started,
          state: end.state,
          result: end.state === 'succeeded' ? JSON.stringify(end.result) : null,
          error: end.state === 'failed' ? JSON.stringify(end.error) : null,
          ...(end.state === 'succeeded' && end.progress !== undefined ? { progress: json(end.progress) } : {}),
          finished_at: sql<Date>`now()`,
        };
  const payload = `${end.state === 'running' ? 'step' : 'done'}:${id}`;
  await executePrepared(
    trx,
    writer
      .updateTable('commands')
      .set(set)
      .where('id', '=', id)
      .returning(sql<string>`pg_notify(${COMMAND_CHANNEL}, ${payload})`.as('notified'))
      .compile(),
  );
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
