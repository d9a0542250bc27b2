import { randomUUID } from 'node:crypto';
import {
  AppError,
  type CreateSubjectBody,
  type IssueAccessTokenBody,
  type IssuedAccessToken,
  type SubjectTokensPage,
  type SubjectTokensQuery,
  type SubjectView,
  type UpdateSubjectBody,
  type VerifiedAccessToken,
  type VerifyReason,
  capabilities,
} from '../../contracts/index.js';
import type { Db } from '../../db/database.js';
import type { SubjectRow } from '../../db/subject.table.js';
import { type AccessTokenWithSubject, insertAccessTokenIfEnabled, listAccessTokensOf, upsertAccessToken } from '../../db/repositories/access-token.repository.js';
import { enableSubject, findSubject, insertSubject, updateSubjectGrants, upsertSubject } from '../../db/repositories/subject.repository.js';
import { accessTokenState, type Caller, type SubjectTokenLookup } from '../access.js';
import { hashSecret, newSecret } from '../secrets.js';

/** Temporary tokens live an hour unless `ttl_seconds` says otherwise (at most 7 days). */
export const DEFAULT_TEMPORARY_TTL_SECONDS = 3600;
export const BOOTSTRAP_ADMIN_ID = 'admin';
export const BOOTSTRAP_ADMIN_TOKEN_ID = 'bootstrap-admin';

export function subjectView(s: SubjectRow): SubjectView {
  return {
    id: s.id,
    kind: s.kind,
    domain_id: s.domain_id,
    capabilities: s.capabilities,
    tenant_ids: s.tenant_ids,
    collections: s.collections,
    temporary_generation: s.temporary_generation,
    disabled_at: s.disabled_at?.toISOString() ?? null,
  };
}

/** The subject's view; PV3003 if there is none. */
export async function getSubject(db: Db, id: string): Promise<SubjectView> {
  const row = await findSubject(db, id);
  if (!row) throw new AppError('PV3003', { subject_id: id });
  return subjectView(row);
}

/**
 * Replaces the grants the body names. The change holds for every request from its commit on, at
 * every producer: a cached credential is re-checked against the subject's grants by the statement
 * that records its command (credentialHolds). PV3003 if no such subject.
 */
export async function updateSubject(db: Db, id: string, body: UpdateSubjectBody): Promise<SubjectView> {
  const row = await updateSubjectGrants(db, id, {
    ...(body.capabilities !== undefined && { capabilities: [...new Set(body.capabilities)] }),
    ...(body.tenant_ids !== undefined && { tenant_ids: body.tenant_ids ? [...new Set(body.tenant_ids)] : null }),
    ...(body.collections !== undefined && { collections: body.collections ? [...new Set(body.collections)] : null }),
  });
  if (!row) throw new AppError('PV3003', { subject_id: id });
  return subjectView(row);
}

/** A page of the subject's access tokens, by token ID (never a secret or its hash); PV3003 if no such subject. */
export async function listSubjectTokens(db: Db, id: string, query: SubjectTokensQuery): Promise<SubjectTokensPage> {
  if (!(await findSubject(db, id))) throw new AppError('PV3003', { subject_id: id });
  const rows = await listAccessTokensOf(db, id, query.after, query.limit);
  return {
    tokens: rows.map((t) => ({
      token_id: t.id,
      name: t.name,
      kind: t.temporary ? 'temporary' : 'named',
      generation: t.generation,
      revoked: t.revoked,
      created_at: t.created_at.toISOString(),
      expires_at: t.expires_at?.toISOString() ?? null,
    })),
    next_after: rows.length === query.limit ? rows.at(-1)!.id : null,
  };
}

/** Creates a subject; PV3004 if the ID is taken. The ID is a new UUID when not given. */
export async function createSubject(db: Db, body: CreateSubjectBody): Promise<SubjectView> {
  const id = body.id ?? randomUUID();
  const row = await insertSubject(db, {
    id,
    kind: body.kind,
    domain_id: body.domain_id,
    capabilities: [...new Set(body.capabilities)],
    tenant_ids: body.tenant_ids ? [...new Set(body.tenant_ids)] : null,
    collections: body.collections ? [...new Set(body.collections)] : null,
  });
  if (!row) throw new AppError('PV3004', { subject_id: id });
  return subjectView(row);
}

/**
 * Issues an access token to `subjectId`. Allowed to `subjects:admin`, and to the subject itself
 * for a temporary token. A temporary token carries the subject's current generation. A locked-out
 * subject is issued none: PV3015 (decided in the statement that inserts the token, so a lockout
 * committing meanwhile is never missed). Returns the secret once; only its hash is stored.
 */
