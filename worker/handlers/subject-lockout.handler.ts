import { z } from 'zod';
import { AppError, type CommandOf, type EventOf, MAX_TOKEN_IDS_PER_EVENT, SubjectKind, type LockoutAuditData } from '../../contracts/index.js';
import type { Trx } from '../../db/database.js';
import { countAccessTokensOf, lockoutBatchBounds, revokeAndRecordAccessTokens } from '../../db/repositories/access-token-revocation.repository.js';
import { auditRows } from '../../db/repositories/audit-log.repository.js';
import { disableSubject } from '../../db/repositories/subject.repository.js';
import { toEvents } from '../event-envelope.js';
import type { CommandHandler, StepOutcome } from './handler.js';

/**
 * Where a lockout resumes: the subject's tokens above `after_id` are left, the next batches end at
 * `bounds` (lockoutBatchBounds; drawn by the first batch, or again by the first after a crash of
 * a version without them); counts carry over across crashes.
 */
const LockoutCheckpoint = z.object({
  subject: z.object({ id: z.string(), kind: SubjectKind, domain_id: z.string() }),
  after_id: z.string(),
  bounds: z.array(z.string()).optional(),
  revoked: z.number().int(),
  event_index: z.number().int(),
  total: z.number().int().nullable(),
});
type LockoutCheckpoint = z.infer<typeof LockoutCheckpoint>;

/**
 * `subject.lockout` (SPEC §10): the first step disables the subject and commits alone, so that
 * from its commit on nothing the subject holds authenticates, at every producer (the lookup and
 * credentialHolds read `disabled_at`), and no token can be issued to it; event `subject.locked`.
 * Every later step revokes (deletes) a batch of `deleteBatchSize` of its access tokens, named and
 * temporary, in token-ID ranges drawn by the first batch, in one statement that also writes the
 * batch's audit rows and `access_token.revoked` events; each step is its own transaction with its
 * checkpoint, so a crash resumes after the last committed batch and the count carries over. The batches run in
 * snapshots taken after the disabling commit, and no token is issued to a disabled subject, so
 * they see every token it will ever hold. Result `{ subject, revoked }`.
 */
export const subjectLockoutHandler: CommandHandler<'subject.lockout'> = {
  async step({ trx, commandId, command, audit, checkpoint, total, settings }) {
    if (checkpoint === null) return disable(trx, command);
    const state = LockoutCheckpoint.parse(checkpoint);
    const draft = { type: 'access_token.revoked' as const, data: { token_ids: [], subject: state.subject, batch: { index: 0, last: false } } };
    const [upTo = null, ...bounds] = state.bounds ?? (await lockoutBatchBounds(trx, state.subject.id, state.after_id, settings.deleteBatchSize));
    const batch = await revokeAndRecordAccessTokens(trx, state.subject.id, state.after_id, upTo, {
      audit: auditRows(commandId, audit, [{ action: 'access_token.revoked', collection: null, data: { subject: state.subject } satisfies Omit<LockoutAuditData, 'token_ids' | 'batch'> }])[0]!,
      event: toEvents(commandId, audit, [draft])[0] as EventOf<'access_token.revoked'>,
      eventIndex: state.event_index,
      idsPerEvent: MAX_TOKEN_IDS_PER_EVENT,
    });
    const revoked = state.revoked + batch.n;
    const known = state.total ?? total;
    const effects = { events: [], audit: [], outbox: batch.outbox };
    if (!batch.more) {
      return { done: true, result: { subject: command.subject, revoked }, progress: { processed: revoked, total: Math.max(known ?? revoked, revoked) }, ...effects };
    }
    const next: LockoutCheckpoint = { ...state, after_id: batch.lastId ?? state.after_id, bounds, revoked, event_index: state.event_index + batch.outbox.length, total: known };
    return { done: false, checkpoint: next, progress: { processed: revoked, total: known === null ? null : Math.max(known, revoked) }, ...effects };
  },

  async countRemaining(db, command) {
    return countAccessTokensOf(db, command.subject.id);
  },
};

/** The first step: the subject disabled, `subject.locked`; its tokens are left to the next steps. PV3003 if no such subject. */
async function disable(trx: Trx, command: CommandOf<'subject.lockout'>): Promise<StepOutcome<'subject.lockout'>> {
  const row = await disableSubject(trx, command.subject.kind, command.subject.id);
  if (!row) throw new AppError('PV3003', { subject_id: command.subject.id, kind: command.subject.kind });
  const subject = { id: row.id, kind: row.kind, domain_id: row.domain_id };
  const data = { subject, disabled_at: (row.disabled_at ?? new Date()).toISOString() };
  const checkpoint: LockoutCheckpoint = { subject, after_id: '', revoked: 0, event_index: 0, total: null };
  return {
    done: false,
    checkpoint,
    progress: { processed: 0, total: null },
    events: [{ type: 'subject.locked', data }],
    audit: [{ action: 'subject.locked', collection: null, data }],
  };
}
