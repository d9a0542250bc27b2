import type { ColumnType, Generated, Insertable, Selectable } from 'kysely';
import type { Canceller } from '../contracts/index.js';

/**
 * A cancel asked of a command that a worker's step held at the time (POST /v1/jobs/{id}/cancel):
 * the step that next locks the command ends it cancelled instead of running. Kept apart from
 * `commands` so that asking never waits for the row lock a step holds; the row goes when the
 * command ends cancelled. No foreign key: inserting one would wait for that same lock.
 */
export interface CommandCancellationTable {
  command_id: string;
  requested_at: Generated<Date>;
  requested_by: ColumnType<Canceller, string, string>;
}
export type CommandCancellationRow = Selectable<CommandCancellationTable>;
export type NewCommandCancellation = Insertable<CommandCancellationTable>;
