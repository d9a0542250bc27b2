import type { Logger } from 'pino';
import { AppError, AuditContext, Command, type CommandType, isShortCommand, type EventDraft, type JobProgress, type StoredError, terminalStates } from '../contracts/index.js';
import type { CommandRow } from '../db/command.table.js';
import { type Db, isDatabaseUnavailable, type Trx } from '../db/database.js';
import { CommandNotAsExpected, commitStep, type StepRecord } from '../db/repositories/command-step.repository.js';
import { findCommand, type LockedCommand, lockCommands, useOneCore, withdrawCancelRequest } from '../db/repositories/command.repository.js';
import { type OutboxEvent, unpublishedEventsOf } from '../db/repositories/outbox.repository.js';
import { cancellable, cancelRecord } from './command-cancel.js';
import { toEvents } from './event-envelope.js';
import type { CommandHandler, HandlerSettings, StepContext, StepOutcome } from './handlers/handler.js';
import { handlers } from './handlers/index.js';
import { RunAlone, type SharedTurn, type GroupCommit } from './group-commit.js';
import { ConflictRetriesExhausted, type RetryPolicy, defaultRetryPolicy, runTransaction } from './transaction-runner.js';

export type ExecutionOutcome =
  | { state: 'succeeded'; result: Record<string, unknown> }
  | { state: 'failed'; error: StoredError }
  /** Cancelled (POST /v1/jobs/{id}/cancel) before it ended: by the cancel itself, or by the step that found it asked. */
  | { state: 'cancelled'; result: Record<string, unknown> | null };

export interface ExecutorDeps {
  db: Db;
  logger: Logger;
  settings: HandlerSettings;
  retryPolicy?: RetryPolicy;
  /**
   * Called after each commit of a step run alone, or of a failure, with the outbox rows it wrote
   * (the EventPublisher puts them on the stream; a group hands over its own). Without it, the
   * relay publishes them after its grace period.
   */
  onCommitted?: (events: readonly OutboxEvent[]) => void;
  /** Called when a transaction is retried after a conflict. */
  onConflictRetry?: (sqlState: string) => void;
  /** Called when a step on the job's copy of its command was rolled back, to run again on the stored command. */
  onCopyRerun?: (reason: 'not_as_expected' | 'failed') => void;
  /** Called when this execution ended the command (not for a redelivery of an ended one). */
  onFinished?: (type: CommandType, state: ExecutionOutcome['state'], seconds: number) => void;
  /**
   * Group commit (see GroupCommit): the first step of a command the job says is short shares a
   * transaction with those of short commands delivered meanwhile. Without it, every step has a
   * transaction of its own.
   */
  group?: GroupCommit;
}

export interface ExecuteOptions {
  /** BullMQ will not retry after this attempt: a conflict now ends the command with PV3218. */
  finalAttempt: boolean;
  onProgress?: (progress: JobProgress) => void | Promise<void>;
  /**
   * Aborted when the process shuts down: a command of several steps (a bulk delete) stops after
   * the step in progress commits, and executeCommand throws CommandReleased; the next delivery
   * resumes from that step's checkpoint. A one-step command is not affected.
   */
  stop?: AbortSignal;
  /** The job says the command is short (CommandJobData.short): its step may join a group. */
  short?: boolean;
  /**
   * The job's copy of a short command (CommandJobData.carried): the first step, alone or in a
   * group, may apply its effect before the row is locked (runCarriedStep). Unchecked: it is parsed
   * here, and the step commits only if the stored command is queued with the same contents.
   */
  carried?: unknown;
}

/** Thrown when the job names a command that is not in Postgres: nothing to do, ever. */
export class CommandNotFound extends Error {}

/** Thrown between two committed steps when `stop` is aborted: the command is unfinished, not failed. */
export class CommandReleased extends Error {}

