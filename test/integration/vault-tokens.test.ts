import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_TOKEN_IDS, QueryTokensResponse, type TokenMetadata } from '../../contracts/index.js';
import { call, createCollection, subjectWithToken, tokenize, uid } from '../helpers/api.js';
import { piianoError } from '../helpers/envelopes.js';
import { sleep } from '../helpers/sleep.js';
import { type Stack, startStack } from '../helpers/stack.js';

/** A collection name of its own for each test (letters, digits and _). */
let counter = 0;
const collectionName = () => `vt_${randomBytes(3).toString('hex')}_${++counter}`;

const base = (collection: string) => `/api/pvlt/1.0/data/collections/${collection}`;

describe('tokenize, query and count', () => {
  let stack: Stack;

  beforeAll(async () => {
    stack = await startStack();
  });
  afterAll(() => stack?.close());

  async function newCollection(): Promise<string> {
    const name = collectionName();
    await createCollection(stack, name);
    return name;
  }

  function query(collection: string, body: unknown, headers: Record<string, string> = stack.admin, extra = '') {
    return call(stack, 'POST', `${base(collection)}/query/tokens?reason=AppFunctionality${extra}`, { headers, body });
  }

  function count(collection: string, headers: Record<string, string> = stack.admin) {
    return call(stack, 'GET', `${base(collection)}/count/tokens?reason=AppFunctionality`, { headers });
  }

  describe('round trip', () => {
    it('returns the token IDs in input order and finds the tokens by tag, object ID and token ID', async () => {
      const c = await newCollection();
      const ids = await tokenize(stack, c, [{ object: { id: 'obj-1' }, tags: ['red', 'big'] }, { object: { id: 'obj-2' }, tags: ['red'] }, { object: { id: 'obj-3' } }]);
      expect(ids).toHaveLength(3);
      expect(new Set(ids).size).toBe(3);

      const red = await query(c, { tags: ['red'] });
      expect(red.status).toBe(200);
      expect(red.body.map((t: TokenMetadata) => t.token_id).sort()).toEqual([ids[0], ids[1]].sort());
      QueryTokensResponse.parse(red.body);

      const redAndBig = await query(c, { tags: ['red', 'big'] });
      expect(redAndBig.body).toEqual([
        {
          token_id: ids[0],
          type: 'randomized',
          scope: '',
          tokens: [{ object_id: 'obj-1', tags: expect.arrayContaining(['red', 'big']), creation_time: expect.any(String), expiration_time: null, effective_expiration_time: null }],
        },
      ]);

      const byObject = await query(c, { object_ids: ['obj-3'] });
      expect(byObject.body).toEqual([expect.objectContaining({ token_id: ids[2], tokens: [expect.objectContaining({ object_id: 'obj-3', tags: [] })] })]);

      const byId = await query(c, { token_ids: [ids[1]] });
      expect(byId.body).toEqual([expect.objectContaining({ token_id: ids[1], tokens: [expect.objectContaining({ object_id: 'obj-2' })] })]);

      const allCriteria = await query(c, { token_ids: [ids[0], ids[1]], object_ids: ['obj-2'], tags: ['red'] });
      expect(allCriteria.body.map((t: TokenMetadata) => t.token_id)).toEqual([ids[1]]);

      expect((await count(c)).body).toEqual({ active: 3, archived: 0, total: 3 });
    });

    it('tokenizes the most items a request takes (10,000), in order, all or none', async () => {
      const c = await newCollection();
      const items = Array.from({ length: MAX_TOKEN_IDS }, (_, i) => ({ object: { id: `o${i}` }, token_id: `t${i}` }));
      // a conflict in the last item: none of the 10,000 is created
      await tokenize(stack, c, [{ object: { id: 'first' }, token_id: `t${MAX_TOKEN_IDS - 1}` }]);
      const refused = await call(stack, 'POST', `${base(c)}/tokens?reason=AppFunctionality`, { headers: stack.admin, body: items });
      expect(refused.status).toBe(409);
      expect(refused.body.error_code).toBe('PV3007');
      expect((await count(c)).body).toEqual({ active: 1, archived: 0, total: 1 });

      const other = await newCollection();
      expect(await tokenize(stack, other, items)).toEqual(items.map((i) => i.token_id));
      expect((await count(other)).body).toEqual({ active: MAX_TOKEN_IDS, archived: 0, total: MAX_TOKEN_IDS });
    });

    it('keeps a user-supplied token_id', async () => {
      const c = await newCollection();
      const ids = await tokenize(stack, c, [{ object: { id: 'o1' }, token_id: 'my-token-1' }, { object: { id: 'o2' } }]);
      expect(ids[0]).toBe('my-token-1');
      expect(ids[1]).not.toBe('my-token-1');
      const found = await query(c, { token_ids: ['my-token-1'] });
      expect(found.body).toEqual([expect.objectContaining({ token_id: 'my-token-1', tokens: [expect.objectContaining({ object_id: 'o1' })] })]);
    });

    it('answers an empty list when nothing matches', async () => {
      const c = await newCollection();
      await tokenize(stack, c, [{ object: { id: 'o1' }, tags: ['a'] }]);
      const r = await query(c, { tags: ['missing'] });
      expect(r).toMatchObject({ status: 200, body: [] });
    });

    it('counts an empty collection as zero', async () => {
      const c = await newCollection();
      expect(await count(c)).toMatchObject({ status: 200, body: { active: 0, archived: 0, total: 0 } });
    });
  });

  describe('tenants', () => {
    it('hides tokens of tenant A from a subject scoped to tenant B, while an unscoped admin sees all', async () => {
      const c = await newCollection();
      const [a1, a2, b1] = await tokenize(stack, c, [
        { object: { id: 'shared' }, tags: ['t'], tenant_id: 'tenant-a' },
        { object: { id: 'a-only' }, tags: ['t'], tenant_id: 'tenant-a' },
        { object: { id: 'shared' }, tags: ['t'], tenant_id: 'tenant-b' },
      ]);
      const untenanted = await tokenize(stack, c, [{ object: { id: 'shared' }, tags: ['t'] }]);
      const readerB = await subjectWithToken(stack, { id: uid('reader-b'), kind: 'service', capabilities: ['tokens:read'], tenant_ids: ['tenant-b'] });

      const asB = await query(c, { tags: ['t'] }, readerB.headers);
      expect(asB.status).toBe(200);
      expect(asB.body.map((t: TokenMetadata) => t.token_id)).toEqual([b1]);
      expect(asB.body[0].tokens).toEqual([expect.objectContaining({ object_id: 'shared', effective_tenant_id: 'tenant-b' })]);
      expect((await query(c, { token_ids: [a1!, a2!] }, readerB.headers)).body).toEqual([]);
      expect((await query(c, { object_ids: ['a-only'] }, readerB.headers)).body).toEqual([]);
      expect((await count(c, readerB.headers)).body).toEqual({ active: 1, archived: 0, total: 1 });

      const asAdmin = await query(c, { tags: ['t'] });
      expect(asAdmin.body.map((t: TokenMetadata) => t.token_id).sort()).toEqual([a1, a2, b1, untenanted[0]].sort());
      // a token of no tenant has no effective_tenant_id
      expect(asAdmin.body.find((t: TokenMetadata) => t.token_id === untenanted[0]).tokens[0]).not.toHaveProperty('effective_tenant_id');
      expect((await count(c)).body).toEqual({ active: 4, archived: 0, total: 4 });

      const adminNarrowedToA = await call(stack, 'GET', `${base(c)}/count/tokens?reason=AppFunctionality`, { headers: { ...stack.admin, 'x-tenant-id': 'tenant-a' } });
      expect(adminNarrowedToA.body).toEqual({ active: 2, archived: 0, total: 2 });
    });

    it('puts a tenant-scoped caller’s tokens in its own tenant and refuses another tenant', async () => {
      const c = await newCollection();
      const writer = await subjectWithToken(stack, { id: uid('writer'), kind: 'service', capabilities: ['tokens:tokenize', 'tokens:read'], tenant_ids: ['tenant-w'] });
      const [id] = await tokenize(stack, c, [{ object: { id: 'o1' } }], writer.headers);
      expect((await query(c, { token_ids: [id!] })).body).toEqual([expect.objectContaining({ tokens: [expect.objectContaining({ effective_tenant_id: 'tenant-w' })] })]);
      const other = await call(stack, 'POST', `${base(c)}/tokens?reason=AppFunctionality`, { headers: writer.headers, body: [{ object: { id: 'o2' }, tenant_id: 'tenant-x' }] });
      expect(other.status).toBe(403);
      expect(other.body.error_code).toBe('PV1006');
      expect((await count(c)).body).toEqual({ active: 1, archived: 0, total: 1 });
    });
  });

  describe('token types, scope and props', () => {
    it('stores each item’s type (randomized when omitted), scope and props, and returns type and scope', async () => {
      const c = await newCollection();
      const [plain, pointer, scoped] = await tokenize(stack, c, [
        { object: { id: 'o1' }, tags: ['k'] },
        { type: 'pointer', object: { id: 'o2' }, tags: ['k'], props: ['email', 'name'] },
        { type: 'randomized', object: { id: 'o3' }, tags: ['k'], scope: 'billing', props: ['ssn'] },
      ]);
      const found = await query(c, { tags: ['k'] });
      expect(found.body.map((t: TokenMetadata) => [t.token_id, t.type, t.scope])).toEqual([
        [plain, 'randomized', ''],
        [pointer, 'pointer', ''],
        [scoped, 'randomized', 'billing'],
      ]);
      const stored = await stack.database.db.selectFrom('vault_tokens').select(['token_id', 'type', 'scope', 'props']).where('collection', '=', c).orderBy('id').execute();
      expect(stored).toEqual([
        { token_id: plain, type: 'randomized', scope: '', props: [] },
        { token_id: pointer, type: 'pointer', scope: '', props: ['email', 'name'] },
        { token_id: scoped, type: 'randomized', scope: 'billing', props: ['ssn'] },
      ]);
    });

    it.each(['pci', 'pci_oneway', 'deterministic'])('refuses type %s with 400 PV1002 naming the type, creating none of the batch', async (type) => {
      const c = await newCollection();
      const r = await call(stack, 'POST', `${base(c)}/tokens?reason=AppFunctionality`, {
        headers: stack.admin,
        body: [{ object: { id: 'o1' } }, { type, object: { id: 'o2' } }],
      });
      expect(r.status).toBe(400);
      expect(r.body).toEqual({ error_code: 'PV1002', message: expect.stringContaining(type), context: { index: '1', type } });
      expect((await count(c)).body).toEqual({ active: 0, archived: 0, total: 0 });
    });

    it('refuses a type Piiano does not have with 400 PV1002', async () => {
      const c = await newCollection();
      const r = await call(stack, 'POST', `${base(c)}/tokens?reason=AppFunctionality`, { headers: stack.admin, body: [{ type: 'opaque', object: { id: 'o1' } }] });
      expect(r.status).toBe(400);
      expect(r.body.error_code).toBe('PV1002');
      expect(r.body.message).toContain('type');
    });

    it('takes an empty expiration_secs (what Piiano’s client sends for "never") as never expiring', async () => {
      const c = await newCollection();
      const [id] = await tokenize(stack, c, [{ object: { id: 'o1' } }], stack.admin, '&expiration_secs=');
      expect((await query(c, { token_ids: [id!] })).body).toEqual([expect.objectContaining({ tokens: [expect.objectContaining({ expiration_time: null, effective_expiration_time: null })] })]);
    });

    it('adds the latest expiry of an entry’s tokens with options=include_aggregated_data, null when one never expires', async () => {
      const c = await newCollection();
      await tokenize(stack, c, [{ object: { id: 'o1' }, token_id: 'shared', tenant_id: 't1' }], stack.admin, '&expiration_secs=3600');
      await tokenize(stack, c, [{ object: { id: 'o2' }, token_id: 'shared', tenant_id: 't2' }], stack.admin, '&expiration_secs=7200');
      await tokenize(stack, c, [{ object: { id: 'o3' }, token_id: 'forever', tenant_id: 't1' }], stack.admin, '&expiration_secs=3600');
      await tokenize(stack, c, [{ object: { id: 'o4' }, token_id: 'forever', tenant_id: 't2' }]);
      const plain = await query(c, { token_ids: ['shared', 'forever'] });
      expect(plain.body.every((t: TokenMetadata) => !('agg' in t))).toBe(true);
      const aggregated = await query(c, { token_ids: ['shared', 'forever'] }, stack.admin, '&options=include_aggregated_data');
      expect(aggregated.status).toBe(200);
      QueryTokensResponse.parse(aggregated.body);
      const [shared, forever] = aggregated.body as TokenMetadata[];
      const expiries = shared!.tokens.map((t) => t.effective_expiration_time!).sort();
      expect(shared!.agg).toEqual({ max_effective_expiration_time: expiries[1] });
      expect(forever!.agg).toEqual({ max_effective_expiration_time: null });
      // repeated options keys, as Piiano's client sends a list
      const both = await query(c, { token_ids: ['shared'] }, stack.admin, '&options=archived&options=include_aggregated_data');
      expect(both.body).toEqual([]);
    });

    it('refuses an unknown search option with 400 PV1002', async () => {
      const c = await newCollection();
      const r = await query(c, { tags: ['x'] }, stack.admin, '&options=include_metadata');
      expect(r.status).toBe(400);
      expect(r.body.error_code).toBe('PV1002');
    });
  });

  describe('error context', () => {
    it('holds only strings: a list of validation problems is comma-joined', async () => {
      const c = await newCollection();
      const r = await call(stack, 'POST', `${base(c)}/tokens?reason=AppFunctionality`, { headers: stack.admin, body: [{ object: { id: 42 }, tags: 'red' }] });
      expect(r.status).toBe(400);
      expect(Object.values(r.body.context).length).toBeGreaterThan(0);
      for (const value of Object.values(r.body.context)) expect(typeof value).toBe('string');
      expect(r.body.context.body).toMatch(/0\.object\.id: .*,0\.tags: /);
    });

    it('holds only strings: a missing reason is an empty string, not null', async () => {
      const c = await newCollection();
      const r = await call(stack, 'GET', `${base(c)}/count/tokens`, { headers: stack.admin });
      expect(r.body).toEqual(piianoError('PV1001', { reason: '' }));
    });
  });

  describe('archived tokens', () => {
    it('shows only active tokens by default, archived ones with options=archived, and counts both', async () => {
      const c = await newCollection();
      const [expiring] = await tokenize(stack, c, [{ object: { id: 'old' }, tags: ['x'] }], stack.admin, '&expiration_secs=1');
      const [lasting] = await tokenize(stack, c, [{ object: { id: 'new' }, tags: ['x'] }]);
      await sleep(1200);

      const active = await query(c, { tags: ['x'] });
      expect(active.body).toEqual([expect.objectContaining({ token_id: lasting, tokens: [expect.objectContaining({ expiration_time: null })] })]);

      const archived = await query(c, { tags: ['x'] }, stack.admin, '&options=archived');
      expect(archived.status).toBe(200);
      expect(archived.body).toEqual([expect.objectContaining({ token_id: expiring, tokens: [expect.objectContaining({ expiration_time: expect.any(String) })] })]);

      expect((await count(c)).body).toEqual({ active: 1, archived: 1, total: 2 });
    });
  });

  describe('access reason', () => {
    it('is required: no reason is 400 PV1001 and nothing is created', async () => {
      const c = await newCollection();
      const tok = await call(stack, 'POST', `${base(c)}/tokens`, { headers: stack.admin, body: [{ object: { id: 'o1' } }] });
      expect(tok.status).toBe(400);
      expect(tok.body.error_code).toBe('PV1001');
      const q = await call(stack, 'POST', `${base(c)}/query/tokens`, { headers: stack.admin, body: { tags: ['x'] } });
      expect(q.status).toBe(400);
      expect(q.body.error_code).toBe('PV1001');
      const n = await call(stack, 'GET', `${base(c)}/count/tokens`, { headers: stack.admin });
      expect(n.status).toBe(400);
      expect(n.body.error_code).toBe('PV1001');
      expect((await count(c)).body).toEqual({ active: 0, archived: 0, total: 0 });
    });

    it('requires adhoc_reason with reason=Other', async () => {
      const c = await newCollection();
      const bare = await call(stack, 'POST', `${base(c)}/tokens?reason=Other`, { headers: stack.admin, body: [{ object: { id: 'o1' } }] });
      expect(bare.status).toBe(400);
      expect(bare.body.error_code).toBe('PV1003');
      expect((await count(c)).body).toEqual({ active: 0, archived: 0, total: 0 });
      const withAdhoc = await call(stack, 'POST', `${base(c)}/tokens?reason=Other&adhoc_reason=incident-42`, { headers: stack.admin, body: [{ object: { id: 'o1' } }] });
      expect(withAdhoc.status).toBe(200);
    });

    it('rejects an unknown reason with 400', async () => {
      const c = await newCollection();
      const r = await call(stack, 'GET', `${base(c)}/count/tokens?reason=BecauseICan`, { headers: stack.admin });
      expect(r.status).toBe(400);
      expect(r.body.error_code).toBe('PV1002');
      expect(r.body.message).toContain('reason');
    });
  });

  describe('errors', () => {
    it('answers 404 PV3001 for an unknown collection on tokenize, query and count', async () => {
      const missing = 'no_such_collection';
      const tok = await call(stack, 'POST', `${base(missing)}/tokens?reason=AppFunctionality`, { headers: stack.admin, body: [{ object: { id: 'o1' } }] });
      expect(tok.status).toBe(404);
      expect(tok.body).toMatchObject({ error_code: 'PV3001' });
      expect((await query(missing, { tags: ['x'] })).body.error_code).toBe('PV3001');
      const n = await count(missing);
      expect(n.status).toBe(404);
      expect(n.body.error_code).toBe('PV3001');
    });

    it('refuses a user-supplied token_id already used in the same tenant with 409 PV3007, inserting none of the batch', async () => {
      const c = await newCollection();
      await tokenize(stack, c, [{ object: { id: 'o1' }, token_id: 'dup', tenant_id: 'ten-1' }]);
      const r = await call(stack, 'POST', `${base(c)}/tokens?reason=AppFunctionality`, {
        headers: stack.admin,
        body: [
          { object: { id: 'o2' }, token_id: 'fresh-1', tenant_id: 'ten-1' },
          { object: { id: 'o3' }, token_id: 'dup', tenant_id: 'ten-1' },
          { object: { id: 'o4' }, tenant_id: 'ten-1' },
        ],
      });
      expect(r.status).toBe(409);
      expect(r.body.error_code).toBe('PV3007');
      expect(JSON.stringify(r.body.context)).toContain('dup');
      expect((await query(c, { token_ids: ['fresh-1'] })).body).toEqual([]);
      expect((await query(c, { object_ids: ['o1', 'o2', 'o3', 'o4'] })).body).toEqual([expect.objectContaining({ token_id: 'dup', tokens: [expect.objectContaining({ object_id: 'o1' })] })]);
      expect((await count(c)).body).toEqual({ active: 1, archived: 0, total: 1 });
    });

    it('refuses a token_id used without a tenant when tokenizing again without a tenant', async () => {
      const c = await newCollection();
      await tokenize(stack, c, [{ object: { id: 'o1' }, token_id: 'plain' }]);
      const r = await call(stack, 'POST', `${base(c)}/tokens?reason=AppFunctionality`, { headers: stack.admin, body: [{ object: { id: 'o2' }, token_id: 'plain' }] });
      expect(r.status).toBe(409);
      expect(r.body.error_code).toBe('PV3007');
      expect((await count(c)).body).toEqual({ active: 1, archived: 0, total: 1 });
    });

    it('allows the same token_id in another tenant', async () => {
      const c = await newCollection();
      await tokenize(stack, c, [{ object: { id: 'o1' }, token_id: 'same', tenant_id: 'ten-1' }]);
      const ids = await tokenize(stack, c, [{ object: { id: 'o2' }, token_id: 'same', tenant_id: 'ten-2' }]);
      expect(ids).toEqual(['same']);
      const found = await query(c, { token_ids: ['same'] });
      // one token ID held in two tenants: one entry, a token per tenant
      expect(found.body).toHaveLength(1);
      expect(found.body[0].tokens.map((t: { effective_tenant_id: string }) => t.effective_tenant_id).sort()).toEqual(['ten-1', 'ten-2']);
    });

    it('rejects a body that is not an array with 400 PV1002', async () => {
      const c = await newCollection();
      const r = await call(stack, 'POST', `${base(c)}/tokens?reason=AppFunctionality`, { headers: stack.admin, body: { object: { id: 'o1' } } });
      expect(r.status).toBe(400);
      expect(r.body.error_code).toBe('PV1002');
      expect(r.body.message).toMatch(/body/i);
    });

    it('rejects wrong types with 400 PV1002 and a message naming the field', async () => {
      const c = await newCollection();
      const r = await call(stack, 'POST', `${base(c)}/tokens?reason=AppFunctionality`, { headers: stack.admin, body: [{ object: { id: 42 } }] });
      expect(r.status).toBe(400);
      expect(r.body.error_code).toBe('PV1002');
      expect(r.body.message).toContain('object.id');
      const tags = await call(stack, 'POST', `${base(c)}/tokens?reason=AppFunctionality`, { headers: stack.admin, body: [{ object: { id: 'o' }, tags: 'red' }] });
      expect(tags.status).toBe(400);
      expect(tags.body.message).toContain('tags');
      expect((await count(c)).body).toEqual({ active: 0, archived: 0, total: 0 });
    });

    it('rejects a token with 11 tags with 400 PV1002 naming tags', async () => {
      const c = await newCollection();
      const tags = Array.from({ length: 11 }, (_, i) => `tag${i}`);
      const r = await call(stack, 'POST', `${base(c)}/tokens?reason=AppFunctionality`, { headers: stack.admin, body: [{ object: { id: 'o1' }, tags }] });
      expect(r.status).toBe(400);
      expect(r.body.error_code).toBe('PV1002');
      expect(r.body.message).toContain('tags');
      expect((await count(c)).body).toEqual({ active: 0, archived: 0, total: 0 });
      const ten = await tokenize(stack, c, [{ object: { id: 'o1' }, tags: tags.slice(0, 10) }]);
      expect(ten).toHaveLength(1);
    });

    it('rejects an empty tokenize batch with 400', async () => {
      const c = await newCollection();
      const r = await call(stack, 'POST', `${base(c)}/tokens?reason=AppFunctionality`, { headers: stack.admin, body: [] });
      expect(r.status).toBe(400);
      expect(r.body.error_code).toBe('PV1002');
    });

    it('rejects a query with no criteria with 400', async () => {
      const c = await newCollection();
      await tokenize(stack, c, [{ object: { id: 'o1' } }]);
      const r = await query(c, {});
      expect(r.status).toBe(400);
      expect(r.body.error_code).toBe('PV1002');
      expect(r.body.message).toMatch(/token_ids|object_ids|tags/);
    });
  });
});

