/**
 * Creating, searching, counting and rotating vault tokens, and the criteria every read and
 * delete of them matches. Deleting them: vault-token-delete.repository.ts.
 */
import { type ExpressionBuilder, sql } from 'kysely';
import type { Database, Executor } from '../database.js';
import type { NewVaultToken, VaultTokenRow } from '../vault-token.table.js';
import { inTenantScope, isArchived, type TenantScope } from './tenant-scope.js';

/** Criteria a token must match, all of them (tags: the token has every listed tag). */
export interface TokenCriteria {
  token_ids?: readonly string[] | undefined;
  object_ids?: readonly string[] | undefined;
  tags?: readonly string[] | undefined;
  tenant_id?: string | undefined;
  /** true: archived tokens only; false: active tokens only. */
  archived: boolean;
}

/** The WHERE clause of every read and delete of matching tokens: collection, scope, criteria, state. */
export function matching(eb: ExpressionBuilder<Database, 'vault_tokens'>, collection: string, scope: TenantScope, c: TokenCriteria) {
  const conditions = [eb('vault_tokens.collection', '=', collection), inTenantScope(eb, scope)];
  if (c.token_ids) conditions.push(eb('vault_tokens.token_id', '=', eb.fn.any(eb.val([...c.token_ids]))));
  if (c.object_ids) conditions.push(eb('vault_tokens.object_id', '=', eb.fn.any(eb.val([...c.object_ids]))));
  if (c.tags) conditions.push(eb('vault_tokens.tags', '@>', sql<string[]>`${[...c.tags]}::text[]`));
  if (c.tenant_id !== undefined) conditions.push(eb('vault_tokens.tenant_id', '=', c.tenant_id));
  conditions.push(c.archived ? eb(isArchived, '=', true) : eb(isArchived, '=', false));
  return eb.and(conditions);
}

/** Postgres binds at most 65,535 parameters to a statement; an inserted row takes one per column. */
const MAX_PARAMETERS = 65_535;

/**
 * Inserts tokens, all or none: in `trx`, a statement per as many rows as Postgres takes at once.
 * Takes rows with their token IDs already chosen; returns the token IDs that already exist in
 * the same collection and tenant (the caller then rolls back).
 */
export async function insertVaultTokens(trx: Executor, rows: NewVaultToken[]): Promise<{ conflicts: string[] }> {
  const perStatement = Math.floor(MAX_PARAMETERS / Math.max(1, ...rows.map((r) => Object.keys(r).length)));
  const inserted: string[] = [];
  for (let start = 0; start < rows.length; start += perStatement) {
    const batch = await trx
      .insertInto('vault_tokens')
      .values(rows.slice(start, start + perStatement))
      .onConflict((oc) => oc.columns(['collection', 'token_id', 'tenant_id']).doNothing())
      .returning('token_id')
      .execute();
    inserted.push(...batch.map((r) => r.token_id));
  }
  if (inserted.length === rows.length) return { conflicts: [] };
  const done = new Set(inserted);
  return { conflicts: rows.map((r) => r.token_id).filter((id) => !done.has(id)) };
}

/** What a search shows of a token (Piiano's token metadata). */
export type SearchedVaultToken = Pick<VaultTokenRow, 'token_id' | 'object_id' | 'tenant_id' | 'tags' | 'type' | 'scope' | 'expires_at' | 'created_at'>;

/** Tokens in `scope` matching every criterion, oldest first, at most `limit`: what a search shows of each. */
export async function queryVaultTokens(db: Executor, collection: string, scope: TenantScope, criteria: TokenCriteria, limit: number): Promise<SearchedVaultToken[]> {
  return db
    .selectFrom('vault_tokens')
    .select(['token_id', 'object_id', 'tenant_id', 'tags', 'type', 'scope', 'expires_at', 'created_at'])
    .where((eb) => matching(eb, collection, scope, criteria))
    .orderBy('id')
    .limit(limit)
    .execute();
}

/** Counts the tokens of a collection visible in `scope`: `{ active, archived, total }`. */
export async function countVaultTokens(db: Executor, collection: string, scope: TenantScope): Promise<{ active: number; archived: number; total: number }> {
  const row = await db
    .selectFrom('vault_tokens')
    .select([sql<string>`count(*) filter (where not ${isArchived})`.as('active'), sql<string>`count(*) filter (where ${isArchived})`.as('archived'), sql<string>`count(*)`.as('total')])
    .where('collection', '=', collection)
    .where((eb) => inTenantScope(eb, scope))
    .executeTakeFirstOrThrow();
  return { active: Number(row.active), archived: Number(row.archived), total: Number(row.total) };
}
/** The tokens a rotate of these token IDs acts on: the active ones in `scope`, in key order. */
function rotateTargets(db: Executor, collection: string, scope: TenantScope, tokenIds: readonly string[]) {
  return db
    .selectFrom('vault_tokens')
    .select(['id', 'token_id', 'tenant_id'])
    .where((eb) => matching(eb, collection, scope, { token_ids: tokenIds, archived: false }))
    .orderBy('id');
}

/**
 * Locks the active tokens in `scope` with these token IDs, in key order (so concurrent rotates
 * lock in the same order). Returns their keys, token IDs and tenants.
 */
export async function lockVaultTokensForRotate(
  trx: Executor,
  collection: string,
  scope: TenantScope,
  tokenIds: readonly string[],
): Promise<{ id: string; token_id: string; tenant_id: string | null }[]> {
  return rotateTargets(trx, collection, scope, tokenIds).forUpdate().execute();
}

/** What lockVaultTokensForRotate would lock, read without a lock (a dry run). */
export async function findVaultTokensForRotate(
  db: Executor,
  collection: string,
  scope: TenantScope,
  tokenIds: readonly string[],
): Promise<{ id: string; token_id: string; tenant_id: string | null }[]> {
  return rotateTargets(db, collection, scope, tokenIds).execute();
}

/** Gives each keyed token of the collection its new token ID, in one statement. Returns the number renamed. */
export async function renameVaultTokens(trx: Executor, collection: string, renames: readonly { id: string; token_id: string }[]): Promise<number> {
  if (renames.length === 0) return 0;
  const result = await sql`
    update vault_tokens as t set token_id = r.token_id
    from unnest(${renames.map((r) => r.id)}::bigint[], ${renames.map((r) => r.token_id)}::text[]) as r(id, token_id)
    where t.collection = ${collection} and t.id = r.id`.execute(trx);
  return Number(result.numAffectedRows ?? 0);
}
