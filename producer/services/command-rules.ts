import type { FastifyRequest } from 'fastify';
import { AppError, type AuditContext, type Command, type CommandRequest, type Config } from '../../contracts/index.js';
import type { Db } from '../../db/database.js';
import { type AccessTokenWithSubject, findAccessTokenById } from '../../db/repositories/access-token.repository.js';
import { findUnfinishedLockout } from '../../db/repositories/command-list.repository.js';
import { findCommandByIdempotencyKey } from '../../db/repositories/command.repository.js';
import { findSubject } from '../../db/repositories/subject.repository.js';
import type { SubjectRow } from '../../db/subject.table.js';
import type { TenantScope } from '../../db/repositories/tenant-scope.js';
import { type Caller, givenReason, requireCapability, requireCollection, resolveReason, type ResolvedReason, type SubjectTokenLookup, tenantScope } from '../access.js';
import { requireCollectionExists } from './vault-tokens.service.js';

/**
 * Who may run which command (SPEC §2, §6), decided once per request by prepareCommand, and the
 * seeds' own rules it applies.
 */

const sources = new Set(['cli', 'client']);

/** The audit context of a request, fixed at acceptance (SPEC §3). */
export function auditContext(request: FastifyRequest, scope: TenantScope, reason: ResolvedReason | null): AuditContext {
  const source = request.headers['x-request-source'];
  return {
    actor: { id: request.caller.subject.id, kind: request.caller.subject.kind },
    tenant_ids: scope === null ? null : [...scope],
    reason: reason?.reason ?? null,
    adhoc_reason: reason?.adhoc_reason ?? null,
    custom_audit: reason?.custom_audit ?? null,
    request_id: request.id,
    source: typeof source === 'string' && sources.has(source) ? (source as 'cli' | 'client') : 'http',
  };
}

export interface IntakeContext {
  db: Db;
  config: Pick<Config, 'FORCE_ACCESS_REASON'>;
}

/** A reason on a non-vault command is optional, but when given it must be a known one. */
function optionalReason(input: CommandRequest): ResolvedReason | null {
  return input.reason === undefined ? null : givenReason({ ...input, reason: input.reason });
}

/** An access_token.revoke whose token the route looked up by its secret (Keystone's X-Subject-Token), not by its ID. */
export interface RevokeBySecret {
  type: 'access_token.revoke';
  bySecret: SubjectTokenLookup;
}

/** A command as a route asks for it. */
export type AskedCommand = CommandRequest | RevokeBySecret;

/**
 * Authorizes a command request and fixes its audit context: every check that can be made at
 * acceptance is made here, so a 202 is only given to a command the caller may run. Used by the
 * seed routes and `POST /v1/commands` alike. Returns the command as it will be stored.
 */
