import { z } from 'zod';
import { AppError, type CommandOf, type EventOf, MAX_TOKEN_IDS_PER_EVENT } from '../../contracts/index.js';
import { auditRows } from '../../db/repositories/audit-log.repository.js';
import { countMatchingVaultTokens, deleteVaultTokenBatch, type TokenCriteria } from '../../db/repositories/vault-token.repository.js';
import { toEvents } from '../event-envelope.js';
import type { CommandHandler } from './handler.js';

/** Where a delete resumes: keys above `after_id` are left; counts carry over across crashes. */
const DeleteCheckpoint = z.object({ after_id: z.string(), deleted: z.number().int(), event_index: z.number().int(), total: z.number().int().nullable() });
type DeleteCheckpoint = z.infer<typeof DeleteCheckpoint>;

function criteriaOf(command: CommandOf<'tokens.delete'>): TokenCriteria {
  return { token_ids: command.token_ids, object_ids: command.object_ids, tags: command.tags, tenant_id: command.tenant_id, archived: command.archived };
}

/**
 * `tokens.delete`: deletes the tokens that match every criterion, inside the command's tenant
 * scope, in batches of `deleteBatchSize` by ascending key; each batch is one step (its own
 * transaction with its audit row, events and checkpoint), so a crash resumes after the last
 * committed batch. A rotate renames a token but keeps its key, so none is missed. Nothing
 * matched at all: PV3009. The batch statement writes the batch's audit row and events itself
 * (the token IDs stay in Postgres); the total for progress is counted beside the batches.
 */
export const deleteTokensHandler: CommandHandler<'tokens.delete'> = {
  async step({ trx, commandId, command, audit, checkpoint, total, settings }) {
    const state: DeleteCheckpoint = checkpoint ? DeleteCheckpoint.parse(checkpoint) : { after_id: '0', deleted: 0, event_index: 0, total: null };
    const { collection } = command;
    const batch = await deleteVaultTokenBatch(trx, collection, audit.tenant_ids, criteriaOf(command), state.after_id, settings.deleteBatchSize, {
      audit: auditRows(commandId, audit, [{ action: 'tokens.deleted', collection, data: {} }])[0]!,
      event: toEvents(commandId, audit, [{ type: 'tokens.deleted', data: { collection, token_ids: [], batch: { index: 0, last: false } } }])[0] as EventOf<'tokens.deleted'>,
      eventIndex: state.event_index,
      idsPerEvent: MAX_TOKEN_IDS_PER_EVENT,
    });
    const deleted = state.deleted + batch.deleted;
    if (deleted === 0) throw new AppError('PV3009', {});
    const known = state.total ?? total;
    if (!batch.more) return { done: true, result: { deleted }, progress: { processed: deleted, total: Math.max(known ?? deleted, deleted) }, events: [], audit: [] };
    const next: DeleteCheckpoint = { after_id: batch.lastId ?? state.after_id, deleted, event_index: state.event_index + batch.events, total: known };
    return { done: false, checkpoint: next, progress: { processed: deleted, total: known === null ? null : Math.max(known, deleted) }, events: [], audit: [] };
  },

  async countRemaining(db, command, audit) {
    return countMatchingVaultTokens(db, command.collection, audit.tenant_ids, criteriaOf(command));
  },
};
