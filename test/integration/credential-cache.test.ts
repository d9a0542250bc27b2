import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bumpTemporaryGeneration, upsertSubject } from '../../db/repositories/subject.repository.js';
import { bearer, call, createCollection, type SubjectSpec, subjectWithToken, tokenize, uid, waitForJob } from '../helpers/api.js';
import { sleep } from '../helpers/sleep.js';
import { type Stack, startStack } from '../helpers/stack.js';

/**
 * Command routes take their caller from the producer's credential cache; the statement that
 * records the command re-checks the credential. Whatever changed since the caller was cached,
 * the answer must be the one a fresh lookup would give, and nothing may be recorded for a
 * credential that no longer holds.
 */
const COLLECTION = 'cache_cards';
const DELETE = `/api/pvlt/1.0/data/collections/${COLLECTION}/tokens`;

/** The producer's credential cache lookups so far with this outcome (its /metrics; one registry per process). */
async function cacheLookups(stack: Stack, outcome: 'hit' | 'miss'): Promise<number> {
  const text = await (await fetch(`${stack.producer.url}/metrics`)).text();
  return Number(new RegExp(`^revocation_credential_cache_lookups_total\\{outcome="${outcome}"\\} (\\d+)`, 'm').exec(text)?.[1] ?? 0);
}