/** The outcome of a command found ended (a redelivery, or a job cancelled before or between its steps). */
function storedOutcome(row: CommandRow): ExecutionOutcome {
  if (row.state === 'succeeded') return { state: 'succeeded', result: row.result ?? {} };
  if (row.state === 'cancelled') return { state: 'cancelled', result: row.result };
  return { state: 'failed', error: row.error ?? { error_code: 'PV1000', message: 'failed', context: {} } };
}

function isTerminal(row: CommandRow): boolean {
  return terminalStates.includes(row.state);
}

/**
 * Executes a command to its end, exactly once in effect however often it is delivered.
 * Each step runs in one transaction that locks the command row, applies the handler's effect,
 * and commits audit rows, outbox events and the checkpoint or terminal state with it. A command
 * found terminal returns its stored outcome (a redelivered rotate returns the same mapping); so
 * does one that was cancelled. A command a cancel was asked of while a step held it is ended
 * cancelled by its next step, which runs nothing: a bulk delete takes no batch after that.
 *
 * Returns the outcome, failed included (business failures are recorded, not thrown). Throws
 * for any other fault while attempts remain, and on the final attempt only while the database
 * is out of reach: the command stays non-terminal and a later attempt (or the reconciler)
 * resumes it from its last committed step. On the final attempt, conflicts end it with PV3218
 * and any other fault (a bug, a stored row that does not parse) with PV1000, the cause logged.
 */
export async function executeCommand(deps: ExecutorDeps, commandId: string, options: ExecuteOptions): Promise<ExecutionOutcome> {
  const startedAt = process.hrtime.bigint();
  // the command the step ran on, for onFinished (the stored one, or the job's copy)
  let parsed: Parsed | undefined;
  // the command as stored, parsed by the first step that locked its row (or a copy that a commit
  // proved equal to it): what later steps run on. Never a copy that did not commit: a group that
  // rolls back a copy's step runs it again on its locked row
  let stored: Parsed | undefined;
  const finished = (outcome: ExecutionOutcome): ExecutionOutcome => {
    if (parsed) deps.onFinished?.(parsed.command.type, outcome.state, Number(process.hrtime.bigint() - startedAt) / 1e9);
    return outcome;
  };
  let steps = 0;
  let total: number | null = null;
  let counting = false;
  let carried = options.short ? parseCarried(options.carried) : undefined;
  for (;;) {
    let step: StepResult;
    const first = steps === 0;
    const ahead = first ? carried : undefined;
    const fn = (trx: Trx, turn?: SharedTurn) =>
      ahead && !turn?.locked ? runCarriedStep(deps, trx, commandId, ahead, turn, (p) => (parsed = p)) : runStep(deps, trx, commandId, first, turn, stored, total, (p) => (parsed = stored = p));
    try {
      step = await (first && options.short && deps.group
        ? deps.group.run(commandId, fn, { carried: ahead !== undefined })
        : runTransaction(deps.db, (trx) => fn(trx), deps.retryPolicy ?? defaultRetryPolicy, deps.onConflictRetry));
    } catch (error) {
      // the job's copy decides nothing: the stored command was not as carried, or the step failed
      // on the copy (the stored one may differ); either way nothing committed, so run it as usual
      if (ahead && (error instanceof CommandNotAsExpected || error instanceof AppError)) {
        deps.onCopyRerun?.(error instanceof AppError ? 'failed' : 'not_as_expected');
        carried = undefined;
        parsed = undefined;
        continue;
      }
      const fail = (stored: StoredError) => recordFailure(deps, commandId, first, stored);
      if (error instanceof AppError) return finished(await fail(error.toJSON()));
      if (!options.finalAttempt || error instanceof CommandNotFound || isDatabaseUnavailable(error)) throw error;
      if (error instanceof ConflictRetriesExhausted) return finished(await fail(new AppError('PV3218', { sqlstate: error.sqlState }).toJSON()));
      // a fault no retry mends (a handler's bug, a stored row that does not parse): retried like a
      // transient one until now, it ends the command, or the reconciler would run it forever
      deps.logger.error({ err: error }, 'command failed with an unexpected error on its last attempt: ended with PV1000');
      return finished(await fail(new AppError('PV1000', {}).toJSON()));
    }
    if ('ended' in step) return storedOutcome(step.ended);
    if ('cancelled' in step) {
      if (step.events.length > 0) deps.onCommitted?.(step.events);
      return finished(step.cancelled);
    }
    stored = step.parsed;
    if (step.events.length > 0) deps.onCommitted?.(step.events);
    steps++;
    // not awaited: BullMQ progress is informational (the command row holds the truth), and the
    // next step need not wait for Redis; updates go out in order on one connection
    if (step.outcome.progress && !(step.outcome.done && steps === 1)) void options.onProgress?.(step.outcome.progress);
    if (step.outcome.done) return finished({ state: 'succeeded', result: step.outcome.result });
    if (step.parsed.handler.countRemaining && !counting && step.outcome.progress.total === null) {
      counting = true;
      countTotal(deps, commandId, step.parsed).then(
        (counted) => (total = counted),
        (error: unknown) => deps.logger.warn({ err: error }, 'could not count the total for progress; it stays unknown'),
      );
    }
    if (options.stop?.aborted) throw new CommandReleased(`command ${commandId} released at shutdown after a committed step`);
  }
}

