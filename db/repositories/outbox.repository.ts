import { type RawBuilder, sql } from 'kysely';
import { type RevocationEvent, terminalEventTypes } from '../../contracts/index.js';
import type { Executor } from '../database.js';
import { executePrepared } from '../prepared.js';
import type { NewOutboxRow } from '../outbox.table.js';

/** The outbox rows of `events`, in order (their ids give the stream order per command). */
export function outboxRows(commandId: string, events: readonly RevocationEvent[]): NewOutboxRow[] {
  return events.map((event) => ({ event_id: event.event_id, command_id: commandId, event: JSON.stringify(event) }));
}

/** A committed outbox row as it goes on the stream: its outbox id (to mark it) and its JSON text. */
export interface OutboxEvent {
  id: string;
  event: string;
  commandId: string;
  /** The command's last event (`command.succeeded`, `command.failed` or `command.cancelled`). */
  terminal: boolean;
}

/**
 * The text of an outbox row's event, whole: as stored, or, for a row that points at an audit row
 * (`audit_id`, migration 0009), with `data.token_ids` taken from that audit row's. `tokenIds` is
 * that audit row's `data -> 'token_ids'`.
 */
export function eventText(event: RawBuilder<unknown>, auditId: RawBuilder<unknown>, tokenIds: RawBuilder<unknown>): RawBuilder<string> {
  return sql<string>`case when ${auditId} is null then ${event}::text else jsonb_set(${event}, '{data,token_ids}', ${tokenIds})::text end`;
}

/** The columns of outbox row `o` read as an OutboxEvent (the query reads `from outbox o`). */
const asOutboxEvent = sql`o.id, ${eventText(sql`o.event`, sql`o.audit_id`, sql`(select a.data -> 'token_ids' from audit_log a where a.id = o.audit_id)`)} as event,
  o.command_id::text as "commandId", o.event->>'type' in (${sql.raw(terminalEventTypes.map((t) => `'${t}'`).join(', '))}) as terminal`;

/** Takes a command ID; returns its events, whole (eventText), in outbox order, published or not. */
export async function outboxEventsOf(db: Executor, commandId: string): Promise<RevocationEvent[]> {
  const { rows } = await sql<OutboxEvent>`select ${asOutboxEvent} from outbox o where o.command_id = ${commandId} order by o.id`.execute(db);
  return rows.map((row) => JSON.parse(row.event) as RevocationEvent);
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

/**
 * Whether this session (the connection) holds the relay lock. A pool's connection can be
 * replaced under its user (the old one closed by the server, a new one opened by the next query):
 * the lock went with the old session, and nothing else says so.
 */
export async function holdsRelayLock(db: Executor): Promise<boolean> {
  // a one-bigint advisory lock shows in pg_locks as classid = high 32 bits, objid = low 32 bits, objsubid = 1
  const [row] = await executePrepared(
    db,
    sql<{ ok: boolean }>`select exists(select 1 from pg_locks where locktype = 'advisory' and pid = pg_backend_pid() and granted
      and database = (select oid from pg_database where datname = current_database())
      and classid = ${Math.floor(RELAY_LOCK_KEY / 2 ** 32)}::bigint::oid and objid = ${RELAY_LOCK_KEY % 2 ** 32}::bigint::oid and objsubid = 1) as ok`.compile(db),
  );
  return row?.ok === true;
}

/** Releases the relay lock this session holds. */
export async function releaseRelayLock(db: Executor): Promise<void> {
  await sql`select pg_advisory_unlock(${RELAY_LOCK_KEY})`.execute(db);
}

/**
 * For the holder of the relay lock, in ONE autocommit statement: marks `published` (what the
 * relay just put on the stream) as published, and reads the oldest events still unpublished that
 * were written at least `minAgeMs` ago, at most `limit`, in outbox order, each as its JSON text
 * ready for the stream (the relay never parses what it only forwards). The marks commit without
 * waiting for the WAL flush: a mark lost in a crash only republishes, which at-least-once allows
 * (consumers dedupe). Index: outbox_unpublished.
 */
export async function markAndClaim(db: Executor, published: readonly string[], limit: number, minAgeMs = 0): Promise<OutboxEvent[]> {
  return executePrepared(
    db,
    sql<OutboxEvent>`
      with marked as (
        update outbox set published_at = now() where id = any(${[...published]}::bigint[])
      ), relaxed as materialized (
        select set_config('synchronous_commit', 'off', true) as setting
      )
      select ${asOutboxEvent} from outbox o
      where o.published_at is null and o.id <> all(${[...published]}::bigint[]) and (select setting from relaxed) is not null
        and o.created_at <= now() - ${minAgeMs} * interval '1 millisecond'
      order by o.id
      limit ${limit}`.compile(db),
  );
}

/**
 * Marks events the worker that committed them put on the stream itself (EventPublisher), in one
 * autocommit statement that does not wait for the WAL flush (a lost mark only republishes).
 */
export async function markPublished(db: Executor, ids: readonly string[]): Promise<void> {
  await executePrepared(
    db,
    sql`
      with relaxed as materialized (
        select set_config('synchronous_commit', 'off', true) as setting
      )
      update outbox set published_at = now()
      where id = any(${[...ids]}::bigint[]) and published_at is null and (select setting from relaxed) is not null`.compile(db),
  );
}

/**
 * The events of one command still unpublished, in outbox order: what an earlier delivery of a
 * command resumed now may have committed without putting it on the stream (its process died).
 * Index: outbox_unpublished (the unpublished rows are few).
 */
export async function unpublishedEventsOf(db: Executor, commandId: string): Promise<OutboxEvent[]> {
  return executePrepared(db, sql<OutboxEvent>`select ${asOutboxEvent} from outbox o where o.published_at is null and o.command_id = ${commandId} order by o.id`.compile(db));
}

/**
 * Of `commandIds`, those with an event still unpublished (what the EventPublisher left to the
 * relay and the relay has not published yet). Index: outbox_unpublished (the unpublished rows are few).
 */
export async function commandsWithUnpublishedEvents(db: Executor, commandIds: readonly string[]): Promise<Set<string>> {
  const rows = await db
    .selectFrom('outbox')
    .select(sql<string>`command_id::text`.as('id'))
    .distinct()
    .where('published_at', 'is', null)
    .where('command_id', '=', sql<string>`any(${[...commandIds]}::uuid[])`)
    .execute();
  return new Set(rows.map((row) => row.id));
}

/**
 * Deletes at most `limit` of the oldest outbox rows that were published more than
 * `retentionSeconds` ago (the sweeper's outbox round); returns how many. It looks only at the
 * `limit` rows with the lowest IDs (the primary key's first entries), so a round costs the same
 * however large the table: rows go in ID order, and published ones past the retention are at the
 * front. Unpublished rows are never deleted (an old one among them is the relay's to publish),
 * and rows another transaction holds are skipped.
 */
export async function deletePublishedEvents(db: Executor, retentionSeconds: number, limit: number): Promise<number> {
  const result = await sql`
    delete from outbox where id in (
      select id from outbox
      where id in (select id from outbox order by id limit ${limit})
        and published_at < now() - make_interval(secs => ${retentionSeconds})
      for update skip locked)`.execute(db);
  return Number(result.numAffectedRows ?? 0);
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
