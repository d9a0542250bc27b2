import { sql } from 'kysely';
import type { AuditContext } from '../../contracts/index.js';
import type { AuditLogRow, NewAuditLog } from '../audit-log.table.js';
import type { Executor } from '../database.js';

export interface AuditEntry {
  action: string;
  collection: string | null;
  data: Record<string, unknown>;
}

/** The audit_log rows of `entries`, each carrying the command's audit context. */
export function auditRows(commandId: string | null, audit: AuditContext, entries: readonly AuditEntry[]): NewAuditLog[] {
  return entries.map((e) => ({
    command_id: commandId,
    action: e.action,
    actor_id: audit.actor.id,
    actor_kind: audit.actor.kind,
    tenant_ids: audit.tenant_ids ? [...audit.tenant_ids] : null,
    reason: audit.reason,
    adhoc_reason: audit.adhoc_reason,
    custom_audit: audit.custom_audit,
    request_id: audit.request_id,
    source: audit.source,
    collection: e.collection,
    data: JSON.stringify(e.data),
  }));
}

export interface AuditFilter {
  commandId?: string | undefined;
  collection?: string | undefined;
  since?: Date | undefined;
  afterId?: string | undefined;
  /** Not admin: only rows this actor wrote, or rows whose tenants all lie in `tenantIds`. */
  visibleTo?: { actorId: string; tenantIds: readonly string[] | null } | undefined;
}

/** Audit rows matching the filter, oldest first, at most `limit`. */
export async function listAudit(db: Executor, filter: AuditFilter, limit: number): Promise<AuditLogRow[]> {
  let query = db.selectFrom('audit_log').selectAll().orderBy('id').limit(limit);
  if (filter.commandId) query = query.where('command_id', '=', filter.commandId);
  if (filter.collection) query = query.where('collection', '=', filter.collection);
  if (filter.since) query = query.where('occurred_at', '>=', filter.since);
  if (filter.afterId) query = query.where('id', '>', filter.afterId);
  const visible = filter.visibleTo;
  if (visible) {
    query = query.where((eb) =>
      eb.or([
        eb('actor_id', '=', visible.actorId),
        ...(visible.tenantIds ? [eb.and([eb('tenant_ids', 'is not', null), eb('tenant_ids', '<@', sql<string[]>`${[...visible.tenantIds]}::text[]`)])] : []),
      ]),
    );
  }
  return query.execute();
}
