import { AppError, type AuditContext, type Command, type CommandPreview, PREVIEW_SAMPLE_SIZE } from '../../contracts/index.js';
import type { Db, Trx } from '../../db/database.js';
import { findAccessTokenById, listAccessTokensOf } from '../../db/repositories/access-token.repository.js';
import { countAccessTokensOf, liveTemporaryTokens } from '../../db/repositories/access-token-revocation.repository.js';
import { limitStatementTime } from '../../db/repositories/command.repository.js';
import { findSubject } from '../../db/repositories/subject.repository.js';
import { countMatchingVaultTokens, sampleMatchingVaultTokens } from '../../db/repositories/vault-token-delete.repository.js';
import { findVaultTokensForRotate } from '../../db/repositories/vault-token.repository.js';

/**
 * The longest a preview's count may run (each statement). Counting millions of matches reads
 * them all (a few seconds per million on an index); past this the preview gives up with PV1009
 * rather than hold a connection and an old snapshot.
 */
export const PREVIEW_TIMEOUT_MS = 10_000;

/**
 * What `command` would touch if it ran now, in the command's tenant scope (`audit.tenant_ids`,
 * fixed as at acceptance): out-of-scope tokens are neither counted nor sampled, and a rotate's
 * out-of-scope ID is missing like one that does not exist (SPEC §2). Read with the statements'
 * own WHERE clauses (a delete's `matching`, a rotate's targets), in one READ ONLY snapshot, so
 * count and sample agree; nothing is locked, written or enqueued. Throws PV1009 when a statement
 * runs past PREVIEW_TIMEOUT_MS.
 */
export async function previewCommand(db: Db, command: Command, audit: AuditContext): Promise<CommandPreview> {
  const scope = audit.tenant_ids;
  return inSnapshot(db, async (trx): Promise<CommandPreview> => {
    switch (command.type) {
      case 'tokens.delete': {
        const criteria = { token_ids: command.token_ids, object_ids: command.object_ids, tags: command.tags, tenant_id: command.tenant_id, archived: command.archived };
        const matches = await countMatchingVaultTokens(trx, command.collection, scope, criteria);
        const sample = matches === 0 ? [] : await sampleMatchingVaultTokens(trx, command.collection, scope, criteria, PREVIEW_SAMPLE_SIZE);
        return { type: command.type, matches, sample };
      }
      case 'tokens.rotate': {
        const found = await findVaultTokensForRotate(trx, command.collection, scope, command.token_ids);
        const seen = new Set(found.map((t) => t.token_id));
        const missing = command.token_ids.filter((id) => !seen.has(id));
        return { type: command.type, matches: found.length, sample: found.slice(0, PREVIEW_SAMPLE_SIZE).map((t) => t.token_id), missing };
      }
      case 'access_token.revoke': {
        const found = await findAccessTokenById(trx, command.token_id);
        return { type: command.type, matches: found ? 1 : 0, sample: found ? [found.token.id] : [] };
      }
      case 'temporary_tokens.revoke_all': {
        const live = await liveTemporaryTokens(trx, command.subject.id, PREVIEW_SAMPLE_SIZE);
        return { type: command.type, matches: live.count, sample: live.sample };
      }
      case 'subject.lockout': {
        // every access token the subject holds, named and temporary, in the order its batches take them
        const matches = await countAccessTokensOf(trx, command.subject.id);
        const sample = matches === 0 ? [] : (await listAccessTokensOf(trx, command.subject.id, undefined, PREVIEW_SAMPLE_SIZE)).map((t) => t.id);
        return { type: command.type, matches, sample };
      }
      case 'subject.unlock': {
        // the account it would enable: the subject, if it is locked out
        const subject = await findSubject(trx, command.subject.id);
        const locked = subject?.disabled_at != null;
        return { type: command.type, matches: locked ? 1 : 0, sample: locked ? [command.subject.id] : [] };
      }
    }
  });
}

/** Runs `read` in a READ ONLY, REPEATABLE READ transaction whose statements may each run PREVIEW_TIMEOUT_MS. */
async function inSnapshot<T>(db: Db, read: (trx: Trx) => Promise<T>): Promise<T> {
  try {
    return await db
      .transaction()
      .setIsolationLevel('repeatable read')
      .setAccessMode('read only')
      .execute(async (trx) => {
        await limitStatementTime(trx, PREVIEW_TIMEOUT_MS);
        return read(trx);
      });
  } catch (error) {
    if ((error as { code?: unknown }).code === '57014') {
      throw new AppError(
        'PV1009',
        { timeout_seconds: PREVIEW_TIMEOUT_MS / 1000 },
        `Counting what the command would touch took longer than ${PREVIEW_TIMEOUT_MS / 1000} s; nothing was changed. Narrow the criteria, or submit the command: a bulk delete counts its total beside its batches.`,
        { 'retry-after': '30' },
      );
    }
    throw error;
  }
}
