import { randomUUID } from 'node:crypto';
import { AppError, MAX_TOKEN_IDS_PER_EVENT } from '../../contracts/index.js';
import { lockVaultTokensForRotate, renameVaultTokens } from '../../db/repositories/vault-token.repository.js';
import { chunk } from '../chunk.js';
import type { CommandHandler } from './handler.js';

/**
 * `tokens.rotate`: gives each token a new random ID, all or nothing. Any ID missing (or out of
 * the command's tenant scope, or archived) fails the whole command with PV3087 listing them.
 */
export const rotateTokensHandler: CommandHandler<'tokens.rotate'> = {
  async step({ trx, command, audit }) {
    const wanted = [...new Set(command.token_ids)];
    const locked = await lockVaultTokensForRotate(trx, command.collection, audit.tenant_ids, wanted);
    const found = new Set(locked.map((t) => t.token_id));
    const missing = wanted.filter((id) => !found.has(id));
    if (missing.length > 0) throw new AppError('PV3087', { token_ids: missing.join(',') });
    if (locked.length > wanted.length) {
      const ambiguous = locked.map((t) => t.token_id).filter((id, i, all) => all.indexOf(id) !== i);
      throw new AppError('PV1002', { token_ids: [...new Set(ambiguous)].join(',') }, 'Token IDs exist in several tenants; name the tenant with X-Tenant-Id.');
    }
    const renames = locked.map((t) => ({ id: t.id, old: t.token_id, token_id: randomUUID() }));
    await renameVaultTokens(trx, command.collection, renames);
    const mapping = Object.fromEntries(renames.map((r) => [r.old, r.token_id]));
    const parts = chunk(renames, MAX_TOKEN_IDS_PER_EVENT);
    return {
      done: true,
      result: { mapping },
      progress: { processed: renames.length, total: renames.length },
      events: parts.map((part, index) => ({
        type: 'tokens.rotated' as const,
        data: { collection: command.collection, mapping: Object.fromEntries(part.map((r) => [r.old, r.token_id])), batch: { index, last: index === parts.length - 1 } },
      })),
      audit: [{ action: 'tokens.rotated', collection: command.collection, data: { mapping } }],
    };
  },
};
