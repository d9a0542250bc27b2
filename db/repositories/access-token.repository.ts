import { CompiledQuery, type RawBuilder, sql } from 'kysely';
import type { AccessTokenRow, NewAccessToken } from '../access-token.table.js';
import { type Executor, retryReadOnce } from '../database.js';
import { executePrepared } from '../prepared.js';
import type { SubjectRow } from '../subject.table.js';

export interface AccessTokenWithSubject {
  token: AccessTokenRow;
  subject: SubjectRow;
}

/** Inserts an access token (secret already hashed). Returns the row. */
export async function insertAccessToken(db: Executor, token: NewAccessToken): Promise<AccessTokenRow> {
  return db.insertInto('access_tokens').values(token).returningAll().executeTakeFirstOrThrow();
}

/**
 * Creates or replaces the access token with this ID (used for the bootstrap admin, whose secret
 * comes from configuration). Returns the row.
 */
export async function upsertAccessToken(db: Executor, token: NewAccessToken): Promise<AccessTokenRow> {
  return db
    .insertInto('access_tokens')
    .values(token)
    .onConflict((oc) =>
      oc.column('id').doUpdateSet((eb) => ({
        secret_hash: eb.ref('excluded.secret_hash'),
        subject_id: eb.ref('excluded.subject_id'),
      })),
    )
    .returningAll()
    .executeTakeFirstOrThrow();
}

/** Takes a secret's hash; returns the token and its subject, or undefined. Index: secret_hash. */
export async function findAccessTokenByHash(db: Executor, secretHash: Buffer): Promise<AccessTokenWithSubject | undefined> {
  return (await findAccessTokensByHashes(db, [secretHash]))[0];
}

/**
 * Takes several secrets' hashes; returns the tokens found, with their subjects, in one round
 * trip (a caller's credential and the X-Subject-Token it asks about). Index: secret_hash.
 */
export async function findAccessTokensByHashes(db: Executor, secretHashes: readonly Buffer[]): Promise<AccessTokenWithSubject[]> {
  // every authenticated request runs this: prepared (one or two hashes, two shapes), and built
  // and compiled once per shape (Kysely's builder and compiler cost ~5 % of a verify request)
  let text = lookupByHashes.get(secretHashes.length);
  if (text === undefined) {
    const compiled = withSubject(db).where('access_tokens.secret_hash', 'in', [...secretHashes]).compile();
    // its parameters are the hashes and nothing else, so another call's hashes can take their place
    if (compiled.parameters.length !== secretHashes.length) throw new Error('the token lookup has parameters besides the hashes');
    text = compiled.sql;
    lookupByHashes.set(secretHashes.length, text);
  }
  const query = CompiledQuery.raw(text, [...secretHashes]) as CompiledQuery<JoinedRow>;
  const rows = await retryReadOnce(() => executePrepared(db, query));
  return rows.map(split);
}

/** The SQL text of findAccessTokensByHashes' statement, by number of hashes (all Executors are Postgres, without plugins). */
const lookupByHashes = new Map<number, string>();

/**
 * What a statement acting for a caller re-checks of it (credentialHolds): the token and what its
 * authorization was decided on, as a JSON record to send with the statement's rows.
 */
export function credentialColumns({ token, subject }: AccessTokenWithSubject) {
  return {
    token_id: token.id,
    secret_hash: token.secret_hash.toString('hex'),
    subject_id: subject.id,
    kind: subject.kind,
    domain_id: subject.domain_id,
    capabilities: subject.capabilities,
    tenant_ids: subject.tenant_ids,
    collections: subject.collections,
  };
}

/** The SQL types of credentialColumns, for a `jsonb_to_recordset(...) as alias (...)` column list. */
export const credentialColumnTypes = sql.raw(
  'token_id text, secret_hash text, subject_id text, kind text, domain_id text, capabilities text[], tenant_ids text[], collections text[]',
);

/**
 * A condition for a statement that acts for callers, on a row `alias` holding credentialColumns:
 * true while that credential still authenticates (the token exists with this secret, has not
 * expired, is not of an old generation) AND everything its authorization was decided on is as
 * read (the subject's kind, domain, capabilities, tenants and collections). Evaluated in the
 * statement's own snapshot, so what the statement does is done for a caller valid at that
 * instant, however old the read.
 */
export function credentialHolds(alias: string): RawBuilder<boolean> {
  const c = sql.table(alias);
  return sql<boolean>`exists (
    select 1 from access_tokens t inner join subjects s on s.id = t.subject_id
    where t.id = ${c}.token_id and t.secret_hash = decode(${c}.secret_hash, 'hex') and s.id = ${c}.subject_id
      and s.kind = ${c}.kind and s.domain_id = ${c}.domain_id and s.capabilities = ${c}.capabilities
      and s.tenant_ids is not distinct from ${c}.tenant_ids and s.collections is not distinct from ${c}.collections
      and (not t.temporary or t.generation >= s.temporary_generation) and (t.expires_at is null or t.expires_at > now()))`;
}

/** Takes a token ID; returns the token and its subject, or undefined. */
export async function findAccessTokenById(db: Executor, id: string): Promise<AccessTokenWithSubject | undefined> {
  const row = await withSubject(db).where('access_tokens.id', '=', id).executeTakeFirst();
  return row ? split(row) : undefined;
}

function withSubject(db: Executor) {
  return db
    .selectFrom('access_tokens')
    .innerJoin('subjects', 'subjects.id', 'access_tokens.subject_id')
    .selectAll('access_tokens')
    .select([
      'subjects.kind as s_kind',
      'subjects.domain_id as s_domain_id',
      'subjects.capabilities as s_capabilities',
      'subjects.tenant_ids as s_tenant_ids',
      'subjects.collections as s_collections',
      'subjects.temporary_generation as s_temporary_generation',
      'subjects.created_at as s_created_at',
      'subjects.updated_at as s_updated_at',
    ]);
}

type JoinedRow = Awaited<ReturnType<ReturnType<typeof withSubject>['executeTakeFirstOrThrow']>>;

function split(row: JoinedRow): AccessTokenWithSubject {
  const { s_kind, s_domain_id, s_capabilities, s_tenant_ids, s_collections, s_temporary_generation, s_created_at, s_updated_at, ...token } = row;
  return {
    token,
    subject: {
      id: token.subject_id,
      kind: s_kind,
      domain_id: s_domain_id,
      capabilities: s_capabilities,
      tenant_ids: s_tenant_ids,
      collections: s_collections,
      temporary_generation: s_temporary_generation,
      created_at: s_created_at,
      updated_at: s_updated_at,
    },
  };
}

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
