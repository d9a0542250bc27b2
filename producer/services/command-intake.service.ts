import type { FastifyRequest } from 'fastify';
import { AccessReason, AppError, type AuditContext, type Command, type CommandRequest, type Config } from '../../contracts/index.js';
import type { CommandRow } from '../../db/command.table.js';
import type { Db } from '../../db/database.js';
import { findAccessTokenById } from '../../db/repositories/access-token.repository.js';
import { findCommandByIdempotencyKey } from '../../db/repositories/command.repository.js';
import { findSubject } from '../../db/repositories/subject.repository.js';
import { requireCapability, requireCollection, resolveReason, type ResolvedReason, tenantScope } from '../access.js';
import { auditContext, idempotencyKey } from '../intake.js';
import { authorizeAccessTokenRevoke, authorizeCurrentProvider, authorizeUserTemporaryTokens } from './revocation-rules.js';
import { requireCollectionExists } from './vault-tokens.service.js';

export interface IntakeContext {
  db: Db;
  config: Pick<Config, 'FORCE_ACCESS_REASON'>;
}

/** A reason on a non-vault command is optional, but when given it must be a known one. */
function optionalReason(input: CommandRequest): ResolvedReason | null {
  if (input.reason === undefined) return null;
  const parsed = AccessReason.safeParse(input.reason);
  if (!parsed.success) throw new AppError('PV1002', { reason: input.reason }, `reason must be one of ${AccessReason.options.join(', ')}.`);
  if (parsed.data === 'Other' && !input.adhoc_reason) throw new AppError('PV1003', { reason: 'Other' });
  return { reason: parsed.data, adhoc_reason: input.adhoc_reason ?? null, custom_audit: input.custom_audit ?? null };
}

/** The command the caller submitted earlier under this request's Idempotency-Key, if any. */
export async function earlierUnderKey(db: Db, request: FastifyRequest): Promise<CommandRow | undefined> {
  const key = idempotencyKey(request);
  return key === undefined ? undefined : findCommandByIdempotencyKey(db, request.caller.subject.id, key);
}

/**
 * Authorizes a command request and fixes its audit context: every check that can be made at
 * acceptance is made here, so a 202 is only given to a command the caller may run. Used by the
 * seed routes and `POST /v1/commands` alike. Returns the command as it will be stored.
 */
export async function prepareCommand(ctx: IntakeContext, request: FastifyRequest, input: CommandRequest): Promise<{ command: Command; audit: AuditContext }> {
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
      const reason = optionalReason(input);
      const scope = tenantScope(caller.subject, request.headers['x-tenant-id']);
      const target = await findAccessTokenById(ctx.db, input.token_id);
      if (target) authorizeAccessTokenRevoke(caller, target);
      // a retry of a revoke that ran: its token is gone, and the key's earlier command answers
      // (the same command: its replay; another one: PV3010)
      else if (!(await earlierUnderKey(ctx.db, request))) throw new AppError('PV3006', { token_id: input.token_id });
      return { command: { type: input.type, token_id: input.token_id }, audit: auditContext(request, scope, reason) };
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
  }
}
