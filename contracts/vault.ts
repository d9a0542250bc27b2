import { z } from 'zod';
import { CollectionName, IsoDate, isStorableText, MAX_TAGS_PER_TOKEN, MAX_TOKEN_IDS, ObjectId, reasonFields, StoredText, Tag, TenantId, TokenId } from './common.js';

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

/** The query parameters every vault-token route takes: the access reason, and Piiano's `reload_cache`. */
export const ReasonQuery = {
  ...reasonFields,
  reload_cache: BooleanParam.optional(),
};

/** `options` of a delete (SPEC §6): `archived` only. */
export const OptionsParam = listParam(z.enum(['archived']), 5);
/** `options` of a search, as Piiano's client types them. */
export const QueryOptionsParam = listParam(z.enum(['archived', 'include_aggregated_data']), 5);

/** `expiration_secs`: -1 or empty (Piiano's generated client sends `expiration_secs=`) never expire. */
const ExpirationSecs = z.preprocess(
  (value) => (value === '' ? '-1' : value),
  z.coerce
    .number()
    .int()
    .refine((n) => n === -1 || (n >= 1 && n <= 10 * 365 * 24 * 3600), 'must be empty or -1 (never expires), or 1 to 315360000 seconds'),
);

export const TokenizeQuery = z.strictObject({
  ...ReasonQuery,
  expiration_secs: ExpirationSecs.optional(),
});

/** Piiano's token types (`TokenType` of its generated client). */
export const TokenType = z.enum(['randomized', 'pointer', 'pci', 'pci_oneway', 'deterministic']);
export type TokenType = z.infer<typeof TokenType>;
/**
 * The types this service creates and stores: their IDs are random or given, never derived from
 * object values (which the service does not hold). The others are refused when tokenizing.
 */
export const storedTokenTypes = ['randomized', 'pointer'] as const;
export const StoredTokenType = z.enum(storedTokenTypes);
export type StoredTokenType = z.infer<typeof StoredTokenType>;
export function isStoredTokenType(type: TokenType): type is StoredTokenType {
  return (storedTokenTypes as readonly string[]).includes(type);
}

/** A token's scope: free text, '' when none was given. */
export const TokenScope = StoredText.max(256);
/** The name of a property a token stands for (`props` of a tokenize item). */
export const PropertyName = z
  .string()
  .min(1)
  .max(200)
  .regex(/^[^,\s]+$/, 'may not contain commas or white space')
  .refine(isStorableText, 'may not contain NUL characters or unpaired surrogates');
export const MAX_PROPS_PER_TOKEN = 100;

/** One tokenize item: Piiano's `TokenizeRequest` with an object ID, plus this service's `tenant_id`. */
export const TokenizeItem = z.strictObject({
  type: TokenType.default('randomized'),
  object: z.strictObject({ id: ObjectId }),
  tags: z.array(Tag).max(MAX_TAGS_PER_TOKEN).optional(),
  token_id: TokenId.optional(),
  scope: TokenScope.optional(),
  props: z.array(PropertyName).max(MAX_PROPS_PER_TOKEN).optional(),
  tenant_id: TenantId.optional(),
});
export const TokenizeBody = z.array(TokenizeItem).min(1).max(MAX_TOKEN_IDS);
export type TokenizeItem = z.infer<typeof TokenizeItem>;
export const TokenizeResponse = z.array(z.object({ token_id: z.string() }));

export const QueryTokensQuery = z.strictObject({ ...ReasonQuery, options: QueryOptionsParam });
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

/** One token of a search answer: Piiano's `TokenRefMetadata`. */
export const TokenRefMetadata = z.object({
  object_id: z.string().optional(),
  /** Absent for a token of no tenant. */
  effective_tenant_id: z.string().optional(),
  tags: z.array(z.string()),
  creation_time: IsoDate,
  /** null: never expires. */
  expiration_time: IsoDate.nullable(),
  /** The token's own expiry: the service holds no objects whose expiry could come first. */
  effective_expiration_time: IsoDate.nullable(),
});
export type TokenRefMetadata = z.infer<typeof TokenRefMetadata>;

/**
 * The tokens of a search answer sharing one token ID (Piiano's `TokenMetadata`). One ID held in
 * several tenants, with one type and scope, is one entry with a token per tenant.
 */
export const TokenMetadata = z.object({
  token_id: z.string(),
  type: StoredTokenType,
  scope: z.string(),
  tokens: z.array(TokenRefMetadata),
  /** With `options=include_aggregated_data`: the latest expiry of the entry's tokens (null: one never expires). */
  agg: z.object({ max_effective_expiration_time: IsoDate.nullable() }).optional(),
});
export type TokenMetadata = z.infer<typeof TokenMetadata>;
export const QueryTokensResponse = z.array(TokenMetadata);

export const CountTokensQuery = z.strictObject({ ...ReasonQuery });
export const CountTokensResponse = z.object({ active: z.number().int(), archived: z.number().int(), total: z.number().int() });
export type CountTokensResponse = z.infer<typeof CountTokensResponse>;

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
