import { randomBytes } from 'node:crypto';
import { ApiError, type Count, type Reason, type rest_HTTPError, type RotatedTokens, type TokenizeRequest, type TokenMetadata, type TokenValue, VaultClient } from '@piiano/vault-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freshCollection, subjectWithToken } from '../helpers/api.js';
import { piianoError } from '../helpers/envelopes.js';
import { rawRequest } from '../helpers/http.js';
import { ADMIN_TOKEN, type Stack, startStack } from '../helpers/stack.js';

/**
 * Piiano's own generated client (`@piiano/vault-client`), in its default configuration (base URL
 * and API key only), against a producer listening on a real port: what a Piiano user's code
 * sends, and what the client's types promise it gets back (SPEC §5, §6).
 */

const A = 'tenant-a';
const B = 'tenant-b';
const REASON = 'AppFunctionality';

/** A tokenize item as this service takes it: Piiano's, plus `tenant_id`. */
type Item = TokenizeRequest & { tenant_id?: string };

/** The client's rejection: an ApiError whose body is Piiano's error schema. */
async function rejectionOf(promise: Promise<unknown>): Promise<{ status: number; body: rest_HTTPError; message: string }> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ApiError);
  const { status, body, message } = error as ApiError;
  return { status, body: body as rest_HTTPError, message };
}

/** What the client's `rest_HTTPError` type promises: `context: Record<string, string>`. */
function expectPiianoError(e: { status: number; body: rest_HTTPError; message: string }, status: number, code: string): rest_HTTPError {
  expect(e.status).toBe(status);
  expect(e.body).toEqual(piianoError(code));
  for (const [key, value] of Object.entries(e.body.context)) expect(typeof value, `context.${key}`).toBe('string');
  // the client puts the code and message in its error's own message when the body is Piiano's
  expect(e.message).toContain(`${code}: ${e.body.message}`);
  return e.body;
}

