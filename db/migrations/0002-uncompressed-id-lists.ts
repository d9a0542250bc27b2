import { type Kysely, sql } from 'kysely';

/**
 * Audit rows and outbox events of a breach delete carry thousands of token IDs each (random
 * UUIDs, which compress poorly). Postgres compressed them with pglz on every insert, which cost
 * more than the batch's DELETE itself: measured, 20 × 5,000 IDs take ~200 ms compressed and ~54 ms
 * stored as they are. EXTERNAL keeps out-of-line storage (TOAST) without compression; it applies
 * to rows written from now on.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    alter table audit_log alter column data set storage external;
    alter table outbox alter column event set storage external;
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    alter table audit_log alter column data set storage extended;
    alter table outbox alter column event set storage extended;
  `.execute(db);
}
