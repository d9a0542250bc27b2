import type { ColumnType, Generated, Insertable, Selectable } from 'kysely';
import type { RevocationEvent } from '../contracts/index.js';

/** Events committed with their effect, waiting for (or done with) the relay to the stream. */
export interface OutboxTable {
  id: Generated<string>;
  event_id: string;
  command_id: string;
  event: ColumnType<RevocationEvent, string, never>;
  created_at: Generated<Date>;
  published_at: Date | null;
}
export type OutboxRow = Selectable<OutboxTable>;
export type NewOutboxRow = Insertable<OutboxTable>;
