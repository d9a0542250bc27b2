import { type Kysely, sql } from 'kysely';

/**
 * A job can be cancelled (`POST /v1/jobs/{id}/cancel`): `cancelled` is a terminal state of a
 * command, beside succeeded and failed. The state check is replaced NOT VALID, so that it does
 * not scan the table under the migration's lock: every existing row holds one of the narrower
 * set of states, and new and updated rows are checked. The reconciler's index
 * (commands_pending: queued and running) needs no change: a cancelled command is not pending.
 *
 * `command_cancellations` holds a cancel asked while a worker's step held the command row: the
 * next step that locks the command reads it (in the same statement) and ends the command
 * cancelled. A cancel written to the command row itself would wait for that lock, and could be
 * overtaken again and again by the worker's next step. It has no foreign key to `commands`:
 * inserting a row would then wait for the same lock (FOR KEY SHARE against the step's FOR UPDATE).
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    alter table commands
      drop constraint commands_state_check,
      add constraint commands_state_check check (state in ('queued', 'running', 'succeeded', 'failed', 'cancelled')) not valid;
    create table command_cancellations (
      command_id uuid primary key,
      requested_at timestamptz not null default now(),
      requested_by jsonb not null
    );
  `.execute(db);
}

/** Cancelled commands already stored keep their state; new rows are held to the four states again. */
export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    drop table if exists command_cancellations;
    alter table commands
      drop constraint commands_state_check,
      add constraint commands_state_check check (state in ('queued', 'running', 'succeeded', 'failed')) not valid;
  `.execute(db);
}
