import { type Kysely, sql } from 'kysely';

/**
 * commitSteps of earlier versions ended with this check: a step that ran its effect on the copy
 * of its command a job carried (before locking the row) named the state and contents it expected,
 * and the statement that wrote the step's records failed unless every command it updated was as
 * expected. A statement cannot raise an error by itself; this function does, with its own
 * SQLSTATE, so that the COMMIT sent right behind the statement found the transaction aborted.
 * Workers no longer carry copies and do not call it; it stays for workers of an earlier version
 * during a rolling upgrade.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    create function commands_as_expected(updated int, expected int) returns int language plpgsql as $$
    begin
      if updated <> expected then
        raise exception 'only % of % commands were in the state and with the contents their steps expected', updated, expected
          using errcode = 'RV001';
      end if;
      return updated;
    end $$;
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`drop function if exists commands_as_expected(int, int)`.execute(db);
}
