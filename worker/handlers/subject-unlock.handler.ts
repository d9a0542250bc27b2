import { AppError } from '../../contracts/index.js';
import { findUnfinishedLockout } from '../../db/repositories/command-list.repository.js';
import { enableSubject } from '../../db/repositories/subject.repository.js';
import type { CommandHandler } from './handler.js';

/**
 * `subject.unlock` (SPEC §10): enables a locked-out subject again; the tokens its lockout revoked
 * stay deleted, and it can be issued new ones. While a lockout of the subject has not ended,
 * some of its old tokens may be left to revoke: PV3016, unlock once that job has ended. (A
 * lockout that starts after this reads the subject this commit changed: RR makes one of the two
 * wait for, or retry after, the other.) PV3003 if no such subject.
 */
export const subjectUnlockHandler: CommandHandler<'subject.unlock'> = {
  async step({ trx, command }) {
    const { kind, id } = command.subject;
    const lockout = await findUnfinishedLockout(trx, id);
    if (lockout !== undefined) throw new AppError('PV3016', { subject_id: id, job_id: lockout });
    const row = await enableSubject(trx, kind, id);
    if (!row) throw new AppError('PV3003', { subject_id: id, kind });
    const data = { subject: { id: row.id, kind: row.kind, domain_id: row.domain_id } };
    return {
      done: true,
      result: { subject: command.subject },
      events: [{ type: 'subject.unlocked', data }],
      audit: [{ action: 'subject.unlocked', collection: null, data }],
    };
  },
};
