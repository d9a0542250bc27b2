import { z } from 'zod';

/** Keystone's time format: ISO 8601, UTC, microseconds (`2015-08-27T09:49:58.000000Z`). */
export const KeystoneTime = z.string().regex(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/);

/**
 * The body of Keystone's `GET /v3/auth/tokens` for a good token (SPEC §6), as keystoneclient's
 * `tokens.validate()` and keystonemiddleware read it: an unscoped token of the `token` method.
 */
export const KeystoneTokenBody = z.object({
  token: z.object({
    methods: z.array(z.string()),
    user: z.object({
      id: z.string(),
      name: z.string(),
      domain: z.object({ id: z.string(), name: z.string() }),
    }),
    audit_ids: z.array(z.string()),
    issued_at: KeystoneTime,
    expires_at: KeystoneTime.describe('A named token lives until deleted: 9999-12-31T23:59:59.000000Z'),
  }),
});
export type KeystoneTokenBody = z.infer<typeof KeystoneTokenBody>;

/**
 * The query of Keystone's token validation. `allow_expired` is read as Keystone reads it
 * (oslo's bool_from_string: 1, t, true, on, y, yes are true, anything else false); `nocatalog`
 * and other flags are accepted and ignored: these tokens carry no catalog.
 */
export const KeystoneValidateQuery = z.object({
  allow_expired: z
    .string()
    .optional()
    .transform((v) => ['1', 't', 'true', 'on', 'y', 'yes'].includes((v ?? '').trim().toLowerCase())),
});
