import { AccessReason, AppError, type AuditContext, type Capability, type ReasonFields, TenantId } from '../contracts/index.js';
import type { AccessTokenRow } from '../db/access-token.table.js';
import type { AccessTokenWithSubject } from '../db/repositories/access-token.repository.js';
import type { SubjectRow } from '../db/subject.table.js';
import type { TenantScope } from '../db/repositories/tenant-scope.js';

/**
 * The authenticated caller of a request: its subject and the access token it presented (the
 * stored row: public ID and the secret's hash, never the secret). The same shape as the lookup,
 * so a statement can re-check it (`credentialHolds`).
 */
export interface Caller {
  subject: SubjectRow;
  token: AccessTokenRow;
}

/**
 * Whether an access token still authenticates (SPEC §1, §10): its subject not locked out (a
 * locked-out subject's tokens are revoked, the lockout deleting them), not of an old generation,
 * not expired.
 */
export function accessTokenState(token: AccessTokenRow, subject: SubjectRow, now = new Date()): 'valid' | 'revoked' | 'expired' {
  if (subject.disabled_at !== null) return 'revoked';
  if (token.temporary && (token.generation ?? -1) < subject.temporary_generation) return 'revoked';
  if (token.expires_at !== null && token.expires_at.getTime() <= now.getTime()) return 'expired';
  return 'valid';
}

/** Throws PV1007 unless the caller holds the capability. */
export function requireCapability(caller: Caller, capability: Capability): void {
  if (!caller.subject.capabilities.includes(capability)) {
    throw new AppError('PV1007', { username: caller.subject.id, capability });
  }
}

/** Throws PV1007 unless the collection is inside the caller's collection scope. */
export function requireCollection(caller: Caller, collection: string): void {
  const allowed = caller.subject.collections;
  if (allowed !== null && !allowed.includes(collection)) {
    throw new AppError('PV1007', { username: caller.subject.id, collection }, 'The collection is outside the caller scope.');
  }
}

/**
 * The tenant scope of a request (SPEC §2): `X-Tenant-Id` (comma-separated, may repeat) narrows
 * the subject's scope; naming a tenant outside it is PV1006. Returns null for "all tenants".
 */
export function tenantScope(subject: SubjectRow, header: string | string[] | undefined): TenantScope {
  const named = (Array.isArray(header) ? header : header === undefined ? [] : [header])
    .flatMap((h) => h.split(','))
    .map((t) => t.trim())
    .filter((t) => t.length > 0);
  if (named.length === 0) return subject.tenant_ids;
  for (const tenant of named) {
    // the rule of a tenant_id in a body or query (TenantId): a tokenize may give its items the header's tenant
    if (!TenantId.safeParse(tenant).success) {
      throw new AppError('PV1002', { header: 'X-Tenant-Id' }, tenant.length > 200 ? 'A tenant ID is longer than 200 characters.' : 'A tenant ID may contain only letters, digits and . _ : @ -');
    }
  }
  const allowed = subject.tenant_ids;
  const outside = allowed === null ? [] : named.filter((t) => !allowed.includes(t));
  if (outside.length > 0) throw new AppError('PV1006', { tenant_ids: outside.join(',') });
  return [...new Set(named)];
}

/** The reason fields of a request once checked, as the command's AuditContext keeps them. */
export type ResolvedReason = Pick<AuditContext, 'adhoc_reason' | 'custom_audit'> & { reason: AccessReason };

/**
 * Checks the access reason of a vault-token request (SPEC §3, Reasons): required unless
 * `forceReason` is false (then AppFunctionality); otherwise as givenReason.
 */
export function resolveReason(fields: ReasonFields, forceReason: boolean): ResolvedReason {
  if (fields.reason !== undefined && fields.reason !== '') return givenReason({ ...fields, reason: fields.reason });
  if (forceReason) throw new AppError('PV1001', { reason: null });
  return { reason: 'AppFunctionality', adhoc_reason: fields.adhoc_reason ?? null, custom_audit: fields.custom_audit ?? null };
}

/** Checks a reason given: one of AccessReason (else PV1002); `Other` requires `adhoc_reason` (PV1003). */
export function givenReason(fields: ReasonFields & { reason: string }): ResolvedReason {
  const parsed = AccessReason.safeParse(fields.reason);
  if (!parsed.success) throw new AppError('PV1002', { reason: fields.reason }, `reason must be one of ${AccessReason.options.join(', ')}.`);
  if (parsed.data === 'Other' && !fields.adhoc_reason) throw new AppError('PV1003', { reason: 'Other' });
  return { reason: parsed.data, adhoc_reason: fields.adhoc_reason ?? null, custom_audit: fields.custom_audit ?? null };
}

/** The access token an X-Subject-Token header names, looked up with the caller's credential. */
export interface SubjectTokenLookup {
  /** The header's secret, trimmed. */
  secret: string;
  /** The secret's hash (hashSecret). */
  hash: Buffer;
  /** The token it names and its subject, or undefined when no token has that secret. */
  found: AccessTokenWithSubject | undefined;
}
