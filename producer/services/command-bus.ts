import { createHash } from 'node:crypto';
import type { Queue } from 'bullmq';
import DataLoader from 'dataloader';
import type { Logger } from 'pino';
import { AppError, type AuditContext, type Command, COMMAND_JOB_NAME, COMMAND_JOB_OPTIONS, type CommandJobData, isShortCommand } from '../../contracts/index.js';
import type { CommandRow } from '../../db/command.table.js';
import type { Db } from '../../db/database.js';
import { type CommandRecord, insertCommands, type RecordOutcome } from '../../db/repositories/command.repository.js';
import { inSpan } from '../../observability/tracing.js';
import { type Caller, StaleCredential } from '../access.js';

/** Longest wait for Redis to take a job before answering anyway (the reconciler enqueues it later). */
const ENQUEUE_TIMEOUT_MS = 2000;

/** Most commands one statement records. */
export const MAX_RECORD_BATCH = 64;

/**
 * Records commands and enqueues their jobs. Commands submitted in the same turn of the event
 * loop are recorded by ONE statement (insertCommands): under load one INSERT and one commit
 * serve many requests, each still answered only once its own row is committed. Nothing waits for company: a batch leaves at the end of the turn it was
 * started in (DataLoader, scheduled by setImmediate). If a batch of records fails as a whole,
 * each is tried alone, so one bad item fails alone; each job has its own outcome.
 */
export class CommandBus {
  readonly #records: DataLoader<CommandRecord, RecordOutcome>;

  constructor(
    readonly db: Db,
    readonly queue: Queue<CommandJobData>,
    readonly logger: Logger,
  ) {
    const options = { cache: false, maxBatchSize: MAX_RECORD_BATCH, batchScheduleFn: (callback: () => void) => setImmediate(callback) };
    this.#records = new DataLoader((records) => eachAloneOnFailure(records, (batch) => insertCommands(db, batch)), options);
  }

  /** Records a command for `credential` (see insertCommands); resolves once its row is committed. */
  record(record: CommandRecord): Promise<RecordOutcome> {
    return this.#records.load(record);
  }

  /** Adds the command's job (job ID = command ID; adding it again changes nothing). */
  async addJob(job: CommandJobData): Promise<void> {
    await this.queue.add(COMMAND_JOB_NAME, job, { ...COMMAND_JOB_OPTIONS, jobId: job.command_id });
  }
}

const asError = (error: unknown): Error => (error instanceof Error ? error : new Error(String(error)));

/** Runs `run` on the whole batch; if that throws, on each item alone (errors become that item's result). */
async function eachAloneOnFailure<I, O>(items: readonly I[], run: (batch: readonly I[]) => Promise<O[]>): Promise<(O | Error)[]> {
  try {
    return await run(items);
  } catch (error) {
    if (items.length === 1) return [asError(error)];
    return Promise.all(items.map((item) => run([item]).then((results) => results[0] as O, asError)));
  }
}

export interface Submission {
  /** The new command's ID (an Idempotency-Key replay keeps the earlier command's). */
  id: string;
  caller: Caller;
  command: Command;
  audit: AuditContext;
  idempotencyKey: string | undefined;
  /** What, beyond the command, makes a retry under the key the same request (payloadHash). */
  identity?: Record<string, unknown> | undefined;
}

/**
 * JSON with keys sorted at every depth (UTF-16 order), undefined members left out: equal
 * commands hash equally. Its output MUST NOT change: stored payload hashes are compared with it
 * on Idempotency-Key replays (test/unit/payload-hash.test.ts holds known hashes).
 */
function canonical(value: unknown): string {
  if (Array.isArray(value)) {
    let out = '[';
    for (let i = 0; i < value.length; i++) out += `${i > 0 ? ',' : ''}${canonical(value[i]) ?? ''}`;
    return `${out}]`;
  }
  if (value && typeof value === 'object') {
    const object = value as Record<string, unknown>;
    let out = '{';
    for (const key of Object.keys(object).sort()) {
      const member = object[key];
      if (member === undefined) continue;
      out += `${out.length > 1 ? ',' : ''}${JSON.stringify(key)}:${canonical(member)}`;
    }
    return `${out}}`;
  }
  return JSON.stringify(value);
}

/**
 * What makes two submissions "the same command": the command, its scope and its reason, and the
 * route's `identity` when it has one (a Keystone revoke: the subject token it was named by).
 */
export function payloadHash(command: Command, audit: AuditContext, identity?: Record<string, unknown>): string {
  const { tenant_ids, reason, adhoc_reason, custom_audit } = audit;
  return createHash('sha256').update(canonical({ command, tenant_ids, reason, adhoc_reason, custom_audit, identity })).digest('hex');
}

/**
 * Records the command durably, then enqueues it (job ID = command ID). Returns the command row
 * and whether it is an Idempotency-Key replay. The statement that records it re-checks the
 * caller's credential: StaleCredential when it no longer holds (nothing recorded, nothing
 * enqueued). Guarantees: the row is committed before this returns (accepted means durable); a
 * failed enqueue is logged, not thrown, since the reconciler enqueues every unfinished command;
 * a key reused with another command is PV3010.
 */
export function recordCommand(bus: CommandBus, submission: Submission): Promise<{ row: CommandRow; replayed: boolean }> {
  return inSpan('record command', () => record(bus, submission), { attributes: { 'revocation.command_id': submission.id, 'revocation.command_type': submission.command.type } });
}

async function record(bus: CommandBus, submission: Submission): Promise<{ row: CommandRow; replayed: boolean }> {
  const hash = payloadHash(submission.command, submission.audit, submission.identity);
  const outcome = await bus.record({
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
  if (!outcome.credentialHolds) throw new StaleCredential();
  const { inserted, row } = outcome;
  if (!inserted && row.payload_hash !== hash) {
    throw new AppError('PV3010', { idempotency_key: submission.idempotencyKey ?? '', job_id: row.id });
  }
  if (row.state === 'queued' || row.state === 'running') {
    await enqueue(bus, { command_id: row.id, short: isShortCommand(submission.command) });
  }
  return { row, replayed: !inserted };
}

async function enqueue(bus: CommandBus, job: CommandJobData): Promise<void> {
  const id = job.command_id;
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([bus.addJob(job), new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`enqueue timed out after ${ENQUEUE_TIMEOUT_MS} ms`)), ENQUEUE_TIMEOUT_MS)))]);
  } catch (error) {
    bus.logger.warn({ err: error, job_id: id }, 'command recorded but not enqueued; the reconciler will enqueue it');
  } finally {
    clearTimeout(timer);
  }
}
