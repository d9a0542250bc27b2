import { AuditContext, type Canceller } from '../contracts/index.js';
import type { CommandRow } from '../db/command.table.js';
import type { StepRecord } from '../db/repositories/command-step.repository.js';
import { toEvents } from './event-envelope.js';

/**
 * Ending a command cancelled (SPEC §10), the same whoever ends it: the cancel route, when no step
 * holds the command (it is queued, between two steps, or its worker died), or the worker step
 * that next locks a command a cancel was asked of while a step held it.
 */

/**
 * Whether the command may still be cancelled: any that has not started (queued); once running,
 * only a bulk delete (between its batches). A lockout that has started has disabled its subject:
 * it runs to its end, since the tokens it has still to revoke are what keeps a later unlock from
 * reviving them. The other commands end in their first step, so they are never found running.
 */
export function cancellable(row: CommandRow): boolean {
  return row.state === 'queued' || (row.state === 'running' && row.type === 'tokens.delete');
}

/**
 * What a cancelled command had done: a delete, the tokens its committed batches deleted (its
 * progress counts them, committed with each batch); a lockout (only ever cancelled before it
 * started), nothing revoked; the other commands end in one step, so nothing at all.
 */
export function cancelledResult(row: CommandRow): Record<string, unknown> | null {
  const processed = row.progress?.processed ?? 0;
  if (row.type === 'tokens.delete') return { deleted: processed };
  if (row.type === 'subject.lockout') return { subject: (row.payload as { subject?: unknown }).subject ?? null, revoked: processed };
  return null;
}

/**
 * The records that end `row` cancelled, for commitStep in the transaction that holds its row:
 * the result (cancelledResult), an audit row and the `command.cancelled` event, both under the
 * command's own audit context and naming who cancelled it. Its progress and attempts stay.
 */
export function cancelRecord(row: CommandRow, by: Canceller): StepRecord & { end: { state: 'cancelled' } } {
  const audit = AuditContext.parse(row.audit);
  const result = cancelledResult(row);
  const payload = row.payload as { collection?: unknown };
  const data = { command_type: row.type, result, cancelled_by: by };
  return {
    id: row.id,
    start: false,
    audit,
    entries: [{ action: 'command.cancelled', collection: typeof payload.collection === 'string' ? payload.collection : null, data }],
    events: toEvents(row.id, audit, [{ type: 'command.cancelled', data }]),
    end: { state: 'cancelled', result },
  };
}
