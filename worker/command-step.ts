import { AuditContext, Command, type CommandType, type EventDraft, isShortCommand, terminalStates } from '../contracts/index.js';
import type { CommandRow } from '../db/command.table.js';
import type { Trx } from '../db/database.js';
import { commitStep, type StepRecord } from '../db/repositories/command-step.repository.js';
import { type LockedCommand, lockCommands, withdrawCancelRequest } from '../db/repositories/command.repository.js';
import { type OutboxEvent, unpublishedEventsOf } from '../db/repositories/outbox.repository.js';
import { cancellable, cancelRecord } from './command-cancel.js';
import { toEvents } from './event-envelope.js';
import type { NotInGroup, SharedTurn } from './group-commit.js';
import type { CommandHandler, HandlerSettings, StepContext, StepOutcome } from './handlers/handler.js';
import { handlers } from './handlers/index.js';

/** A stored command, parsed, with the handler that holds its rule. */
export interface Parsed {
  command: Command;
  audit: AuditContext;
  handler: CommandHandler<CommandType>;
}

/** How a step ended: the command was not there, or found ended, or cancelled as it was asked, or the step ran. */
export type StepResult =
  | { kind: 'missing' }
  | { kind: 'ended'; row: CommandRow }
  | { kind: 'cancelled'; result: Record<string, unknown> | null; events: OutboxEvent[] }
  | {
      kind: 'ran';
      parsed: Parsed;
      outcome: StepOutcome<CommandType>;
      /** The outbox rows to publish once the step commits (none in a group: the group publishes). */
      events: OutboxEvent[];
    };

export interface StepInput {
  settings: HandlerSettings;
  /** The first step of this delivery: it counts the attempt. */
  first: boolean;
  /** The command as an earlier step of this delivery parsed it (it never changes). */
  known: Parsed | undefined;
  /** The progress total, once counted. */
  total: number | null;
  /** Told the parsed command as soon as the row is read (for the executor's metrics, even when the step then fails). */
  remember: (parsed: Parsed) => void;
}

export function isTerminal(row: CommandRow): boolean {
  return terminalStates.includes(row.state);
}

function parseRow(row: CommandRow): Parsed {
  const command = Command.parse(row.payload);
  return { command, audit: AuditContext.parse(row.audit), handler: handlers[command.type] as CommandHandler<CommandType> };
}

/** Locks the command row for a step, or takes the row a group locked; undefined when there is no such command. */
export async function lockForStep(trx: Trx, id: string, turn?: SharedTurn): Promise<LockedCommand | undefined> {
  return turn ? turn.row : (await lockCommands(trx, [id])).get(id);
}

/**
 * One step in one transaction, or, with a `turn`, in a group's transaction: lock, step, write
 * effects; the first step of a delivery also counts its attempt, in the same UPDATE as its state.
 * In a group, a step that needs a transaction of its own (its command is not short, is resumed,
 * or was asked to cancel) returns 'run alone' before it writes anything, and one that did not
 * run because another step of the group failed returns 'group failed'; the group writes the
 * records of the others.
 *
 * A delivery that resumes a command (an earlier one committed steps: state running) first takes
 * the command's events still unpublished: the process that committed them may have died before
 * putting them on the stream, and they must go out before this delivery's own.
 *
 * A command a cancel was asked of while another step held it (LockedCommand.cancel_request) runs
 * nothing more: this step ends it cancelled, unless it may no longer be cancelled (a started
 * lockout: see cancellable), whose cancel is dropped.
 */
export function runStep(trx: Trx, id: string, input: StepInput, turn: SharedTurn): Promise<StepResult | NotInGroup>;
export function runStep(trx: Trx, id: string, input: StepInput): Promise<StepResult>;
export async function runStep(trx: Trx, id: string, input: StepInput, turn?: SharedTurn): Promise<StepResult | NotInGroup> {
  const row = await lockForStep(trx, id, turn);
  if (!row) return { kind: 'missing' };
  if (isTerminal(row)) return { kind: 'ended', row };
  const parsed = input.known ?? parseRow(row);
  input.remember(parsed);
  const { command, audit, handler } = parsed;
  const resumed = input.first && row.state === 'running';
  // the job's hint was wrong, or a cancel was asked: either needs a transaction of its own
  if (turn && (resumed || row.cancel_request || !isShortCommand(command))) return 'run alone';
  const earlier = resumed ? await unpublishedEventsOf(trx, id) : [];
  if (row.cancel_request) {
    await withdrawCancelRequest(trx, id);
    // a cancel asked of a command that may no longer be cancelled (a started lockout) is dropped: the cancel answered 409
    if (cancellable(row)) {
      const record = cancelRecord(row, row.cancel_request);
      return { kind: 'cancelled', result: record.end.result, events: [...earlier, ...(await commitStep(trx, record))] };
    }
  }
  const context: StepContext<CommandType> = { trx, commandId: id, command, audit, checkpoint: row.checkpoint, progress: row.progress, total: input.total, settings: input.settings };
  const outcome = turn ? await turn.step(handler, context) : await handler.step(context);
  if (typeof outcome === 'string') return outcome;
  const record = stepRecord(id, input.first, parsed, outcome);
  if (turn) {
    turn.write(record);
    return { kind: 'ran', parsed, outcome, events: [] };
  }
  return { kind: 'ran', parsed, outcome, events: [...earlier, ...(await commitStep(trx, record))] };
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
