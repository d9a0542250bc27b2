import { type Job, UnrecoverableError, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { COMMAND_QUEUE, type CommandJobData } from '../contracts/index.js';
import { CommandNotFound, type ExecutionOutcome, type ExecutorDeps, executeCommand } from './command-executor.js';

export interface CommandWorkerOptions {
  connection: Redis;
  prefix: string;
  concurrency: number;
}

/**
 * The BullMQ processor: runs the command to its end. Business failures are recorded by the
 * executor and end the job at once (UnrecoverableError: no retry); transient faults throw, and
 * BullMQ retries with backoff. We MUST NOT finish a job before its command's outcome committed.
 */
export function commandProcessor(deps: ExecutorDeps) {
  return async (job: Job<CommandJobData>): Promise<ExecutionOutcome> => {
    const finalAttempt = job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
    const logger = deps.logger.child({ job_id: job.data.command_id, attempt: job.attemptsMade + 1 });
    try {
      const outcome = await executeCommand({ ...deps, logger }, job.data.command_id, {
        finalAttempt,
        onProgress: (progress) => job.updateProgress(progress).catch(() => {}),
      });
      if (outcome.state === 'failed') throw new UnrecoverableError(`${outcome.error.error_code}: ${outcome.error.message}`);
      return outcome;
    } catch (error) {
      if (error instanceof CommandNotFound) throw new UnrecoverableError(error.message);
      if (!(error instanceof UnrecoverableError)) logger.warn({ err: error, final_attempt: finalAttempt }, 'command attempt failed; BullMQ will retry');
      throw error;
    }
  };
}

/** Starts a BullMQ worker on the command queue. Close it with `worker.close()` (it drains). */
export function startCommandWorker(deps: ExecutorDeps, options: CommandWorkerOptions): Worker<CommandJobData, ExecutionOutcome> {
  const worker = new Worker<CommandJobData, ExecutionOutcome>(COMMAND_QUEUE, commandProcessor(deps), {
    connection: options.connection,
    prefix: options.prefix,
    concurrency: options.concurrency,
    autorun: true,
  });
  worker.on('error', (error) => deps.logger.error({ err: error }, 'worker error'));
  return worker;
}
