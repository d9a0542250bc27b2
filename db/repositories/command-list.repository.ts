/**
 * Lists of commands: the jobs a caller sees (keyset pages), the unfinished ones (the reconciler's,
 * a subject's lockout), and the ended ones past their retention (the sweeper's).
 */
import { sql } from 'kysely';
import type { CommandType, JobCursor, JobState } from '../../contracts/index.js';
import type { CommandRow } from '../command.table.js';
import type { Executor } from '../database.js';

/**
 * Takes a subject ID; returns the ID of a `subject.lockout` of that subject that has not ended
 * (queued or running), or undefined. Reads the pending commands only (index commands_pending).
 */
export async function findUnfinishedLockout(db: Executor, subjectId: string): Promise<string | undefined> {
  const row = await db
    .selectFrom('commands')
    .select('id')
    .where('state', 'in', ['queued', 'running'])
    .where('type', '=', 'subject.lockout')
    .where(sql<boolean>`payload -> 'subject' ->> 'id' = ${subjectId}`)
    .limit(1)
    .executeTakeFirst();
  return row?.id;
}

/** Non-terminal commands accepted before `olderThan`, oldest first (the reconciler's list). */
export async function listUnfinishedCommands(db: Executor, olderThan: Date, limit: number): Promise<{ id: string; state: JobState }[]> {
  return db.selectFrom('commands').select(['id', 'state']).where('state', 'in', ['queued', 'running']).where('created_at', '<', olderThan).orderBy('created_at').limit(limit).execute();
}

export interface CommandListFilter {
  /** Only this subject's commands; undefined: everyone's (subjects:admin). */
  submitterId?: string | undefined;
  state?: JobState | undefined;
  type?: CommandType | undefined;
  /** created_at >= this (a timestamptz literal: an ISO date-time with an offset). */
  since?: string | undefined;
  /** Commands after this position in the list (older, or as old with a smaller ID). */
  after?: JobCursor | undefined;
}

/** The exact created_at (microseconds, UTC) a cursor carries: a JS Date holds milliseconds only. */
const cursorTime = sql<string>`to_char(created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;

/**
 * Commands matching the filter, newest first (created_at, then ID, descending), at most
 * `limit`, each with its position for the next page's `after`. Keyset pagination: a page reads
 * only its own index entries (migration 0006: commands_created_at, commands_submitter_created_at,
 * commands_state_created_at), however deep it is.
 */
export async function listCommands(db: Executor, filter: CommandListFilter, limit: number): Promise<(CommandRow & { position: JobCursor })[]> {
  let query = db.selectFrom('commands').selectAll().select(cursorTime.as('position_time'));
  if (filter.submitterId !== undefined) query = query.where('submitter_id', '=', filter.submitterId);
  if (filter.state !== undefined) query = query.where('state', '=', filter.state);
  if (filter.type !== undefined) query = query.where('type', '=', filter.type);
  if (filter.since !== undefined) query = query.where('created_at', '>=', sql<Date>`${filter.since}::timestamptz`);
  const after = filter.after;
  if (after !== undefined) query = query.where(sql<boolean>`(created_at, id) < (${after.createdAt}::timestamptz, ${after.id}::uuid)`);
  const rows = await query.orderBy('created_at', 'desc').orderBy('id', 'desc').limit(limit).execute();
  return rows.map(({ position_time, ...row }) => ({ ...row, position: { createdAt: position_time, id: row.id } }));
}

/**
 * Deletes at most `limit` commands that ended (succeeded, failed or cancelled) more than
 * `retentionDays` ago, oldest first (index commands_finished_at), with their idempotency keys
 * (columns of the row) and any cancel still asked of them (one the job's own end outran);
 * returns how many. Their audit rows stay (audit_log has no foreign key to commands since
 * migration 0006). Rows another transaction holds are skipped, so a revocation never waits on it.
 */
export async function deleteFinishedCommands(db: Executor, retentionDays: number, limit: number): Promise<number> {
  const { rows } = await sql<{ n: number }>`
    with gone as (
      delete from commands where id in (
        select id from commands
        where finished_at < now() - make_interval(days => ${retentionDays}) and state in ('succeeded', 'failed', 'cancelled')
        order by finished_at
        limit ${limit}
        for update skip locked)
      returning id
    ), asked as (
      delete from command_cancellations where command_id in (select id from gone)
    )
    select count(*)::int as n from gone`.execute(db);
  return rows[0]?.n ?? 0;
}
