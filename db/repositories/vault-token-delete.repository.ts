/**
 * Deleting vault tokens: named ones (a list, one prepared statement; several in one for a group),
 * and matching ones in batches (tags, a tenant: one statement per batch with its records, see
 * bulk-batch.repository.ts); and what a delete would take (a preview). Creating, searching,
 * counting and rotating tokens: vault-token.repository.ts.
 */
import { type RawBuilder, sql } from 'kysely';
import { compareKeys, type Executor } from '../database.js';
import { executePrepared } from '../prepared.js';
import { type BatchRecord, type BatchResult, executeBatchStatement } from './bulk-batch.repository.js';
import { isArchived, type TenantScope } from './tenant-scope.js';
import { matching, type TokenCriteria } from './vault-token.repository.js';

/** The row addresses of the next `limit` matching tokens above `afterId`: a walk of the primary key from the checkpoint. */
function batchCandidates(trx: Executor, collection: string, scope: TenantScope, criteria: TokenCriteria, afterId: string, limit: number) {
  return trx
    .selectFrom('vault_tokens')
    .select(sql`ctid`.as('ctid'))
    .where((e) => matching(e, collection, scope, criteria))
    .where('id', '>', afterId)
    .orderBy('id')
    .limit(limit);
}

/**
 * Criteria that name their tokens (token IDs or object IDs, nothing wider): they match few
 * tokens, through a unique or object index whatever the values, so their statements are prepared.
 */
export function isListed(criteria: TokenCriteria): boolean {
  return !criteria.tags && criteria.tenant_id === undefined && (criteria.token_ids !== undefined || criteria.object_ids !== undefined);
}

/**
 * Deletes at most `limit` tokens matching listed criteria (see isListed) with `id > afterId`,
 * lowest keys first, in one prepared statement; returns their keys and token IDs in key order
 * (the caller writes the audit row and events: a list is short). Rows are addressed by ctid;
 * under REPEATABLE READ a row changed since the snapshot raises 40001 and the caller retries.
 */
export async function deleteVaultTokens(trx: Executor, collection: string, scope: TenantScope, criteria: TokenCriteria, afterId: string, limit: number): Promise<{ id: string; token_id: string }[]> {
  const candidates = batchCandidates(trx, collection, scope, criteria, afterId, limit);
  const rows = await executePrepared(
    trx,
    trx
      .deleteFrom('vault_tokens')
      .where(sql`ctid`, '=', sql`any(array(${candidates}))`)
      .returning(['id', 'token_id'])
      .compile(),
  );
  return rows.sort((a, b) => compareKeys(a.id, b.id));
}

/** One of the listed deletes that deleteListedVaultTokensTogether runs in one statement. */
export interface ListedDelete {
  collection: string;
  scope: TenantScope;
  /** Listed criteria (see isListed): token IDs and/or object IDs, active or archived. */
  criteria: TokenCriteria;
}

/**
 * Runs several listed deletes (see isListed) in ONE prepared statement, with the result of running
 * them one after another in the order given: a token that several of them match is deleted by the
 * first. A delete matching more than `limit` tokens is left out whole (it needs batches of its
 * own) and deletes nothing: 'too many'. Returns, per delete in order, the keys and token IDs it
 * deleted in key order, or 'too many'. Under REPEATABLE READ a row changed since the snapshot
 * raises 40001 (nothing of the statement is kept), and the caller retries.
 */
export async function deleteListedVaultTokensTogether(trx: Executor, deletes: readonly ListedDelete[], limit: number): Promise<({ id: string; token_id: string }[] | 'too many')[]> {
  const input = deletes.map(({ collection, scope, criteria }, ord) => ({
    ord,
    collection,
    token_ids: criteria.token_ids ?? null,
    object_ids: criteria.object_ids ?? null,
    scope,
    archived: criteria.archived,
  }));
  // the rules of matching(), written for a row of `req`; token IDs first, object IDs when only those are listed
  const where = sql`vault_tokens.collection = r.collection and (r.scope is null or vault_tokens.tenant_id = any(r.scope)) and ${isArchived} = r.archived`;
  const [row] = await executePrepared(
    trx,
    sql<{ too_many: number[]; deleted: [number, string, string][] }>`
      with req as (
        select * from jsonb_to_recordset(${JSON.stringify(input)}::jsonb) as r (ord int, collection text, token_ids text[], object_ids text[], scope text[], archived boolean)
      ), hits as (
        select r.ord, r.collection, vault_tokens.id from req r join vault_tokens on vault_tokens.token_id = any(r.token_ids) and ${where}
        where r.token_ids is not null and (r.object_ids is null or vault_tokens.object_id = any(r.object_ids))
        union all
        select r.ord, r.collection, vault_tokens.id from req r join vault_tokens on vault_tokens.object_id = any(r.object_ids) and ${where}
        where r.token_ids is null
      ), too_many as (
        select ord from hits group by ord having count(*) > ${limit}::int
      ), owners as (
        select collection, id, min(ord) as ord from hits where ord not in (select ord from too_many) group by collection, id
      ), deleted as (
        delete from vault_tokens using owners where vault_tokens.collection = owners.collection and vault_tokens.id = owners.id returning owners.ord, vault_tokens.id, vault_tokens.token_id
      )
      select (select coalesce(json_agg(ord), '[]') from too_many) as too_many,
             (select coalesce(json_agg(json_build_array(ord, id::text, token_id) order by ord, id), '[]') from deleted) as deleted`.compile(trx),
  );
  if (!row) throw new Error('the listed delete statement returned no row');
  const out: ({ id: string; token_id: string }[] | 'too many')[] = deletes.map(() => []);
  for (const ord of row.too_many) out[ord] = 'too many';
  for (const [ord, id, token_id] of row.deleted) (out[ord] as { id: string; token_id: string }[]).push({ id, token_id });
  return out;
}

