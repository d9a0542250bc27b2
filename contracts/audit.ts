import { z } from 'zod';
import { CollectionName, IsoDate } from './common.js';

/** Entry ids are Postgres bigints: a larger number would fail in the database, not as a 400. */
const MAX_BIGINT = 9223372036854775807n;

export const AuditQuery = z.strictObject({
  job_id: z.uuid({ message: 'must be a UUID' }).optional(),
  collection: CollectionName.optional(),
  since: IsoDate.optional(),
  /** Entries with a larger id than this (the previous page's next_after_id). */
  after_id: z
    .string()
    .regex(/^\d{1,19}$/, 'must be an entry id')
    .refine((v) => !/^\d{1,19}$/.test(v) || BigInt(v) <= MAX_BIGINT, 'must be an entry id (at most 9223372036854775807)')
    .optional(),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
});
export type AuditQuery = z.infer<typeof AuditQuery>;

export const AuditEntryView = z.object({
  id: z.string(),
  job_id: z.string().nullable(),
  occurred_at: IsoDate,
  action: z.string(),
  actor: z.object({ id: z.string(), kind: z.string() }),
  tenant_ids: z.array(z.string()).nullable(),
  reason: z.string().nullable(),
  adhoc_reason: z.string().nullable(),
  custom_audit: z.string().nullable(),
  request_id: z.string().nullable(),
  source: z.string(),
  collection: z.string().nullable(),
  data: z.record(z.string(), z.unknown()),
});

export const AuditPage = z.object({ entries: z.array(AuditEntryView), next_after_id: z.string().nullable() });
export type AuditPage = z.infer<typeof AuditPage>;
