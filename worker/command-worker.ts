import { type Job, UnrecoverableError, WaitingError, Worker } from 'bullmq';
import type { RedisClient } from '../db/redis-connection.js';
import { COMMAND_QUEUE, COMMAND_WORKER_OPTIONS, type CommandJobData } from '../contracts/index.js';
import { queueTelemetry } from '../observability/tracing.js';
import { type CommandOutcome, type ExecutorDeps, executeCommand } from './command-executor.js';

export interface CommandWorkerOptions {
  connection: RedisClient;
  prefix: string;
  concurrency: number;
  /** Aborted at shutdown: multi-step commands are released after their current step (see below). */
  stop?: AbortSignal;
}

/**
 * The BullMQ processor: runs the command to its end. Business failures are recorded by the
 * executor and end the job at once (UnrecoverableError: no retry); other faults throw, and
 * BullMQ retries with backoff. On the last attempt the executor ends the command (PV3218 after
 * conflicts, PV1000 after any other fault) unless the database is out of reach: then the job
 * fails and the reconciler runs the command again. We MUST NOT finish a job before its
 * command's outcome committed.
 *
 * At shutdown (`stop` aborted) a command of several steps stops after the step in progress
 * commits and its job goes back to the head of the wait list (no attempt used, no lock left
 * behind): another worker resumes it at once from the committed checkpoint.
 */
export function commandProcessor(deps: ExecutorDeps, stop?: AbortSignal) {
  return async (job: Job<CommandJobData>, token?: string): Promise<CommandOutcome> => {
    const finalAttempt = job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
    const logger = deps.logger.child({ job_id: job.data.command_id, attempt: job.attemptsMade + 1 });
    const outcome = await executeCommand({ ...deps, logger }, job.data.command_id, {
      finalAttempt,
      short: job.data.short === true,
      onProgress: (progress) => job.updateProgress(progress).catch(() => {}),
      ...(stop ? { stop } : {}),
    }).catch((error: unknown) => {
      logger.warn({ err: error, final_attempt: finalAttempt }, 'command attempt failed; it runs again (BullMQ retries it, or the reconciler once its job is dead)');
      throw error;
    });
    // BullMQ ends a job without retries by a thrown UnrecoverableError, and leaves a job moved back to wait by a thrown WaitingError
    if (outcome.state === 'missing') throw new UnrecoverableError(`command ${job.data.command_id} is not in the database`);
    if (outcome.state === 'failed') throw new UnrecoverableError(`${outcome.error.error_code}: ${outcome.error.message}`);
    if (outcome.state === 'released') {
      // if this fails (lock lost), the job fails this attempt: BullMQ or the reconciler runs it again
      await job.moveToWait(token);
      logger.info('shutting down: job released after its last committed step; another worker resumes it');
      throw new WaitingError();
    }
    return outcome;
  };
}

/**
 * Starts a BullMQ worker on the command queue. Close it with `worker.close()` (it waits for the
 * active jobs), after aborting `options.stop` so that long commands are released, not finished.
 */
export function startCommandWorker(deps: ExecutorDeps, options: CommandWorkerOptions): Worker<CommandJobData, CommandOutcome> {
  const worker = new Worker<CommandJobData, CommandOutcome>(COMMAND_QUEUE, commandProcessor(deps, options.stop), {
    ...COMMAND_WORKER_OPTIONS,
    connection: options.connection,
    prefix: options.prefix,
    concurrency: options.concurrency,
    autorun: true,
    // with tracing on, each job is processed in a span whose parent is the context the job carries
    ...queueTelemetry(),
  });
  worker.on('error', (error) => deps.logger.error({ err: error }, 'worker error'));
  return worker;
}
