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

/** The WHERE clause shared by query, count and delete: collection, scope, criteria, state. */
function matching(eb: ExpressionBuilder<Database, 'vault_tokens'>, collection: string, scope: TenantScope, c: TokenCriteria) {
  const conditions = [eb('vault_tokens.collection', '=', collection), inTenantScope(eb, scope)];
  if (c.token_ids) conditions.push(eb('vault_tokens.token_id', '=', eb.fn.any(eb.val([...c.token_ids]))));
  if (c.object_ids) conditions.push(eb('vault_tokens.object_id', '=', eb.fn.any(eb.val([...c.object_ids]))));
  if (c.tags) conditions.push(eb('vault_tokens.tags', '@>', sql<string[]>`${[...c.tags]}::text[]`));
  if (c.tenant_id !== undefined) conditions.push(eb('vault_tokens.tenant_id', '=', c.tenant_id));
  conditions.push(c.archived ? eb(isArchived, '=', true) : eb(isArchived, '=', false));
  return eb.and(conditions);
}

/**
 * Inserts tokens, all or none. Takes rows with their token IDs already chosen; returns the
 * token IDs that already exist in the same collection and tenant (nothing is inserted then).
 */
export async function insertVaultTokens(trx: Executor, rows: NewVaultToken[]): Promise<{ conflicts: string[] }> {
  const inserted = await trx
    .insertInto('vault_tokens')
    .values(rows)
    .onConflict((oc) => oc.columns(['collection', 'token_id', 'tenant_id']).doNothing())
    .returning('token_id')
    .execute();
  if (inserted.length === rows.length) return { conflicts: [] };
  const done = new Set(inserted.map((r) => r.token_id));
  return { conflicts: rows.map((r) => r.token_id).filter((id) => !done.has(id)) };
}

/** Tokens in `scope` matching every criterion, oldest first, at most `limit`. */
export async function queryVaultTokens(db: Executor, collection: string, scope: TenantScope, criteria: TokenCriteria, limit: number): Promise<(VaultTokenRow & { archived: boolean })[]> {
  return db
    .selectFrom('vault_tokens')
    .selectAll()
    .select(isArchived.as('archived'))
    .where((eb) => matching(eb, collection, scope, criteria))
    .orderBy('id')
    .limit(limit)
    .execute();
}

/** Counts the tokens of a collection visible in `scope`: `{ active, archived }`. */
export async function countVaultTokens(db: Executor, collection: string, scope: TenantScope): Promise<{ active: number; archived: number }> {
  const row = await db
    .selectFrom('vault_tokens')
    .select([
      sql<string>`count(*) filter (where not ${isArchived})`.as('active'),
      sql<string>`count(*) filter (where ${isArchived})`.as('archived'),
    ])
    .where('collection', '=', collection)
    .where((eb) => inTenantScope(eb, scope))
    .executeTakeFirstOrThrow();
  return { active: Number(row.active), archived: Number(row.archived) };
}

/**
 * Deletes, in one statement, at most `limit` matching tokens with `id > afterId`, lowest IDs
 * first. Returns the deleted rows' keys and token IDs, in key order. The rows are addressed by
 * ctid (a TID scan, no second index lookup per row); under REPEATABLE READ a row a concurrent
 * transaction changed since the snapshot raises 40001, and the caller retries.
 */
export async function deleteVaultTokenBatch(trx: Executor, collection: string, scope: TenantScope, criteria: TokenCriteria, afterId: string, limit: number): Promise<{ id: string; token_id: string }[]> {
  const candidates = trx
    .selectFrom('vault_tokens')
    .select(sql`ctid`.as('ctid'))
    .where((e) => matching(e, collection, scope, criteria))
    .where('id', '>', afterId)
    .orderBy('id')
    .limit(limit);
  const rows = await trx
    .deleteFrom('vault_tokens')
    .where(sql`ctid`, '=', sql`any(array(${candidates}))`)
    .returning(['id', 'token_id'])
    .execute();
  return rows.sort((a, b) => compareKeys(a.id, b.id));
}

/** Counts matching tokens (the total of a batched delete). */
export async function countMatchingVaultTokens(db: Executor, collection: string, scope: TenantScope, criteria: TokenCriteria, afterId?: string): Promise<number> {
  const row = await db
    .selectFrom('vault_tokens')
    .select((eb) => eb.fn.countAll<string>().as('n'))
    .where((eb) => matching(eb, collection, scope, criteria))
    .$if(afterId !== undefined, (qb) => qb.where('id', '>', afterId!))
    .executeTakeFirstOrThrow();
  return Number(row.n);
}

/**
 * Locks the active tokens in `scope` with these token IDs, in key order (so concurrent rotates
 * lock in the same order). Returns their keys, token IDs and tenants.
 */
export async function lockVaultTokensForRotate(trx: Executor, collection: string, scope: TenantScope, tokenIds: readonly string[]): Promise<{ id: string; token_id: string; tenant_id: string | null }[]> {
  return trx
    .selectFrom('vault_tokens')
    .select(['id', 'token_id', 'tenant_id'])
    .where((eb) => matching(eb, collection, scope, { token_ids: tokenIds, archived: false }))
    .orderBy('id')
    .forUpdate()
    .execute();
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

/** Orders bigint keys held as strings. */
export function compareKeys(a: string, b: string): number {
  return a.length - b.length || (a < b ? -1 : a > b ? 1 : 0);
}

/** Whether any matching token with `id > afterId` remains. */
export async function hasMatchingVaultTokenAfter(db: Executor, collection: string, scope: TenantScope, criteria: TokenCriteria, afterId: string): Promise<boolean> {
  const row = await db
    .selectFrom('vault_tokens')
    .select('id')
    .where((eb) => matching(eb, collection, scope, criteria))
    .where('id', '>', afterId)
    .orderBy('id') // walk the key from afterId and stop at the first match (no ordering: a seq scan)
    .limit(1)
    .executeTakeFirst();
  return row !== undefined;
}
