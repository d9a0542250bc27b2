import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JobView, type TokenMetadata } from '../../contracts/index.js';
import { call, freshCollection, subjectWithToken, tokenize, waitForJob } from '../helpers/api.js';
import { piianoError } from '../helpers/envelopes.js';
import { sleep } from '../helpers/sleep.js';
import { type Stack, startStack } from '../helpers/stack.js';

const WAIT = { prefer: 'wait=10' };
const ASYNC = { prefer: 'respond-async' };

type TokenView = TokenMetadata;

describe('Piiano delete and rotate tokens', () => {
  let stack: Stack;
  let writer: Record<string, string>;

  beforeAll(async () => {
    stack = await startStack();
    writer = (await subjectWithToken(stack, { kind: 'service', capabilities: ['tokens:write'] })).headers;
  });
  afterAll(() => stack?.close());

  /** A fresh collection per test, so tests never see each other's tokens. */
  const tokensUrl = (collection: string, query: string) => `/api/pvlt/1.0/data/collections/${collection}/tokens?${query}`;
  const rotateUrl = (collection: string, query: string) => `/api/pvlt/1.0/data/collections/${collection}/rotate/tokens?${query}`;

  /** The tokens matching `body` (active ones, or archived ones with `options=archived`), as the admin sees them. */
  async function query(collection: string, body: Record<string, string[]>, options = ''): Promise<TokenView[]> {
    const r = await call(stack, 'POST', `/api/pvlt/1.0/data/collections/${collection}/query/tokens?reason=AppFunctionality${options}`, { headers: stack.admin, body });
    expect(r.status).toBe(200);
    return r.body as TokenView[];
  }

  const ids = (tokens: TokenView[]) => new Set(tokens.map((t) => t.token_id));

  describe('delete', () => {
    it('with Prefer: respond-async accepts with 202, the job view and Location, and the job deletes the tokens', async () => {
      const c = await freshCollection(stack);
      const [a, b, keep] = await tokenize(stack, c, [
        { object: { id: 'o1' }, tags: ['breach'] },
        { object: { id: 'o2' }, tags: ['breach'] },
        { object: { id: 'o3' }, tags: ['other'] },
      ]);
      const accepted = await call(stack, 'DELETE', tokensUrl(c, 'tags=breach&reason=AppFunctionality'), { headers: { ...writer, ...ASYNC } });
      expect(accepted.status).toBe(202);
      expect(JobView.parse(accepted.body).type).toBe('tokens.delete');
      expect(accepted.headers.location).toBe(`/v1/jobs/${accepted.body.job_id}`);

      const job = await waitForJob(stack, accepted.body.job_id, writer);
      expect(job).toMatchObject({ state: 'succeeded', result: { deleted: 2 }, error: null });
      expect(await query(c, { token_ids: [a!, b!] })).toEqual([]);
      expect(ids(await query(c, { token_ids: [keep!] }))).toEqual(new Set([keep]));
    });

    it('answers 200 {} synchronously with Prefer: wait, and the deleted tokens are gone from query', async () => {
      const c = await freshCollection(stack);
      const [a, b] = await tokenize(stack, c, [{ object: { id: 'o1' } }, { object: { id: 'o2' } }]);
      const r = await call(stack, 'DELETE', tokensUrl(c, `token_ids=${a}&reason=AppFunctionality`), { headers: { ...writer, ...WAIT } });
      expect(r.status).toBe(200);
      expect(r.body).toEqual({});
      expect(r.headers.location).toMatch(/^\/v1\/jobs\/[0-9a-f-]{36}$/);
      expect(await query(c, { token_ids: [a!] })).toEqual([]);
      expect(ids(await query(c, { token_ids: [b!] }))).toEqual(new Set([b]));
    });

    it('answers 404 PV3009 in the Piiano envelope synchronously when nothing matches', async () => {
      const c = await freshCollection(stack);
      await tokenize(stack, c, [{ object: { id: 'o1' }, tags: ['present'] }]);
      const r = await call(stack, 'DELETE', tokensUrl(c, 'tags=absent&reason=AppFunctionality'), { headers: { ...writer, ...WAIT } });
      expect(r.status).toBe(404);
      expect(r.body).toMatchObject(piianoError('PV3009'));
      expect((await query(c, { tags: ['present'] })).length).toBe(1);
    });

    it('fails the job with PV3009 asynchronously when nothing matches', async () => {
      const c = await freshCollection(stack);
      const accepted = await call(stack, 'DELETE', tokensUrl(c, 'object_ids=nobody&reason=AppFunctionality'), { headers: { ...writer, ...ASYNC } });
      expect(accepted.status).toBe(202);
      const job = await waitForJob(stack, accepted.body.job_id, writer);
      expect(job).toMatchObject({ state: 'failed', result: null, error: piianoError('PV3009') });
      // the failed first attempt is counted (its step rolled back; the failure recorded it)
      expect(job.attempts).toBe(1);
      expect(job.started_at).not.toBeNull();
    });

    it('deletes only tokens matching token_ids AND tags', async () => {
      const c = await freshCollection(stack);
      const [x, y, z] = await tokenize(stack, c, [
        { object: { id: 'o1' }, tags: ['x'] },
        { object: { id: 'o2' }, tags: ['y'] },
        { object: { id: 'o3' }, tags: ['x'] },
      ]);
      const r = await call(stack, 'DELETE', tokensUrl(c, `token_ids=${x},${y}&tags=x&reason=AppFunctionality`), { headers: { ...writer, ...WAIT } });
      expect(r.status).toBe(200);
      expect(ids(await query(c, { token_ids: [x!, y!, z!] }))).toEqual(new Set([y, z]));
    });

    it('deletes only tokens matching object_ids AND tags', async () => {
      const c = await freshCollection(stack);
      const [a, b, other] = await tokenize(stack, c, [
        { object: { id: 'person-1' }, tags: ['pii'] },
        { object: { id: 'person-1' }, tags: ['public'] },
        { object: { id: 'person-2' }, tags: ['pii'] },
      ]);
      const r = await call(stack, 'DELETE', tokensUrl(c, 'object_ids=person-1&tags=pii&reason=AppFunctionality'), { headers: { ...writer, ...WAIT } });
      expect(r.status).toBe(200);
      expect(ids(await query(c, { token_ids: [a!, b!, other!] }))).toEqual(new Set([b, other]));
    });

    it('matches tags as "the token has every listed tag", given comma-separated', async () => {
      const c = await freshCollection(stack);
      const [both, onlyA, onlyB] = await tokenize(stack, c, [
        { object: { id: 'o1' }, tags: ['a', 'b', 'c'] },
        { object: { id: 'o2' }, tags: ['a'] },
        { object: { id: 'o3' }, tags: ['b'] },
      ]);
      const r = await call(stack, 'DELETE', tokensUrl(c, 'tags=a,b&reason=AppFunctionality'), { headers: { ...writer, ...WAIT } });
      expect(r.status).toBe(200);
      expect(ids(await query(c, { token_ids: [both!, onlyA!, onlyB!] }))).toEqual(new Set([onlyA, onlyB]));
    });

    it('accepts list parameters as repeated keys, the same as comma-separated', async () => {
      const c = await freshCollection(stack);
      const [both, onlyA, t3, t4, t5] = await tokenize(stack, c, [
        { object: { id: 'o1' }, tags: ['a', 'b'] },
        { object: { id: 'o2' }, tags: ['a'] },
        { object: { id: 'o3' } },
        { object: { id: 'o4' } },
        { object: { id: 'o5' } },
      ]);
      const byTags = await call(stack, 'DELETE', tokensUrl(c, 'tags=a&tags=b&reason=AppFunctionality'), { headers: { ...writer, ...WAIT } });
      expect(byTags.status).toBe(200);
      expect(ids(await query(c, { token_ids: [both!, onlyA!] }))).toEqual(new Set([onlyA]));

      const byIds = await call(stack, 'DELETE', tokensUrl(c, `token_ids=${t3}&token_ids=${t4}&reason=AppFunctionality`), { headers: { ...writer, ...WAIT } });
      expect(byIds.status).toBe(200);
      expect(ids(await query(c, { token_ids: [t3!, t4!, t5!] }))).toEqual(new Set([t5]));
    });

    it('filters by the tenant_id parameter', async () => {
      const c = await freshCollection(stack);
      const [t1a, t1b, t2] = await tokenize(stack, c, [
        { object: { id: 'o1' }, tags: ['leak'], tenant_id: 'tenant-1' },
        { object: { id: 'o2' }, tags: ['leak'], tenant_id: 'tenant-1' },
        { object: { id: 'o3' }, tags: ['leak'], tenant_id: 'tenant-2' },
      ]);
      const r = await call(stack, 'DELETE', tokensUrl(c, 'tags=leak&tenant_id=tenant-1&reason=AppFunctionality'), { headers: { ...writer, ...WAIT } });
      expect(r.status).toBe(200);
      const left = await query(c, { token_ids: [t1a!, t1b!, t2!] });
      expect(ids(left)).toEqual(new Set([t2]));
      expect(left[0]?.tokens[0]?.effective_tenant_id).toBe('tenant-2');
    });

    it('deletes only active tokens by default and only archived (expired) ones with options=archived', async () => {
      const c = await freshCollection(stack);
      const [active] = await tokenize(stack, c, [{ object: { id: 'o1' }, tags: ['t'] }]);
      const expiring = await tokenize(
        stack,
        c,
        [
          { object: { id: 'o2' }, tags: ['t'] },
          { object: { id: 'o3' }, tags: ['t'] },
        ],
        stack.admin,
        '&expiration_secs=1',
      );
      // Wait until both expiring tokens are past their expiry, i.e. archived.
      const deadline = Date.now() + 10_000;
      while ((await query(c, { token_ids: expiring }, '&options=archived')).length < 2 && Date.now() < deadline) {
        await sleep(200);
      }
      expect(ids(await query(c, { token_ids: expiring }, '&options=archived'))).toEqual(new Set(expiring));

      const activeOnly = await call(stack, 'DELETE', tokensUrl(c, 'tags=t&reason=AppFunctionality'), { headers: { ...writer, ...WAIT } });
      expect(activeOnly.status).toBe(200);
      expect(await query(c, { token_ids: [active!] })).toEqual([]);
      expect(ids(await query(c, { token_ids: expiring }, '&options=archived'))).toEqual(new Set(expiring));

      const archivedOnly = await call(stack, 'DELETE', tokensUrl(c, 'tags=t&options=archived&reason=AppFunctionality'), { headers: { ...writer, ...WAIT } });
      expect(archivedOnly.status).toBe(200);
      expect(await query(c, { token_ids: expiring }, '&options=archived')).toEqual([]);

      const nothingLeft = await call(stack, 'DELETE', tokensUrl(c, 'tags=t&options=archived&reason=AppFunctionality'), { headers: { ...writer, ...WAIT } });
      expect(nothingLeft.status).toBe(404);
      expect(nothingLeft.body.error_code).toBe('PV3009');
    });

    it('with options=archived leaves active tokens alone and answers PV3009 when only active ones match', async () => {
      const c = await freshCollection(stack);
      const [active] = await tokenize(stack, c, [{ object: { id: 'o1' }, tags: ['live'] }]);
      const r = await call(stack, 'DELETE', tokensUrl(c, 'tags=live&options=archived&reason=AppFunctionality'), { headers: { ...writer, ...WAIT } });
      expect(r.status).toBe(404);
      expect(r.body.error_code).toBe('PV3009');
      expect(ids(await query(c, { token_ids: [active!] }))).toEqual(new Set([active]));
    });
  });

  describe('rotate', () => {
    it('with Prefer: respond-async accepts with 202 and the job result maps each old ID to a new one', async () => {
      const c = await freshCollection(stack);
      const [a, b] = await tokenize(stack, c, [{ object: { id: 'o1' }, tags: ['k'] }, { object: { id: 'o2' } }]);
      const accepted = await call(stack, 'POST', rotateUrl(c, `token_ids=${a},${b}&reason=AppFunctionality`), { headers: { ...writer, ...ASYNC } });
      expect(accepted.status).toBe(202);
      expect(JobView.parse(accepted.body).type).toBe('tokens.rotate');
      expect(accepted.headers.location).toBe(`/v1/jobs/${accepted.body.job_id}`);

      const job = await waitForJob(stack, accepted.body.job_id, writer);
      expect(job.state).toBe('succeeded');
      const mapping = job.result.mapping as Record<string, string>;
      expect(Object.keys(mapping).sort()).toEqual([a, b].sort());
      expect(mapping[a!]).not.toBe(a);
      expect(mapping[b!]).not.toBe(b);
      expect(mapping[a!]).not.toBe(mapping[b!]);
    });

    it('answers 200 with the {old: new} mapping synchronously; the token is found under its new ID only, unchanged otherwise', async () => {
      const c = await freshCollection(stack);
      const [a] = await tokenize(stack, c, [{ type: 'pointer', object: { id: 'person-9' }, tags: ['x', 'y'], scope: 'cards', tenant_id: 'tn' }]);
      const [before] = await query(c, { token_ids: [a!] });
      const r = await call(stack, 'POST', rotateUrl(c, `token_ids=${a}&reason=AppFunctionality`), { headers: { ...writer, ...WAIT } });
      expect(r.status).toBe(200);
      expect(Object.keys(r.body)).toEqual([a]);
      const fresh = r.body[a!] as string;
      expect(typeof fresh).toBe('string');
      expect(fresh).not.toBe(a);

      expect(await query(c, { token_ids: [a!] })).toEqual([]);
      const [after] = await query(c, { token_ids: [fresh] });
      expect(after).toEqual({ ...before, token_id: fresh });
    });

    it('accepts token_ids as repeated keys', async () => {
      const c = await freshCollection(stack);
      const [a, b] = await tokenize(stack, c, [{ object: { id: 'o1' } }, { object: { id: 'o2' } }]);
      const r = await call(stack, 'POST', rotateUrl(c, `token_ids=${a}&token_ids=${b}&reason=AppFunctionality`), { headers: { ...writer, ...WAIT } });
      expect(r.status).toBe(200);
      expect(Object.keys(r.body).sort()).toEqual([a, b].sort());
    });

    it('answers 404 PV3087 listing the missing IDs and rotates nothing when one ID is missing', async () => {
      const c = await freshCollection(stack);
      const [a, b] = await tokenize(stack, c, [{ object: { id: 'o1' } }, { object: { id: 'o2' } }]);
      const r = await call(stack, 'POST', rotateUrl(c, `token_ids=${a},missing-1,${b},missing-2&reason=AppFunctionality`), { headers: { ...writer, ...WAIT } });
      expect(r.status).toBe(404);
      expect(r.body).toMatchObject({ error_code: 'PV3087', message: expect.any(String) });
      const listed = r.body.context.token_ids;
      const missing = Array.isArray(listed) ? listed : String(listed).split(',');
      expect(new Set(missing)).toEqual(new Set(['missing-1', 'missing-2']));
      // all or nothing: both present tokens still answer under their old IDs
      expect(ids(await query(c, { token_ids: [a!, b!] }))).toEqual(new Set([a, b]));
    });

    it('fails the job with PV3087 asynchronously when an ID is missing', async () => {
      const c = await freshCollection(stack);
      const [a] = await tokenize(stack, c, [{ object: { id: 'o1' } }]);
      const accepted = await call(stack, 'POST', rotateUrl(c, `token_ids=${a},ghost&reason=AppFunctionality`), { headers: { ...writer, ...ASYNC } });
      expect(accepted.status).toBe(202);
      const job = await waitForJob(stack, accepted.body.job_id, writer);
      expect(job).toMatchObject({ state: 'failed', result: null, error: { error_code: 'PV3087' } });
      expect(String(job.error.context.token_ids).split(',')).toEqual(['ghost']);
      expect(ids(await query(c, { token_ids: [a!] }))).toEqual(new Set([a]));
    });
  });

  describe('validation and access', () => {
    it('rejects a delete without token_ids, object_ids or tags with 400 PV1002', async () => {
      const c = await freshCollection(stack);
      const r = await call(stack, 'DELETE', tokensUrl(c, 'reason=AppFunctionality'), { headers: writer });
      expect(r.status).toBe(400);
      expect(r.body).toMatchObject(piianoError('PV1002'));
    });

    it('rejects a delete or rotate without a reason with 400 PV1001', async () => {
      const c = await freshCollection(stack);
      const [a] = await tokenize(stack, c, [{ object: { id: 'o1' } }]);
      const del = await call(stack, 'DELETE', tokensUrl(c, `token_ids=${a}`), { headers: writer });
      expect(del.status).toBe(400);
      expect(del.body.error_code).toBe('PV1001');
      const rot = await call(stack, 'POST', rotateUrl(c, `token_ids=${a}`), { headers: writer });
      expect(rot.status).toBe(400);
      expect(rot.body.error_code).toBe('PV1001');
      expect(ids(await query(c, { token_ids: [a!] }))).toEqual(new Set([a]));
    });

    it('rejects reason=Other without adhoc_reason with 400, and accepts it with one', async () => {
      const c = await freshCollection(stack);
      const [a] = await tokenize(stack, c, [{ object: { id: 'o1' } }]);
      const bad = await call(stack, 'DELETE', tokensUrl(c, `token_ids=${a}&reason=Other`), { headers: writer });
      expect(bad.status).toBe(400);
      expect(bad.body.error_code).toMatch(/^PV1\d{3}$/);
      expect(ids(await query(c, { token_ids: [a!] }))).toEqual(new Set([a]));
      const good = await call(stack, 'DELETE', tokensUrl(c, `token_ids=${a}&reason=Other&adhoc_reason=incident-42`), { headers: { ...writer, ...WAIT } });
      expect(good.status).toBe(200);
    });

    it('rejects an unknown reason with 400 PV1002', async () => {
      const c = await freshCollection(stack);
      const r = await call(stack, 'DELETE', tokensUrl(c, 'tags=a&reason=BecauseICan'), { headers: writer });
      expect(r.status).toBe(400);
      expect(r.body.error_code).toBe('PV1002');
    });

    it('rejects a rotate without token_ids with 400 PV1002', async () => {
      const c = await freshCollection(stack);
      const r = await call(stack, 'POST', rotateUrl(c, 'reason=AppFunctionality'), { headers: writer });
      expect(r.status).toBe(400);
      expect(r.body.error_code).toBe('PV1002');
    });

    it('rejects 10,001 token_ids with 400 PV1002 on delete and on rotate', async () => {
      const c = await freshCollection(stack);
      const list = Array.from({ length: 10_001 }, (_, i) => `t${i}`).join(',');
      const del = await call(stack, 'DELETE', tokensUrl(c, `token_ids=${list}&reason=AppFunctionality`), { headers: writer });
      expect(del.status).toBe(400);
      expect(del.body.error_code).toBe('PV1002');
      const rot = await call(stack, 'POST', rotateUrl(c, `token_ids=${list}&reason=AppFunctionality`), { headers: writer });
      expect(rot.status).toBe(400);
      expect(rot.body.error_code).toBe('PV1002');
      const rows = await stack.database.db
        .selectFrom('commands')
        .select('id')
        .where('payload', '@>', JSON.stringify({ collection: c }) as never)
        .execute();
      expect(rows).toEqual([]);
    });

    it('answers 404 PV3001 for an unknown collection', async () => {
      const del = await call(stack, 'DELETE', tokensUrl('no_such_collection', 'tags=a&reason=AppFunctionality'), { headers: writer });
      expect(del.status).toBe(404);
      expect(del.body.error_code).toBe('PV3001');
      const rot = await call(stack, 'POST', rotateUrl('no_such_collection', 'token_ids=a&reason=AppFunctionality'), { headers: writer });
      expect(rot.status).toBe(404);
      expect(rot.body.error_code).toBe('PV3001');
    });

    it('answers 403 PV1007 to a caller without tokens:write, and deletes nothing', async () => {
      const c = await freshCollection(stack);
      const [a] = await tokenize(stack, c, [{ object: { id: 'o1' }, tags: ['z'] }]);
      const reader = (await subjectWithToken(stack, { kind: 'service', capabilities: ['tokens:read', 'tokens:tokenize'] })).headers;
      const del = await call(stack, 'DELETE', tokensUrl(c, 'tags=z&reason=AppFunctionality'), { headers: reader });
      expect(del.status).toBe(403);
      expect(del.body).toMatchObject({ error_code: 'PV1007', message: expect.any(String) });
      const rot = await call(stack, 'POST', rotateUrl(c, `token_ids=${a}&reason=AppFunctionality`), { headers: reader });
      expect(rot.status).toBe(403);
      expect(rot.body.error_code).toBe('PV1007');
      expect(ids(await query(c, { token_ids: [a!] }))).toEqual(new Set([a]));
    });

    it('answers 401 PV1005 without a credential', async () => {
      const c = await freshCollection(stack);
      const r = await call(stack, 'DELETE', tokensUrl(c, 'tags=a&reason=AppFunctionality'));
      expect(r.status).toBe(401);
      expect(r.body.error_code).toBe('PV1005');
    });
  });
});
