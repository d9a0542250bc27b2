import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TokenMetadata } from '../../contracts/index.js';
import { call, createCollection, subjectWithToken, tokenize, waitForEvents, waitForJob } from '../helpers/api.js';
import { piianoError } from '../helpers/envelopes.js';
import { rawRequest } from '../helpers/http.js';
import { type Stack, startStack } from '../helpers/stack.js';

/**
 * SPEC §2: a command sees only vault tokens inside its tenant scope; other tenants' tokens are
 * invisible exactly as if they did not exist, and no answer, job or event lets a caller learn
 * that one exists. Tenant B's tokens must come out of every route and parameter mix a tenant-A
 * caller can try untouched (checked in Postgres) and unmentioned.
 */

const A = 'iso-tenant-a';
const B = 'iso-tenant-b';
const WAIT = { prefer: 'wait=30' };
const ASYNC = { prefer: 'respond-async' };
const REASON = 'reason=AppFunctionality';

const hex = () => randomBytes(5).toString('hex');
/** IDs nobody holds, to compare B's tokens against. */
const ghost = (prefix: string) => `${prefix}-ghost-${hex()}`;

type Headers = Record<string, string>;

/** One collection: tokens of A, of B (some sharing A's tags, object IDs and even a token ID), and one of no tenant. */
interface World {
  collection: string;
  a: { tagged: string; sharedObject: string; dup: string };
  b: { tagged: string; sharedObject: string; dup: string; archived: string };
  /** The token ID both A and B hold. */
  dupId: string;
  /** A token of no tenant: invisible to a tenant-scoped caller too. */
  none: string;
  /** A job B's own subject ran in tenant B (it deleted a token of B's). */
  bJobId: string;
  /** A token ID only B ever held (the one B deleted). */
  bDeleted: string;
}

/** The fields of a job view that do not depend on when or under which ID it ran. */
function outcome(job: any) {
  return { type: job?.type, state: job?.state, attempts: job?.attempts, progress: job?.progress, result: job?.result, error: job?.error };
}

/** `value` with each `from` replaced by its `to` wherever it appears, to compare answers about different IDs. */
function swap<T>(value: T, pairs: [string, string][]): T {
  let text = JSON.stringify(value);
  for (const [from, to] of pairs) text = text.split(from).join(to);
  return JSON.parse(text) as T;
}

function jobIdOf(location: unknown): string {
  const match = /^\/v1\/jobs\/([0-9a-f-]{36})$/.exec(String(location));
  if (!match?.[1]) throw new Error(`no job in Location ${String(location)}`);
  return match[1];
}