export async function prepareCommand(ctx: IntakeContext, request: FastifyRequest, input: AskedCommand, key: string | undefined): Promise<{ command: Command; audit: AuditContext }> {
  const { caller } = request;
  switch (input.type) {
    case 'tokens.delete':
    case 'tokens.rotate': {
      requireCapability(caller, 'tokens:write');
      requireCollection(caller, input.collection);
      const reason = resolveReason(input, ctx.config.FORCE_ACCESS_REASON);
      const scope = tenantScope(caller.subject, request.headers['x-tenant-id']);
      await requireCollectionExists(ctx.db, input.collection);
      const audit = auditContext(request, scope, reason);
      if (input.type === 'tokens.rotate') {
        return { command: { type: input.type, collection: input.collection, token_ids: [...new Set(input.token_ids)] }, audit };
      }
      if (input.tenant_id !== undefined && scope !== null && !scope.includes(input.tenant_id)) {
        throw new AppError('PV1006', { tenant_ids: input.tenant_id });
      }
      const command: Command = {
        type: 'tokens.delete',
        collection: input.collection,
        archived: input.archived,
        ...(input.token_ids && { token_ids: [...new Set(input.token_ids)] }),
        ...(input.object_ids && { object_ids: [...new Set(input.object_ids)] }),
        ...(input.tags && { tags: [...new Set(input.tags)] }),
        ...(input.tenant_id !== undefined && { tenant_id: input.tenant_id }),
      };
      return { command, audit };
    }
    case 'access_token.revoke': {
      const reason = 'bySecret' in input ? null : optionalReason(input);
      const audit = auditContext(request, tenantScope(caller.subject, request.headers['x-tenant-id']), reason);
      const target = 'bySecret' in input ? input.bySecret.found : await findAccessTokenById(ctx.db, input.token_id);
      if (target) {
        authorizeAccessTokenRevoke(caller, target);
        return { command: { type: input.type, token_id: target.token.id }, audit };
      }
      // a retry of a revoke that ran: its token is gone, and the key's earlier command answers
      // (the same request: its replay; another one: PV3010)
      const earlier = key === undefined ? undefined : await findCommandByIdempotencyKey(ctx.db, caller.subject.id, key);
      if ('bySecret' in input) {
        // the token is the one the earlier revoke named; the secret's hash (the route's identity) tells a replay from another request
        if (earlier?.payload.type !== 'access_token.revoke') throw new AppError('PV3006', {}, 'The subject token could not be found.');
        return { command: { type: input.type, token_id: earlier.payload.token_id }, audit };
      }
      if (!earlier) throw new AppError('PV3006', { token_id: input.token_id });
      return { command: { type: input.type, token_id: input.token_id }, audit };
    }
    case 'temporary_tokens.revoke_all': {
      const reason = optionalReason(input);
      const scope = tenantScope(caller.subject, request.headers['x-tenant-id']);
      const { kind, id } = input.subject;
      // a provider's temporary tokens: that provider only (Onezone: "on behalf of the current
      // provider only"; tokens:manage covers users'); a user's: the user, or tokens:manage
      if (kind === 'provider') authorizeCurrentProvider(caller, id);
      else authorizeUserTemporaryTokens(caller, id);
      const subject = await findSubject(ctx.db, id);
      if (!subject || subject.kind !== kind) throw new AppError('PV3003', { subject_id: id, kind });
      return { command: { type: input.type, subject: { kind, id } }, audit: auditContext(request, scope, reason) };
    }
    case 'subject.lockout':
    case 'subject.unlock': {
      const reason = optionalReason(input);
      const scope = tenantScope(caller.subject, request.headers['x-tenant-id']);
      const { kind, id } = input.subject;
      if (!isAdmin(caller)) requireCapability(caller, 'security_admin'); // refused before the subject is looked up
      const subject = await findSubject(ctx.db, id);
      if (!subject || subject.kind !== kind) throw new AppError('PV3003', { subject_id: id, kind });
      authorizeLockout(caller, subject);
      if (input.type === 'subject.unlock') {
        // the worker checks again when it runs (subject-unlock.handler.ts)
        const lockout = await findUnfinishedLockout(ctx.db, id);
        if (lockout !== undefined) throw new AppError('PV3016', { subject_id: id, job_id: lockout });
      }
      return { command: { type: input.type, subject: { kind, id } }, audit: auditContext(request, scope, reason) };
    }
  }
}

const isAdmin = (caller: Caller) => caller.subject.capabilities.includes('subjects:admin');

/**
 * Who may lock a subject out or unlock it (SPEC §10): `subjects:admin`, or `security_admin` in
 * the subject's domain (Keystone's rule for another user's token). Throws PV1007 otherwise.
 */
export function authorizeLockout(caller: Caller, subject: SubjectRow): void {
  if (isAdmin(caller)) return;
  requireCapability(caller, 'security_admin');
  if (subject.domain_id !== caller.subject.domain_id) {
    throw new AppError('PV1007', { username: caller.subject.id }, 'The subject belongs to another domain.');
  }
}

/**
 * Keystone's rule for deleting an access token: your own needs no capability; another user's
 * needs `security_admin` and the same domain. Throws PV1007 otherwise.
 */
export function authorizeAccessTokenRevoke(caller: Caller, target: AccessTokenWithSubject): void {
  if (target.subject.id === caller.subject.id) return;
  if (!caller.subject.capabilities.includes('security_admin')) {
    throw new AppError('PV1007', { username: caller.subject.id, capability: 'security_admin' });
  }
  if (target.subject.domain_id !== caller.subject.domain_id) {
    throw new AppError('PV1007', { username: caller.subject.id }, 'The token belongs to a user of another domain.');
  }
}

/** Onezone's rule for a user's temporary tokens: the user themself, or `tokens:manage`. */
export function authorizeUserTemporaryTokens(caller: Caller, userId: string): void {
  if (caller.subject.id === userId && caller.subject.kind === 'user') return;
  if (!caller.subject.capabilities.includes('tokens:manage')) {
    throw new AppError('PV1007', { username: caller.subject.id, capability: 'tokens:manage' });
  }
}

/** The provider route acts on the calling provider only. */
export function authorizeProvider(caller: Caller): void {
  if (caller.subject.kind !== 'provider') {
    throw new AppError('PV1007', { username: caller.subject.id }, 'Only a provider may act on the current provider.');
  }
}

/** A provider's temporary tokens: only that provider itself may revoke them, whatever the caller's capabilities. */
export function authorizeCurrentProvider(caller: Caller, providerId: string): void {
  authorizeProvider(caller);
  if (caller.subject.id !== providerId) {
    throw new AppError('PV1007', { username: caller.subject.id }, "A provider's temporary tokens are revoked by that provider only.");
  }
}
