import { setTimeout as sleep } from 'node:timers/promises';
import { AppError, type Canceller, decodeJobCursor, encodeJobCursor, type JobListQuery, type JobPage, type JobState, type JobView, sinceInstant, terminalStates } from '../../contracts/index.js';
import type { CommandRow } from '../../db/command.table.js';
import type { Db } from '../../db/database.js';
import { listCommands } from '../../db/repositories/command-list.repository.js';
import { commitStep } from '../../db/repositories/command-step.repository.js';
import { findCommand, lockCommands, requestCancel, withdrawCancelRequest } from '../../db/repositories/command.repository.js';
import { cancellable, cancelRecord } from '../../worker/command-cancel.js';
import { commandsFinished } from '../../worker/metrics.js';
import type { Caller } from '../access.js';
import type { JobWaiter } from './job-waiter.js';

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
      since: query.since !== undefined ? sinceInstant(query.since) : undefined,
      after: query.cursor !== undefined ? decodeJobCursor(query.cursor) : undefined,
    },
    query.limit + 1,
  );
  const page = rows.slice(0, query.limit);
  const last = page.at(-1);
  return { jobs: page.map(jobView), next_cursor: rows.length > query.limit && last ? encodeJobCursor(last.position) : null };
}

/** How long a cancel waits for a step a worker is committing to end (one batch of a bulk delete, normally under a second). */
export const CANCEL_WAIT_MS = 10_000;
/** Between two tries to take the command row while a step holds it. */
const CANCEL_RETRY_MS = 1000;

/** How a cancel ended: the job is cancelled (`done`), or a step still holds it and will end it cancelled. */
export interface CancelOutcome {
  row: CommandRow;
  done: boolean;
}

/**
 * Cancels a job for the caller (SPEC §10): its submitter or `subjects:admin`, else PV3005 as if
 * it did not exist. A job no step holds (queued, between two steps, or whose worker died) is
 * ended `cancelled` at once, in one transaction on its row: its result (cancelledResult), an
 * audit row and the `command.cancelled` event, and a NOTIFY for whoever waits for it; a queued
 * job never runs, a bulk delete takes no further batch. While a worker's step holds the row, the
 * cancel is asked instead (command_cancellations, committed at once): the next step that locks
 * the command ends it cancelled and runs nothing, on whichever worker; this waits up to
 * CANCEL_WAIT_MS for that. Whichever commits first, the cancel or the job's own end, wins and the
 * other finds it so. Idempotent: a cancelled job is answered as it is. A job that succeeded or
 * failed is PV3011 (and a cancel it outran is withdrawn). Returns `done: false` with the job as
 * it is when the step has not ended in time: the cancel stands, and the job ends cancelled at its
 * next step.
 */
export async function cancelJob(deps: { db: Db; waiter: JobWaiter }, caller: Caller, id: string, requestId: string): Promise<CancelOutcome> {
  const { db, waiter } = deps;
  const seen = await findJobFor(db, caller, id);
  if (seen.state === 'cancelled') return { row: seen, done: true };
  if (terminalStates.includes(seen.state)) throw jobEnded(seen);
  if (!cancellable(seen)) throw notCancellable(seen);
  const by: Canceller = { id: caller.subject.id, kind: caller.subject.kind, request_id: requestId };
  const deadline = Date.now() + CANCEL_WAIT_MS;
  // no ticket (job-waiter.ts): a ticket is for a command about to be recorded, and one taken here
  // would end, when released, what a seed route's ticket for the same command had heard
  for (let asked = false; ; asked = true) {
    const taken = await db.transaction().execute(async (trx) => {
      const locked = (await lockCommands(trx, [id], { skipLocked: true })).get(id);
      if (!locked) {
        // a step holds it (or it is gone: the read below finds out): ask its next step to cancel
        if (!asked) await requestCancel(trx, id, by);
        return undefined;
      }
      if (terminalStates.includes(locked.state) || !cancellable(locked)) return { row: locked, ended: false };
      await withdrawCancelRequest(trx, id);
      await commitStep(trx, cancelRecord(locked, locked.cancel_request ?? by));
      return { row: locked, ended: true };
    });
    if (taken?.ended) {
      commandsFinished.inc({ type: taken.row.type, outcome: 'cancelled' });
      // its event goes out through the outbox relay: this process has no event publisher
      return { row: (await findCommand(db, id)) ?? taken.row, done: true };
    }
    const retryAt = Math.min(Date.now() + CANCEL_RETRY_MS, deadline);
    const state: JobState | undefined = taken ? taken.row.state : await waiter.wait(id, Math.max(0, retryAt - Date.now()));
    if (state !== undefined || taken || Date.now() >= deadline) {
      const row = await findCommand(db, id);
      if (!row) {
        // removed meanwhile (retention): so is what was asked of it
        await withdrawCancelRequest(db, id);
        throw new AppError('PV3005', { job_id: id });
      }
      if (row.state === 'cancelled') return { row, done: true };
      if (terminalStates.includes(row.state)) {
        await withdrawCancelRequest(db, id);
        throw jobEnded(row);
      }
      if (!cancellable(row)) {
        // it started meanwhile (a lockout's first step committed): its next step would not honour the cancel either
        await withdrawCancelRequest(db, id);
        throw notCancellable(row);
      }
      if (Date.now() >= deadline) return { row, done: false };
    }
    // the waiter answers early only when the producer is draining: do not spin on the row meanwhile
    if (Date.now() < retryAt) await sleep(retryAt - Date.now());
  }
}

function notCancellable(row: CommandRow): AppError {
  return new AppError('PV3013', { job_id: row.id, state: row.state }, `The ${row.type} job has started; it runs to its end (a lockout's remaining tokens must go, or an unlock would revive them).`);
}

function jobEnded(row: CommandRow): AppError {
  return new AppError('PV3011', { job_id: row.id, state: row.state }, `The job has already ${row.state}; only a queued or running job can be cancelled.`);
}
