import { randomUUID } from 'node:crypto';
import type { AuditContext, EventDraft, RevocationEvent } from '../contracts/index.js';

/** Wraps drafts in the envelope of SPEC §8: a fresh event_id each, the command's audit facts. */
export function toEvents(jobId: string, audit: AuditContext, drafts: readonly EventDraft[], now = new Date()): RevocationEvent[] {
  const { tenant_ids, ...auditFacts } = audit;
  return drafts.map(
    (draft) =>
      ({
        event_id: randomUUID(),
        schema_version: 1,
        type: draft.type,
        occurred_at: now.toISOString(),
        job_id: jobId,
        tenant_ids,
        audit: auditFacts,
        data: draft.data,
      }) as RevocationEvent,
  );
}
