import { type Kysely, sql } from 'kysely';

/**
 * A job can be cancelled (`POST /v1/jobs/{id}/cancel`): `cancelled` is a terminal state of a
 * command, beside succeeded and failed. The state check is replaced, NOT VALID so that it does
 * not scan the table under the migration's lock: every existing row holds one of the narrower
 * set of states, and new and updated rows are checked. The reconciler's index
 * (commands_pending: queued and running) needs no change: a cancelled command is not pending.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    alter table commands
      drop constraint commands_state_check,
      add constraint commands_state_check check (state in ('queued', 'running', 'succeeded', 'failed', 'cancelled')) not valid;
  `.execute(db);
}

/** Cancelled commands already stored keep their state; new rows are held to the four states again. */
export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    alter table commands
      drop constraint commands_state_check,
      add constraint commands_state_check check (state in ('queued', 'running', 'succeeded', 'failed')) not valid;
  `.execute(db);
}