interface Parsed {
  command: Command;
  audit: AuditContext;
  handler: CommandHandler<CommandType>;
}

/** A step's end: the command was found ended (its stored row), or cancelled as it was asked, or the step ran. */
type StepResult =
  | { ended: CommandRow }
  | { cancelled: Extract<ExecutionOutcome, { state: 'cancelled' }>; events: OutboxEvent[] }
  | {
      parsed: Parsed;
      outcome: StepOutcome<CommandType>;
      /** The outbox rows to publish once the step commits (none in a group: the group publishes). */
      events: OutboxEvent[];
    };

function parseRow(row: CommandRow): Parsed {
  const command = Command.parse(row.payload);
  return { command, audit: AuditContext.parse(row.audit), handler: handlers[command.type] as CommandHandler<CommandType> };
}

/** A job's copy of a short command, parsed, with the JSON it came as (what the stored row must equal). */
interface Carried extends Parsed {
  as: { payload: Command; audit: AuditContext };
}

/** The job's copy (CommandJobData.carried) if it parses as a short command; else undefined (the step locks first). */
function parseCarried(carried: unknown): Carried | undefined {
  const { payload, audit } = (carried ?? {}) as { payload?: unknown; audit?: unknown };
  const command = Command.safeParse(payload);
  const context = AuditContext.safeParse(audit);
  if (!command.success || !context.success || !isShortCommand(command.data)) return undefined;
  return { command: command.data, audit: context.data, handler: handlers[command.data.type] as CommandHandler<CommandType>, as: { payload: payload as Command, audit: audit as AuditContext } };
}

/**
 * The total of a command of many steps: what its committed steps processed plus what the handler
 * counts as left, both read in one snapshot (so a step committing meanwhile is counted once).
 */
async function countTotal(deps: ExecutorDeps, id: string, { command, audit, handler }: Parsed): Promise<number> {
  return deps.db
    .transaction()
    .setIsolationLevel('repeatable read')
    .setAccessMode('read only')
    .execute(async (trx) => {
      await useOneCore(trx); // parallel workers would take the CPU the steps need
      const row = await findCommand(trx, id);
      const left = await handler.countRemaining!(trx, command, audit);
      return (row?.progress?.processed ?? 0) + left;
    });
}

/**
 * Locks the command row for the step (or takes the row a group locked). Returns the locked row
 * (`live`), or the stored row of a terminal command (not live); throws CommandNotFound when the
 * command does not exist.
 */