describe('tokenize with FORCE_ACCESS_REASON=false', () => {
  let stack: Stack;

  beforeAll(async () => {
    stack = await startStack({ env: { FORCE_ACCESS_REASON: 'false' } });
  });
  afterAll(() => stack?.close());

  it('lets requests without a reason through', async () => {
    const c = collectionName();
    await createCollection(stack, c);
    const tok = await call(stack, 'POST', `${base(c)}/tokens`, { headers: stack.admin, body: [{ object: { id: 'o1' }, tags: ['x'] }] });
    expect(tok.status).toBe(200);
    const q = await call(stack, 'POST', `${base(c)}/query/tokens`, { headers: stack.admin, body: { tags: ['x'] } });
    expect(q.status).toBe(200);
    expect(q.body).toEqual([expect.objectContaining({ token_id: tok.body[0].token_id })]);
    const n = await call(stack, 'GET', `${base(c)}/count/tokens`, { headers: stack.admin });
    expect(n).toMatchObject({ status: 200, body: { active: 1, archived: 0, total: 1 } });
  });

  it('still rejects an unknown reason', async () => {
    const c = collectionName();
    await createCollection(stack, c);
    const r = await call(stack, 'GET', `${base(c)}/count/tokens?reason=Whatever`, { headers: stack.admin });
    expect(r.status).toBe(400);
  });
});
