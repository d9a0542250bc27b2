import type { ColumnType, Generated, Insertable, Selectable, Updateable } from 'kysely';
import type { AuditContext, Command, CommandType, JobProgress, JobState, StoredError } from '../contracts/index.js';

type Json<T> = ColumnType<T, T | string, T | string>;

/**
 * A durable revocation command: the truth about a job. BullMQ's job (ID = `id`) carries only the
 * ID and, for a short command, the `short` hint (CommandJobData), so a lost or removed BullMQ job
 * loses nothing.
 */
export interface CommandTable {
  id: string;
  type: CommandType;
  payload: Json<Command>;
  /** SHA-256 of the canonical command, compared on Idempotency-Key replays. */
  payload_hash: string;
  submitter_id: string;
  idempotency_key: string | null;
  audit: Json<AuditContext>;
  state: Generated<JobState>;
  attempts: Generated<number>;
  progress: Json<JobProgress | null>;
  /** Where a batched command resumes after a crash; opaque to everyone but its handler. */
  checkpoint: Json<Record<string, unknown> | null>;
  result: Json<Record<string, unknown> | null>;
  error: Json<StoredError | null>;
  created_at: Generated<Date>;
  started_at: Date | null;
  finished_at: Date | null;
}
export type CommandRow = Selectable<CommandTable>;
export type NewCommand = Insertable<CommandTable>;
export type CommandUpdate = Updateable<CommandTable>;
