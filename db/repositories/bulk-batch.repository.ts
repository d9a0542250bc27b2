/**
 * The statement of one bulk batch (a delete by tags or tenant, a lockout): ONE statement deletes
 * the batch and writes what it leaves behind, and only its events come back, as rows. Its records:
 * one audit row and one event per slice of at most `idsPerEvent` token IDs, in slice order, event
 * i carrying audit row i's IDs. Each ID is stored once, in its audit row (kept for ever): the
 * outbox row holds its event without them and points at that audit row (outbox.audit_id, read
 * whole through eventText), because writing every ID twice cost about as much as deleting the
 * tokens. Every value the statement builds stays the size of a slice: a batch-sized array or JSON
 * value (tens of thousands of IDs) costs several times more per ID to build and copy
 * (bench/RESULTS.md, session 16).
 */
import { type RawBuilder, sql } from 'kysely';
import type { EventOf } from '../../contracts/index.js';
import type { NewAuditLog } from '../audit-log.table.js';
import { compareKeys, type Executor } from '../database.js';
import { eventText, type OutboxEvent } from './outbox.repository.js';

/** The events a bulk batch writes. */
export type BatchEventType = 'tokens.deleted' | 'access_token.revoked';

/** What a batch records with its effect; the statement fills in the token IDs and the batch fields. */
export interface BatchRecord<T extends BatchEventType = BatchEventType> {
  /** The batch's audit row, for each slice: its `data` (JSON text) gets `token_ids` and `batch: { index, size }` besides. */
  audit: NewAuditLog;
  /** The envelope of the batch's events: each gets a fresh event_id, its slice's token IDs and `batch: { index, last }`. */
  event: EventOf<T>;
  /** The batch index of the first slice (its audit row's and its event's). */
  eventIndex: number;
  idsPerEvent: number;
}

/** What a batch statement reports. */
export interface BatchResult {
  /** Rows the batch deleted. */
  n: number;
  /** The highest key deleted, or the bound the batch went up to (where the next batch starts); null when neither. */
  lastId: string | null;
  /** Whether a batch is left to do. */
  more: boolean;
  /** The outbox rows the statement wrote, in outbox order (one per event), for the worker to publish once the step commits. */
  outbox: OutboxEvent[];
}

/**
 * Runs a batch statement whose WITH list (`deletion`, without the WITH) defines `batch` (one row:
 * `n` int, `last_id`, `ids` text[]: the token IDs in the order the events give them, '{}' when
 * none) and `more` (one row: `more` boolean), and which writes `record`. Slices follow `ids`; the last event says
 * `last: true` when `more` is false. A batch that deletes nothing after earlier ones (someone else
 * deleted the rest) writes one event with no IDs (and no audit row), marked last; a first batch
 * that deletes nothing writes none. Returns the batch's figures and its events, one row each: not
 * as one array of JSON texts, which node-pg parses character by character (~10 µs per token ID).
 */
export async function executeBatchStatement<T extends BatchEventType>(trx: Executor, deletion: RawBuilder<unknown>, record: BatchRecord<T>): Promise<BatchResult> {
  const commandId = (record.event as EventOf<BatchEventType>).job_id;
  const { data, ...auditRow } = record.audit;
  const columns = Object.keys(auditRow);
  const per = record.idsPerEvent;
  const first = record.eventIndex;
  // slice numbers 0, 1, …: one per idsPerEvent IDs; none for a first batch that found nothing, one (empty) for a later one
  const slices = sql`generate_series(0, (select case when n > 0 then (n - 1) / ${per}::int when ${first}::int > 0 then 0 else -1 end from batch))`;
  const { rows } = await sql<{ n: number; last_id: string | null; more: boolean; outbox_id: string | null; outbox_event: string | null }>`
    with ${deletion}, audit_rows as (
      -- in slice order (a function scan, inserted as read)
      insert into audit_log (${sql.join(columns.map((c) => sql.ref(c)))}, data)
      select ${sql.join(columns.map((c) => sql.ref(`r.${c}`)))},
             ${data}::jsonb || jsonb_build_object('token_ids', to_jsonb(s.ids), 'batch', jsonb_build_object('index', ${first}::int + s.p, 'size', cardinality(s.ids)))
      from (select p, ((select ids from batch))[p * ${per}::int + 1 : (p + 1) * ${per}::int] as ids from ${slices} as p) as s,
           jsonb_populate_record(null::audit_log, ${JSON.stringify(auditRow)}::jsonb) as r
      where cardinality(s.ids) > 0
      returning id, (data -> 'batch' ->> 'index')::int - ${first}::int as p, data -> 'token_ids' as token_ids
    ), outbox_rows as (
      insert into outbox (event_id, command_id, event, audit_id)
      select e.id, ${commandId}::uuid,
             jsonb_set(jsonb_set(${JSON.stringify(record.event)}::jsonb, '{event_id}', to_jsonb(e.id)), '{data,batch}',
                       jsonb_build_object('index', ${first}::int + e.p, 'last', not (select more from more) and e.p = (select greatest(n - 1, 0) / ${per}::int from batch))),
             a.id
      from (select p, gen_random_uuid() as id from ${slices} as p) as e left join audit_rows a on a.p = e.p
      order by e.p
      returning id, event, audit_id
    ), events as (
      select o.id, ${eventText(sql`o.event`, sql`o.audit_id`, sql`a.token_ids`)} as event
      from outbox_rows o left join audit_rows a on a.id = o.audit_id
    )
    select b.n, b.last_id::text as last_id, m.more, e.id::text as outbox_id, e.event as outbox_event
    from batch b cross join more m left join events e on true`.execute(trx);
  const head = rows[0];
  if (!head) throw new Error('the batch statement returned no row');
  // sorted here rather than by the statement, which would copy every event's text once more to sort it
  const outbox = rows.flatMap((row) => (row.outbox_id === null ? [] : [{ id: row.outbox_id, event: row.outbox_event!, commandId, terminal: false }])).sort((a, b) => compareKeys(a.id, b.id));
  return { n: head.n, lastId: head.last_id, more: head.more, outbox };
}