async function lockForStep(trx: Trx, id: string, turn?: SharedTurn): Promise<{ row: LockedCommand; live: boolean }> {
  const row = turn ? turn.row : (await lockCommands(trx, [id])).get(id);
  if (!row) throw new CommandNotFound(`command ${id} is not in the database`);
  return { row, live: !isTerminal(row) };
}

/**
 * One transaction (or, with a `turn`, one turn in a group's transaction): lock, step, write
 * effects; the first step of a delivery also counts its attempt, in the same UPDATE as its
 * state. Returns the stored row of an ended command, or the step's outcome and the outbox rows
 * to publish. In a group,
 * a command that is not short (or is resumed) throws RunAlone before its step writes anything,
 * and the group writes the step's records.
 *
 * A delivery that resumes a command (an earlier one committed steps: state running) first takes
 * the command's events still unpublished: the process that committed them may have died before
 * putting them on the stream, and they must go out before this delivery's own.
 *
 * A command a cancel was asked of while another step held it (LockedCommand.cancel_request) runs
 * nothing more: this step ends it cancelled (alone: in a group, RunAlone first), unless it may
 * no longer be cancelled (a started lockout: see cancellable), whose cancel is dropped.
 */
async function runStep(
  deps: ExecutorDeps,
  trx: Trx,
  id: string,
  first: boolean,
  turn: SharedTurn | undefined,
  known: Parsed | undefined,
  total: number | null,
  remember: (parsed: Parsed) => void,
): Promise<StepResult> {
  const { row, live } = await lockForStep(trx, id, turn);
  if (!live) return { ended: row };
  const parsed = known ?? parseRow(row);
  remember(parsed);
  const { command, audit, handler } = parsed;
  const resumed = first && row.state === 'running';
  if (turn && (resumed || row.cancel_request || !isShortCommand(command))) throw new RunAlone(); // the job's hint was wrong, or a cancel was asked
  const earlier = resumed ? await unpublishedEventsOf(trx, id) : [];
  if (row.cancel_request) {
    await withdrawCancelRequest(trx, id);
    // a cancel asked of a command that may no longer be cancelled (a started lockout) is dropped: the cancel answered 409
    if (cancellable(row)) {
      const record = cancelRecord(row, row.cancel_request);
      return { cancelled: { state: 'cancelled', result: record.end.result }, events: [...earlier, ...(await commitStep(trx, record))] };
    }
  }
  const context: StepContext<CommandType> = { trx, commandId: id, command, audit, checkpoint: row.checkpoint, progress: row.progress, total, settings: deps.settings };
  const outcome = await (turn ? turn.step(handler, context) : handler.step(context));
  return handOver(trx, turn, parsed, outcome, stepRecord(id, first, parsed, outcome), earlier);
}

/**
 * The first step of a short command on the job's copy, in two round trips where runStep takes
 * three: the effect goes out with BEGIN, before the command row is locked, and commitStep's
 * statement (with the COMMIT behind it) locks the row and commits only if the command is still
 * queued with the copy's contents (`expected`); otherwise it throws CommandNotAsExpected and
 * nothing is kept. A redelivery of an ended command, a resumed or missing one, or a job whose
 * copy differs all roll back so, and executeCommand runs the step as usual. In a group (a `turn`
 * that did not lock the row) the group's commit statement checks every copy the same way, and
 * one mismatch rolls the group back; it runs again with its rows locked. Taking the token rows before
 * the command row (runStep takes them after) can only deadlock two deliveries of one command,
 * and a deadlock is retried as a conflict.
 */
async function runCarriedStep(deps: ExecutorDeps, trx: Trx, id: string, carried: Carried, turn: SharedTurn | undefined, remember: (parsed: Parsed) => void): Promise<StepResult> {
  remember(carried);
  const context: StepContext<CommandType> = { trx, commandId: id, command: carried.command, audit: carried.audit, checkpoint: null, progress: null, total: null, settings: deps.settings };
  const outcome = await (turn ? turn.step(carried.handler, context) : carried.handler.step(context));
  return handOver(trx, turn, carried, outcome, { ...stepRecord(id, true, carried, outcome), expected: carried.as });
}

