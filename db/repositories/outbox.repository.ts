import { sql } from 'kysely';
import type { RevocationEvent } from '../../contracts/index.js';
import type { Executor } from '../database.js';

/** Appends events for the relay, in the caller's transaction (the transactional outbox). */
export async function insertOutboxEvents(trx: Executor, commandId: string, events: readonly RevocationEvent[]): Promise<void> {
  if (events.length === 0) return;
  await trx
    .insertInto('outbox')
    .values(events.map((event) => ({ event_id: event.event_id, command_id: commandId, event: JSON.stringify(event) })))
    .execute();
}

/** Any number works as long as every relay uses the same one. */
const RELAY_LOCK_KEY = 0x72656c61; // "rela"

/**
 * Claims the relay for this transaction: only one relay publishes at a time, so events reach
 * the stream in commit order. Returns false if another relay holds it.
 */
export async function tryClaimRelay(trx: Executor): Promise<boolean> {
  const { rows } = await sql<{ ok: boolean }>`select pg_try_advisory_xact_lock(${RELAY_LOCK_KEY}) as ok`.execute(trx);
  return rows[0]?.ok === true;
}

/** The oldest unpublished events, at most `limit`, in commit order. Index: outbox_unpublished. */
export async function listUnpublished(trx: Executor, limit: number): Promise<{ id: string; event: RevocationEvent }[]> {
  return trx.selectFrom('outbox').select(['id', 'event']).where('published_at', 'is', null).orderBy('id').limit(limit).execute();
}

/** Marks events published. */
export async function markPublished(trx: Executor, ids: readonly string[]): Promise<void> {
  if (ids.length === 0) return;
  await trx.updateTable('outbox').set({ published_at: sql`now()` }).where('id', 'in', [...ids]).execute();
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
