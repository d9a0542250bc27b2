import type { ColumnType, Generated, Insertable, Selectable } from 'kysely';
import type { RevocationEvent } from '../contracts/index.js';

/** Events committed with their effect, until the committing worker's publisher (or, for those it left, the relay) puts them on the stream. */
export interface OutboxTable {
  id: Generated<string>;
  event_id: string;
  command_id: string;
  /**
   * Stored without its token IDs when `audit_id` is set: they are that audit row's
   * `data.token_ids` (migration 0009). Read the event whole with outboxEventsOf or eventText.
   */
  event: ColumnType<RevocationEvent, string, never>;
  audit_id: ColumnType<string | null, string | null | undefined, never>;
  created_at: Generated<Date>;
  published_at: Date | null;
}
export type OutboxRow = Selectable<OutboxTable>;
export type NewOutboxRow = Insertable<OutboxTable>;
