import { createHash } from 'node:crypto';
import { sql } from 'kysely';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CommandPreview, PREVIEW_SAMPLE_SIZE } from '../../contracts/index.js';
import { seedNamedAccessTokens, seedTemporaryAccessTokens } from '../../db/repositories/seed.repository.js';
import { call, createCollection, subjectWithToken, tokenize, waitForJob } from '../helpers/api.js';
import { type Stack, startStack } from '../helpers/stack.js';

/**
 * SPEC §10: `POST /v1/commands?dry_run=true` goes through the validation, authorization and
 * tenant scope of a submission and answers what the command would touch now, `{ type, matches,
 * sample, missing? }`, recording, changing and enqueuing nothing.
 */

const A = 'dry-tenant-a';
const B = 'dry-tenant-b';
const COLLECTION = 'dry_cards';
const REASON = 'FraudPreventionSecurityAndCompliance';
type Headers = Record<string, string>;

describe('POST /v1/commands?dry_run=true', () => {
  let stack: Stack;
  /** tokens:write, tenant A only. */
  let writerA: Awaited<ReturnType<typeof subjectWithToken>>;
  /** Every token ID of the collection, per tenant, in key order (the order a delete takes them). */
  let tagged: { a: string[]; b: string[]; none: string[] };
  let archivedA: string;

  const preview = (body: unknown, headers: Headers = stack.admin, query = '?dry_run=true') => call(stack, 'POST', `/v1/commands${query}`, { headers, body });
  const deleteByTag = (tag = 'breach') => ({ type: 'tokens.delete', collection: COLLECTION, tags: [tag], reason: REASON });

  /** Every table's rows and every key of the stack's queue, as digests: what "changes nothing" is checked against. */
  async function state(): Promise<Record<string, string>> {
    const out: Record<string, string> = {};
    for (const table of ['commands', 'outbox', 'audit_log', 'vault_tokens', 'access_tokens', 'subjects']) {
      const r = await sql<{ n: number; digest: string }>`select count(*)::int as n, coalesce(md5(string_agg(t::text, '|' order by t::text)), '') as digest from ${sql.table(table)} t`.execute(
        stack.database.db,
      );
      out[table] = `${r.rows[0]!.n} ${r.rows[0]!.digest}`;
    }
    for (const key of (await stack.redis.keys(`${stack.config.QUEUE_PREFIX}:*`)).sort()) {
      const dump = await stack.redis.dumpBuffer(key);
      out[`redis ${key}`] = dump ? createHash('sha256').update(dump).digest('hex') : 'gone';
    }
    return out;
  }

  beforeAll(async () => {
    stack = await startStack({ worker: false });
    await createCollection(stack, COLLECTION);
    writerA = await subjectWithToken(stack, { kind: 'service', capabilities: ['tokens:write'], tenant_ids: [A] });
    const items = (prefix: string, n: number, tenant: string | null) =>
      Array.from({ length: n }, (_, i) => ({ object: { id: `${prefix}-${i}` }, tags: ['breach'], token_id: `${prefix}-${String(i).padStart(2, '0')}`, ...(tenant && { tenant_id: tenant }) }));
    // interleaved, so that the first keys of the collection are not all one tenant's
    const a1 = await tokenize(stack, COLLECTION, items('a1', 10, A));
    const b = await tokenize(stack, COLLECTION, items('b', 3, B));
    const a2 = await tokenize(stack, COLLECTION, items('a2', 15, A));
    const none = await tokenize(stack, COLLECTION, items('none', 2, null));
    archivedA = (await tokenize(stack, COLLECTION, [{ object: { id: 'arch' }, tags: ['breach'], token_id: 'a-archived', tenant_id: A }]))[0]!;
    await stack.database.db.updateTable('vault_tokens').set({ archived_at: new Date() }).where('token_id', '=', archivedA!).execute();
    tagged = { a: [...a1, ...a2], b, none };
  });
  afterAll(() => stack?.close());

  it('tokens.delete: counts every match, samples the first 20 in the order the delete takes them, and records, changes and enqueues nothing', async () => {
    const before = await state();

    const r = await preview(deleteByTag());

    expect(r.status).toBe(200);
    expect(CommandPreview.parse(r.body)).toEqual(r.body);
    const inKeyOrder = (await stack.database.db.selectFrom('vault_tokens').select('token_id').where('collection', '=', COLLECTION).where('archived_at', 'is', null).orderBy('id').execute()).map(
      (t) => t.token_id,
    );
    expect(r.body).toEqual({ type: 'tokens.delete', matches: 30, sample: inKeyOrder.slice(0, PREVIEW_SAMPLE_SIZE) });
    expect(r.body.sample).toHaveLength(PREVIEW_SAMPLE_SIZE);
    expect(r.headers.location).toBeUndefined();
    expect(await state()).toEqual(before);

    // archived tokens only when asked, as the delete itself
    const archived = await preview({ ...deleteByTag(), archived: true });
    expect(archived.body).toEqual({ type: 'tokens.delete', matches: 1, sample: [archivedA] });
    // named tokens, one that does not exist
    const named = await preview({ type: 'tokens.delete', collection: COLLECTION, token_ids: [tagged.b[0], 'no-such-token'], reason: REASON });
    expect(named.body).toEqual({ type: 'tokens.delete', matches: 1, sample: [tagged.b[0]] });
    expect(await state()).toEqual(before);
  });

  it("keeps to the caller's tenant scope: out-of-scope tokens are neither counted nor sampled", async () => {
    const scoped = await preview(deleteByTag(), writerA.headers);
    expect(scoped.status).toBe(200);
    expect(scoped.body).toEqual({ type: 'tokens.delete', matches: tagged.a.length, sample: tagged.a.slice(0, PREVIEW_SAMPLE_SIZE) });

    // the admin narrowed by X-Tenant-Id sees the same; naming B's token ID is as if it did not exist
    const narrowed = await preview(deleteByTag(), { ...stack.admin, 'x-tenant-id': A });
    expect(narrowed.body).toEqual(scoped.body);
    const named = await preview({ type: 'tokens.delete', collection: COLLECTION, token_ids: [tagged.b[0], tagged.none[0]], reason: REASON }, writerA.headers);
    expect(named.body).toEqual({ type: 'tokens.delete', matches: 0, sample: [] });
    const byTenant = await preview({ ...deleteByTag(), tenant_id: B });
    expect(byTenant.body).toEqual({ type: 'tokens.delete', matches: 3, sample: tagged.b });
    // a tenant_id outside the caller's scope is refused, as a submission is
    const outside = await preview({ ...deleteByTag(), tenant_id: B }, writerA.headers);
    expect(outside).toMatchObject({ status: 403, body: { error_code: 'PV1006' } });
  });

  it('tokens.rotate: the tokens it would rotate, and the IDs it would not find, an out-of-scope one among them exactly like a nonexistent one', async () => {
    const [a0, a1] = tagged.a;
    const r = await preview({ type: 'tokens.rotate', collection: COLLECTION, token_ids: [a0, tagged.b[0], a1, 'no-such-token', tagged.none[0], archivedA], reason: REASON }, writerA.headers);

    expect(r.status).toBe(200);
    expect(r.body).toEqual({ type: 'tokens.rotate', matches: 2, sample: [a0, a1], missing: [tagged.b[0], 'no-such-token', tagged.none[0], archivedA] });
    // the same IDs, unscoped: only the nonexistent and the archived one are missing
    const admin = await preview({ type: 'tokens.rotate', collection: COLLECTION, token_ids: [a0, tagged.b[0], 'no-such-token', tagged.none[0]], reason: REASON });
    expect(admin.body).toEqual({ type: 'tokens.rotate', matches: 3, sample: [a0, tagged.b[0], tagged.none[0]], missing: ['no-such-token'] });
  });

  it('access_token.revoke: the one token, if the caller may revoke it; the same refusals as a submission', async () => {
    const user = await subjectWithToken(stack, { kind: 'user' });
    const other = await subjectWithToken(stack, { kind: 'user' });

    const own = await preview({ type: 'access_token.revoke', token_id: user.tokenId }, user.headers);
    expect(own).toMatchObject({ status: 200, body: { type: 'access_token.revoke', matches: 1, sample: [user.tokenId] } });

    for (const query of ['', '?dry_run=true']) {
      const someoneElses = await preview({ type: 'access_token.revoke', token_id: other.tokenId }, user.headers, query);
      expect(someoneElses, query).toMatchObject({ status: 403, body: { error_code: 'PV1007' } });
      const unknown = await preview({ type: 'access_token.revoke', token_id: 'no-such-access-token' }, user.headers, query);
      expect(unknown, query).toMatchObject({ status: 404, body: { error_code: 'PV3006' } });
    }
    // the preview touched nothing: the token still authenticates
    expect((await call(stack, 'GET', '/v1/auth/verify', { headers: { ...user.headers, 'x-subject-token': user.token } })).status).toBe(200);
  });

  it("temporary_tokens.revoke_all: the subject's temporary tokens that still authenticate, not its named, expired or already revoked ones", async () => {
    const user = await subjectWithToken(stack, { kind: 'user' }, { temporary: true, ttl_seconds: 3600 });
    const db = stack.database.db;
    // the first temporary token is of an older generation (a revoke-all ran since)
    await db.updateTable('subjects').set({ temporary_generation: 1 }).where('id', '=', user.subject.id).execute();
    const issue = async (body: { temporary: boolean; ttl_seconds?: number }) =>
      (await call(stack, 'POST', `/v1/subjects/${user.subject.id}/tokens`, { headers: stack.admin, body })).body.token_id as string;
    const live = [await issue({ temporary: true, ttl_seconds: 3600 }), await issue({ temporary: true, ttl_seconds: 3600 }), await issue({ temporary: true, ttl_seconds: 3600 })];
    await issue({ temporary: false });
    const expired = await issue({ temporary: true, ttl_seconds: 3600 });
    await db
      .updateTable('access_tokens')
      .set({ expires_at: new Date(Date.now() - 1000) })
      .where('id', '=', expired)
      .execute();

    const r = await preview({ type: 'temporary_tokens.revoke_all', subject: { kind: 'user', id: user.subject.id } });

    expect(r.status).toBe(200);
    expect(r.body.type).toBe('temporary_tokens.revoke_all');
    expect(r.body.matches).toBe(3);
    expect([...r.body.sample].sort()).toEqual([...live].sort());
    // a provider's temporary tokens are that provider's to revoke: refused before any count
    const provider = await preview({ type: 'temporary_tokens.revoke_all', subject: { kind: 'provider', id: 'someone' } });
    expect(provider).toMatchObject({ status: 403, body: { error_code: 'PV1007' } });
  });

  it('subject.lockout: every access token the subject holds, named and temporary, in the order its batches take them; subject.unlock: the account, if locked out', async () => {
    const user = await subjectWithToken(stack, { kind: 'user' });
    await seedNamedAccessTokens(stack.database.db, user.subject.id, 14);
    await seedTemporaryAccessTokens(stack.database.db, user.subject.id, 10, 3600);
    const byId = await stack.database.db
      .selectFrom('access_tokens')
      .select('id')
      .where('subject_id', '=', user.subject.id)
      .orderBy(sql`id collate "C"`)
      .execute();
    const before = await state();

    const lockout = await preview({ type: 'subject.lockout', subject: { kind: 'user', id: user.subject.id } });
    const unlock = await preview({ type: 'subject.unlock', subject: { kind: 'user', id: user.subject.id } });

    expect(lockout.status).toBe(200);
    expect(lockout.body).toEqual({ type: 'subject.lockout', matches: 25, sample: byId.slice(0, PREVIEW_SAMPLE_SIZE).map((t) => t.id) });
    expect(unlock.body).toEqual({ type: 'subject.unlock', matches: 0, sample: [] });
    expect(await state()).toEqual(before);
    // the preview disabled nothing: the subject's token still authenticates
    expect((await call(stack, 'GET', '/v1/auth/verify', { headers: { ...user.headers, 'x-subject-token': user.token } })).status).toBe(200);

    await stack.database.db.updateTable('subjects').set({ disabled_at: new Date() }).where('id', '=', user.subject.id).execute();
    expect((await preview({ type: 'subject.unlock', subject: { kind: 'user', id: user.subject.id } })).body).toEqual({ type: 'subject.unlock', matches: 1, sample: [user.subject.id] });
    // a security_admin of another domain is refused, as a submission is
    const stranger = await subjectWithToken(stack, { kind: 'user', capabilities: ['security_admin'], domain_id: 'elsewhere' });
    expect(await preview({ type: 'subject.lockout', subject: { kind: 'user', id: user.subject.id } }, stranger.headers)).toMatchObject({ status: 403, body: { error_code: 'PV1007' } });
  });

  it('refuses exactly what a submission refuses, with the same status and code, and records nothing', async () => {
    const reader = await subjectWithToken(stack, { kind: 'service', capabilities: ['tokens:read'] });
    const otherCollection = await subjectWithToken(stack, { kind: 'service', capabilities: ['tokens:write'], collections: ['elsewhere'] });
    const cases: [string, unknown, Headers][] = [
      ['no tokens:write', deleteByTag(), reader.headers],
      ['collection outside scope', deleteByTag(), otherCollection.headers],
      ['tenant outside scope', deleteByTag(), { ...writerA.headers, 'x-tenant-id': B }],
      ['no reason', { type: 'tokens.delete', collection: COLLECTION, tags: ['x'] }, stack.admin],
      ['unknown collection', { ...deleteByTag(), collection: 'no_such_collection' }, stack.admin],
      ['no criterion', { type: 'tokens.delete', collection: COLLECTION, reason: REASON }, stack.admin],
      ['no credential', deleteByTag(), {}],
    ];
    const before = await state();
    for (const [name, body, headers] of cases) {
      const submitted = await preview(body, headers, '');
      const previewed = await preview(body, headers);
      expect(submitted.status, name).toBeGreaterThanOrEqual(400);
      expect({ status: previewed.status, code: previewed.body?.error_code }, name).toEqual({ status: submitted.status, code: submitted.body?.error_code });
    }
    expect(await state()).toEqual(before);
  });

  it('takes dry_run=true or false only, once; any other query parameter is refused, not ignored', async () => {
    const before = await state();
    for (const query of ['?dry_run=yes', '?dry_run=1', '?dry_run=', '?dry_run=true&dry_run=true', '?dryrun=true', '?dry_run=true&x=1']) {
      const r = await preview(deleteByTag(), stack.admin, query);
      expect({ query, status: r.status, code: r.body?.error_code }).toEqual({ query, status: 400, code: 'PV1002' });
    }
    expect(await state()).toEqual(before);
    const submitted = await preview(deleteByTag('nothing-tagged'), stack.admin, '?dry_run=false');
    expect(submitted.status).toBe(202);
    expect(submitted.body.state).toBe('queued');
  });

  it('decides on a fresh read of a cached credential: a token revoked since it was cached gets 401, not a preview', async () => {
    const caller = await subjectWithToken(stack, { kind: 'service', capabilities: ['tokens:write'] });
    // a submission caches the credential
    expect((await preview(deleteByTag('nothing-tagged'), caller.headers, '')).status).toBe(202);
    await stack.database.db.deleteFrom('access_tokens').where('id', '=', caller.tokenId).execute();

    const r = await preview(deleteByTag(), caller.headers);

    expect(r).toMatchObject({ status: 401, body: { error_code: 'PV1005' } });
  });

  it('gives up on a count that runs past 10 s with 503 PV1009, holding nothing', async () => {
    // the table held exclusively: the count waits, and its statement timeout counts the wait
    const holder = new pg.Client({ connectionString: stack.database.url, application_name: 'dry-run-holder' });
    await holder.connect();
    try {
      await holder.query('begin');
      await holder.query('lock table vault_tokens in access exclusive mode');
      const r = await preview(deleteByTag());
      expect(r.status).toBe(503);
      expect(r.body).toEqual({ error_code: 'PV1009', message: expect.stringMatching(/took longer than 10 s; nothing was changed/), context: { timeout_seconds: '10' } });
      expect(r.headers['retry-after']).toBe('30');
    } finally {
      await holder.query('rollback');
      await holder.end();
    }
    // nothing left behind: the next preview answers at once
    expect((await preview(deleteByTag())).status).toBe(200);
  }, 30_000);

  it('previews what the command then does: a delete run right after deletes exactly the previewed count', async () => {
    const previewed = await preview(deleteByTag(), writerA.headers);
    await stack.startWorker();

    const submitted = await preview(deleteByTag(), writerA.headers, '');
    const done = await waitForJob(stack, submitted.body.job_id, writerA.headers);

    expect(done).toMatchObject({ state: 'succeeded', result: { deleted: previewed.body.matches } });
    const left = await stack.database.db.selectFrom('vault_tokens').select('token_id').where('token_id', 'in', previewed.body.sample).execute();
    expect(left).toEqual([]);
  });
});
