import { z } from 'zod';
import { commandTypes, type CommandType } from './commands.js';
import { IsoDate } from './common.js';

export const JobState = z.enum(['queued', 'running', 'succeeded', 'failed', 'cancelled']);
export type JobState = z.infer<typeof JobState>;
/** A job in one of these has ended for good: nothing runs it again. */
export const terminalStates: readonly JobState[] = ['succeeded', 'failed', 'cancelled'];

/** `total` is null while a long command's total is still being counted (it runs beside the first steps). */
export const JobProgress = z.object({ processed: z.number().int(), total: z.number().int().nullable() });
export type JobProgress = z.infer<typeof JobProgress>;

/** Who cancelled a job (POST /v1/jobs/{id}/cancel), as its `command.cancelled` event and audit row name them. */
export const Canceller = z.object({ id: z.string(), kind: z.string(), request_id: z.string().nullable() });
export type Canceller = z.infer<typeof Canceller>;

export const JobError = z.object({
  error_code: z.string(),
  message: z.string(),
  context: z.record(z.string(), z.unknown()),
});

/** The job view of SPEC §5: served from Postgres, so it outlives Redis and BullMQ's retention. */
export const JobView = z.object({
  job_id: z.uuid(),
  type: z.enum(commandTypes as [CommandType, ...CommandType[]]),
  state: JobState,
  attempts: z.number().int(),
  progress: JobProgress.nullable(),
  result: z.record(z.string(), z.unknown()).nullable(),
  error: JobError.nullable(),
  idempotency_key: z.string().nullable(),
  created_at: IsoDate,
  started_at: IsoDate.nullable(),
  finished_at: IsoDate.nullable(),
});
export type JobView = z.infer<typeof JobView>;

export const JobIdParams = z.strictObject({ id: z.uuid({ message: 'must be a UUID' }) });

/** A seed route's 204 (Prefer: wait and the job succeeded): no body. */
export const NoContent = z.null().describe('Done: no content');
