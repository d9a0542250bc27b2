import { z } from 'zod';
import { Capability, CollectionName, Identifier, IsoDate, MAX_TEMPORARY_TTL_SECONDS, StoredText, SubjectKind, TenantId } from './common.js';

export const CreateSubjectBody = z.strictObject({
  id: Identifier.optional(),
  kind: SubjectKind,
  domain_id: Identifier.default('default'),
  capabilities: z.array(Capability).max(Capability.options.length).default([]),
  tenant_ids: z.array(TenantId).min(1).max(1000).nullable().default(null),
  collections: z.array(CollectionName).min(1).max(1000).nullable().default(null),
});
export type CreateSubjectBody = z.infer<typeof CreateSubjectBody>;

export const SubjectView = z.object({
  id: z.string(),
  kind: SubjectKind,
  domain_id: z.string(),
  capabilities: z.array(Capability),
  tenant_ids: z.array(z.string()).nullable(),
  collections: z.array(z.string()).nullable(),
  temporary_generation: z.number().int(),
});
export type SubjectView = z.infer<typeof SubjectView>;

export const SubjectIdParams = z.strictObject({ id: Identifier });

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
