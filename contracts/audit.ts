import { z } from 'zod';
import { CollectionName, IsoDate, Since } from './common.js';
import { EventSubject, MAX_TOKEN_IDS_PER_EVENT } from './events.js';

/** Entry ids are Postgres bigints: a larger number would fail in the database, not as a 400. */
const MAX_BIGINT = 9223372036854775807n;

export const AuditQuery = z.strictObject({
  job_id: z.uuid({ message: 'must be a UUID' }).optional(),
  collection: CollectionName.optional(),
  since: Since.describe('Entries at or after this: an ISO 8601 date-time with an offset, or a date (its midnight UTC)').optional(),
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

/**
 * The `data` of a `tokens.deleted` audit row. A delete writes one per `tokens.deleted` event,
 * with that event's token IDs: `batch.index` is the event's, `size` the number of its IDs.
 */
export const TokensDeletedAuditData = z.object({
  token_ids: z.array(z.string()).max(MAX_TOKEN_IDS_PER_EVENT),
  batch: z.object({ index: z.number().int(), size: z.number().int() }),
});

/** The `data` of a lockout's `access_token.revoked` audit row: one per event, as TokensDeletedAuditData, with the subject. */
export const LockoutAuditData = TokensDeletedAuditData.extend({ subject: EventSubject });
export type TokensDeletedAuditData = z.infer<typeof TokensDeletedAuditData>;
export type LockoutAuditData = z.infer<typeof LockoutAuditData>;
