import { AppError, decodeJobCursor, encodeJobCursor, isIsoDay, type JobListQuery, type JobPage, type JobView } from '../../contracts/index.js';
import type { CommandRow } from '../../db/command.table.js';
import type { Db } from '../../db/database.js';
import { findCommand, listCommands } from '../../db/repositories/command.repository.js';
import type { Caller } from '../access.js';

/** The job view of SPEC §5. */
export function jobView(row: CommandRow): JobView {
  return {
    job_id: row.id,
    type: row.type,
    state: row.state,
    attempts: row.attempts,
    progress: row.progress,
    result: row.result,
    error: row.error,
    idempotency_key: row.idempotency_key,
    created_at: row.created_at.toISOString(),
    started_at: row.started_at?.toISOString() ?? null,
    finished_at: row.finished_at?.toISOString() ?? null,
  };
}

/** A job visible to the caller: its submitter, or `subjects:admin`. Anyone else: PV3005. */
export async function findJobFor(db: Db, caller: Caller, id: string): Promise<CommandRow> {
  const row = await findCommand(db, id);
  if (!row || (row.submitter_id !== caller.subject.id && !caller.subject.capabilities.includes('subjects:admin'))) {
    throw new AppError('PV3005', { job_id: id });
  }
  return row;
}

/**
 * The page of jobs the caller may see (SPEC §5: the jobs it submitted; every job for
 * `subjects:admin`), newest first, starting after `query.cursor`. `next_cursor` is null on the
 * last page: one row more than the page is read to know.
 */
export async function listJobsFor(db: Db, caller: Caller, query: JobListQuery): Promise<JobPage> {
  const { subject } = caller;
  const rows = await listCommands(
    db,
    {
      submitterId: subject.capabilities.includes('subjects:admin') ? undefined : subject.id,
      state: query.state,
      type: query.type,
      since: query.since !== undefined && isIsoDay(query.since) ? `${query.since}T00:00:00Z` : query.since,
      after: query.cursor !== undefined ? decodeJobCursor(query.cursor) : undefined,
    },
    query.limit + 1,
  );
  const page = rows.slice(0, query.limit);
  const last = page.at(-1);
  return { jobs: page.map(jobView), next_cursor: rows.length > query.limit && last ? encodeJobCursor(last.position) : null };
}
