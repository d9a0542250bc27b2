import type { ColumnType, Generated, Insertable, Selectable } from 'kysely';

/** Append-only (a trigger rejects UPDATE, DELETE and TRUNCATE). One row per effect. */
export interface AuditLogTable {
  id: Generated<string>;
  command_id: string | null;
  occurred_at: Generated<Date>;
  action: string;
  actor_id: string;
  actor_kind: string;
  tenant_ids: string[] | null;
  reason: string | null;
  adhoc_reason: string | null;
  custom_audit: string | null;
  request_id: string | null;
  source: string;
  collection: string | null;
  data: ColumnType<Record<string, unknown>, string, never>;
}
export type AuditLogRow = Selectable<AuditLogTable>;
export type NewAuditLog = Insertable<AuditLogTable>;
