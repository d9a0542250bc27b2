import type { Logger } from 'pino';
import { AppError, type CommandType, type JobProgress, type StoredError } from '../contracts/index.js';
import { type Db, isDatabaseUnavailable, type Trx } from '../db/database.js';
import { findCommand, useOneCore } from '../db/repositories/command.repository.js';
import type { OutboxEvent } from '../db/repositories/outbox.repository.js';
import { recordFailure, storedOutcome } from './command-failure.js';
import { type Parsed, runStep, type StepInput, type StepResult } from './command-step.js';
import type { GroupCommit } from './group-commit.js';
import type { HandlerSettings } from './handlers/handler.js';
import { ConflictRetriesExhausted, type RetryPolicy, defaultRetryPolicy, runTransaction } from './transaction-runner.js';

/** How a command ended: its job's return value. */
export type CommandOutcome =
  | { state: 'succeeded'; result: Record<string, unknown> }
  | { state: 'failed'; error: StoredError }
  /** Cancelled (POST /v1/jobs/{id}/cancel) before it ended: by the cancel itself, or by the step that found it asked. */
  | { state: 'cancelled'; result: Record<string, unknown> | null };

/**
 * What an execution came to: the command's end, or none: the job names a command that is not in
 * Postgres (nothing to do, ever), or the process is stopping and released the command between
 * two committed steps (unfinished, not failed: the next delivery resumes it).
 */
export type ExecutionOutcome = CommandOutcome | { state: 'missing' } | { state: 'released' };

export interface ExecutorDeps {
  db: Db;
  logger: Logger;
  settings: HandlerSettings;
  retryPolicy?: RetryPolicy;
  /**
   * Called after each commit of a step run alone, or of a failure, with the outbox rows it wrote
   * (the EventPublisher puts them on the stream; a group hands over its own). Without it, the
   * relay publishes them after its grace period.
   */
  onCommitted?: (events: readonly OutboxEvent[]) => void;
  /** Called when a transaction is retried after a conflict. */
  onConflictRetry?: (sqlState: string) => void;
  /** Called when this execution ended the command (not for a redelivery of an ended one). */
  onFinished?: (type: CommandType, state: CommandOutcome['state'], seconds: number) => void;
  /**
   * Group commit (see GroupCommit): the first step of a command the job says is short shares a
   * transaction with those of short commands delivered meanwhile. Without it, every step has a
   * transaction of its own.
   */
  group?: GroupCommit;
}

export interface ExecuteOptions {
  /** BullMQ will not retry after this attempt: a conflict now ends the command with PV3218. */
  finalAttempt: boolean;
  onProgress?: (progress: JobProgress) => void | Promise<void>;
  /**
   * Aborted when the process shuts down: a command of several steps (a bulk delete) stops after
   * the step in progress commits, and executeCommand returns `released`; the next delivery
   * resumes from that step's checkpoint. A one-step command is not affected.
   */
  stop?: AbortSignal;
  /** The job says the command is short (CommandJobData.short): its step may join a group. */
  short?: boolean;
}

/**
 * Executes a command to its end, exactly once in effect however often it is delivered.
 * Each step runs in one transaction that locks the command row, applies the handler's effect,
 * and commits audit rows, outbox events and the checkpoint or terminal state with it. A command
 * found terminal returns its stored outcome (a redelivered rotate returns the same mapping); so
 * does one that was cancelled. A command a cancel was asked of while a step held it is ended
 * cancelled by its next step, which runs nothing: a bulk delete takes no batch after that.
 *
 * Returns the outcome, failed included (business failures are recorded, not thrown). Throws
 * for any other fault while attempts remain, and on the final attempt only while the database
 * is out of reach: the command stays non-terminal and a later attempt (or the reconciler)
 * resumes it from its last committed step. On the final attempt, conflicts end it with PV3218
 * and any other fault (a bug, a stored row that does not parse) with PV1000, the cause logged.
 */
export async function executeCommand(deps: ExecutorDeps, commandId: string, options: ExecuteOptions): Promise<ExecutionOutcome> {
  const startedAt = process.hrtime.bigint();
  // the command as stored, parsed by the first step that read its row: what later steps run on
  let stored: Parsed | undefined;
  const finished = (outcome: ExecutionOutcome): ExecutionOutcome => {
    if (stored && outcome.state !== 'missing' && outcome.state !== 'released') deps.onFinished?.(stored.command.type, outcome.state, Number(process.hrtime.bigint() - startedAt) / 1e9);
    return outcome;
  };
  let steps = 0;
  let total: number | null = null;
  let counting = false;
  for (;;) {
    const first = steps === 0;
    const input: StepInput = { settings: deps.settings, first, known: stored, total, remember: (parsed) => (stored = parsed) };
    const alone = (trx: Trx) => runStep(trx, commandId, input);
    let step: StepResult;
    try {
      step = await (first && options.short && deps.group
        ? deps.group.run(commandId, { alone, inGroup: (trx, turn) => runStep(trx, commandId, input, turn) })
        : runTransaction(deps.db, alone, deps.retryPolicy ?? defaultRetryPolicy, deps.onConflictRetry));
    } catch (error) {
      const fail = (stored: StoredError) => recordFailure(deps, commandId, first, stored);
      if (error instanceof AppError) return finished(await fail(error.toJSON()));
      if (!options.finalAttempt || isDatabaseUnavailable(error)) throw error;
      if (error instanceof ConflictRetriesExhausted) return finished(await fail(new AppError('PV3218', { sqlstate: error.sqlState }).toJSON()));
      // a fault no retry mends (a handler's bug, a stored row that does not parse): retried like a
      // transient one until now, it ends the command, or the reconciler would run it forever
      deps.logger.error({ err: error }, 'command failed with an unexpected error on its last attempt: ended with PV1000');
      return finished(await fail(new AppError('PV1000', {}).toJSON()));
    }
    if (step.kind === 'missing') return { state: 'missing' };
    if (step.kind === 'ended') return storedOutcome(step.row);
    if (step.events.length > 0) deps.onCommitted?.(step.events);
    if (step.kind === 'cancelled') return finished({ state: 'cancelled', result: step.result });
    steps++;
    const { outcome, parsed } = step;
    // not awaited: BullMQ progress is informational (the command row holds the truth), and the
    // next step need not wait for Redis; updates go out in order on one connection
    if (outcome.progress && !(outcome.done && steps === 1)) void options.onProgress?.(outcome.progress);
    if (outcome.done) return finished({ state: 'succeeded', result: outcome.result });
    if (parsed.handler.countRemaining && !counting && outcome.progress.total === null) {
      counting = true;
      countTotal(deps, commandId, parsed).then(
        (counted) => (total = counted),
        (error: unknown) => deps.logger.warn({ err: error }, 'could not count the total for progress; it stays unknown'),
      );
    }
    if (options.stop?.aborted) return { state: 'released' };
  }
}

/**
 * The total of a command of many steps: what its committed steps processed plus what the handler
 * counts as left, both read in one snapshot (so a step committing meanwhile is counted once).
 */
async function countTotal(deps: ExecutorDeps, id: string, { command, audit, handler }: Parsed): Promise<number> {
  return deps.db
    .transaction()
    .setIsolationLevel('repeatable read')
    .setAccessMode('read only')
    .execute(async (trx) => {
      await useOneCore(trx); // parallel workers would take the CPU the steps need
      const row = await findCommand(trx, id);
      const left = await handler.countRemaining!(trx, command, audit);
      return (row?.progress?.processed ?? 0) + left;
    });
}