describe('tenant isolation', () => {
  let stack: Stack;
  /** Subjects with tokens:write, tokens:read, tokens:tokenize: of tenant A, of tenant B, of both. */
  let onlyA: Headers;
  let onlyB: Headers;
  let both: Headers;

  beforeAll(async () => {
    stack = await startStack();
    const capabilities = ['tokens:write', 'tokens:read', 'tokens:tokenize'];
    onlyA = (await subjectWithToken(stack, { id: `iso-a-${hex()}`, kind: 'service', capabilities, tenant_ids: [A] })).headers;
    onlyB = (await subjectWithToken(stack, { id: `iso-b-${hex()}`, kind: 'service', capabilities, tenant_ids: [B] })).headers;
    both = (await subjectWithToken(stack, { id: `iso-ab-${hex()}`, kind: 'service', capabilities, tenant_ids: [A, B] })).headers;
  });
  afterAll(() => stack?.close());

  const url = (collection: string, rest: string) => `/api/pvlt/1.0/data/collections/${collection}/${rest}`;

  async function world(): Promise<World> {
    const collection = `iso_${hex()}`;
    await createCollection(stack, collection);
    const dupId = `dup-${hex()}`;
    const [aTagged, aShared, aDup] = await tokenize(stack, collection, [
      { object: { id: 'obj-a' }, tags: ['shared', 'only-a'], tenant_id: A },
      { object: { id: 'obj-both' }, tags: ['shared'], tenant_id: A },
      { object: { id: 'obj-a-dup' }, tags: ['shared'], token_id: dupId, tenant_id: A },
    ]);
    const [bTagged, bShared, bDup, bArchived, bDeleted] = await tokenize(stack, collection, [
      { object: { id: 'obj-b' }, tags: ['shared', 'only-b'], tenant_id: B },
      { object: { id: 'obj-both' }, tags: ['shared'], tenant_id: B },
      { object: { id: 'obj-b-dup' }, tags: ['shared'], token_id: dupId, tenant_id: B },
      { object: { id: 'obj-b-archived' }, tags: ['shared'], tenant_id: B },
      { object: { id: 'obj-b-gone' }, tags: ['b-gone'], tenant_id: B },
    ]);
    // archived, so that options=archived has something of B's to (not) find
    await stack.database.db.updateTable('vault_tokens').set({ archived_at: new Date() }).where('collection', '=', collection).where('token_id', '=', bArchived!).execute();
    const [none] = await tokenize(stack, collection, [{ object: { id: 'obj-both' }, tags: ['shared'] }]);
    const bJob = await call(stack, 'DELETE', url(collection, `tokens?token_ids=${bDeleted}&${REASON}`), { headers: { ...onlyB, ...WAIT } });
    expect(bJob.status).toBe(200);
    return {
      collection,
      a: { tagged: aTagged!, sharedObject: aShared!, dup: aDup! },
      b: { tagged: bTagged!, sharedObject: bShared!, dup: bDup!, archived: bArchived! },
      dupId,
      none: none!,
      bJobId: jobIdOf(bJob.headers.location),
      bDeleted: bDeleted!,
    };
  }

  /** Rows of a collection and tenant (null: no tenant), straight from Postgres. */
  async function rows(collection: string, tenant: string | null) {
    const query = stack.database.db
      .selectFrom('vault_tokens')
      .select(['id', 'token_id', 'tenant_id', 'object_id', 'tags', 'expires_at', 'archived_at', 'created_at'])
      .where('collection', '=', collection);
    return (tenant === null ? query.where('tenant_id', 'is', null) : query.where('tenant_id', '=', tenant)).orderBy('id').execute();
  }

  /** Everything a tenant-A caller must never touch: B's rows and the tenant-less row. */
  async function untouchable(w: World) {
    const snapshot = { b: await rows(w.collection, B), none: await rows(w.collection, null) };
    expect(snapshot.b.map((r) => r.token_id).sort()).toEqual([w.b.tagged, w.b.sharedObject, w.dupId, w.b.archived].sort());
    expect(snapshot.none.map((r) => r.token_id)).toEqual([w.none]);
    return snapshot;
  }

  async function expectUntouched(w: World, before: Awaited<ReturnType<typeof untouchable>>) {
    expect({ b: await rows(w.collection, B), none: await rows(w.collection, null) }).toEqual(before);
  }

  async function aTokenIds(w: World): Promise<string[]> {
    return (await rows(w.collection, A)).map((r) => r.token_id).sort();
  }

  /** Token IDs named by the `tokens.deleted` / `tokens.rotated` events of a job, once its terminal event is out. */
  async function eventTokenIds(jobId: string): Promise<string[]> {
    const events = (await waitForEvents(stack, (all) => all.some((e) => e.job_id === jobId && e.type.startsWith('command.')))).filter((e) => e.job_id === jobId);
    for (const event of events) expect(event.tenant_ids, event.type).toEqual([A]);
    return events.flatMap((e) => {
      const data = e.data as { token_ids?: string[]; mapping?: Record<string, string> };
      return [...(data.token_ids ?? []), ...Object.keys(data.mapping ?? {})];
    });
  }

  const callers: { label: string; headers: () => Headers }[] = [
    { label: 'a subject scoped to tenant A', headers: () => onlyA },
    { label: 'a subject of tenants A and B narrowed by X-Tenant-Id: A', headers: () => ({ ...both, 'x-tenant-id': A }) },
  ];

  describe.each(callers)('$label', ({ headers }) => {
    const as = (extra: Headers = {}) => ({ ...headers(), ...extra });

    it('searches and counts only tenant A: by B token IDs, B object IDs, shared tags or a token ID both hold', async () => {
      const w = await world();
      const before = await untouchable(w);
      const query = async (body: Record<string, string[]>) => {
        const r = await call(stack, 'POST', url(w.collection, `query/tokens?${REASON}`), { headers: as(), body });
        expect(r.status).toBe(200);
        return r.body as TokenMetadata[];
      };
      expect(await query({ token_ids: [w.b.tagged, w.b.sharedObject, w.none] })).toEqual(await query({ token_ids: [ghost('t1'), ghost('t2'), ghost('t3')] }));
      expect(await query({ token_ids: [w.b.tagged] })).toEqual([]);
      expect(await query({ object_ids: ['obj-b'] })).toEqual([]);
      expect(await query({ tags: ['only-b'] })).toEqual([]);
      expect((await query({ object_ids: ['obj-both'] })).map((t) => t.token_id)).toEqual([w.a.sharedObject]);
      const shared = await query({ tags: ['shared'] });
      expect(shared.map((t) => t.token_id).sort()).toEqual([w.a.tagged, w.a.sharedObject, w.dupId].sort());
      expect(new Set(shared.flatMap((t) => t.tokens.map((ref) => ref.effective_tenant_id)))).toEqual(new Set([A]));
      const dup = await query({ token_ids: [w.dupId] });
      expect(dup.map((t) => [t.token_id, t.tokens.map((ref) => ref.effective_tenant_id)])).toEqual([[w.dupId, [A]]]);
      expect(await query({ tags: ['shared'], token_ids: [w.b.tagged] })).toEqual([]);

      const archived = await call(stack, 'POST', url(w.collection, `query/tokens?${REASON}&options=archived`), { headers: as(), body: { tags: ['shared'] } });
      expect(archived).toMatchObject({ status: 200, body: [] });
      const count = await call(stack, 'GET', url(w.collection, `count/tokens?${REASON}`), { headers: as() });
      expect(count).toMatchObject({ status: 200, body: { active: 3, archived: 0, total: 3 } });
      // B has as many tokens again, and an archived one, and there is one of no tenant: the admin sees them all
      expect((await call(stack, 'GET', url(w.collection, `count/tokens?${REASON}`), { headers: stack.admin })).body).toEqual({ active: 7, archived: 1, total: 8 });
      await expectUntouched(w, before);
    });

    it("tokenizes with one of B's token IDs as if it were free: nothing reveals that B holds it", async () => {
      const w = await world();
      const before = await untouchable(w);
      const taken = await call(stack, 'POST', url(w.collection, `tokens?${REASON}`), { headers: as(), body: [{ object: { id: 'obj-new' }, token_id: w.a.tagged }] });
      expect(taken.status).toBe(409);
      expect(taken.body.error_code).toBe('PV3007');
      const free = await call(stack, 'POST', url(w.collection, `tokens?${REASON}`), { headers: as(), body: [{ object: { id: 'obj-new' }, token_id: w.b.tagged }] });
      expect(free).toMatchObject({ status: 200, body: [{ token_id: w.b.tagged }] });
      expect((await rows(w.collection, A)).find((r) => r.token_id === w.b.tagged)?.object_id).toBe('obj-new');
      await expectUntouched(w, before);
    });

    it("answers a synchronous delete of B's token IDs, object IDs or tags 404 PV3009, exactly as for ones that do not exist", async () => {
      const w = await world();
      const before = await untouchable(w);
      const aBefore = await aTokenIds(w);
      const del = (query: string) => call(stack, 'DELETE', url(w.collection, `tokens?${query}&${REASON}`), { headers: as(WAIT) });
      const pairs: [string, string][] = [
        [`token_ids=${w.b.tagged},${w.b.sharedObject}`, `token_ids=${ghost('t1')},${ghost('t2')}`],
        [`token_ids=${w.none}`, `token_ids=${ghost('t3')}`],
        [`token_ids=${w.bDeleted}`, `token_ids=${ghost('t4')}`],
        ['object_ids=obj-b', `object_ids=${ghost('o')}`],
        ['tags=only-b', `tags=${ghost('tag')}`],
        [`tags=shared&token_ids=${w.b.tagged}`, `tags=shared&token_ids=${ghost('t5')}`],
        ['tags=shared&options=archived', `tags=${ghost('tag')}&options=archived`],
        [`token_ids=${w.b.archived}&options=archived`, `token_ids=${ghost('t6')}&options=archived`],
      ];
      for (const [ofB, ofNobody] of pairs) {
        const [r, nobody] = [await del(ofB), await del(ofNobody)];
        expect(r.status, ofB).toBe(404);
        expect(r.body, ofB).toEqual(piianoError('PV3009'));
        expect(r.body, ofB).toEqual(nobody.body);
      }
      expect(await aTokenIds(w)).toEqual(aBefore);
      await expectUntouched(w, before);
    });

    it("fails an asynchronous delete of B's tokens with the job a nonexistent ID gives, seed route and /v1/commands alike", async () => {
      const w = await world();
      const before = await untouchable(w);
      const seed = async (query: string) => {
        const r = await call(stack, 'DELETE', url(w.collection, `tokens?${query}&${REASON}`), { headers: as(ASYNC) });
        expect(r.status).toBe(202);
        return outcome(await waitForJob(stack, r.body.job_id, as()));
      };
      const native = async (criteria: Record<string, string[]>) => {
        const r = await call(stack, 'POST', '/v1/commands', { headers: as(), body: { type: 'tokens.delete', collection: w.collection, ...criteria, reason: 'AppFunctionality' } });
        expect(r.status).toBe(202);
        return outcome(await waitForJob(stack, r.body.job_id, as()));
      };
      const ofB = await seed(`token_ids=${w.b.tagged}`);
      expect(ofB).toMatchObject({ state: 'failed', result: null, progress: null, error: { error_code: 'PV3009' } });
      expect(ofB).toEqual(await seed(`token_ids=${ghost('t')}`));
      expect(await seed('object_ids=obj-b')).toEqual(await seed(`object_ids=${ghost('o')}`));
      expect(await native({ token_ids: [w.b.tagged, w.b.sharedObject] })).toEqual(await native({ token_ids: [ghost('t1'), ghost('t2')] }));
      expect(await native({ tags: ['only-b'] })).toEqual(await native({ tags: [ghost('tag')] }));
      await expectUntouched(w, before);
    });

    it("answers /v1/commands with Prefer: wait with the failed job view, the same for B's IDs as for nonexistent ones", async () => {
      const w = await world();
      const before = await untouchable(w);
      const native = async (body: Record<string, unknown>) => {
        const r = await call(stack, 'POST', '/v1/commands', { headers: as(WAIT), body: { collection: w.collection, reason: 'AppFunctionality', ...body } });
        expect(r.status).toBe(200);
        return outcome(r.body);
      };
      const deleteOfB = await native({ type: 'tokens.delete', token_ids: [w.b.tagged] });
      expect(deleteOfB).toMatchObject({ state: 'failed', error: { error_code: 'PV3009' } });
      expect(deleteOfB).toEqual(await native({ type: 'tokens.delete', token_ids: [ghost('t')] }));
      const nobody = ghost('t');
      const rotateOfB = await native({ type: 'tokens.rotate', token_ids: [w.a.tagged, w.b.tagged] });
      expect(rotateOfB).toMatchObject({ state: 'failed', error: { error_code: 'PV3087', context: { token_ids: w.b.tagged } } });
      expect(rotateOfB).toEqual(swap(await native({ type: 'tokens.rotate', token_ids: [w.a.tagged, nobody] }), [[nobody, w.b.tagged]]));
      await expectUntouched(w, before);
    });

    it('deletes by a tag both tenants use only tenant A tokens, synchronously, and neither job nor events mention B', async () => {
      const w = await world();
      const before = await untouchable(w);
      const r = await call(stack, 'DELETE', url(w.collection, `tokens?tags=shared&${REASON}`), { headers: as(WAIT) });
      expect(r).toMatchObject({ status: 200, body: {} });
      const jobId = jobIdOf(r.headers.location);
      const job = (await call(stack, 'GET', `/v1/jobs/${jobId}`, { headers: as() })).body;
      expect(job).toMatchObject({ state: 'succeeded', result: { deleted: 3 }, progress: { processed: 3, total: 3 } });
      expect(await aTokenIds(w)).toEqual([]);
      expect((await eventTokenIds(jobId)).sort()).toEqual([w.a.tagged, w.a.sharedObject, w.dupId].sort());
      await expectUntouched(w, before);
    });

    it('deletes by a tag both tenants use only tenant A tokens, asynchronously, by the seed route and by /v1/commands', async () => {
      for (const submit of ['seed', 'native'] as const) {
        const w = await world();
        const before = await untouchable(w);
        const r =
          submit === 'seed'
            ? await call(stack, 'DELETE', url(w.collection, `tokens?tags=shared&${REASON}`), { headers: as(ASYNC) })
            : await call(stack, 'POST', '/v1/commands', { headers: as(), body: { type: 'tokens.delete', collection: w.collection, tags: ['shared'], reason: 'AppFunctionality' } });
        expect(r.status, submit).toBe(202);
        const job = await waitForJob(stack, r.body.job_id, as());
        expect(job, submit).toMatchObject({ state: 'succeeded', result: { deleted: 3 }, progress: { processed: 3, total: 3 } });
        expect(await aTokenIds(w), submit).toEqual([]);
        await expectUntouched(w, before);
      }
    });

    it('deletes by an object ID, or a token ID, that both tenants use only the tenant A token', async () => {
      const w = await world();
      const before = await untouchable(w);
      const del = async (query: string) => {
        const r = await call(stack, 'DELETE', url(w.collection, `tokens?${query}&${REASON}`), { headers: as(WAIT) });
        expect(r.status, query).toBe(200);
        return (await call(stack, 'GET', `/v1/jobs/${jobIdOf(r.headers.location)}`, { headers: as() })).body.result;
      };
      expect(await del('object_ids=obj-both')).toEqual({ deleted: 1 });
      expect(await aTokenIds(w)).toEqual([w.a.tagged, w.dupId].sort());
      expect(await del(`token_ids=${w.dupId}`)).toEqual({ deleted: 1 });
      expect(await del(`token_ids=${w.a.tagged},${w.b.tagged},${w.none}`)).toEqual({ deleted: 1 });
      expect(await aTokenIds(w)).toEqual([]);
      await expectUntouched(w, before);
    });

    it("fails a rotate naming B's IDs with PV3087 naming them as missing, exactly as nonexistent IDs, and rotates nothing", async () => {
      const w = await world();
      const before = await untouchable(w);
      const aBefore = await aTokenIds(w);
      const [n1, n2] = [ghost('t1'), ghost('t2')];
      const rotate = (ids: string[], extra: Headers = WAIT) => call(stack, 'POST', url(w.collection, `rotate/tokens?token_ids=${ids.join(',')}&${REASON}`), { headers: as(extra) });

      const sync = await rotate([w.a.tagged, w.b.tagged, w.none]);
      expect(sync.status).toBe(404);
      expect(sync.body).toEqual({ error_code: 'PV3087', message: expect.any(String), context: { token_ids: `${w.b.tagged},${w.none}` } });
      expect(sync.body).toEqual(
        swap((await rotate([w.a.tagged, n1, n2])).body, [
          [n1, w.b.tagged],
          [n2, w.none],
        ]),
      );
      const archivedOfB = await rotate([w.b.archived]);
      expect(archivedOfB.body).toEqual(swap((await rotate([n1])).body, [[n1, w.b.archived]]));

      const queued = await rotate([w.b.tagged, w.b.sharedObject], ASYNC);
      expect(queued.status).toBe(202);
      const queuedNobody = await rotate([n1, n2], ASYNC);
      expect(outcome(await waitForJob(stack, queued.body.job_id, as()))).toEqual(
        swap(outcome(await waitForJob(stack, queuedNobody.body.job_id, as())), [
          [n1, w.b.tagged],
          [n2, w.b.sharedObject],
        ]),
      );

      const native = async (ids: string[]) => {
        const r = await call(stack, 'POST', '/v1/commands', { headers: as(), body: { type: 'tokens.rotate', collection: w.collection, token_ids: ids, reason: 'AppFunctionality' } });
        expect(r.status).toBe(202);
        return outcome(await waitForJob(stack, r.body.job_id, as()));
      };
      const nativeOfB = await native([w.a.sharedObject, w.bDeleted]);
      expect(nativeOfB).toMatchObject({ state: 'failed', error: { error_code: 'PV3087', context: { token_ids: w.bDeleted } } });
      expect(nativeOfB).toEqual(swap(await native([w.a.sharedObject, n1]), [[n1, w.bDeleted]]));

      expect(await aTokenIds(w)).toEqual(aBefore);
      await expectUntouched(w, before);
    });

    it('rotates a token ID both tenants hold only in tenant A', async () => {
      const w = await world();
      const before = await untouchable(w);
      const r = await call(stack, 'POST', url(w.collection, `rotate/tokens?token_ids=${w.dupId}&${REASON}`), { headers: as(WAIT) });
      expect(r.status).toBe(200);
      expect(Object.keys(r.body)).toEqual([w.dupId]);
      const renamed = r.body[w.dupId] as string;
      expect(await aTokenIds(w)).toEqual([w.a.tagged, w.a.sharedObject, renamed].sort());
      expect(await eventTokenIds(jobIdOf(r.headers.location))).toEqual([w.dupId]);
      await expectUntouched(w, before);
    });

    it('refuses the tenant_id parameter naming B with 403 PV1006, the same as for a tenant nobody has; tenant_id=A filters', async () => {
      const w = await world();
      const before = await untouchable(w);
      const nobody = `iso-nobody-${hex()}`;
      const del = (query: string) => call(stack, 'DELETE', url(w.collection, `tokens?tags=shared&${query}&${REASON}`), { headers: as(WAIT) });
      const ofB = await del(`tenant_id=${B}`);
      expect(ofB.status).toBe(403);
      expect(ofB.body).toEqual(piianoError('PV1006', { tenant_ids: B }));
      expect(ofB.body).toEqual(swap((await del(`tenant_id=${nobody}`)).body, [[nobody, B]]));

      const native = async (tenant: string) =>
        call(stack, 'POST', '/v1/commands', { headers: as(WAIT), body: { type: 'tokens.delete', collection: w.collection, tags: ['shared'], tenant_id: tenant, reason: 'AppFunctionality' } });
      const nativeOfB = await native(B);
      expect(nativeOfB.status).toBe(403);
      expect(nativeOfB.body).toEqual(swap((await native(nobody)).body, [[nobody, B]]));

      for (const variant of [B.toUpperCase(), `${A}&tenant_id=${B}`, '']) {
        const r = await del(`tenant_id=${variant}`);
        expect([400, 403], variant).toContain(r.status);
        expect(r.body.error_code, variant).toMatch(/^PV100[26]$/);
      }

      const filtered = await del(`tenant_id=${A}&tags=only-a`);
      expect(filtered.status).toBe(200);
      expect(await aTokenIds(w)).toEqual([w.a.sharedObject, w.dupId].sort());
      await expectUntouched(w, before);
    });

    it("answers B's job 404 PV3005 exactly as a job that does not exist, and the audit filter by it finds nothing", async () => {
      const w = await world();
      const nobody = randomUUID();
      const job = await call(stack, 'GET', `/v1/jobs/${w.bJobId}`, { headers: as() });
      expect(job.status).toBe(404);
      expect(job.body).toEqual(swap((await call(stack, 'GET', `/v1/jobs/${nobody}`, { headers: as() })).body, [[nobody, w.bJobId]]));
      expect(job.body.error_code).toBe('PV3005');
      // it is there: B's subject and the admin see it
      expect((await call(stack, 'GET', `/v1/jobs/${w.bJobId}`, { headers: onlyB })).status).toBe(200);

      const audit = await call(stack, 'GET', `/v1/audit?job_id=${w.bJobId}`, { headers: as() });
      expect(audit).toMatchObject({ status: 200, body: { entries: [], next_after_id: null } });
      expect(audit.body).toEqual((await call(stack, 'GET', `/v1/audit?job_id=${nobody}`, { headers: as() })).body);
      expect((await call(stack, 'GET', `/v1/audit?job_id=${w.bJobId}`, { headers: stack.admin })).body.entries).not.toEqual([]);
    });

    it('shows nothing of B in the audit trail, its own deletes by a shared tag included', async () => {
      const w = await world();
      const before = await untouchable(w);
      const mine = await call(stack, 'DELETE', url(w.collection, `tokens?tags=shared&${REASON}`), { headers: as(WAIT) });
      expect(mine.status).toBe(200);
      const myJob = jobIdOf(mine.headers.location);
      const bTokens = [w.b.tagged, w.b.sharedObject, w.b.archived, w.bDeleted, w.none];
      for (const query of ['limit=1000', `collection=${w.collection}&limit=1000`]) {
        const r = await call(stack, 'GET', `/v1/audit?${query}`, { headers: as() });
        expect(r.status, query).toBe(200);
        const entries = r.body.entries as { job_id: string | null; tenant_ids: string[] | null; data: unknown }[];
        expect(
          entries.map((e) => e.job_id),
          query,
        ).toContain(myJob);
        expect(
          entries.map((e) => e.job_id),
          query,
        ).not.toContain(w.bJobId);
        for (const entry of entries) {
          expect(entry.tenant_ids, query).toEqual([A]);
          for (const id of bTokens) expect(JSON.stringify(entry.data), query).not.toContain(id);
        }
      }
      // the admin sees B's entry, so its absence above is the filter's doing
      const all = await call(stack, 'GET', `/v1/audit?collection=${w.collection}&limit=1000`, { headers: stack.admin });
      expect(all.body.entries.map((e: { job_id: string }) => e.job_id)).toContain(w.bJobId);
      await expectUntouched(w, before);
    });
  });

  describe('X-Tenant-Id tricks by a subject scoped to tenant A', () => {
    /** One request per route a tenant-A caller could aim at B's tokens, jobs or audit. */
    function everyRoute(w: World, ownJob: string): { name: string; method: 'GET' | 'POST' | 'DELETE'; path: string; body?: unknown }[] {
      return [
        { name: 'count', method: 'GET', path: url(w.collection, `count/tokens?${REASON}`) },
        { name: 'query', method: 'POST', path: url(w.collection, `query/tokens?${REASON}`), body: { tags: ['shared'] } },
        { name: 'tokenize', method: 'POST', path: url(w.collection, `tokens?${REASON}`), body: [{ object: { id: 'obj-x' }, tenant_id: B }] },
        { name: 'delete', method: 'DELETE', path: url(w.collection, `tokens?tags=shared&${REASON}`) },
        { name: 'rotate', method: 'POST', path: url(w.collection, `rotate/tokens?token_ids=${w.b.tagged}&${REASON}`) },
        { name: 'commands', method: 'POST', path: '/v1/commands', body: { type: 'tokens.delete', collection: w.collection, tags: ['shared'], reason: 'AppFunctionality' } },
        { name: 'job', method: 'GET', path: `/v1/jobs/${ownJob}` },
        { name: 'audit', method: 'GET', path: `/v1/audit?collection=${w.collection}` },
      ];
    }

    async function ownJob(w: World): Promise<string> {
      const r = await call(stack, 'DELETE', url(w.collection, `tokens?tags=only-a&${REASON}`), { headers: { ...onlyA, ...WAIT } });
      expect(r.status).toBe(200);
      return jobIdOf(r.headers.location);
    }

    it("refuses B's tenant, and case or spelling variants of tenant names, with 403 PV1006 on every route, and changes nothing", async () => {
      const w = await world();
      const job = await ownJob(w);
      const before = await untouchable(w);
      const aBefore = await aTokenIds(w);
      const variants = [B, B.toUpperCase(), 'Iso-Tenant-B', ` ${B} `, `${A},${B}`, `${A}, ${B.toUpperCase()}`, A.toUpperCase()];
      for (const route of everyRoute(w, job)) {
        for (const tenant of variants) {
          const r = await call(stack, route.method, route.path, { headers: { ...onlyA, 'x-tenant-id': tenant, ...WAIT }, ...(route.body !== undefined && { body: route.body }) });
          expect(r.status, `${route.name} with X-Tenant-Id '${tenant}'`).toBe(403);
          expect(r.body, `${route.name} with X-Tenant-Id '${tenant}'`).toEqual(piianoError('PV1006'));
        }
      }
      expect(await aTokenIds(w)).toEqual(aBefore);
      await expectUntouched(w, before);
    });

    it('refuses a repeated X-Tenant-Id that adds B, or spelled in capitals, over a real socket', async () => {
      const w = await world();
      const job = await ownJob(w);
      const before = await untouchable(w);
      const aBefore = await aTokenIds(w);
      for (const route of everyRoute(w, job).filter((r) => r.body === undefined)) {
        const tricks: Record<string, string | string[]>[] = [{ 'x-tenant-id': [A, B] }, { 'x-tenant-id': [B, A] }, { 'X-TENANT-ID': B }, { 'X-Tenant-Id': [A, B.toUpperCase()] }];
        for (const tenantHeaders of tricks) {
          const r = await rawRequest(stack.producer.url, route.method, route.path, { headers: { ...onlyA, ...tenantHeaders, ...WAIT } });
          expect(r.status, `${route.name} with ${JSON.stringify(tenantHeaders)}`).toBe(403);
          expect(r.body?.error_code, `${route.name} with ${JSON.stringify(tenantHeaders)}`).toBe('PV1006');
        }
      }
      // repeating one's own tenant is fine and still sees only A
      const repeatedOwn = await rawRequest(stack.producer.url, 'GET', url(w.collection, `count/tokens?${REASON}`), { headers: { ...onlyA, 'x-tenant-id': [A, A] } });
      expect(repeatedOwn).toMatchObject({ status: 200, body: { active: 2, archived: 0, total: 2 } });
      expect(await aTokenIds(w)).toEqual(aBefore);
      await expectUntouched(w, before);
    });

    it("treats an empty or blank X-Tenant-Id as no header: the subject's own scope, never every tenant", async () => {
      const w = await world();
      const before = await untouchable(w);
      for (const blank of ['', ' ', ',', ' , ,']) {
        const count = await call(stack, 'GET', url(w.collection, `count/tokens?${REASON}`), { headers: { ...onlyA, 'x-tenant-id': blank } });
        expect(count, `'${blank}'`).toMatchObject({ status: 200, body: { active: 3, archived: 0, total: 3 } });
        const query = await call(stack, 'POST', url(w.collection, `query/tokens?${REASON}`), { headers: { ...onlyA, 'x-tenant-id': blank }, body: { token_ids: [w.b.tagged, w.dupId] } });
        expect(
          query.body.flatMap((t: TokenMetadata) => t.tokens.map((ref) => ref.effective_tenant_id)),
          `'${blank}'`,
        ).toEqual([A]);
      }
      const repeatedBlank = await rawRequest(stack.producer.url, 'GET', url(w.collection, `count/tokens?${REASON}`), { headers: { ...onlyA, 'x-tenant-id': ['', ' '] } });
      expect(repeatedBlank).toMatchObject({ status: 200, body: { active: 3, archived: 0, total: 3 } });

      const del = await call(stack, 'DELETE', url(w.collection, `tokens?tags=shared&${REASON}`), { headers: { ...onlyA, 'x-tenant-id': '', ...WAIT } });
      expect(del.status).toBe(200);
      expect((await call(stack, 'GET', `/v1/jobs/${jobIdOf(del.headers.location)}`, { headers: onlyA })).body.result).toEqual({ deleted: 3 });
      expect(await aTokenIds(w)).toEqual([]);
      await expectUntouched(w, before);
    });

    it("does not widen the subject's scope for an unscoped-looking request: the admin narrowed to A sees what A sees", async () => {
      const w = await world();
      const before = await untouchable(w);
      const asAdminInA = { ...stack.admin, 'x-tenant-id': A };
      const count = await call(stack, 'GET', url(w.collection, `count/tokens?${REASON}`), { headers: asAdminInA });
      expect(count.body).toEqual((await call(stack, 'GET', url(w.collection, `count/tokens?${REASON}`), { headers: onlyA })).body);
      const rotate = await call(stack, 'POST', url(w.collection, `rotate/tokens?token_ids=${w.b.tagged}&${REASON}`), { headers: { ...asAdminInA, ...WAIT } });
      expect(rotate.status).toBe(404);
      expect(rotate.body).toMatchObject({ error_code: 'PV3087', context: { token_ids: w.b.tagged } });
      await expectUntouched(w, before);
    });
  });
});
