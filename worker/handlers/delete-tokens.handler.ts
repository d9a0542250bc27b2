import { z } from 'zod';
import { AppError, type AuditContext, type CommandOf, type EventDraft, type EventOf, MAX_TOKEN_IDS_PER_EVENT, type TokensDeletedAuditData } from '../../contracts/index.js';
import type { Trx } from '../../db/database.js';
import { type AuditEntry, auditRows } from '../../db/repositories/audit-log.repository.js';
import type { BatchResult } from '../../db/repositories/bulk-batch.repository.js';
import {
  countMatchingVaultTokens,
  deleteAndRecordVaultTokens,
  deleteListedVaultTokensTogether,
  deleteVaultTokens,
  hasListedVaultTokenAfter,
  isListed,
} from '../../db/repositories/vault-token-delete.repository.js';
import type { TokenCriteria } from '../../db/repositories/vault-token.repository.js';
import { chunk } from '../chunk.js';
import { toEvents } from '../event-envelope.js';
import type { CommandHandler, StepOutcome } from './handler.js';

/** Where a delete resumes: keys above `after_id` are left; counts carry over across crashes. */
const DeleteCheckpoint = z.object({ after_id: z.string(), deleted: z.number().int(), event_index: z.number().int(), total: z.number().int().nullable() });
type DeleteCheckpoint = z.infer<typeof DeleteCheckpoint>;

function criteriaOf(command: CommandOf<'tokens.delete'>): TokenCriteria {
  return { token_ids: command.token_ids, object_ids: command.object_ids, tags: command.tags, tenant_id: command.tenant_id, archived: command.archived };
}

interface BatchEffects {
  /** The batch; `outbox`: the events its statement wrote (none for named tokens). */
  batch: BatchResult;
  /** Events and audit rows for the executor to write (none when the statement wrote them). */
  events: EventDraft[];
  audit: AuditEntry[];
}

/** Named tokens (token or object IDs): few IDs, so they come back and the executor writes their audit row and events. */
async function deleteNamed(trx: Trx, collection: string, audit: AuditContext, criteria: TokenCriteria, state: DeleteCheckpoint, size: number): Promise<BatchEffects> {
  const rows = await deleteVaultTokens(trx, collection, audit.tenant_ids, criteria, state.after_id, size);
  const lastId = rows.at(-1)?.id ?? null;
  const more = lastId !== null && rows.length === size && (await hasListedVaultTokenAfter(trx, collection, audit.tenant_ids, criteria, lastId));
  return namedEffects(collection, rows, state, more);
}

/** The batch, events and audit row of named tokens just deleted (`more`: others match after them). */
function namedEffects(collection: string, rows: readonly { id: string; token_id: string }[], state: DeleteCheckpoint, more: boolean): BatchEffects {
  const lastId = rows.at(-1)?.id ?? null;
  // as a bulk batch's statement writes them (executeBatchStatement): an audit row and an event per slice of IDs
  const parts = chunk(
    rows.map((r) => r.token_id),
    MAX_TOKEN_IDS_PER_EVENT,
  );
  const events: EventDraft[] = parts.map((ids, i) => ({
    type: 'tokens.deleted',
    data: { collection, token_ids: ids, batch: { index: state.event_index + i, last: !more && i === parts.length - 1 } },
  }));
  const entries: AuditEntry[] = parts.map((ids, i) => ({
    action: 'tokens.deleted',
    collection,
    data: { token_ids: ids, batch: { index: state.event_index + i, size: ids.length } } satisfies TokensDeletedAuditData,
  }));
  return { batch: { n: rows.length, lastId, more, outbox: [] }, events, audit: entries };
}

/** Tags or a tenant, up to millions: one statement deletes the batch and writes its audit row and events; the IDs stay in Postgres. */
async function deleteMatching(trx: Trx, commandId: string, collection: string, audit: AuditContext, criteria: TokenCriteria, state: DeleteCheckpoint, size: number): Promise<BatchEffects> {
  const batch = await deleteAndRecordVaultTokens(trx, collection, audit.tenant_ids, criteria, state.after_id, size, {
    audit: auditRows(commandId, audit, [{ action: 'tokens.deleted', collection, data: {} }])[0]!,
    event: toEvents(commandId, audit, [{ type: 'tokens.deleted', data: { collection, token_ids: [], batch: { index: 0, last: false } } }])[0] as EventOf<'tokens.deleted'>,
    eventIndex: state.event_index,
    idsPerEvent: MAX_TOKEN_IDS_PER_EVENT,
  });
  return { batch, events: [], audit: [] };
}

