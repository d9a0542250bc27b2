import { type Kysely, sql } from 'kysely';

/**
 * An outbox row's `created_at` is when it was written, not when its transaction began: the relay
 * takes only events older than its grace period (the committing worker publishes younger ones),
 * and `now()` is the transaction's start, so the events of a step whose transaction ran longer
 * than the grace period (a large breach batch, a short command waiting on a row lock) were
 * already "old" when they committed, and the relay published them beside their worker.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`alter table outbox alter column created_at set default clock_timestamp()`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`alter table outbox alter column created_at set default now()`.execute(db);
}
