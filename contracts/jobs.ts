import { z } from 'zod';
import { commandTypes, type CommandType } from './commands.js';
import { IsoDate, Since } from './common.js';

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

/** Jobs a list page holds unless `limit` says otherwise, and at most. */
export const JOBS_PAGE_DEFAULT = 50;
export const JOBS_PAGE_MAX = 500;

/**
 * Where a job list page ends: the last job's `created_at` to the microsecond (as Postgres holds
 * it, UTC) and its ID. Opaque to callers: `next_cursor` is its base64url form.
 */
export interface JobCursor {
  createdAt: string;
  id: string;
}

const CURSOR_TEXT = /^((?:19[7-9]\d|[2-9]\d{3})-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z) ([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/;

export function encodeJobCursor(cursor: JobCursor): string {
  return Buffer.from(`${cursor.createdAt} ${cursor.id}`).toString('base64url');
}

/** The cursor `text` encodes, or undefined if it is not one (a wrong date included). */
export function decodeJobCursor(text: string): JobCursor | undefined {
  if (!/^[A-Za-z0-9_-]{1,200}$/.test(text)) return undefined;
  const match = CURSOR_TEXT.exec(Buffer.from(text, 'base64url').toString('latin1'));
  if (!match) return undefined;
  const [, createdAt, id] = match as unknown as [string, string, string];
  // 2021-02-30 matches the pattern; Date rolls it over to March
  const millis = `${createdAt.slice(0, 23)}Z`;
  if (new Date(millis).toISOString() !== millis) return undefined;
  return { createdAt, id };
}

/**
 * `GET /v1/jobs` query (SPEC §10). `since` is a date-time with an offset, or a date (its
 * midnight UTC); jobs created at or after it.
 */
export const JobListQuery = z.strictObject({
  state: JobState.optional(),
  type: z.enum(commandTypes as [CommandType, ...CommandType[]]).optional(),
  since: Since.describe('Jobs created at or after this: an ISO 8601 date-time with an offset, or a date (its midnight UTC)').optional(),
  limit: z.coerce
    .number({ message: `must be a whole number from 1 to ${JOBS_PAGE_MAX}` })
    .int(`must be a whole number from 1 to ${JOBS_PAGE_MAX}`)
    .min(1, `must be a whole number from 1 to ${JOBS_PAGE_MAX}`)
    .max(JOBS_PAGE_MAX, `must be a whole number from 1 to ${JOBS_PAGE_MAX}`)
    .default(JOBS_PAGE_DEFAULT),
  cursor: z
    .string()
    .refine((v) => decodeJobCursor(v) !== undefined, "must be a previous page's next_cursor")
    .describe("The previous page's next_cursor")
    .optional(),
});
export type JobListQuery = z.infer<typeof JobListQuery>;

/** A page of jobs, newest first; `next_cursor` asks for the next page, null on the last one. */
export const JobPage = z.object({ jobs: z.array(JobView), next_cursor: z.string().nullable() });
export type JobPage = z.infer<typeof JobPage>;
