import type { Queue } from 'bullmq';
import type { Logger } from 'pino';
import { addCommandJob, AppError, type AuditContext, type Command, type CommandJobData, isShortCommand } from '../../contracts/index.js';
import type { Db } from '../../db/database.js';
import type { RecordOutcome } from '../../db/repositories/command.repository.js';
import { TIMED_OUT, timeLimit } from '../../db/time-limit.js';
import { inSpan } from '../../observability/tracing.js';
import type { Caller } from '../access.js';
import { payloadHash } from './payload-hash.js';
import { RecordBatch } from './record-batch.js';

/** Longest wait for Redis to take a job before answering anyway (the reconciler enqueues it later). */
const ENQUEUE_TIMEOUT_MS = 2000;

/** A command accepted for the caller, about to be recorded. */
export interface CommandToRecord {
  /** The new command's ID (an Idempotency-Key replay keeps the earlier command's). */
  id: string;
  caller: Caller;
  command: Command;
  audit: AuditContext;
  idempotencyKey: string | undefined;
  /** What, beyond the command, makes a retry under the key the same request (payloadHash). */
  identity?: Record<string, unknown> | undefined;
}

/** Records commands (batched: record-batch.ts) and enqueues their jobs. */
export class CommandBus {
  readonly #records: RecordBatch;

  constructor(
    db: Db,
    readonly queue: Queue<CommandJobData>,
    readonly logger: Logger,
    recordBatchMax: number,
  ) {
    this.#records = new RecordBatch(db, recordBatchMax);
  }

  /**
   * Records the command durably, then enqueues it (job ID = command ID). The statement that
   * records it re-checks the caller's credential: `credentialHolds: false` when it no longer
   * holds (nothing recorded, nothing enqueued); else the command row, `inserted: false` for an
   * Idempotency-Key replay. Guarantees: the row is committed before this returns (accepted
   * means durable); a failed enqueue is logged, not thrown, since the reconciler enqueues every
   * unfinished command; a key reused with another command is PV3010.
   */
  recordCommand(submission: CommandToRecord): Promise<RecordOutcome> {
    return inSpan('record command', () => this.#record(submission), {
      attributes: { 'revocation.command_id': submission.id, 'revocation.command_type': submission.command.type },
    });
  }

  /** Adds the command's job (addCommandJob). */
  addJob(job: CommandJobData): Promise<void> {
    return addCommandJob(this.queue, job);
  }

  async #record(submission: CommandToRecord): Promise<RecordOutcome> {
    const hash = payloadHash(submission.command, submission.audit, submission.identity);
    const outcome = await this.#records.record({
      command: {
        id: submission.id,
        type: submission.command.type,
        payload: submission.command,
        payload_hash: hash,
        submitter_id: submission.caller.subject.id,
        idempotency_key: submission.idempotencyKey ?? null,
        audit: submission.audit,
      },
      credential: submission.caller,
    });
    if (!outcome.credentialHolds) return outcome;
    const { inserted, row } = outcome;
    if (!inserted && row.payload_hash !== hash) {
      throw new AppError('PV3010', { idempotency_key: submission.idempotencyKey ?? '', job_id: row.id });
    }
    if (row.state === 'queued' || row.state === 'running') {
      await this.#enqueue({ command_id: row.id, short: isShortCommand(submission.command) });
    }
    return outcome;
  }

  async #enqueue(job: CommandJobData): Promise<void> {
    const failure = await timeLimit(this.addJob(job), ENQUEUE_TIMEOUT_MS).then(
      (added) => (added === TIMED_OUT ? new Error(`enqueue timed out after ${ENQUEUE_TIMEOUT_MS} ms`) : undefined),
      (error: unknown) => error,
    );
    if (failure !== undefined) this.logger.warn({ err: failure, job_id: job.command_id }, 'command recorded but not enqueued; the reconciler will enqueue it');
  }
}
