import { type ExpressionBuilder, type ExpressionWrapper, type SqlBool, sql } from 'kysely';
import type { Database } from '../database.js';

/**
 * A command's or request's tenant scope: `null` sees every token (with or without a tenant);
 * a list sees only tokens of those tenants. Out-of-scope tokens are as if they did not exist.
 */
export type TenantScope = readonly string[] | null;

/** `vault_tokens` rows visible in `scope`. */
export function inTenantScope(eb: ExpressionBuilder<Database, 'vault_tokens'>, scope: TenantScope): ExpressionWrapper<Database, 'vault_tokens', SqlBool> {
  if (scope === null) return eb.val(true);
  return eb('vault_tokens.tenant_id', '=', eb.fn.any(eb.val([...scope])));
}

/** Archived: archived explicitly, or past its expiry. */
export const isArchived = sql<boolean>`(vault_tokens.archived_at is not null or (vault_tokens.expires_at is not null and vault_tokens.expires_at <= now()))`;
