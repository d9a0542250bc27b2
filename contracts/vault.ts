import { z } from 'zod';
import { CollectionName, IsoDate, MAX_TAGS_PER_TOKEN, MAX_TOKEN_IDS, ObjectId, StoredText, Tag, TenantId, TokenId } from './common.js';

/**
 * A list parameter: comma-separated values, repeated keys, or both (`?tags=a,b&tags=c`).
 * Empty items are dropped, so `?tags=` is the same as no `tags`.
 */
export function listParam<T extends z.ZodType>(item: T, max: number) {
  return z.preprocess((value) => {
    if (value === undefined) return undefined;
    const parts = (Array.isArray(value) ? value : [value]).flatMap((v) => String(v).split(','));
    const items = parts.map((p) => p.trim()).filter((p) => p.length > 0);
    return items.length === 0 ? undefined : items;
  }, z.array(item).max(max).optional());
}

/** `true`/`false` in a query string. */
export const BooleanParam = z.enum(['true', 'false']).transform((v) => v === 'true');

export const CollectionParams = z.strictObject({ collection: CollectionName });

/** Access-reason fields shared by every vault-token route (SPEC §3, Reasons). */
export const ReasonQuery = {
  reason: z.string().max(100).optional(),
  adhoc_reason: StoredText.min(1).max(1000).optional(),
  custom_audit: StoredText.max(4000).optional(),
  reload_cache: BooleanParam.optional(),
};

export const OptionsParam = listParam(z.enum(['archived']), 5);

export const TokenizeQuery = z.strictObject({
  ...ReasonQuery,
  expiration_secs: z.coerce
    .number()
    .int()
    .refine((n) => n === -1 || (n >= 1 && n <= 10 * 365 * 24 * 3600), 'must be -1 (never expires) or 1 to 315360000 seconds')
    .optional(),
});

export const TokenizeItem = z.strictObject({
  object: z.strictObject({ id: ObjectId }),
  tags: z.array(Tag).max(MAX_TAGS_PER_TOKEN).optional(),
  token_id: TokenId.optional(),
  tenant_id: TenantId.optional(),
});
export const TokenizeBody = z.array(TokenizeItem).min(1).max(MAX_TOKEN_IDS);
export type TokenizeItem = z.infer<typeof TokenizeItem>;
export const TokenizeResponse = z.array(z.object({ token_id: z.string() }));

export const QueryTokensQuery = z.strictObject({ ...ReasonQuery, options: OptionsParam });
export const QueryTokensBody = z
  .strictObject({
    token_ids: z.array(TokenId).min(1).max(MAX_TOKEN_IDS).optional(),
    object_ids: z.array(ObjectId).min(1).max(MAX_TOKEN_IDS).optional(),
    tags: z.array(Tag).min(1).max(MAX_TAGS_PER_TOKEN).optional(),
  })
  .refine((b) => b.token_ids || b.object_ids || b.tags, {
    message: 'at least one of token_ids, object_ids or tags is required',
  });
export type QueryTokensBody = z.infer<typeof QueryTokensBody>;

export const VaultTokenView = z.object({
  token_id: z.string(),
  object_id: z.string(),
  tenant_id: z.string().nullable(),
  tags: z.array(z.string()),
  expires_at: IsoDate.nullable(),
  archived: z.boolean(),
  created_at: IsoDate,
});
export type VaultTokenView = z.infer<typeof VaultTokenView>;
export const QueryTokensResponse = z.array(VaultTokenView);

export const CountTokensQuery = z.strictObject({ ...ReasonQuery });
export const CountTokensResponse = z.object({ active: z.number().int(), archived: z.number().int() });

/** `DELETE …/collections/{collection}/tokens` (SPEC §6). */
export const DeleteTokensQuery = z.strictObject({
  ...ReasonQuery,
  token_ids: listParam(TokenId, MAX_TOKEN_IDS),
  object_ids: listParam(ObjectId, MAX_TOKEN_IDS),
  tags: listParam(Tag, MAX_TAGS_PER_TOKEN),
  tenant_id: TenantId.optional(),
  options: OptionsParam,
});

/** `POST …/collections/{collection}/rotate/tokens` (SPEC §6). */
export const RotateTokensQuery = z.strictObject({
  ...ReasonQuery,
  token_ids: listParam(TokenId, MAX_TOKEN_IDS),
});
