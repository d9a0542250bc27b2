import type { Queue } from 'bullmq';

/** Names shared by producer, worker and clients. */
export const COMMAND_QUEUE = 'commands';
export const DEFAULT_QUEUE_PREFIX = 'revocation';
export const DEFAULT_EVENTS_STREAM = 'revocation:events';
/** Stream entries keep their JSON in this field. */
export const EVENT_FIELD = 'event';

/** What a BullMQ job carries: the command ID (the command itself lives in Postgres) and hints. */
export interface CommandJobData {
  command_id: string;
  /**
   * The command is short (isShortCommand): the worker may run it in a shared transaction. Absent
   * (a job the reconciler enqueued again, say): the worker runs it alone. Only a hint: the worker
   * checks the stored command again before it shares a transaction.
   */
  short?: boolean;
}

/**
 * Options of every command job. Attempts and backoff are BullMQ's retry of a transient fault
 * (database unreachable, conflicts beyond the transaction runner's retries); business failures
 * end the job at once. Finished jobs are trimmed: the command row in Postgres is the record.
 */
export const COMMAND_JOB_OPTIONS = {
  attempts: 5,
  backoff: { type: 'exponential', delay: 500 },
  removeOnComplete: { age: 3600, count: 10_000 },
  removeOnFail: { age: 24 * 3600, count: 10_000 },
} as const;

/**
 * How soon a job runs again when its worker died (kill -9, a lost host): BullMQ options of every
 * command worker. A worker renews the locks of all its active jobs in one script call, each lock
 * 2.5 to 5 s after its last renewal; a lock not renewed expires lockDuration after that, and the
 * next stalled check (each worker calls it every stalledInterval; one of them runs it) puts the
 * job back on the wait list for another worker: within lockDuration + stalledInterval (14 s) of
 * the death, where BullMQ's defaults (30 s and 30 s) took up to a minute and more. The cost: per
 * worker process, about 0.4 lock-renewal calls per second while it has jobs and 0.25 stalled-check
 * calls; and a worker whose event loop or Redis stalls for more than 5 s may lose its locks: the
 * job then runs again elsewhere meanwhile, which the executor makes harmless (every step locks
 * the command row and commits its checkpoint).
 */
export const COMMAND_WORKER_OPTIONS = { lockDuration: 10_000, stalledInterval: 4_000 } as const;

/** BullMQ job name of a command job. */
export const COMMAND_JOB_NAME = 'command';

/**
 * Adds a command's job: job ID = command ID, so adding it again while it is queued or running
 * changes nothing (the producer after recording it, the reconciler when its job is gone or dead).
 */
export async function addCommandJob(queue: Queue<CommandJobData>, job: CommandJobData): Promise<void> {
  await queue.add(COMMAND_JOB_NAME, job, { ...COMMAND_JOB_OPTIONS, jobId: job.command_id });
}