/**
 * A step's records: to the group (its turn), which writes them with the others; alone, written
 * now with the statement that ends the transaction. Returns the outbox rows to publish after the
 * commit (`earlier` first: a resumed command's events left unpublished; none in a group).
 */
async function handOver(trx: Trx, turn: SharedTurn | undefined, parsed: Parsed, outcome: StepOutcome<CommandType>, record: StepRecord, earlier: readonly OutboxEvent[] = []): Promise<StepResult> {
  if (turn) {
    turn.write(record);
    return { parsed, outcome, events: [] };
  }
  return { parsed, outcome, events: [...earlier, ...(await commitStep(trx, record))] };
}

/** What a step leaves to commit: its audit rows, its events (`command.succeeded` last when done) and its end. */
function stepRecord(id: string, first: boolean, { command, audit }: Parsed, outcome: StepOutcome<CommandType>): StepRecord {
  const drafts: EventDraft[] = [...outcome.events];
  if (outcome.done) drafts.push({ type: 'command.succeeded', data: { command_type: command.type, result: outcome.result } });
  return {
    id,
    start: first,
    audit,
    entries: outcome.audit,
    events: toEvents(id, audit, drafts),
    ...(outcome.outbox ? { written: outcome.outbox } : {}),
    end: outcome.done
      ? { state: 'succeeded', result: outcome.result, ...(outcome.progress ? { progress: outcome.progress } : {}) }
      : { state: 'running', progress: outcome.progress, checkpoint: outcome.checkpoint },
  };
}

/** The audit context of a failure whose command's stored one does not parse: recorded by the worker, for no tenant (admins see it). */
const unreadableAudit: AuditContext = {
  actor: { id: 'revocation-worker', kind: 'service' },
  tenant_ids: null,
  reason: null,
  adhoc_reason: null,
  custom_audit: null,
  request_id: null,
  source: 'system',
};

/**
 * What a failure records of its command, from the row even when its payload or audit context no
 * longer parses (that is one of the failures it records): its type (a column of its own), its
 * collection if it names one, and its audit context.
 */
function failureFacts(row: CommandRow): { type: string; collection: string | null; audit: AuditContext } {
  const command = Command.safeParse(row.payload);
  const collection = command.success && 'collection' in command.data ? command.data.collection : null;
  return { type: row.type, collection, audit: AuditContext.safeParse(row.audit).data ?? unreadableAudit };
}

/**
 * Ends the command failed: error, audit row and `command.failed` event in one transaction. When
 * no step of this delivery committed, its attempt is counted here (the step that would have
 * counted it rolled back).
 */
async function recordFailure(deps: ExecutorDeps, id: string, countAttempt: boolean, error: StoredError): Promise<ExecutionOutcome> {
  let events: OutboxEvent[] = [];
  const outcome = await runTransaction(
    deps.db,
    async (trx): Promise<ExecutionOutcome> => {
      events = [];
      const { row, live } = await lockForStep(trx, id);
      if (!live) return storedOutcome(row);
      const { type, collection, audit } = failureFacts(row);
      // steps of an earlier delivery may have left events unpublished (see runStep)
      const earlier = row.state === 'running' ? await unpublishedEventsOf(trx, id) : [];
      const written = await commitStep(trx, {
        id,
        start: countAttempt,
        audit,
        entries: [{ action: 'command.failed', collection, data: { command_type: type, error } }],
        events: toEvents(id, audit, [{ type: 'command.failed', data: { command_type: type, error } }]),
        end: { state: 'failed', error },
      });
      events = [...earlier, ...written];
      return { state: 'failed', error };
    },
    deps.retryPolicy ?? defaultRetryPolicy,
    deps.onConflictRetry,
  );
  if (events.length > 0) deps.onCommitted?.(events);
  deps.logger.info({ error_code: error.error_code }, 'command failed');
  return outcome;
}
