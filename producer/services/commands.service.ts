import { createHash, randomUUID } from 'node:crypto';
import type { Queue } from 'bullmq';
import type { Logger } from 'pino';
import { AppError, type AuditContext, type Command, COMMAND_JOB_NAME, COMMAND_JOB_OPTIONS, type CommandJobData, isShortCommand, type JobView } from '../../contracts/index.js';
import type { CommandRow } from '../../db/command.table.js';
import type { Db } from '../../db/database.js';
import { findCommand, insertCommand } from '../../db/repositories/command.repository.js';
import { type Caller, StaleCredential } from '../access.js';

/** Longest wait for Redis to take a job before answering anyway (the reconciler enqueues it later). */
const ENQUEUE_TIMEOUT_MS = 2000;

export interface CommandBus {
  db: Db;
  queue: Queue<CommandJobData>;
  logger: Logger;
}

export interface Submission {
  caller: Caller;
  command: Command;
  audit: AuditContext;
  idempotencyKey: string | undefined;
}

/** JSON with keys sorted at every depth: equal commands hash equally. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>).filter(([, v]) => v !== undefined);
    return `{${entries.sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, v]) => `${JSON.stringify(k)}:${canonical(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/** What makes two submissions "the same command": the command, its scope and its reason. */
export function payloadHash(command: Command, audit: AuditContext): string {
  const { tenant_ids, reason, adhoc_reason, custom_audit } = audit;
  return createHash('sha256').update(canonical({ command, tenant_ids, reason, adhoc_reason, custom_audit })).digest('hex');
}

/**
 * Records the command durably, then enqueues it (job ID = command ID). Returns the command row
 * and whether it is an Idempotency-Key replay. The statement that records it re-checks the
 * caller's credential; StaleCredential when it no longer holds (nothing recorded, nothing
 * enqueued). Guarantees: the row is committed before this
 * returns (accepted means durable); a failed enqueue is logged, not thrown, since the
 * reconciler enqueues every unfinished command; a key reused with another command is PV3010.
 */
export async function submitCommand(bus: CommandBus, submission: Submission): Promise<{ row: CommandRow; replayed: boolean }> {
  const hash = payloadHash(submission.command, submission.audit);
  const outcome = await insertCommand(bus.db, {
    id: randomUUID(),
    type: submission.command.type,
    payload: JSON.stringify(submission.command),
    payload_hash: hash,
    submitter_id: submission.caller.subject.id,
    idempotency_key: submission.idempotencyKey ?? null,
    audit: JSON.stringify(submission.audit),
  }, submission.caller);
  if (!outcome.credentialHolds) throw new StaleCredential();
  const { inserted, row } = outcome;
  if (!inserted && row.payload_hash !== hash) {
    throw new AppError('PV3010', { idempotency_key: submission.idempotencyKey ?? '', job_id: row.id });
  }
  if (row.state === 'queued' || row.state === 'running') await enqueue(bus, { command_id: row.id, short: isShortCommand(submission.command) });
  return { row, replayed: !inserted };
}

async function enqueue(bus: CommandBus, job: CommandJobData): Promise<void> {
  const id = job.command_id;
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      bus.queue.add(COMMAND_JOB_NAME, job, { ...COMMAND_JOB_OPTIONS, jobId: id }),
      new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`enqueue timed out after ${ENQUEUE_TIMEOUT_MS} ms`)), ENQUEUE_TIMEOUT_MS))),
    ]);
  } catch (error) {
    bus.logger.warn({ err: error, job_id: id }, 'command recorded but not enqueued; the reconciler will enqueue it');
  } finally {
    clearTimeout(timer);
  }
}

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
