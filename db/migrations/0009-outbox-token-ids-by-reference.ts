import { type Kysely, sql } from 'kysely';

/**
 * A bulk batch (a delete by tags or tenant, a lockout) stores each of its token IDs once: in its
 * audit rows, kept for ever. Its outbox rows point at the audit row whose `data.token_ids` they
 * carry (`audit_id`) and hold their event without them; the event's text is put together when
 * the row is read (eventText in db/repositories/outbox.repository.ts). Writing every ID twice
 * (both tables TOAST them) cost about as much as deleting the tokens (bench/RESULTS.md, session
 * 16). No foreign key: audit rows are never deleted (audit_log is append-only). A nullable
 * column without a default is added without rewriting the table.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`alter table outbox add column audit_id bigint`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`alter table outbox drop column if exists audit_id`.execute(db);
}
