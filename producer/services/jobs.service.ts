import type { JobView } from '../../contracts/index.js';
import { AppError, AuditContext, terminalStates } from '../../contracts/index.js';
import type { CommandRow } from '../../db/command.table.js';
import type { Db } from '../../db/database.js';
import { commitStep, findCommand, limitLockWait, lockCommands } from '../../db/repositories/command.repository.js';
import { toEvents } from '../../worker/event-envelope.js';
import { commandsFinished } from '../../worker/metrics.js';
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

/** Whether the caller may see (and cancel) a job: its submitter, or `subjects:admin`. */
function visibleTo(caller: Caller, row: CommandRow): boolean {
  return row.submitter_id === caller.subject.id || caller.subject.capabilities.includes('subjects:admin');
}

/** A job visible to the caller: its submitter, or `subjects:admin`. Anyone else: PV3005. */
export async function findJobFor(db: Db, caller: Caller, id: string): Promise<CommandRow> {
  const row = await findCommand(db, id);
  if (!row || !visibleTo(caller, row)) throw new AppError('PV3005', { job_id: id });
  return row;
}

/**
 * The longest a cancel waits for the step a worker is committing (it holds the command row):
 * one batch of a bulk delete, normally well under a second.
 */
export const CANCEL_LOCK_WAIT_MS = 10_000;

/**
 * What a cancelled job had done: a delete, the tokens its committed batches deleted (its progress
 * counts them, committed with each batch); the other commands end in one step, so nothing.
 */
function cancelledResult(row: CommandRow): Record<string, unknown> | null {
  return row.type === 'tokens.delete' ? { deleted: row.progress?.processed ?? 0 } : null;
}

/**
 * Cancels a job for the caller (SPEC §10): its submitter or `subjects:admin`, else PV3005 as if
 * it did not exist. One transaction locks the command row, so it waits for a step a worker is
 * committing, and ends the command `cancelled` if it has not ended: a queued job never runs, and a
 * running bulk delete takes no batch after the one that committed (the worker's next step finds
 * the command ended). Its result (cancelledResult), an audit row and the `command.cancelled`
 * event commit with the state, and a NOTIFY wakes whoever waits for the job. Whichever commits
 * first, the cancel or the job's own end, wins; the other finds it so. Idempotent: a job already
 * cancelled is answered as it is. A job that succeeded or failed is PV3011; a step that holds the
 * row longer than CANCEL_LOCK_WAIT_MS, PV1009 (nothing changed, retry). Returns the command row.
 */
export async function cancelJob(db: Db, caller: Caller, id: string, requestId: string): Promise<CommandRow> {
  const seen = await findJobFor(db, caller, id);
  if (terminalStates.includes(seen.state) && seen.state !== 'cancelled') throw jobEnded(seen);
  if (seen.state === 'cancelled') return seen;
  let ended = false;
  const row = await db
    .transaction()
    .execute(async (trx) => {
      await limitLockWait(trx, CANCEL_LOCK_WAIT_MS);
      const locked = (await lockCommands(trx, [id])).get(id);
      if (!locked) throw new AppError('PV3005', { job_id: id }); // removed meanwhile (retention)
      if (locked.state === 'cancelled') return locked;
      if (terminalStates.includes(locked.state)) throw jobEnded(locked);
      const audit = AuditContext.parse(locked.audit);
      const payload = locked.payload as { collection?: unknown };
      const result = cancelledResult(locked);
      const data = { command_type: locked.type, result, cancelled_by: { id: caller.subject.id, kind: caller.subject.kind, request_id: requestId } };
      await commitStep(trx, {
        id,
        start: false,
        audit,
        entries: [{ action: 'command.cancelled', collection: typeof payload.collection === 'string' ? payload.collection : null, data }],
        events: toEvents(id, audit, [{ type: 'command.cancelled', data }]),
        end: { state: 'cancelled', result },
      });
      ended = true;
      return locked;
    })
    .catch((error: unknown) => {
      if ((error as { code?: unknown }).code === '55P03') {
        throw new AppError('PV1009', { job_id: id }, `The job's current step did not commit within ${CANCEL_LOCK_WAIT_MS / 1000} s; nothing was changed. Retry the cancel.`, { 'retry-after': '1' });
      }
      throw error;
    });
  if (!ended) return row;
  commandsFinished.inc({ type: row.type, outcome: 'cancelled' });
  // the event goes out through the outbox relay: this process has no event publisher
  return (await findCommand(db, id)) ?? row;
}

function jobEnded(row: CommandRow): AppError {
  return new AppError('PV3011', { job_id: row.id, state: row.state }, `The job has already ${row.state}; only a queued or running job can be cancelled.`);
}