/** Whether a token matching listed criteria (see isListed) with `id > afterId` remains. */
export async function hasListedVaultTokenAfter(db: Executor, collection: string, scope: TenantScope, criteria: TokenCriteria, afterId: string): Promise<boolean> {
  const rows = await executePrepared(db, firstMatchAfter(db, collection, scope, criteria, afterId).compile());
  return rows.length > 0;
}

/** The key of the first matching token above `afterId`: a walk of the primary key that stops at the first match. */
function firstMatchAfter(db: Executor, collection: string, scope: TenantScope, criteria: TokenCriteria, afterId: string | RawBuilder<string>) {
  return db
    .selectFrom('vault_tokens')
    .select('id')
    .where((eb) => matching(eb, collection, scope, criteria))
    .where('id', '>', afterId)
    .orderBy('id')
    .limit(1);
}

/**
 * Deletes, in ONE statement, at most `limit` matching tokens with `id > afterId`, lowest keys
 * first, and writes the batch's audit rows and `tokens.deleted` events, token IDs in key order
 * (executeBatchStatement): the IDs never travel to the worker and back. The rows are addressed
 * by ctid (a TID scan, no second index lookup per row); under REPEATABLE READ a row a concurrent
 * transaction changed since the snapshot raises 40001, and the caller retries. After a full
 * batch, an index probe tells whether more match, so the last event says `last: true`.
 * For criteria that may match many tokens (tags, a tenant); see deleteVaultTokens for lists.
 */
export async function deleteAndRecordVaultTokens(
  trx: Executor,
  collection: string,
  scope: TenantScope,
  criteria: TokenCriteria,
  afterId: string,
  limit: number,
  record: BatchRecord<'tokens.deleted'>,
): Promise<BatchResult> {
  const candidates = batchCandidates(trx, collection, scope, criteria, afterId, limit);
  // after the last deleted key (a scalar subquery, not EXISTS: EXISTS drops the order, and scans)
  const next = firstMatchAfter(trx, collection, scope, criteria, sql<string>`(select last_id from batch)`);
  const deletion = sql`
    deleted as (
      delete from vault_tokens where ctid = any(array(${candidates})) returning id, token_id
    ), batch as (
      select count(*)::int as n, max(id) as last_id, coalesce(array_agg(token_id order by id), '{}') as ids from deleted
    ), more as (
      select case when b.n = ${limit}::int then ${next} is not null else false end as more from batch b
    )`;
  return executeBatchStatement(trx, deletion, record);
}

/**
 * Counts matching tokens (what a batched delete has left, or what a delete would take: a dry
 * run). The WHERE clause of every delete statement (matching).
 */
export async function countMatchingVaultTokens(db: Executor, collection: string, scope: TenantScope, criteria: TokenCriteria): Promise<number> {
  const row = await db
    .selectFrom('vault_tokens')
    .select((eb) => eb.fn.countAll<string>().as('n'))
    .where((eb) => matching(eb, collection, scope, criteria))
    .executeTakeFirstOrThrow();
  return Number(row.n);
}

/** The token IDs of the first `limit` matching tokens, lowest keys first: the order a delete takes them in. */
export async function sampleMatchingVaultTokens(db: Executor, collection: string, scope: TenantScope, criteria: TokenCriteria, limit: number): Promise<string[]> {
  const rows = await db
    .selectFrom('vault_tokens')
    .select('token_id')
    .where((eb) => matching(eb, collection, scope, criteria))
    .orderBy('id')
    .limit(limit)
    .execute();
  return rows.map((r) => r.token_id);
}
