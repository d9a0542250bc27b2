import { AuditPage, AuditQuery, sinceInstant } from '../../contracts/index.js';
import { listAudit } from '../../db/repositories/audit-log.repository.js';
import { tenantScope } from '../access.js';
import type { AppDeps } from '../app.js';
import type { ZodApp } from '../types.js';

/**
 * `GET /v1/audit?job_id=&collection=&since=&after_id=&limit=`: the append-only audit trail.
 * `subjects:admin` reads every row; anyone else the rows of their own commands and, when
 * tenant-scoped, rows whose tenants all lie within their scope, as narrowed by X-Tenant-Id.
 */
export function auditRoutes(app: ZodApp, deps: AppDeps): void {
  app.get('/v1/audit', { config: { family: 'native' }, schema: { querystring: AuditQuery, response: { 200: AuditPage } } }, async (request) => {
    const { subject } = request.caller;
    const q = request.query;
    // X-Tenant-Id only narrows a tenant-scoped subject's view; it never widens an unscoped one's
    const tenantIds = subject.tenant_ids === null ? null : tenantScope(subject, request.headers['x-tenant-id']);
    const rows = await listAudit(
      deps.db,
      {
        commandId: q.job_id,
        collection: q.collection,
        since: q.since !== undefined ? new Date(sinceInstant(q.since)) : undefined,
        afterId: q.after_id,
        visibleTo: subject.capabilities.includes('subjects:admin') ? undefined : { actorId: subject.id, tenantIds },
      },
      q.limit,
    );
    return {
      entries: rows.map((r) => ({
        id: r.id,
        job_id: r.command_id,
        occurred_at: r.occurred_at.toISOString(),
        action: r.action,
        actor: { id: r.actor_id, kind: r.actor_kind },
        tenant_ids: r.tenant_ids,
        reason: r.reason,
        adhoc_reason: r.adhoc_reason,
        custom_audit: r.custom_audit,
        request_id: r.request_id,
        source: r.source,
        collection: r.collection,
        data: r.data,
      })),
      next_after_id: rows.length === q.limit ? (rows.at(-1)?.id ?? null) : null,
    };
  });
}
