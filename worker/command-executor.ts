import type { Logger } from 'pino';
import {
  AppError,
  AuditContext,
  Command,
  type CommandType,
  type EventDraft,
  type JobProgress,
  type StoredError,
  terminalStates,
} from '../contracts/index.js';
import type { CommandRow } from '../db/command.table.js';
import type { Db, Trx } from '../db/database.js';
import { appendAudit } from '../db/repositories/audit-log.repository.js';
import { COMMAND_CHANNEL, finishCommand, lockCommand, markRunning, notify, saveCheckpoint } from '../db/repositories/command.repository.js';
import { insertOutboxEvents } from '../db/repositories/outbox.repository.js';
import { toEvents } from './event-envelope.js';
import type { CommandHandler, HandlerSettings, StepContext, StepOutcome } from './handlers/handler.js';
import { handlers } from './handlers/index.js';
import { ConflictRetriesExhausted, type RetryPolicy, defaultRetryPolicy, runTransaction } from './transaction-runner.js';

export type ExecutionOutcome = { state: 'succeeded'; result: Record<string, unknown> } | { state: 'failed'; error: StoredError };

export interface ExecutorDeps {
  db: Db;
  logger: Logger;
  settings: HandlerSettings;
  retryPolicy?: RetryPolicy;
  /** Called after each commit that wrote outbox rows (the relay publishes them). */
  onCommitted?: () => void;
  /** Called when a transaction is retried after a conflict. */
  onConflictRetry?: (sqlState: string) => void;
  /** Called when this execution ended the command (not for a redelivery of an ended one). */
  onFinished?: (type: CommandType, state: 'succeeded' | 'failed', seconds: number) => void;
}

export interface ExecuteOptions {
  /** BullMQ will not retry after this attempt: a conflict now ends the command with PV3218. */
  finalAttempt: boolean;
  onProgress?: (progress: JobProgress) => void | Promise<void>;
}

/** Thrown when the job names a command that is not in Postgres: nothing to do, ever. */
export class CommandNotFound extends Error {}

function storedOutcome(row: CommandRow): ExecutionOutcome {
  return row.state === 'succeeded' ? { state: 'succeeded', result: row.result ?? {} } : { state: 'failed', error: row.error ?? { error_code: 'PV1000', message: 'failed', context: {} } };
}

function isTerminal(row: CommandRow): boolean {
  return terminalStates.includes(row.state);
}

/**
 * Executes a command to its end, exactly once in effect however often it is delivered.
 * Each step runs in one transaction that locks the command row, applies the handler's effect,
 * and commits audit rows, outbox events and the checkpoint or terminal state with it. A command
 * found terminal returns its stored outcome (a redelivered rotate returns the same mapping).
 *
 * Returns the outcome, failed included (business failures are recorded, not thrown). Throws
 * only for a transient fault (database unreachable, conflicts on a non-final attempt): the
 * command stays non-terminal and a later attempt resumes it from its last committed step.
 */
export async function executeCommand(deps: ExecutorDeps, commandId: string, options: ExecuteOptions): Promise<ExecutionOutcome> {
  const started = await markRunning(deps.db, commandId);
  if (!started) throw new CommandNotFound(`command ${commandId} is not in the database`);
  if (isTerminal(started)) return storedOutcome(started);
  const command = Command.parse(started.payload);
  const audit = AuditContext.parse(started.audit);
  const startedAt = process.hrtime.bigint();
  const finished = (outcome: ExecutionOutcome): ExecutionOutcome => {
    deps.onFinished?.(command.type, outcome.state, Number(process.hrtime.bigint() - startedAt) / 1e9);
    return outcome;
  };

  for (;;) {
    let step: { row: CommandRow; outcome?: StepOutcome<CommandType> };
    try {
      step = await runTransaction(deps.db, (trx) => runStep(deps, trx, commandId, command, audit), deps.retryPolicy ?? defaultRetryPolicy, deps.onConflictRetry);
    } catch (error) {
      if (error instanceof AppError) return finished(await recordFailure(deps, commandId, audit, command, error.toJSON()));
      if (error instanceof ConflictRetriesExhausted && options.finalAttempt) {
        return finished(await recordFailure(deps, commandId, audit, command, new AppError('PV3218', { sqlstate: error.sqlState }).toJSON()));
      }
      throw error;
    }
    if (!step.outcome) return storedOutcome(step.row);
    deps.onCommitted?.();
    if (step.outcome.progress) await options.onProgress?.(step.outcome.progress);
    if (step.outcome.done) return finished({ state: 'succeeded', result: step.outcome.result as Record<string, unknown> });
  }
}

/** One transaction: lock, step, write effects; returns the locked row and the step's outcome. */
async function runStep(deps: ExecutorDeps, trx: Trx, id: string, command: Command, audit: AuditContext): Promise<{ row: CommandRow; outcome?: StepOutcome<CommandType> }> {
  const row = await lockCommand(trx, id);
  if (!row) throw new CommandNotFound(`command ${id} is not in the database`);
  if (isTerminal(row)) return { row };
  const handler = handlers[command.type] as CommandHandler<CommandType>;
  const context: StepContext<CommandType> = { trx, commandId: id, command, audit, checkpoint: row.checkpoint, progress: row.progress, settings: deps.settings };
  const outcome = await handler.step(context);
  const drafts: EventDraft[] = [...outcome.events];
  if (outcome.done) drafts.push({ type: 'command.succeeded', data: { command_type: command.type, result: outcome.result as Record<string, unknown> } });
  await appendAudit(trx, id, audit, outcome.audit);
  await insertOutboxEvents(trx, id, toEvents(id, audit, drafts));
  if (outcome.done) await finishCommand(trx, id, { state: 'succeeded', result: outcome.result as Record<string, unknown>, ...(outcome.progress ? { progress: outcome.progress } : {}) });
  else await saveCheckpoint(trx, id, outcome.progress, outcome.checkpoint);
  await notify(trx, COMMAND_CHANNEL, `${outcome.done ? 'done' : 'step'}:${id}`);
  return { row, outcome };
}

/** Ends the command failed: error, audit row and `command.failed` event in one transaction. */
async function recordFailure(deps: ExecutorDeps, id: string, audit: AuditContext, command: Command, error: StoredError): Promise<ExecutionOutcome> {
  const { type } = command;
  const collection = 'collection' in command ? command.collection : null;
  const outcome = await runTransaction(deps.db, async (trx): Promise<ExecutionOutcome> => {
    const row = await lockCommand(trx, id);
    if (!row) throw new CommandNotFound(`command ${id} is not in the database`);
    if (isTerminal(row)) return storedOutcome(row);
    await finishCommand(trx, id, { state: 'failed', error });
    await appendAudit(trx, id, audit, [{ action: 'command.failed', collection, data: { command_type: type, error } }]);
    await insertOutboxEvents(trx, id, toEvents(id, audit, [{ type: 'command.failed', data: { command_type: type, error } }]));
    await notify(trx, COMMAND_CHANNEL, `done:${id}`);
    return { state: 'failed', error };
  }, deps.retryPolicy ?? defaultRetryPolicy, deps.onConflictRetry);
  deps.onCommitted?.();
  deps.logger.info({ error_code: error.error_code }, 'command failed');
  return outcome;
}
