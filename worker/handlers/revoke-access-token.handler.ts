import { AppError } from '../../contracts/index.js';
import { deleteAccessToken } from '../../db/repositories/access-token-revocation.repository.js';
import { findSubject } from '../../db/repositories/subject.repository.js';
import type { CommandHandler } from './handler.js';

/** `access_token.revoke`: deletes the access token, expired or not; PV3006 if it is gone. */
export const revokeAccessTokenHandler: CommandHandler<'access_token.revoke'> = {
  async step({ trx, command }) {
    const deleted = await deleteAccessToken(trx, command.token_id);
    if (!deleted) throw new AppError('PV3006', { token_id: command.token_id });
    const subject = await findSubject(trx, deleted.subject_id);
    const data = {
      token_id: deleted.id,
      subject: { id: deleted.subject_id, kind: subject?.kind ?? 'user', domain_id: subject?.domain_id ?? 'default' },
    };
    return {
      done: true,
      result: { token_id: deleted.id },
      events: [{ type: 'access_token.revoked', data }],
      audit: [{ action: 'access_token.revoked', collection: null, data }],
    };
  },
};
