import { type Kysely, sql } from 'kysely';

/**
 * The job list (GET /v1/jobs) and job retention.
 *
 * The list reads newest first, by (created_at, id), from where the previous page ended: the
 * admin's list from commands_created_at, a subject's own from commands_submitter_created_at,
 * a list filtered by a state other than succeeded (a failed job among millions that succeeded)
 * from commands_state_created_at; each reads one page's entries, however large the table.
 *
 * Retention deletes commands that ended JOB_RETENTION_DAYS ago (oldest finished_at first, from
 * commands_finished_at) and keeps their audit rows: audit_log.command_id stays the ID of the job
 * it records, without the foreign key (a deleted command would otherwise be refused, and
 * audit_log is append-only, so "on delete set null" is refused too).
 *
 * Plain CREATE INDEX (the migrator runs each migration in a transaction): on a large table it
 * holds inserts into commands for the seconds each index takes to build.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    create index commands_created_at on commands (created_at desc, id desc);
    create index commands_submitter_created_at on commands (submitter_id, created_at desc, id desc);
    create index commands_state_created_at on commands (state, created_at desc, id desc) where state <> 'succeeded';
    create index commands_finished_at on commands (finished_at) where finished_at is not null;
    alter table audit_log drop constraint if exists audit_log_command_id_fkey;
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    drop index if exists commands_created_at, commands_submitter_created_at, commands_state_created_at, commands_finished_at;
    -- not valid: audit rows of commands deleted by retention stay
    alter table audit_log add constraint audit_log_command_id_fkey foreign key (command_id) references commands (id) not valid;
  `.execute(db);
}
