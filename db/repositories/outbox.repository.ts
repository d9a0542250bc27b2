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
 * Claims the relay for this transaction and reads the oldest unpublished events, at most
 * `limit`, in commit order, in one round trip. Only one relay publishes at a time (a
 * transaction-level advisory lock), so events reach the stream in order; when another relay
 * holds the lock, returns none. The transaction commits without waiting for the WAL flush. Each
 * event comes as its JSON text, ready for the stream (the relay never parses what it only
 * forwards). Index: outbox_unpublished.
 */
export async function claimUnpublished(trx: Executor, limit: number): Promise<{ id: string; event: string }[]> {
  return executePrepared(
    trx,
    trx
      .with(
        (cte) => cte('relay').materialized(),
        (qc) =>
          qc.selectNoFrom([
            sql<boolean>`pg_try_advisory_xact_lock(${RELAY_LOCK_KEY})`.as('ok'),
            // the relay's commit (its "published" marks) need not wait for the WAL flush: a mark
            // lost in a crash only republishes, which at-least-once allows (consumers dedupe)
            sql<string>`set_config('synchronous_commit', 'off', true)`.as('relaxed'),
          ]),
      )
      .selectFrom('outbox')
      .select(['id', sql<string>`event::text`.as('event')])
      .where('published_at', 'is', null)
      .where(sql<boolean>`(select ok from relay)`)
      .orderBy('id')
      .limit(limit)
      .compile(),
  );
}

/** Marks events published. */
export async function markPublished(trx: Executor, ids: readonly string[]): Promise<void> {
  if (ids.length === 0) return;
  await executePrepared(trx, trx.updateTable('outbox').set({ published_at: sql`now()` }).where('id', '=', sql<string>`any(${[...ids]}::bigint[])`).compile());
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
