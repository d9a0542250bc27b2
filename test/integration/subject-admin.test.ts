import { sql } from 'kysely';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SubjectTokensPage, SubjectView } from '../../contracts/index.js';
import { type RunningProducer, startProducer } from '../../producer/server.js';
import { call, createCollection, subjectWithToken, uid } from '../helpers/api.js';
import { type Stack, startStack } from '../helpers/stack.js';

/**
 * Seeing and changing a subject (SPEC §10): GET and PATCH /v1/subjects/{id} and
 * GET /v1/subjects/{id}/tokens, `subjects:admin` only. A change holds for every request from its
 * commit on, at every producer, a credential served from a producer's cache included.
 */

const COLLECTION = 'admin_cards';
const OTHER = 'admin_other';
type Headers = Record<string, string>;

describe('subject administration', () => {
  let stack: Stack;
  /** A second producer on the same database and queue, with a credential cache of its own. */
  let other: RunningProducer;
  let plain: Awaited<ReturnType<typeof subjectWithToken>>;

  beforeAll(async () => {
    stack = await startStack();
    other = await startProducer(stack.config, pino({ level: 'silent' }));
    await createCollection(stack, COLLECTION);
    await createCollection(stack, OTHER);
    plain = await subjectWithToken(stack, { id: uid('plain'), kind: 'user', capabilities: ['tokens:write', 'security_admin'] });
  });
  afterAll(async () => {
    await other?.close();
    await stack?.close();
  });

  const patch = (id: string, body: unknown, headers: Headers = stack.admin) =>
    stack.producer.app
      .inject({ method: 'PATCH', url: `/v1/subjects/${id}`, headers: { ...headers, 'content-type': 'application/json' }, payload: JSON.stringify(body) })
      .then((r) => ({ status: r.statusCode, body: r.json() }));
  /** The same request at either producer. */
  const submitAt = async (producer: RunningProducer, headers: Headers, extra: Headers = {}) => {
    const r = await producer.app.inject({
      method: 'POST',
      url: '/v1/commands',
      headers: { ...headers, ...extra, 'content-type': 'application/json' },
      payload: JSON.stringify({ type: 'tokens.delete', collection: COLLECTION, token_ids: [uid('tok')], reason: 'AppFunctionality' }),
    });
    return { status: r.statusCode, body: r.json() };
  };
  const commandsOf = async (subjectId: string) => Number((await sql<{ n: string }>`select count(*) as n from commands where submitter_id = ${subjectId}`.execute(stack.database.db)).rows[0]!.n);

  describe('GET /v1/subjects/{id}', () => {
    it('shows the subject, disabled_at included', async () => {
      const made = await subjectWithToken(stack, { id: uid('ann'), kind: 'provider', domain_id: 'acme', capabilities: ['tokens:read'], tenant_ids: ['t1'] });
      const r = await call(stack, 'GET', `/v1/subjects/${made.subject.id}`, { headers: stack.admin });
      expect(r.status).toBe(200);
      expect(SubjectView.parse(r.body)).toEqual({
        id: made.subject.id,
        kind: 'provider',
        domain_id: 'acme',
        capabilities: ['tokens:read'],
        tenant_ids: ['t1'],
        collections: null,
        temporary_generation: 0,
        disabled_at: null,
      });
    });

    it('is 404 for an unknown subject and 403 without subjects:admin', async () => {
      const missing = await call(stack, 'GET', `/v1/subjects/${uid('nobody')}`, { headers: stack.admin });
      expect(missing.status).toBe(404);
      expect(missing.body.error_code).toBe('PV3003');
      const refused = await call(stack, 'GET', `/v1/subjects/${plain.subject.id}`, { headers: plain.headers });
      expect(refused.status).toBe(403);
      expect(refused.body).toMatchObject({ error_code: 'PV1007', context: { capability: 'subjects:admin' } });
    });
  });

  describe('PATCH /v1/subjects/{id}', () => {
    it('replaces the grants it names and keeps the others', async () => {
      const made = await subjectWithToken(stack, { id: uid('bea'), kind: 'service', capabilities: ['tokens:read'], tenant_ids: ['t1'], collections: [COLLECTION] });
      const r = await patch(made.subject.id, { capabilities: ['tokens:write', 'tokens:write', 'tokens:read'], collections: null });
      expect(r.status).toBe(200);
      expect(r.body).toMatchObject({ capabilities: ['tokens:write', 'tokens:read'], tenant_ids: ['t1'], collections: null, disabled_at: null });
      const read = await call(stack, 'GET', `/v1/subjects/${made.subject.id}`, { headers: stack.admin });
      expect(read.body).toEqual(r.body);
    });

    it('validates like POST /v1/subjects, and changes nothing on a refusal', async () => {
      const made = await subjectWithToken(stack, { id: uid('cid'), kind: 'user', capabilities: ['tokens:read'] });
      const before = (await call(stack, 'GET', `/v1/subjects/${made.subject.id}`, { headers: stack.admin })).body;
      for (const body of [
        {},
        { capabilities: ['tokens:nope'] },
        { tenant_ids: [] },
        { collections: ['1bad'] },
        { tenant_ids: ['a b'] },
        { kind: 'service' },
        { domain_id: 'x' },
        { capabilities: 'tokens:read' },
        [],
      ]) {
        const r = await patch(made.subject.id, body);
        expect(r.status, JSON.stringify(body)).toBe(400);
        expect(r.body.error_code).toBe('PV1002');
      }
      expect((await patch(uid('nobody'), { capabilities: [] })).status).toBe(404);
      expect((await patch(made.subject.id, { capabilities: [] }, plain.headers)).status).toBe(403);
      expect((await call(stack, 'GET', `/v1/subjects/${made.subject.id}`, { headers: stack.admin })).body).toEqual(before);
    });

    it('holds for the very next request at every producer, a cached credential included', async () => {
      const writer = await subjectWithToken(stack, { id: uid('writer'), kind: 'service', capabilities: ['tokens:write'] });
      // cached at both producers: each has just recorded a command for it
      for (const producer of [stack.producer, other]) expect((await submitAt(producer, writer.headers)).status).toBe(202);

      // a capability taken away: refused at once at the other producer, nothing recorded
      expect((await patch(writer.subject.id, { capabilities: [] })).status).toBe(200);
      const refused = await submitAt(other, writer.headers);
      expect(refused.status).toBe(403);
      expect(refused.body).toMatchObject({ error_code: 'PV1007', context: { capability: 'tokens:write' } });
      expect(await commandsOf(writer.subject.id)).toBe(2);

      // given back: accepted at once, although the refusal was decided on a cached read
      expect((await patch(writer.subject.id, { capabilities: ['tokens:write'] })).status).toBe(200);
      expect((await submitAt(other, writer.headers)).status).toBe(202);
      expect((await submitAt(stack.producer, writer.headers)).status).toBe(202);

      // a tenant scope and a collection scope
      expect((await patch(writer.subject.id, { tenant_ids: ['t1'] })).status).toBe(200);
      expect((await submitAt(other, writer.headers, { 'x-tenant-id': 't2' })).status).toBe(403);
      expect((await submitAt(other, writer.headers, { 'x-tenant-id': 't1' })).status).toBe(202);
      expect((await patch(writer.subject.id, { collections: [OTHER] })).status).toBe(200);
      const outside = await submitAt(stack.producer, writer.headers);
      expect(outside.status).toBe(403);
      expect(outside.body.message).toBe('The collection is outside the caller scope.');
      expect(await commandsOf(writer.subject.id)).toBe(5);
    });
  });

  describe('GET /v1/subjects/{id}/tokens', () => {
    it('lists the tokens: IDs, names, kinds, dates, revoked by generation; never a secret or its hash', async () => {
      const made = await subjectWithToken(stack, { id: uid('dora'), kind: 'user' });
      const id = made.subject.id as string;
      const issued = [made.tokenId];
      for (const body of [
        { temporary: false, name: 'ci' },
        { temporary: true, ttl_seconds: 600 },
      ]) {
        const r = await call(stack, 'POST', `/v1/subjects/${id}/tokens`, { headers: stack.admin, body });
        issued.push(r.body.token_id);
      }
      // the temporary one is revoked by a revoke-all; then one more, of the new generation
      expect((await call(stack, 'DELETE', `/api/v3/onezone/users/${id}/tokens/temporary`, { headers: stack.admin })).status).toBe(204);
      const fresh = await call(stack, 'POST', `/v1/subjects/${id}/tokens`, { headers: stack.admin, body: { temporary: true } });
      issued.push(fresh.body.token_id);

      const r = await call(stack, 'GET', `/v1/subjects/${id}/tokens`, { headers: stack.admin });
      expect(r.status).toBe(200);
      const page = SubjectTokensPage.parse(r.body);
      expect(page.next_after).toBeNull();
      expect(page.tokens.map((t) => t.token_id)).toEqual([...issued].sort());
      const byId = new Map(page.tokens.map((t) => [t.token_id, t]));
      expect(byId.get(issued[0]!)).toEqual({ token_id: issued[0], name: null, kind: 'named', generation: null, revoked: false, created_at: expect.any(String), expires_at: null });
      expect(byId.get(issued[1]!)).toMatchObject({ name: 'ci', kind: 'named', revoked: false, expires_at: null });
      expect(byId.get(issued[2]!)).toMatchObject({ kind: 'temporary', generation: 0, revoked: true, expires_at: expect.any(String) });
      expect(byId.get(issued[3]!)).toMatchObject({ kind: 'temporary', generation: 1, revoked: false });
      const text = JSON.stringify(r.body);
      expect(text).not.toContain(made.token);
      expect(text).not.toMatch(/secret|hash/);
    });

    it('pages by token ID with limit and after', async () => {
      const made = await subjectWithToken(stack, { id: uid('eve'), kind: 'service' });
      for (let i = 0; i < 4; i++) await call(stack, 'POST', `/v1/subjects/${made.subject.id}/tokens`, { headers: stack.admin, body: { temporary: false } });
      const seen: string[] = [];
      let after: string | null = null;
      for (let pages = 0; pages < 10; pages++) {
        const r = await call(stack, 'GET', `/v1/subjects/${made.subject.id}/tokens?limit=2${after ? `&after=${after}` : ''}`, { headers: stack.admin });
        expect(r.status).toBe(200);
        seen.push(...r.body.tokens.map((t: { token_id: string }) => t.token_id));
        after = r.body.next_after;
        if (after === null) break;
      }
      expect(seen).toHaveLength(5);
      expect(seen).toEqual([...seen].sort());
      expect(new Set(seen).size).toBe(5);
    });

    it('is 404 for an unknown subject, 400 for a bad page, 403 without subjects:admin', async () => {
      expect((await call(stack, 'GET', `/v1/subjects/${uid('nobody')}/tokens`, { headers: stack.admin })).status).toBe(404);
      for (const query of ['limit=0', 'limit=1001', 'limit=x', 'after=a%20b', 'x=1']) {
        expect((await call(stack, 'GET', `/v1/subjects/${plain.subject.id}/tokens?${query}`, { headers: stack.admin })).status, query).toBe(400);
      }
      expect((await call(stack, 'GET', `/v1/subjects/${plain.subject.id}/tokens`, { headers: plain.headers })).status).toBe(403);
    });
  });
});
