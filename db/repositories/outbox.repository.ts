import { sql } from 'kysely';
import type { RevocationEvent } from '../../contracts/index.js';
import type { Executor } from '../database.js';
import { executePrepared } from '../prepared.js';
import type { NewOutboxRow } from '../outbox.table.js';

/** The outbox rows of `events`, in order (their ids give the stream order per command). */
export function outboxRows(commandId: string, events: readonly RevocationEvent[]): NewOutboxRow[] {
  return events.map((event) => ({ event_id: event.event_id, command_id: commandId, event: JSON.stringify(event) }));
}

/** Any number works as long as every relay uses the same one. */
export const RELAY_LOCK_KEY = 0x72656c61; // "rela"

/**
 * Takes the relay lock for this session (the connection), if free: one relay at a time
 * publishes, so events reach the stream in outbox order. Returns whether it was taken. The lock
 * is held until releaseRelayLock or the end of the session (a crashed relay's goes with it).
 */
export async function tryRelayLock(db: Executor): Promise<boolean> {
  const [row] = await executePrepared(db, sql<{ ok: boolean }>`select pg_try_advisory_lock(${RELAY_LOCK_KEY}) as ok`.compile(db));
  return row?.ok === true;
}

/** Releases the relay lock this session holds. */
export async function releaseRelayLock(db: Executor): Promise<void> {
  await sql`select pg_advisory_unlock(${RELAY_LOCK_KEY})`.execute(db);
}

/**
 * For the holder of the relay lock, in ONE autocommit statement: marks `published` (what the
 * relay just put on the stream) as published, and reads the oldest events still unpublished, at
 * most `limit`, in outbox order, each as its JSON text ready for the stream (the relay never
 * parses what it only forwards). The marks commit without waiting for the WAL flush: a mark lost
 * in a crash only republishes, which at-least-once allows (consumers dedupe).
 * Index: outbox_unpublished.
 */
export async function markAndClaim(db: Executor, published: readonly string[], limit: number): Promise<{ id: string; event: string }[]> {
  return executePrepared(
    db,
    sql<{ id: string; event: string }>`
      with marked as (
        update outbox set published_at = now() where id = any(${[...published]}::bigint[])
      ), relaxed as materialized (
        select set_config('synchronous_commit', 'off', true) as setting
      )
      select id, event::text as event from outbox
      where published_at is null and id <> all(${[...published]}::bigint[]) and (select setting from relaxed) is not null
      order by id
      limit ${limit}`.compile(db),
  );
}

/** Seconds since the oldest unpublished event was committed (0 when none): the relay's lag. */
export async function outboxLagSeconds(db: Executor): Promise<number> {
  const row = await db
    .selectFrom('outbox')
    .select(sql<string | null>`extract(epoch from now() - min(created_at))`.as('lag'))
    .where('published_at', 'is', null)
    .executeTakeFirst();
  return row?.lag ? Number(row.lag) : 0;
}
