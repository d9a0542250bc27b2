import { z } from 'zod';
import { Capability, CollectionName, Identifier, IsoDate, MAX_TEMPORARY_TTL_SECONDS, StoredText, SubjectKind, TenantId } from './common.js';

/** What a subject may do, and where: set at creation, changed by PATCH /v1/subjects/{id}. */
const grants = {
  capabilities: z.array(Capability).max(Capability.options.length),
  tenant_ids: z.array(TenantId).min(1).max(1000).nullable(),
  collections: z.array(CollectionName).min(1).max(1000).nullable(),
};

export const CreateSubjectBody = z.strictObject({
  id: Identifier.optional(),
  kind: SubjectKind,
  domain_id: Identifier.default('default'),
  capabilities: grants.capabilities.default([]),
  tenant_ids: grants.tenant_ids.default(null),
  collections: grants.collections.default(null),
});
export type CreateSubjectBody = z.infer<typeof CreateSubjectBody>;

/** `PATCH /v1/subjects/{id}`: the grants to replace (each as POST /v1/subjects takes it); at least one. */
export const UpdateSubjectBody = z
  .strictObject({
    capabilities: grants.capabilities.optional(),
    tenant_ids: grants.tenant_ids.optional(),
    collections: grants.collections.optional(),
  })
  .refine((b) => b.capabilities !== undefined || b.tenant_ids !== undefined || b.collections !== undefined, {
    message: 'name at least one of capabilities, tenant_ids, collections',
  });
export type UpdateSubjectBody = z.infer<typeof UpdateSubjectBody>;

export const SubjectView = z.object({
  id: z.string(),
  kind: SubjectKind,
  domain_id: z.string(),
  capabilities: z.array(Capability),
  tenant_ids: z.array(z.string()).nullable(),
  collections: z.array(z.string()).nullable(),
  temporary_generation: z.number().int(),
  /** When the subject was locked out; null while it is enabled. */
  disabled_at: IsoDate.nullable(),
});
export type SubjectView = z.infer<typeof SubjectView>;

export const SubjectIdParams = z.strictObject({ id: Identifier });

/** `GET /v1/subjects/{id}/tokens`: a page of the subject's tokens, by token ID. */
export const SubjectTokensQuery = z.strictObject({
  /** Tokens with a larger ID than this (the previous page's next_after). */
  after: Identifier.optional(),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
});
export type SubjectTokensQuery = z.infer<typeof SubjectTokensQuery>;

/** An access token as the subject's token list shows it: never its secret or hash. */
export const AccessTokenView = z.object({
  token_id: z.string(),
  name: z.string().nullable(),
  kind: z.enum(['named', 'temporary']),
  /** A temporary token's generation at issuance; null for a named one. */
  generation: z.number().int().nullable(),
  /** A temporary token issued under an older generation than the subject's (revoke-all). */
  revoked: z.boolean(),
  created_at: IsoDate,
  expires_at: IsoDate.nullable(),
});
export type AccessTokenView = z.infer<typeof AccessTokenView>;

export const SubjectTokensPage = z.object({ tokens: z.array(AccessTokenView), next_after: z.string().nullable() });
export type SubjectTokensPage = z.infer<typeof SubjectTokensPage>;

export const IssueAccessTokenBody = z
  .strictObject({
    temporary: z.boolean(),
    ttl_seconds: z.number().int().min(1).max(MAX_TEMPORARY_TTL_SECONDS).optional(),
    name: StoredText.min(1).max(200).optional(),
  })
  .refine((b) => b.temporary || b.ttl_seconds === undefined, {
    message: 'ttl_seconds applies to temporary tokens only; named tokens live until deleted',
    path: ['ttl_seconds'],
  });
export type IssueAccessTokenBody = z.infer<typeof IssueAccessTokenBody>;

export const IssuedAccessToken = z.object({
  token_id: z.string(),
  token: z.string().describe('The secret. Shown in this response only; store it now.'),
  temporary: z.boolean(),
  generation: z.number().int().nullable(),
  expires_at: IsoDate.nullable(),
});
export type IssuedAccessToken = z.infer<typeof IssuedAccessToken>;

export const VerifyReason = z.enum(['not_found', 'revoked', 'expired']);
export type VerifyReason = z.infer<typeof VerifyReason>;

export const VerifiedAccessToken = z.object({
  token_id: z.string(),
  subject: z.object({ id: z.string(), kind: SubjectKind, domain_id: z.string() }),
  temporary: z.boolean(),
  generation: z.number().int().nullable(),
  expires_at: IsoDate.nullable(),
});
export type VerifiedAccessToken = z.infer<typeof VerifiedAccessToken>;

export const CreateCollectionBody = z.strictObject({ name: CollectionName });
export const CollectionView = z.object({ name: z.string(), created_at: IsoDate });
