import type { JobView } from '../../contracts/index.js';
import { AppError } from '../../contracts/index.js';
import type { CommandRow } from '../../db/command.table.js';
import type { Db } from '../../db/database.js';
import { findCommand } from '../../db/repositories/command.repository.js';
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
