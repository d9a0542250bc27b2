/**
 * How access tokens end: one revoked (Keystone delete), a subject's revoked in batches (lockout),
 * dead ones swept; and what a revocation would take (a preview's counts). Issuing and
 * authenticating tokens: access-token.repository.ts.
 */
import { sql } from 'kysely';
import type { AccessTokenRow } from '../access-token.table.js';
import type { Executor } from '../database.js';
import { type BatchRecord, type BatchResult, executeBatchStatement } from './bulk-batch.repository.js';

/**
 * The subject's temporary tokens that still authenticate (issued under its current generation,
 * not expired): what a revoke-all would end. Returns how many, and the IDs of the first `limit`
 * (oldest first). Index: access_tokens_subject_generation.
 */
export async function liveTemporaryTokens(db: Executor, subjectId: string, limit: number): Promise<{ count: number; sample: string[] }> {
  const live = db
    .selectFrom('access_tokens')
    .innerJoin('subjects', 'subjects.id', 'access_tokens.subject_id')
    .where('access_tokens.subject_id', '=', subjectId)
    .where('access_tokens.temporary', '=', true)
    .whereRef('access_tokens.generation', '>=', 'subjects.temporary_generation')
    .where((eb) => eb.or([eb('access_tokens.expires_at', 'is', null), eb('access_tokens.expires_at', '>', sql<Date>`now()`)]));
  const counted = await live.select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow();
  const sample = await live.select('access_tokens.id').orderBy('access_tokens.created_at').orderBy('access_tokens.id').limit(limit).execute();
  return { count: Number(counted.n), sample: sample.map((r) => r.id) };
}

/** Deletes the access token, expired or not. Returns the deleted row, or undefined. */
export async function deleteAccessToken(db: Executor, id: string): Promise<AccessTokenRow | undefined> {
  return db.deleteFrom('access_tokens').where('id', '=', id).returningAll().executeTakeFirst();
}

/**
 * Takes a subject ID; returns the upper bounds of a lockout's batches of at most `size` of its
 * tokens with an ID above `afterId`: every `size`-th ID in ID order (collate "C"), except the
 * highest one. Batch i revokes the IDs in (bound i-1, bound i], the last batch every ID above the
 * last bound. Drawn once, by index-only walks of access_tokens_subject_id (one statement per
 * bound, each too cheap for the JIT that one recursive statement set off), so that no batch walks
 * the index again: once the first batch has deleted rows on every page of the subject's, such a
 * walk pays a heap visit per token.
 */
export async function lockoutBatchBounds(db: Executor, subjectId: string, afterId: string, size: number): Promise<string[]> {
  const bounds: string[] = [];
  const after = (id: string, skip: number) =>
    sql<{ id: string }>`select id from access_tokens where subject_id = ${subjectId} and id collate "C" > ${id} order by id collate "C" offset ${skip}::int limit 1`.execute(db);
  for (let from = afterId; ;) {
    const [bound] = (await after(from, size - 1)).rows;
    if (!bound) break;
    bounds.push(bound.id);
    from = bound.id;
  }
  // the highest ID bounds nothing: the last batch takes every ID above the last bound
  if (bounds.length > 0 && (await after(bounds.at(-1)!, 0)).rows.length === 0) bounds.pop();
  return bounds;
}

/**
 * Revokes (deletes), in ONE statement, the subject's access tokens with an ID in (`afterId`,
 * `upTo`] (`upTo` null: every ID above `afterId`), named and temporary alike, and writes the
 * batch's audit rows and `access_token.revoked` events (executeBatchStatement): one bitmap scan
 * of access_tokens_subject_id, as a plain DELETE of the subject's tokens would make. The IDs go
 * into the events in the order the batch deleted them (by page), not sorted: sorting them cost
 * about as much as deleting them. `more` is whether `upTo` was given (a batch is left above it).
 * Under REPEATABLE READ a token a concurrent transaction deleted since the snapshot raises 40001,
 * and the caller retries.
 */
export async function revokeAndRecordAccessTokens(trx: Executor, subjectId: string, afterId: string, upTo: string | null, record: BatchRecord<'access_token.revoked'>): Promise<BatchResult> {
  const deletion = sql`
    deleted as (
      delete from access_tokens where subject_id = ${subjectId} and id collate "C" > ${afterId} ${upTo === null ? sql`` : sql`and id collate "C" <= ${upTo}`}
      returning id
    ), batch as (
      select count(*)::int as n, ${upTo === null ? sql`max(id collate "C")` : sql`${upTo}::text`} as last_id, coalesce(array_agg(id), '{}') as ids from deleted
    ), more as (
      select ${upTo !== null}::boolean as more
    )`;
  return executeBatchStatement(trx, deletion, record);
}
/** Takes a subject ID; returns how many access tokens it holds (what a lockout has left). Index: access_tokens_subject_id. */
export async function countAccessTokensOf(db: Executor, subjectId: string): Promise<number> {
  const row = await db
    .selectFrom('access_tokens')
    .select((eb) => eb.fn.countAll<string>().as('n'))
    .where('subject_id', '=', subjectId)
    .executeTakeFirstOrThrow();
  return Number(row.n);
}
/**
 * Deletes at most `limit` temporary tokens issued under a generation older than their
 * subject's, once the subject's last bump is older than `graceSeconds`. Rows another
 * transaction holds are skipped, so a sweep never waits on (or blocks) a revocation.
 * Returns how many it deleted.
 */
export async function sweepRevokedTemporaryTokens(db: Executor, graceSeconds: number, limit: number): Promise<number> {
  const result = await sql`
    delete from access_tokens where id in (
      select t.id from access_tokens t
      join subjects s on s.id = t.subject_id
      where t.temporary and t.generation < s.temporary_generation
        and s.updated_at < now() - make_interval(secs => ${graceSeconds})
      limit ${limit}
      for update of t skip locked)`.execute(db);
  return Number(result.numAffectedRows ?? 0);
}

/** Deletes at most `limit` tokens expired more than `graceSeconds` ago (skipping locked rows). */
export async function sweepExpiredAccessTokens(db: Executor, graceSeconds: number, limit: number): Promise<number> {
  const result = await sql`
    delete from access_tokens where id in (
      select id from access_tokens
      where expires_at < now() - make_interval(secs => ${graceSeconds})
      limit ${limit}
      for update skip locked)`.execute(db);
  return Number(result.numAffectedRows ?? 0);
}
