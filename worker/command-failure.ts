import { AuditContext, Command, type StoredError } from '../contracts/index.js';
import type { CommandRow } from '../db/command.table.js';
import { commitStep } from '../db/repositories/command-step.repository.js';
import { type OutboxEvent, unpublishedEventsOf } from '../db/repositories/outbox.repository.js';
import type { ExecutionOutcome, ExecutorDeps } from './command-executor.js';
import { isTerminal, lockForStep } from './command-step.js';
import { toEvents } from './event-envelope.js';
import { defaultRetryPolicy, runTransaction } from './transaction-runner.js';

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

/** The outcome of a command found ended (a redelivery, or a job cancelled before or between its steps). */
export function storedOutcome(row: CommandRow): ExecutionOutcome {
  if (row.state === 'succeeded') return { state: 'succeeded', result: row.result ?? {} };
  if (row.state === 'cancelled') return { state: 'cancelled', result: row.result };
  return { state: 'failed', error: row.error ?? { error_code: 'PV1000', message: 'failed', context: {} } };
}

/**
 * Ends the command failed: error, audit row and `command.failed` event in one transaction. When
 * no step of this delivery committed, its attempt is counted here (the step that would have
 * counted it rolled back). A command found ended meanwhile keeps its end.
 */
export async function recordFailure(deps: ExecutorDeps, id: string, countAttempt: boolean, error: StoredError): Promise<ExecutionOutcome> {
  let events: OutboxEvent[] = [];
  const outcome = await runTransaction(
    deps.db,
    async (trx): Promise<ExecutionOutcome> => {
      events = [];
      const row = await lockForStep(trx, id);
      if (!row) return { state: 'missing' };
      if (isTerminal(row)) return storedOutcome(row);
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
