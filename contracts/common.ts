import { z } from 'zod';

/** Capabilities of SPEC §2. The bootstrap admin holds every one. */
export const capabilities = ['tokens:write', 'tokens:tokenize', 'tokens:read', 'tokens:manage', 'security_admin', 'tokens:verify', 'subjects:admin'] as const;
export const Capability = z.enum(capabilities);
export type Capability = z.infer<typeof Capability>;

export const SubjectKind = z.enum(['user', 'provider', 'service']);
export type SubjectKind = z.infer<typeof SubjectKind>;

/** Access reasons of the Piiano Vault API. */
export const AccessReason = z.enum([
  'AppFunctionality',
  'Analytics',
  'Notifications',
  'Marketing',
  'ThirdPartyMarketing',
  'FraudPreventionSecurityAndCompliance',
  'AccountManagement',
  'Maintenance',
  'DataSubjectRequest',
  'Other',
]);
export type AccessReason = z.infer<typeof AccessReason>;

/** Identifiers chosen by callers: printable, no separators that our list syntax uses. */
export const Identifier = z
  .string()
  .min(1)
  .max(200)
  .regex(/^[A-Za-z0-9._:@-]+$/, 'may contain only letters, digits and . _ : @ -');

/** Collection names follow Piiano's rule: a letter, then letters, digits and underscores. */
export const CollectionName = z
  .string()
  .min(1)
  .max(64)
  .regex(/^[A-Za-z][A-Za-z0-9_]*$/, 'must start with a letter and contain only letters, digits and _');

/** A NUL character, or a UTF-16 surrogate without its other half. */
const UNSTORABLE = /\0|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/**
 * Whether Postgres can store the string as sent: text and jsonb refuse NUL (an error, hence a
 * 500, if it got that far), jsonb refuses unpaired surrogates and text silently turns them
 * into U+FFFD. Every caller-chosen string that is stored must pass this (bad input is a 400).
 */
export function isStorableText(value: string): boolean {
  return !UNSTORABLE.test(value);
}
const STORABLE_MESSAGE = 'may not contain NUL characters or unpaired surrogates';

/** Free text that is stored (names, ad-hoc reasons, custom audit). */
export const StoredText = z.string().refine(isStorableText, STORABLE_MESSAGE);

/**
 * The access-reason fields of every vault-token route (query parameters) and every command body
 * (SPEC §3, Reasons); what they must hold beyond these shapes is checked once they are read
 * (producer/access.ts, resolveReason). Kept in the command's AuditContext.
 */
export const reasonFields = {
  reason: z.string().max(100).optional(),
  adhoc_reason: StoredText.min(1).max(1000).optional(),
  custom_audit: StoredText.max(4000).optional(),
};
export type ReasonFields = z.infer<z.ZodObject<typeof reasonFields>>;

export const TenantId = Identifier;
/** A value that travels in a comma-separated list (query parameters): no commas, no white space. */
const ListValue = z
  .string()
  .min(1)
  .max(200)
  .regex(/^[^,\s]+$/, 'may not contain commas or white space')
  .refine(isStorableText, STORABLE_MESSAGE);
export const Tag = ListValue;
export const TokenId = ListValue;
export const ObjectId = ListValue;

export const MAX_TOKEN_IDS = 10_000;
export const MAX_TAGS_PER_TOKEN = 10;
/** A temporary access token lives at most 7 days. */
export const MAX_TEMPORARY_TTL_SECONDS = 7 * 24 * 3600;

export const IsoDate = z.iso.datetime({ offset: true });

const isIsoDay = (v: string): boolean => z.iso.date().safeParse(v).success;

/** A `since` filter (GET /v1/jobs, GET /v1/audit): a date-time with an offset, or a date, its midnight UTC (see `sinceInstant`). */
export const Since = z
  .string()
  // Postgres has no year 0000 (it reads 1 BC as -0001)
  .refine((v) => (IsoDate.safeParse(v).success || isIsoDay(v)) && !v.startsWith('0000'), 'must be an ISO 8601 date or date-time with an offset, e.g. 2024-05-01 or 2024-05-01T12:00:00Z');

/** The instant a `Since` value names: a date is its midnight UTC. */
export const sinceInstant = (since: string): string => (isIsoDay(since) ? `${since}T00:00:00Z` : since);