describe('@piiano/vault-client against the producer', () => {
  let stack: Stack;
  /** A service holding every vault-token capability, of every tenant. */
  let client: VaultClient;
  /** A service of tenants A and B only. */
  let ofAB: VaultClient;

  beforeAll(async () => {
    stack = await startStack();
    const caps = ['tokens:tokenize', 'tokens:read', 'tokens:write'];
    const service = await subjectWithToken(stack, { id: `pc-svc-${randomBytes(3).toString('hex')}`, kind: 'service', capabilities: caps });
    const tenants = await subjectWithToken(stack, { id: `pc-ab-${randomBytes(3).toString('hex')}`, kind: 'service', capabilities: caps, tenant_ids: [A, B] });
    client = new VaultClient({ vaultURL: stack.producer.url, apiKey: service.token });
    ofAB = new VaultClient({ vaultURL: stack.producer.url, apiKey: tenants.token });
  });
  afterAll(() => stack?.close());

  const tokenize = (collection: string, items: Item[], more: { expirationSecs?: string; xTenantId?: string[] } = {}): Promise<TokenValue[]> =>
    client.tokens.tokenize({ collection, reason: REASON, requestBody: items, ...more });

  const search = (collection: string, query: { token_ids?: string[]; object_ids?: string[]; tags?: string[] }, options?: ('archived' | 'include_aggregated_data')[]): Promise<TokenMetadata[]> =>
    client.tokens.searchTokens({ collection, reason: REASON, requestBody: query, ...(options ? { options } : {}) });

  /** Archives tokens as an operator would (no route archives one). */
  async function archive(collection: string, tokenIds: string[]): Promise<void> {
    await stack.database.db.updateTable('vault_tokens').set({ archived_at: new Date() }).where('collection', '=', collection).where('token_id', 'in', tokenIds).execute();
  }

  describe('tokenize, search and count', () => {
    it('tokenizes randomized and pointer tokens with tags, scope, props and tenant_id, and finds them as TokenMetadata', async () => {
      const c = await freshCollection(stack, 'pc');
      const created = await tokenize(c, [
        { type: 'randomized', object: { id: 'person-1' }, tags: ['card', 'eu'], scope: 'billing', props: ['cc_number'], tenant_id: A },
        { type: 'pointer', object: { id: 'person-2' }, tags: ['card'], props: ['email', 'name'], token_id: 'ptr-1' },
      ]);
      expect(created).toEqual([{ token_id: expect.any(String) }, { token_id: 'ptr-1' }]);
      const randomized = created[0]!.token_id;

      const found = await search(c, { token_ids: [randomized, 'ptr-1'] });
      const never = { expiration_time: null, effective_expiration_time: null, creation_time: expect.any(String) };
      expect(found).toEqual([
        { token_id: randomized, type: 'randomized', scope: 'billing', tokens: [{ object_id: 'person-1', effective_tenant_id: A, tags: ['card', 'eu'], ...never }] },
        { token_id: 'ptr-1', type: 'pointer', scope: '', tokens: [{ object_id: 'person-2', tags: ['card'], ...never }] },
      ]);
      expect(Number.isNaN(Date.parse(found[0]!.tokens[0]!.creation_time))).toBe(false);
      const props = await stack.database.db.selectFrom('vault_tokens').select(['token_id', 'props']).where('collection', '=', c).orderBy('id').execute();
      expect(props).toEqual([
        { token_id: randomized, props: ['cc_number'] },
        { token_id: 'ptr-1', props: ['email', 'name'] },
      ]);
    });

    it('gives tokens the expiry of expirationSecs, and none for the empty value the client sends for "never"', async () => {
      const c = await freshCollection(stack, 'pc');
      const [expiring] = await tokenize(c, [{ type: 'randomized', object: { id: 'o1' } }], { expirationSecs: '3600' });
      const [lasting] = await tokenize(c, [{ type: 'randomized', object: { id: 'o2' } }], { expirationSecs: '' });
      const [e, l] = await search(c, { object_ids: ['o1', 'o2'] });
      expect(e!.token_id).toBe(expiring!.token_id);
      expect(e!.tokens[0]!.expiration_time).toEqual(expect.any(String));
      expect(e!.tokens[0]!.effective_expiration_time).toBe(e!.tokens[0]!.expiration_time);
      expect(l!.token_id).toBe(lasting!.token_id);
      expect(l!.tokens[0]).toMatchObject({ expiration_time: null, effective_expiration_time: null });
    });

    it.each(['pci', 'pci_oneway', 'deterministic'] as const)('refuses type %s: the client rejects with 400 PV1002 naming the type, and nothing is created', async (type) => {
      const c = await freshCollection(stack, 'pc');
      const e = await rejectionOf(
        tokenize(c, [
          { type: 'randomized', object: { id: 'o1' } },
          { type, object: { id: 'o2' } },
        ]),
      );
      const body = expectPiianoError(e, 400, 'PV1002');
      expect(body.message).toContain(type);
      expect(body.context).toEqual({ index: '1', type });
      expect(await client.tokens.getTokensCount({ collection: c, reason: REASON })).toEqual({ active: 0, archived: 0, total: 0 });
    });

    it('searches by token_ids, object_ids and tags, a token matching every criterion given', async () => {
      const c = await freshCollection(stack, 'pc');
      const ids = (
        await tokenize(c, [
          { type: 'randomized', object: { id: 'o1' }, tags: ['red', 'big'] },
          { type: 'randomized', object: { id: 'o2' }, tags: ['red'] },
          { type: 'pointer', object: { id: 'o3' } },
        ])
      ).map((t) => t.token_id);
      const idsOf = (found: TokenMetadata[]) => found.map((t) => t.token_id);
      expect(idsOf(await search(c, { token_ids: [ids[0]!, ids[2]!] }))).toEqual([ids[0], ids[2]]);
      expect(idsOf(await search(c, { object_ids: ['o2', 'o3'] }))).toEqual([ids[1], ids[2]]);
      expect(idsOf(await search(c, { tags: ['red'] }))).toEqual([ids[0], ids[1]]);
      expect(idsOf(await search(c, { tags: ['red', 'big'] }))).toEqual([ids[0]]);
      expect(idsOf(await search(c, { token_ids: ids, object_ids: ['o2'], tags: ['red'] }))).toEqual([ids[1]]);
      expect(await search(c, { tags: ['none'] })).toEqual([]);
    });

    it('searches archived tokens with options archived, and adds agg with include_aggregated_data', async () => {
      const c = await freshCollection(stack, 'pc');
      const [old, current] = (
        await tokenize(
          c,
          [
            { type: 'randomized', object: { id: 'o1' }, tags: ['x'] },
            { type: 'randomized', object: { id: 'o2' }, tags: ['x'] },
          ],
          { expirationSecs: '3600' },
        )
      ).map((t) => t.token_id);
      await archive(c, [old!]);
      expect((await search(c, { tags: ['x'] })).map((t) => t.token_id)).toEqual([current]);
      const archived = await search(c, { tags: ['x'] }, ['archived']);
      expect(archived.map((t) => t.token_id)).toEqual([old]);
      expect(archived[0]).not.toHaveProperty('agg');
      const aggregated = await search(c, { tags: ['x'] }, ['archived', 'include_aggregated_data']);
      expect(aggregated).toEqual([{ ...archived[0], agg: { max_effective_expiration_time: archived[0]!.tokens[0]!.effective_expiration_time } }]);
    });

    it('counts active, archived and total as the client types Count', async () => {
      const c = await freshCollection(stack, 'pc');
      const ids = (
        await tokenize(
          c,
          [1, 2, 3].map((i) => ({ type: 'randomized' as const, object: { id: `o${i}` } })),
        )
      ).map((t) => t.token_id);
      await archive(c, [ids[0]!]);
      const count: Count = await client.tokens.getTokensCount({ collection: c, reason: REASON });
      expect(count).toEqual({ active: 2, archived: 1, total: 3 });
    });

    it('takes X-Tenant-Id the way the client sends it (xTenantId, comma-joined): places, narrows and refuses tenants', async () => {
      const c = await freshCollection(stack, 'pc');
      // a caller of two tenants names one for its items
      const ambiguous = await rejectionOf(ofAB.tokens.tokenize({ collection: c, reason: REASON, requestBody: [{ type: 'randomized', object: { id: 'o1' } }] }));
      expectPiianoError(ambiguous, 400, 'PV1002');
      const [inA] = await ofAB.tokens.tokenize({ collection: c, reason: REASON, xTenantId: [A], requestBody: [{ type: 'randomized', object: { id: 'o1' }, tags: ['t'] }] });
      const [inB] = await ofAB.tokens.tokenize({ collection: c, reason: REASON, xTenantId: [B], requestBody: [{ type: 'pointer', object: { id: 'o2' }, tags: ['t'] }] });
      const tenantsOf = (found: TokenMetadata[]) => found.map((t) => [t.token_id, t.tokens.map((ref) => ref.effective_tenant_id)]);

      const onlyA = await ofAB.tokens.searchTokens({ collection: c, reason: REASON, xTenantId: [A], requestBody: { tags: ['t'] } });
      expect(tenantsOf(onlyA)).toEqual([[inA!.token_id, [A]]]);
      const both = await ofAB.tokens.searchTokens({ collection: c, reason: REASON, xTenantId: [A, B], requestBody: { tags: ['t'] } });
      expect(tenantsOf(both)).toEqual([
        [inA!.token_id, [A]],
        [inB!.token_id, [B]],
      ]);
      // getTokensCount takes no xTenantId: the subject's own scope
      expect(await ofAB.tokens.getTokensCount({ collection: c, reason: REASON })).toEqual({ active: 2, archived: 0, total: 2 });

      const outside = await rejectionOf(ofAB.tokens.searchTokens({ collection: c, reason: REASON, xTenantId: [A, 'tenant-c'], requestBody: { tags: ['t'] } }));
      expect(expectPiianoError(outside, 403, 'PV1006').context).toEqual({ tenant_ids: 'tenant-c' });
    });
  });

  describe('errors, as the client reports them', () => {
    it('401 PV1005 for a wrong API key', async () => {
      const c = await freshCollection(stack, 'pc');
      const stranger = new VaultClient({ vaultURL: stack.producer.url, apiKey: 'not-a-token-of-this-service' });
      const e = await rejectionOf(stranger.tokens.getTokensCount({ collection: c, reason: REASON }));
      expect(expectPiianoError(e, 401, 'PV1005').context).toEqual({});
    });

    it('404 PV3001 for an unknown collection, naming it', async () => {
      const e = await rejectionOf(search('no_such_collection', { tags: ['x'] }));
      expect(expectPiianoError(e, 404, 'PV3001').context).toEqual({ collection: 'no_such_collection' });
    });

    it('400 for a bad reason, for Other without an adhoc reason, and with Other and one the request goes through', async () => {
      const c = await freshCollection(stack, 'pc');
      const bad = await rejectionOf(client.tokens.getTokensCount({ collection: c, reason: 'BecauseICan' as Reason }));
      expect(expectPiianoError(bad, 400, 'PV1002').context).toEqual({ reason: 'BecauseICan' });
      const bare = await rejectionOf(client.tokens.getTokensCount({ collection: c, reason: 'Other' }));
      expect(expectPiianoError(bare, 400, 'PV1003').context).toEqual({ reason: 'Other' });
      expect(await client.tokens.getTokensCount({ collection: c, reason: 'Other', adhocReason: 'incident 42, triage' })).toEqual({ active: 0, archived: 0, total: 0 });
    });

    it('400 PV1002 for invalid items, the list of problems as one string', async () => {
      const c = await freshCollection(stack, 'pc');
      const tags = Array.from({ length: 11 }, (_, i) => `tag${i}`);
      const e = await rejectionOf(
        tokenize(c, [
          { type: 'randomized', object: { id: 'o1' }, tags },
          { type: 'randomized', object: { id: '' } },
        ]),
      );
      const body = expectPiianoError(e, 400, 'PV1002');
      expect(body.context.body).toMatch(/tags.*,.*object\.id|object\.id.*,.*tags/);
    });

    it('409 PV3007 for a token_id already used, the conflicting IDs as one string', async () => {
      const c = await freshCollection(stack, 'pc');
      await tokenize(c, [
        { type: 'randomized', object: { id: 'o1' }, token_id: 'dup-1' },
        { type: 'randomized', object: { id: 'o2' }, token_id: 'dup-2' },
      ]);
      const e = await rejectionOf(
        tokenize(c, [
          { type: 'pointer', object: { id: 'o3' }, token_id: 'dup-1' },
          { type: 'pointer', object: { id: 'o4' }, token_id: 'dup-2' },
        ]),
      );
      expect(expectPiianoError(e, 409, 'PV3007').context).toEqual({ token_ids: 'dup-1,dup-2' });
    });
  });

  /** A search over a socket of its own (not the client's pooled one), as the admin. */
  async function searchOnNewConnection(collection: string, query: Record<string, string[]>, options = ''): Promise<TokenMetadata[]> {
    const path = `/api/pvlt/1.0/data/collections/${collection}/query/tokens?reason=${REASON}${options}`;
    const r = await rawRequest(stack.producer.url, 'POST', path, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` }, body: query });
    if (r.status !== 200) throw new Error(`search: ${r.status} ${r.text}`);
    return r.body as TokenMetadata[];
  }
  const idsOn = async (collection: string, query: Record<string, string[]>, options = '') => (await searchOnNewConnection(collection, query, options)).map((t) => t.token_id);

  describe('delete and rotate (synchronous seed routes)', () => {
    it('deleteTokens by token_ids resolves to {} once they are gone', async () => {
      const c = await freshCollection(stack, 'pc');
      const [a, b, keep] = (
        await tokenize(
          c,
          [1, 2, 3].map((i) => ({ type: 'randomized' as const, object: { id: `o${i}` } })),
        )
      ).map((t) => t.token_id);
      expect(await client.tokens.deleteTokens({ collection: c, reason: REASON, tokenIds: [a!, b!] })).toEqual({});
      expect(await idsOn(c, { token_ids: [a!, b!, keep!] })).toEqual([keep]);
    });

    it('deleteTokens by object_ids', async () => {
      const c = await freshCollection(stack, 'pc');
      const [a, keep] = (
        await tokenize(c, [
          { type: 'randomized', object: { id: 'leaked' } },
          { type: 'pointer', object: { id: 'fine' } },
        ])
      ).map((t) => t.token_id);
      expect(await client.tokens.deleteTokens({ collection: c, reason: REASON, objectIds: ['leaked'] })).toEqual({});
      expect(await idsOn(c, { token_ids: [a!, keep!] })).toEqual([keep]);
    });

    it('deleteTokens by tags takes the tokens holding every listed tag', async () => {
      const c = await freshCollection(stack, 'pc');
      const [both, one] = (
        await tokenize(c, [
          { type: 'randomized', object: { id: 'o1' }, tags: ['breach', 'eu'] },
          { type: 'randomized', object: { id: 'o2' }, tags: ['breach'] },
        ])
      ).map((t) => t.token_id);
      expect(await client.tokens.deleteTokens({ collection: c, reason: REASON, tags: ['breach', 'eu'] })).toEqual({});
      expect(await idsOn(c, { tags: ['breach'] })).toEqual([one]);
      expect(await idsOn(c, { token_ids: [both!] })).toEqual([]);
    });

    it('deleteTokens with options archived takes archived tokens only', async () => {
      const c = await freshCollection(stack, 'pc');
      const [old, current] = (
        await tokenize(c, [
          { type: 'randomized', object: { id: 'o1' }, tags: ['x'] },
          { type: 'randomized', object: { id: 'o2' }, tags: ['x'] },
        ])
      ).map((t) => t.token_id);
      await archive(c, [old!]);
      expect(await client.tokens.deleteTokens({ collection: c, reason: REASON, tags: ['x'], options: ['archived'] })).toEqual({});
      expect(await idsOn(c, { tags: ['x'] }, '&options=archived')).toEqual([]);
      expect(await idsOn(c, { tags: ['x'] })).toEqual([current]);
    });

    it('deleteTokens records reason Other with its adhoc reason', async () => {
      const c = await freshCollection(stack, 'pc');
      const [a] = (await tokenize(c, [{ type: 'randomized', object: { id: 'o1' } }])).map((t) => t.token_id);
      expect(await client.tokens.deleteTokens({ collection: c, reason: 'Other', adhocReason: 'incident 7, leaked', tokenIds: [a!] })).toEqual({});
      expect(await idsOn(c, { token_ids: [a!] })).toEqual([]);
      const audit = await stack.database.db.selectFrom('audit_log').select(['reason', 'adhoc_reason']).where('collection', '=', c).where('action', '=', 'tokens.deleted').execute();
      expect(audit).toEqual([{ reason: 'Other', adhoc_reason: 'incident 7, leaked' }]);
    });

    it('deleteTokens narrows to a tenant by the tenant_id parameter and by xTenantId', async () => {
      const c = await freshCollection(stack, 'pc');
      const [a1, b1, a2, b2] = (
        await tokenize(c, [
          { type: 'randomized', object: { id: 'o1' }, tags: ['p'], tenant_id: A },
          { type: 'randomized', object: { id: 'o2' }, tags: ['p'], tenant_id: B },
          { type: 'randomized', object: { id: 'o3' }, tags: ['h'], tenant_id: A },
          { type: 'randomized', object: { id: 'o4' }, tags: ['h'], tenant_id: B },
        ])
      ).map((t) => t.token_id);
      expect(await client.tokens.deleteTokens({ collection: c, reason: REASON, tags: ['p'], tenantId: A })).toEqual({});
      expect(await idsOn(c, { tags: ['p'] })).toEqual([b1]);
      expect(await ofAB.tokens.deleteTokens({ collection: c, reason: REASON, tags: ['h'], xTenantId: [B] })).toEqual({});
      expect(await idsOn(c, { tags: ['h'] })).toEqual([a2]);
      expect(await idsOn(c, { token_ids: [a1!, b2!] })).toEqual([]);
    });

    it('deleteTokens matching nothing rejects with 404 PV3009', async () => {
      const c = await freshCollection(stack, 'pc');
      await tokenize(c, [{ type: 'randomized', object: { id: 'o1' }, tags: ['x'] }]);
      const e = await rejectionOf(client.tokens.deleteTokens({ collection: c, reason: REASON, tags: ['absent'] }));
      expectPiianoError(e, 404, 'PV3009');
      expect(await idsOn(c, { tags: ['x'] })).toHaveLength(1);
    });

    it('rotateTokens resolves to the {old: new} mapping; the old IDs are gone, the new ones found with everything else kept', async () => {
      const c = await freshCollection(stack, 'pc');
      const [a, b] = (
        await tokenize(c, [
          { type: 'pointer', object: { id: 'o1' }, tags: ['r'], scope: 'cards', tenant_id: A },
          { type: 'randomized', object: { id: 'o2' }, tags: ['r'] },
        ])
      ).map((t) => t.token_id);
      const before = await searchOnNewConnection(c, { tags: ['r'] });
      const mapping: RotatedTokens = await client.tokens.rotateTokens({ collection: c, reason: REASON, tokenIds: [a!, b!] });
      expect(Object.keys(mapping).sort()).toEqual([a, b].sort());
      expect(new Set(Object.values(mapping)).size).toBe(2);
      expect(await idsOn(c, { token_ids: [a!, b!] })).toEqual([]);
      const after = await searchOnNewConnection(c, { token_ids: [mapping[a!]!, mapping[b!]!] });
      expect(after).toEqual(before.map((t) => ({ ...t, token_id: mapping[t.token_id] })));
    });

    it('rotateTokens naming a missing ID rejects with 404 PV3087 listing the missing IDs as one string, and rotates nothing', async () => {
      const c = await freshCollection(stack, 'pc');
      const [a] = (await tokenize(c, [{ type: 'randomized', object: { id: 'o1' } }])).map((t) => t.token_id);
      const e = await rejectionOf(client.tokens.rotateTokens({ collection: c, reason: REASON, tokenIds: [a!, 'ghost-1', 'ghost-2'] }));
      const body = expectPiianoError(e, 404, 'PV3087');
      expect(body.context.token_ids!.split(',').sort()).toEqual(['ghost-1', 'ghost-2']);
      expect(await idsOn(c, { token_ids: [a!] })).toEqual([a]);
    });
  });
});