/**
 * `tokens.delete`: deletes the tokens that match every criterion, inside the command's tenant
 * scope, in batches of `deleteBatchSize` by ascending key; each batch is one step (its own
 * transaction with its audit row, events and checkpoint), so a crash resumes after the last
 * committed batch. A rotate renames a token but keeps its key, so none is missed. Nothing
 * matched at all: PV3009. Named tokens (a list of token or object IDs) come back to the worker,
 * which writes their audit row and events; for tags or a tenant the batch statement writes them
 * itself and the IDs stay in Postgres. The total for progress is counted beside the batches.
 * The first steps of named deletes in a group share one statement (stepMany).
 */
export const deleteTokensHandler: CommandHandler<'tokens.delete'> = {
  async step({ trx, commandId, command, audit, checkpoint, total, settings }) {
    const state = stateOf(checkpoint);
    const criteria = criteriaOf(command);
    const effects = isListed(criteria)
      ? await deleteNamed(trx, command.collection, audit, criteria, state, settings.deleteBatchSize)
      : await deleteMatching(trx, commandId, command.collection, audit, criteria, state, settings.deleteBatchSize);
    return outcomeOf(state, effects, total);
  },

  /**
   * The first steps of several deletes of named tokens (a group's), in one statement: the result
   * of running them one after another in the order given. A delete that matches more than a batch
   * needs batches of its own ('run alone'); one that matches nothing fails with PV3009.
   */
  async stepMany(trx, contexts) {
    const listed = contexts.map(({ command, checkpoint }) => checkpoint === null && isListed(criteriaOf(command)));
    const batch = contexts.filter((_, i) => listed[i]);
    const deleted =
      batch.length === 0
        ? []
        : await deleteListedVaultTokensTogether(
            trx,
            batch.map(({ command, audit }) => ({ collection: command.collection, scope: audit.tenant_ids, criteria: criteriaOf(command) })),
            contexts[0]!.settings.deleteBatchSize,
          );
    let next = 0;
    return contexts.map(({ command, total }, i) => {
      if (!listed[i]) return 'run alone';
      const rows = deleted[next++]!;
      if (rows === 'too many') return 'run alone';
      const state = stateOf(null);
      try {
        return outcomeOf(state, namedEffects(command.collection, rows, state, false), total);
      } catch (error) {
        if (error instanceof AppError) return error; // nothing matched: PV3009, this delete's own failure
        throw error;
      }
    });
  },

  async countRemaining(db, command, audit) {
    return countMatchingVaultTokens(db, command.collection, audit.tenant_ids, criteriaOf(command));
  },
};

function stateOf(checkpoint: Record<string, unknown> | null): DeleteCheckpoint {
  return checkpoint ? DeleteCheckpoint.parse(checkpoint) : { after_id: '0', deleted: 0, event_index: 0, total: null };
}

/** The step's outcome once its batch is deleted: done, or the checkpoint of the next batch. Nothing matched at all: PV3009. */
function outcomeOf(state: DeleteCheckpoint, { batch, events, audit }: BatchEffects, total: number | null): StepOutcome<'tokens.delete'> {
  const deleted = state.deleted + batch.n;
  if (deleted === 0) throw new AppError('PV3009', {});
  const known = state.total ?? total;
  const effects = { events, audit, outbox: batch.outbox };
  if (!batch.more) return { done: true, result: { deleted }, progress: { processed: deleted, total: Math.max(known ?? deleted, deleted) }, ...effects };
  const next: DeleteCheckpoint = { after_id: batch.lastId ?? state.after_id, deleted, event_index: state.event_index + events.length + batch.outbox.length, total: known };
  return { done: false, checkpoint: next, progress: { processed: deleted, total: known === null ? null : Math.max(known, deleted) }, ...effects };
}