export async function issueAccessToken(db: Db, caller: Caller, subjectId: string, body: IssueAccessTokenBody): Promise<IssuedAccessToken> {
  const isAdmin = caller.subject.capabilities.includes('subjects:admin');
  const isSelf = caller.subject.id === subjectId;
  if (!isAdmin && !(isSelf && body.temporary)) {
    throw new AppError('PV1007', { username: caller.subject.id, capability: 'subjects:admin' });
  }
  const subject = await findSubject(db, subjectId);
  if (!subject) throw new AppError('PV3003', { subject_id: subjectId });
  const disabled = () => new AppError('PV3015', { subject_id: subjectId });
  if (subject.disabled_at !== null) throw disabled();
  const secret = newSecret();
  const expiresAt = body.temporary ? new Date(Date.now() + (body.ttl_seconds ?? DEFAULT_TEMPORARY_TTL_SECONDS) * 1000) : null;
  const row = await insertAccessTokenIfEnabled(db, subject.id, {
    id: randomUUID(),
    secret_hash: hashSecret(secret),
    name: body.name ?? null,
    temporary: body.temporary,
    expires_at: expiresAt,
  });
  if (!row) throw disabled();
  return {
    token_id: row.id,
    token: secret,
    temporary: row.temporary,
    generation: row.generation,
    expires_at: row.expires_at?.toISOString() ?? null,
  };
}

export type VerifyOutcome = { ok: true; token: VerifiedAccessToken } | { ok: false; reason: VerifyReason };

export type CheckOutcome = { ok: true; found: AccessTokenWithSubject } | { ok: false; reason: VerifyReason };

/**
 * Checks someone's access token. Callers without `tokens:verify` may check only their own
 * subject's tokens; for any other secret they get PV1007, whether or not it exists. The token
 * was looked up with the caller's credential (routes marked `subjectToken`). With
 * `allowExpired`, an expired token that is not revoked passes (Keystone's `allow_expired`).
 */
export function checkAccessToken(caller: Caller, lookup: SubjectTokenLookup, options: { allowExpired?: boolean } = {}): CheckOutcome {
  const { found } = lookup;
  const mayVerifyAny = caller.subject.capabilities.includes('tokens:verify');
  if (!mayVerifyAny && found?.subject.id !== caller.subject.id) {
    throw new AppError('PV1007', { username: caller.subject.id, capability: 'tokens:verify' });
  }
  if (!found) return { ok: false, reason: 'not_found' };
  const state = accessTokenState(found.token, found.subject);
  if (state === 'valid' || (state === 'expired' && options.allowExpired)) return { ok: true, found };
  return { ok: false, reason: state };
}

/** Verifies someone's access token (checkAccessToken) and describes it for `GET /v1/auth/verify`. */
export function verifyAccessToken(caller: Caller, lookup: SubjectTokenLookup): VerifyOutcome {
  const outcome = checkAccessToken(caller, lookup);
  if (!outcome.ok) return outcome;
  const { token, subject } = outcome.found;
  return {
    ok: true,
    token: {
      token_id: token.id,
      subject: { id: subject.id, kind: subject.kind, domain_id: subject.domain_id },
      temporary: token.temporary,
      generation: token.generation,
      expires_at: token.expires_at?.toISOString() ?? null,
    },
  };
}

/**
 * Creates or updates the bootstrap admin (every capability, all tenants and collections),
 * enables it if it was locked out, and makes `secret` its named access token, replacing any
 * earlier bootstrap secret. Returns whether it was locked out: configuration outranks a lockout,
 * so a locked-out admin is recovered by a start (with a new secret, if the old one leaked).
 */
export async function ensureBootstrapAdmin(db: Db, secret: string): Promise<{ wasLockedOut: boolean }> {
  return db.transaction().execute(async (trx) => {
    const admin = await upsertSubject(trx, {
      id: BOOTSTRAP_ADMIN_ID,
      kind: 'service',
      domain_id: 'default',
      capabilities: [...capabilities],
      tenant_ids: null,
      collections: null,
    });
    await upsertAccessToken(trx, {
      id: BOOTSTRAP_ADMIN_TOKEN_ID,
      subject_id: BOOTSTRAP_ADMIN_ID,
      secret_hash: hashSecret(secret),
      name: 'bootstrap admin',
      temporary: false,
      generation: null,
      expires_at: null,
    });
    if (admin.disabled_at !== null) await enableSubject(trx, 'service', BOOTSTRAP_ADMIN_ID);
    return { wasLockedOut: admin.disabled_at !== null };
  });
}
