import { AppError } from '../../contracts/index.js';
import { bumpTemporaryGeneration } from '../../db/repositories/subject.repository.js';
import type { CommandHandler } from './handler.js';

/**
 * `temporary_tokens.revoke_all`: one UPDATE bumps the subject's generation, so every temporary
 * token issued before it stops authenticating at commit, however many there are. The sweeper
 * deletes the dead rows later.
 */
export const revokeTemporaryTokensHandler: CommandHandler<'temporary_tokens.revoke_all'> = {
  async step({ trx, command }) {
    const generation = await bumpTemporaryGeneration(trx, command.subject.kind, command.subject.id);
    if (generation === undefined) throw new AppError('PV3003', { subject_id: command.subject.id, kind: command.subject.kind });
    const data = { subject: command.subject, generation };
    return {
      done: true,
      result: data,
      events: [{ type: 'temporary_tokens.revoked', data }],
      audit: [{ action: 'temporary_tokens.revoked', collection: null, data }],
    };
  },
};
