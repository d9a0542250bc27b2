import { z } from 'zod';
import { AppError, MAX_TOKEN_IDS_PER_EVENT } from '../../contracts/index.js';
import { countMatchingVaultTokens, deleteVaultTokenBatch, hasMatchingVaultTokenAfter, type TokenCriteria } from '../../db/repositories/vault-token.repository.js';
import { chunk } from '../chunk.js';
import type { CommandHandler } from './handler.js';

/** Where a delete resumes: keys above `after_id` are left; counts carry over across crashes. */
const DeleteCheckpoint = z.object({ after_id: z.string(), deleted: z.number().int(), event_index: z.number().int(), total: z.number().int() });
type DeleteCheckpoint = z.infer<typeof DeleteCheckpoint>;

/**
 * `tokens.delete`: deletes the tokens that match every criterion, inside the command's tenant
 * scope, in batches of `deleteBatchSize` by ascending key; each batch is one step (its own
 * transaction with its audit row, events and checkpoint), so a crash resumes after the last
 * committed batch. A rotate renames a token but keeps its key, so none is missed. Nothing
 * matched at all: PV3009.
 */
export const deleteTokensHandler: CommandHandler<'tokens.delete'> = {
  async step({ trx, command, audit, checkpoint, settings }) {
    const criteria: TokenCriteria = {
      token_ids: command.token_ids,
      object_ids: command.object_ids,
      tags: command.tags,
      tenant_id: command.tenant_id,
      archived: command.archived,
    };
    const scope = audit.tenant_ids;
    const state: DeleteCheckpoint = checkpoint ? DeleteCheckpoint.parse(checkpoint) : { after_id: '0', deleted: 0, event_index: 0, total: 0 };

    const batch = await deleteVaultTokenBatch(trx, command.collection, scope, criteria, state.after_id, settings.deleteBatchSize);
    const lastKey = batch.at(-1)?.id ?? state.after_id;
    const deleted = state.deleted + batch.length;
    let more = false;
    if (batch.length === settings.deleteBatchSize) {
      // A full batch: on the first step, count what is left (the total for progress, once);
      // later, an index probe for the next match is enough.
      if (checkpoint) more = await hasMatchingVaultTokenAfter(trx, command.collection, scope, criteria, lastKey);
      else {
        const left = await countMatchingVaultTokens(trx, command.collection, scope, criteria, lastKey);
        state.total = batch.length + left;
        more = left > 0;
      }
    } else if (!checkpoint) state.total = batch.length; // done in one step, as most deletes are
    if (deleted === 0) throw new AppError('PV3009', {});

    const tokenIds = batch.map((t) => t.token_id);
    const parts = chunk(tokenIds, MAX_TOKEN_IDS_PER_EVENT);
    const events = parts.map((ids, i) => ({
      type: 'tokens.deleted' as const,
      data: { collection: command.collection, token_ids: ids, batch: { index: state.event_index + i, last: !more && i === parts.length - 1 } },
    }));
    const auditEntries = [{ action: 'tokens.deleted', collection: command.collection, data: { token_ids: tokenIds, batch: { index: state.event_index, size: tokenIds.length } } }];
    const progress = { processed: deleted, total: Math.max(state.total, deleted) };
    if (!more) return { done: true, result: { deleted }, progress, events, audit: auditEntries };
    const next: DeleteCheckpoint = { after_id: lastKey, deleted, event_index: state.event_index + parts.length, total: state.total };
    return { done: false, checkpoint: next, progress, events, audit: auditEntries };
  },
};