describe('the credential cache of command routes', () => {
  let stack: Stack;

  beforeAll(async () => {
    stack = await startStack();
    await createCollection(stack, COLLECTION);
  });
  afterAll(() => stack?.close());

  const deleteCommand = (tokenId: string) => ({ type: 'tokens.delete', collection: COLLECTION, token_ids: [tokenId], reason: 'AppFunctionality' });
  const submit = (headers: Record<string, string>, body: unknown = deleteCommand(uid('tok'))) => call(stack, 'POST', '/v1/commands', { headers, body });
  const commandsOf = async (subjectId: string) => Number((await sql<{ n: string }>`select count(*) as n from commands where submitter_id = ${subjectId}`.execute(stack.database.db)).rows[0]!.n);
  const cacheHits = () => cacheLookups(stack, 'hit');
  /** A subject whose credential is cached: it has just recorded a command. */
  const cachedWriter = async (spec: Partial<SubjectSpec> = {}, token?: { temporary: boolean; ttl_seconds?: number }) => {
    const writer = await subjectWithToken(stack, { id: uid('writer'), kind: 'service', capabilities: ['tokens:write'], ...spec }, token);
    expect((await submit(writer.headers)).status).toBe(202);
    return writer;
  };
  const change = (id: string, spec: Partial<SubjectSpec>) =>
    upsertSubject(stack.database.db, { id, kind: 'service', capabilities: ['tokens:write'], tenant_ids: null, collections: null, ...spec } as Parameters<typeof upsertSubject>[1]);

  it('serves a repeated caller without looking its credential up, and records its commands', async () => {
    const writer = await cachedWriter();
    const before = await cacheHits();
    for (let i = 0; i < 3; i++) expect((await submit(writer.headers)).status).toBe(202);
    expect(await cacheHits()).toBe(before + 3);
    expect(await commandsOf(writer.subject.id)).toBe(4);
  });

  it('records nothing for a token revoked since it was cached: 401', async () => {
    const writer = await cachedWriter();
    const revoke = await call(stack, 'DELETE', '/v3/auth/tokens', { headers: { prefer: 'respond-async', ...stack.admin, 'x-subject-token': writer.token } });
    expect(revoke.status).toBe(202);
    expect((await waitForJob(stack, revoke.body.job_id)).state).toBe('succeeded');

    const r = await submit(writer.headers);
    expect(r.status).toBe(401);
    expect(r.body.error_code).toBe('PV1005');
    expect(await commandsOf(writer.subject.id)).toBe(1);
  });

  it('records nothing for a temporary token whose generation was revoked since: 401', async () => {
    const user = await subjectWithToken(stack, { id: uid('user'), kind: 'user' }, { temporary: true, ttl_seconds: 3600 });
    const path = `/api/v3/onezone/users/${user.subject.id}/tokens/temporary`;
    // cached by a request refused after authentication (an Idempotency-Key too long)
    expect((await call(stack, 'DELETE', path, { headers: { ...user.headers, 'idempotency-key': 'k'.repeat(300) } })).status).toBe(400);
    await bumpTemporaryGeneration(stack.database.db, 'user', user.subject.id);
    const r = await call(stack, 'DELETE', path, { headers: user.headers });
    expect(r.status).toBe(401);
    expect(await commandsOf(user.subject.id)).toBe(0);
  });

  it('refuses a token that expired since it was cached: 401', async () => {
    // 3 s, not 1: the token's commit and the command's both come before its expiry, whatever the disk
    const writer = await cachedWriter({}, { temporary: true, ttl_seconds: 3 });
    await sleep(3100);
    expect((await submit(writer.headers)).status).toBe(401);
    expect(await commandsOf(writer.subject.id)).toBe(1);
  });

  it('answers 403 and records nothing when the capability was taken away since', async () => {
    const writer = await cachedWriter();
    await change(writer.subject.id, { capabilities: ['tokens:read'] });
    const r = await submit(writer.headers);
    expect(r.status).toBe(403);
    expect(r.body.error_code).toBe('PV1007');
    expect(await commandsOf(writer.subject.id)).toBe(1);
  });

  it('honours a capability granted since a cached refusal, at once', async () => {
    const reader = await subjectWithToken(stack, { id: uid('reader'), kind: 'service', capabilities: ['tokens:read'] });
    expect((await submit(reader.headers)).status).toBe(403); // cached, refused
    await change(reader.subject.id, { capabilities: ['tokens:read', 'tokens:write'] });
    const r = await submit(reader.headers);
    expect(r.status).toBe(202);
    expect(await commandsOf(reader.subject.id)).toBe(1);
  });

  it('follows the collection scope as it changes, both ways', async () => {
    await createCollection(stack, 'cache_other');
    const writer = await cachedWriter({ collections: [COLLECTION] });
    const other = { ...deleteCommand(uid('tok')), collection: 'cache_other' };
    expect((await submit(writer.headers, other)).status).toBe(403);
    await change(writer.subject.id, { collections: [COLLECTION, 'cache_other'] });
    expect((await submit(writer.headers, other)).status).toBe(202);
    await change(writer.subject.id, { collections: ['cache_other'] });
    expect((await submit(writer.headers)).status).toBe(403);
    expect(await commandsOf(writer.subject.id)).toBe(2);
  });

  it('follows the tenant scope named by X-Tenant-Id as it changes', async () => {
    const writer = await cachedWriter({ tenant_ids: ['t1'] });
    const asT2 = { ...writer.headers, 'x-tenant-id': 't2' };
    expect((await submit(asT2)).status).toBe(403);
    await change(writer.subject.id, { tenant_ids: ['t1', 't2'] });
    expect((await submit(asT2)).status).toBe(202);
    await change(writer.subject.id, { tenant_ids: ['t1'] });
    const r = await submit(asT2);
    expect(r.status).toBe(403);
    expect(r.body.error_code).toBe('PV1006');
  });

  it('answers 401, not the validation error, for a revoked cached credential', async () => {
    const writer = await cachedWriter();
    await sql`delete from access_tokens where id = ${writer.tokenId}`.execute(stack.database.db);
    const r = await submit(writer.headers, { type: 'tokens.delete', collection: COLLECTION });
    expect(r.status).toBe(401);
    const piiano = await call(stack, 'DELETE', `${DELETE}?reason=AppFunctionality`, { headers: writer.headers });
    expect(piiano.status).toBe(401);
  });

  it('answers an error found before the decision as a fresh read would: 403 for a tenant taken away since, not the validation error', async () => {
    const writer = await cachedWriter({ tenant_ids: ['t1', 't2'] });
    await change(writer.subject.id, { tenant_ids: ['t1'] });
    const r = await submit({ ...writer.headers, 'x-tenant-id': 't2' }, { type: 'tokens.delete', collection: COLLECTION, reason: 'AppFunctionality' });
    expect(r.status).toBe(403);
    expect(r.body.error_code).toBe('PV1006');
    expect(await commandsOf(writer.subject.id)).toBe(1);
  });

  it('replays an Idempotency-Key from the cache, and refuses the replay once the token is revoked', async () => {
    const writer = await cachedWriter();
    const headers = { ...writer.headers, 'idempotency-key': uid('key') };
    const body = deleteCommand(uid('tok'));
    const first = await submit(headers, body);
    expect(first.status).toBe(202);
    const replay = await submit(headers, body);
    expect(replay.status).toBe(200);
    expect(replay.body.job_id).toBe(first.body.job_id);
    await sql`delete from access_tokens where id = ${writer.tokenId}`.execute(stack.database.db);
    expect((await submit(headers, body)).status).toBe(401);
  });

  it('serves the Piiano delete and rotate routes from the cache too', async () => {
    const writer = await cachedWriter();
    const [a, b] = await tokenize(stack, COLLECTION, [{ object: { id: 'o1' } }, { object: { id: 'o2' } }]);
    const before = await cacheHits();
    const del = await call(stack, 'DELETE', `${DELETE}?reason=AppFunctionality&token_ids=${a}`, { headers: { ...writer.headers, prefer: 'wait=10' } });
    expect(del.status).toBe(200);
    const rot = await call(stack, 'POST', `/api/pvlt/1.0/data/collections/${COLLECTION}/rotate/tokens?reason=AppFunctionality&token_ids=${b}`, {
      headers: { ...writer.headers, prefer: 'respond-async' },
    });
    expect(rot.status).toBe(202);
    expect(await cacheHits()).toBe(before + 2);
    await sql`delete from access_tokens where id = ${writer.tokenId}`.execute(stack.database.db);
    expect((await call(stack, 'POST', `/api/pvlt/1.0/data/collections/${COLLECTION}/rotate/tokens?reason=AppFunctionality&token_ids=${b}`, { headers: writer.headers })).status).toBe(401);
  });

  it('never serves a route that does not record a command from the cache', async () => {
    const writer = await cachedWriter();
    const before = await cacheHits();
    await sql`delete from access_tokens where id = ${writer.tokenId}`.execute(stack.database.db);
    expect((await call(stack, 'GET', `/api/pvlt/1.0/data/collections/${COLLECTION}/count/tokens?reason=AppFunctionality`, { headers: bearer(writer.token) })).status).toBe(401);
    expect(await cacheHits()).toBe(before);
  });
});

describe('CREDENTIAL_CACHE_MAX=0', () => {
  let stack: Stack;

  beforeAll(async () => {
    stack = await startStack({ env: { CREDENTIAL_CACHE_MAX: '0' }, worker: false });
    await createCollection(stack, COLLECTION);
  });
  afterAll(() => stack?.close());

  it('turns the cache off: every command request reads its credential', async () => {
    const writer = await subjectWithToken(stack, { id: uid('writer'), kind: 'service', capabilities: ['tokens:write'] });
    const body = () => ({ type: 'tokens.delete', collection: COLLECTION, token_ids: [uid('tok')], reason: 'AppFunctionality' });
    const [hits, misses] = [await cacheLookups(stack, 'hit'), await cacheLookups(stack, 'miss')];
    for (let i = 0; i < 3; i++) expect((await call(stack, 'POST', '/v1/commands', { headers: writer.headers, body: body() })).status).toBe(202);
    expect(await cacheLookups(stack, 'hit')).toBe(hits);
    expect(await cacheLookups(stack, 'miss')).toBe(misses + 3);
  });
});
