import type { AppError, AuditContext, CommandOf, CommandResults, CommandType, EventDraft, JobProgress } from '../../contracts/index.js';
import type { Executor, Trx } from '../../db/database.js';
import type { AuditEntry } from '../../db/repositories/audit-log.repository.js';
import type { OutboxEvent } from '../../db/repositories/outbox.repository.js';

/** What a handler step is given: an open transaction (the executor owns it) and the command. */
export interface StepContext<T extends CommandType> {
  trx: Trx;
  commandId: string;
  command: CommandOf<T>;
  audit: AuditContext;
  /** Where the previous committed step stopped; null on the first step. */
  checkpoint: Record<string, unknown> | null;
  progress: JobProgress | null;
  /** The total counted by `countRemaining` (processed + left), once that count has returned; else null. */
  total: number | null;
  settings: HandlerSettings;
}

export interface HandlerSettings {
  deleteBatchSize: number;
}

interface StepEffects {
  /** Events to publish (the executor wraps them in the envelope of SPEC §8). */
  events: EventDraft[];
  /** Audit rows, committed with the effect. */
  audit: AuditEntry[];
  /** Outbox rows the step's own statements wrote (a breach batch writes its events in Postgres): published before `events`. */
  outbox?: OutboxEvent[];
}

/**
 * One step's outcome. A step that is not done commits its effect with its checkpoint and
 * progress, and the executor runs the next step in a new transaction. A done step commits the
 * effect and the command's terminal state together.
 */
export type StepOutcome<T extends CommandType> =
  (StepEffects & { done: false; checkpoint: Record<string, unknown>; progress: JobProgress }) | (StepEffects & { done: true; result: CommandResults[T]; progress?: JobProgress });

/**
 * The rule of one command type. `step` runs inside a transaction it does not own and must not
 * commit or open one; it throws AppError for a business failure (nothing it did is kept).
 */
export interface CommandHandler<T extends CommandType> {
  step(ctx: StepContext<T>): Promise<StepOutcome<T>>;
  /**
   * For a command of many steps (optional): counts the work left after the committed steps, for
   * the progress total. The executor runs it on a connection of its own, in the snapshot where it
   * reads the steps' progress, while the next steps run, so a long count never delays the work.
   */
  countRemaining?(db: Executor, command: CommandOf<T>, audit: AuditContext): Promise<number>;
  /**
   * For short commands (optional): the steps of several commands of this type in a group's
   * transaction with fewer statements than one `step` each (see GroupCommit), with the result of
   * running them one after another in the order given. Returns per context, in order, its outcome,
   * its business failure (an AppError), or 'run alone' (it needs a transaction of its own); a
   * context that gets no outcome had no effect. Throws only when the statement itself
   * failed (a conflict, a fault): then nothing of any of them is kept.
   */
  stepMany?(trx: Trx, contexts: readonly StepContext<T>[]): Promise<(StepOutcome<T> | AppError | 'run alone')[]>;
}
