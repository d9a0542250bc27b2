import fc from 'fast-check';
import {
  alnum,
  badItemBody,
  badItemQuery,
  hostileJson,
  hostileText,
  IDENTIFIER,
  isObject,
  items,
  jsonCase,
  notAString,
  notCollectionName,
  notIdentifier,
  type Pairs,
  REASON_KEYS,
  reasonPoison,
  segment,
  tooManyIds,
  tooManyTags,
  unknownParam,
  validReason,
  withQuery,
} from '../helpers/hostile/generators.js';
import { admin, COLLECTION, describeHostileRoutes, type FamilySpecs, nobodyAuth, type RouteSpec, VAULT, type World } from '../helpers/hostile/harness.js';

/**
 * Hostile input to the Piiano Vault routes (SPEC §4.6, §7): every generated request is a 4xx in
 * Piiano's envelope and changes nothing. The generators and the harness are in test/helpers/hostile/.
 */

/** A collection path segment that names no collection: malformed, raw bytes, or missing. */
const collectionPoison = fc.oneof(
  segment(notCollectionName).map((c) => ({ segment: c, poison: `bad collection ${c.slice(0, 40)}`, expect: [400, 404] })),
  fc
    .constantFrom('%', '%zz', '%ff', '%c0%af', '%ED%A0%80', '%00', `${COLLECTION}%2f..`, '%2e%2ex', `${COLLECTION};x=1`, `%20${COLLECTION}`, `${COLLECTION}%00`, 'a'.repeat(501))
    .map((raw) => ({ segment: raw, poison: `raw collection segment ${raw.slice(0, 40)}`, expect: [400, 404] })),
  alnum.map((a) => ({ segment: `zzmissing_${a}`, poison: 'no such collection', expect: [404] })),
);

/** A spec per route of the plan: its valid requests and its poisons, naming the world's fixtures. */
function specs(w: World): FamilySpecs<'vault'> {
  const tokensPath = (segment: string) => `${VAULT}/${segment}/tokens`;
  const criteria: fc.Arbitrary<Pairs> = fc.oneof(
    items(1, 5).map((xs): Pairs => [['token_ids', xs.join(',')]]),
    items(1, 5).map((xs): Pairs => xs.map((x) => ['token_ids', x])),
    fc.constant<Pairs>([['token_ids', w.seededTokenIds.join(',')]]),
    fc.constant<Pairs>([['tags', 'breach']]),
    fc.tuple(items(1, 3), items(1, 3)).map(([a, b]): Pairs => [
      ['object_ids', a.join(',')],
      ['tags', b.join(',')],
    ]),
  );
  const deleteExtras = fc.subarray<[string, string]>([
    ['options', 'archived'],
    ['custom_audit', 'incident 42'],
    ['reload_cache', 'false'],
    ['tenant_id', 'acme'],
  ]);
  const deleteKeys = ['token_ids', 'object_ids', 'tags', 'tenant_id', 'options', ...REASON_KEYS];
  const q = (segment: string, ...parts: Pairs[]) => withQuery(tokensPath(segment), parts.flat());

  const deleteSpec: RouteSpec = {
    method: 'DELETE',
    template: `${VAULT}/:collection/tokens`,
    valid: fc.tuple(criteria, validReason, deleteExtras).map(([c, r, e]) => ({ url: q(COLLECTION, c, r, e) })),
    commands: true,
    forbidden: nobodyAuth(w),
    poisons: [
      admin(fc.tuple(criteria, reasonPoison).map(([c, p]) => ({ method: 'DELETE', url: q(COLLECTION, c, p.pairs), poison: p.poison, expect: [400] }))),
      admin(fc.tuple(criteria, validReason, unknownParam(deleteKeys)).map(([c, r, p]) => ({ method: 'DELETE', url: q(COLLECTION, c, r, p.pairs), poison: p.poison, expect: [400] }))),
      admin(
        fc
          .tuple(validReason, deleteExtras, fc.constantFrom<Pairs>([], [['tags', '']], [['token_ids', ',, ,']], [['object_ids', ' ']]))
          .map(([r, e, empty]) => ({ method: 'DELETE', url: q(COLLECTION, r, e, empty), poison: 'no criterion', expect: [400] })),
      ),
      admin(
        fc
          .tuple(tooManyIds, fc.constantFrom('token_ids', 'object_ids'), validReason)
          .map(([ids, key, r]) => ({ method: 'DELETE', url: q(COLLECTION, [[key, ids.join(',')]], r), poison: `${ids.length} ${key}`, expect: [400] })),
      ),
      admin(
        fc.tuple(tooManyTags, validReason).map(([tags, r]) => ({
          method: 'DELETE',
          url: q(
            COLLECTION,
            tags.map((t): [string, string] => ['tags', t]),
            r,
          ),
          poison: `${tags.length} tags`,
          expect: [400],
        })),
      ),
      admin(
        fc
          .tuple(items(0, 3), badItemQuery, fc.constantFrom('token_ids', 'object_ids', 'tags'), validReason)
          .map(([ok, bad, key, r]) => ({ method: 'DELETE', url: q(COLLECTION, [[key, [...ok, bad].join(',')]], r), poison: `bad item in ${key}`, expect: [400] })),
      ),
      admin(
        fc
          .tuple(criteria, validReason, hostileText)
          .filter(([, , o]) => {
            const parts = o
              .split(',')
              .map((p) => p.trim())
              .filter((p) => p !== '');
            return parts.length > 5 || parts.some((p) => p !== 'archived');
          })
          .map(([c, r, o]) => ({ method: 'DELETE', url: q(COLLECTION, c, r, [['options', o]]), poison: 'unknown option', expect: [400] })),
      ),
      admin(
        fc
          .tuple(
            criteria,
            validReason,
            fc.oneof(
              notIdentifier.map((t): Pairs => [['tenant_id', t]]),
              fc.constant<Pairs>([
                ['tenant_id', 'a'],
                ['tenant_id', 'b'],
              ]),
            ),
          )
          .map(([c, r, t]) => ({ method: 'DELETE', url: q(COLLECTION, c, r, t), poison: 'bad tenant_id', expect: [400] })),
      ),
      admin(fc.tuple(collectionPoison, criteria, validReason).map(([p, c, r]) => ({ method: 'DELETE', url: q(p.segment, c, r), poison: p.poison, expect: p.expect }))),
      admin(
        fc
          .tuple(criteria, validReason)
          .map(([c, r]) => ({ method: 'DELETE', url: q(COLLECTION, c, r), headers: { 'x-tenant-id': 't'.repeat(201) }, poison: 'X-Tenant-Id over 200 characters', expect: [400] })),
      ),
      admin(
        fc
          .tuple(criteria, validReason, fc.constantFrom('a b', 'a/b', 'x\ty'))
          .map(([c, r, t]) => ({ method: 'DELETE', url: q(COLLECTION, c, r), headers: { 'x-tenant-id': t }, poison: 'X-Tenant-Id not an identifier', expect: [400] })),
      ),
    ],
  };

  const rotatePath = (segment: string) => `${VAULT}/${segment}/rotate/tokens`;
  const ids: fc.Arbitrary<Pairs> = fc.oneof(
    items(1, 5).map((xs): Pairs => [['token_ids', xs.join(',')]]),
    fc.constant<Pairs>([['token_ids', w.seededTokenIds.join(',')]]),
  );
  const rq = (segment: string, ...parts: Pairs[]) => withQuery(rotatePath(segment), parts.flat());
  const rotateSpec: RouteSpec = {
    method: 'POST',
    template: `${VAULT}/:collection/rotate/tokens`,
    valid: fc.tuple(ids, validReason).map(([i, r]) => ({ url: rq(COLLECTION, i, r) })),
    commands: true,
    forbidden: nobodyAuth(w),
    poisons: [
      admin(fc.tuple(ids, reasonPoison).map(([i, p]) => ({ method: 'POST', url: rq(COLLECTION, i, p.pairs), poison: p.poison, expect: [400] }))),
      admin(fc.tuple(ids, validReason, unknownParam(['token_ids', ...REASON_KEYS])).map(([i, r, p]) => ({ method: 'POST', url: rq(COLLECTION, i, r, p.pairs), poison: p.poison, expect: [400] }))),
      admin(
        fc
          .tuple(validReason, fc.constantFrom<Pairs>([], [['token_ids', '']], [['token_ids', ' , ']]))
          .map(([r, e]) => ({ method: 'POST', url: rq(COLLECTION, r, e), poison: 'no token_ids', expect: [400] })),
      ),
      admin(fc.tuple(tooManyIds, validReason).map(([t, r]) => ({ method: 'POST', url: rq(COLLECTION, [['token_ids', t.join(',')]], r), poison: `${t.length} token_ids`, expect: [400] }))),
      admin(
        fc
          .tuple(items(0, 3), badItemQuery, validReason)
          .map(([ok, bad, r]) => ({ method: 'POST', url: rq(COLLECTION, [['token_ids', [...ok, bad].join(',')]], r), poison: 'bad token id', expect: [400] })),
      ),
      admin(fc.tuple(collectionPoison, ids, validReason).map(([p, i, r]) => ({ method: 'POST', url: rq(p.segment, i, r), poison: p.poison, expect: p.expect }))),
    ],
  };

  const validItem = fc.record({ object: fc.record({ id: alnum }), tags: items(0, 3) }, { requiredKeys: ['object'] });
  const validItems = fc.array(validItem, { minLength: 1, maxLength: 5 });
  const expirations = fc.option(fc.constantFrom('-1', '1', '3600', '315360000'), { nil: undefined });
  const validExpiration = (s: string) => {
    if (s === '') return true; // Piiano's client sends expiration_secs= for "never expires"
    const n = Number(s);
    return Number.isInteger(n) && (n === -1 || (n >= 1 && n <= 315_360_000));
  };
  const tq = (segment: string, ...parts: Pairs[]) => withQuery(tokensPath(segment), parts.flat());
  /** An item no tokenize accepts. */
  const badItem: fc.Arbitrary<{ item: unknown; poison: string }> = fc.oneof(
    hostileJson.filter((v) => !isObject(v)).map((item) => ({ item, poison: 'item not an object' })),
    fc.constant({ item: {}, poison: 'item without object' }),
    hostileJson.filter((v) => !isObject(v)).map((object) => ({ item: { object }, poison: 'object not an object' })),
    fc
      .oneof(
        badItemBody,
        fc.constant(''),
        hostileJson.filter((v) => typeof v !== 'string'),
      )
      .map((id) => ({ item: { object: { id } }, poison: 'bad object.id' })),
    fc.tuple(alnum, hostileJson).map(([k, v]) => ({ item: { object: { id: 'o', [`x_${k}`]: v } }, poison: 'extra key in object' })),
    fc
      .oneof(
        tooManyTags,
        badItemBody.map((t) => [t]),
        hostileJson.filter((v) => !Array.isArray(v)),
      )
      .map((tags) => ({ item: { object: { id: 'o' }, tags }, poison: 'bad tags' })),
    fc
      .oneof(
        badItemBody,
        fc.constant(''),
        hostileJson.filter((v) => typeof v !== 'string'),
      )
      .map((token_id) => ({ item: { object: { id: 'o' }, token_id }, poison: 'bad token_id' })),
    notAString(IDENTIFIER).map((tenant_id) => ({ item: { object: { id: 'o' }, tenant_id }, poison: 'bad tenant_id' })),
    fc.tuple(alnum, hostileJson).map(([k, v]) => ({ item: { object: { id: 'o' }, [`x_${k}`]: v }, poison: 'extra key in item' })),
  );
  const tokenizeSpec: RouteSpec = {
    method: 'POST',
    template: `${VAULT}/:collection/tokens`,
    valid: fc.tuple(validReason, expirations, validItems).map(([r, e, body]) => ({ url: tq(COLLECTION, r, e ? [['expiration_secs', e]] : []), body })),
    json: true,
    forbidden: nobodyAuth(w),
    poisons: [
      admin(fc.tuple(reasonPoison, validItems).map(([p, body]) => jsonCase('POST', tq(COLLECTION, p.pairs), body, {}, p.poison, [400]))),
      admin(fc.tuple(validReason, unknownParam(['expiration_secs', ...REASON_KEYS]), validItems).map(([r, p, body]) => jsonCase('POST', tq(COLLECTION, r, p.pairs), body, {}, p.poison, [400]))),
      admin(
        fc
          .tuple(
            validReason,
            fc
              .oneof(fc.integer({ min: -1_000_000_000, max: 0 }).map(String), fc.integer({ min: 315_360_001, max: 2 ** 31 }).map(String), fc.double().map(String), hostileText)
              .filter((s) => !validExpiration(s)),
            validItems,
          )
          .map(([r, e, body]) => jsonCase('POST', tq(COLLECTION, r, [['expiration_secs', e]]), body, {}, `expiration_secs ${e.slice(0, 30)}`, [400])),
      ),
      admin(
        fc.tuple(validReason, validItems).map(([r, body]) =>
          jsonCase(
            'POST',
            tq(COLLECTION, r, [
              ['expiration_secs', '60'],
              ['expiration_secs', '60'],
            ]),
            body,
            {},
            'expiration_secs repeated',
            [400],
          ),
        ),
      ),
      admin(validReason.map((r) => jsonCase('POST', tq(COLLECTION, r), [], {}, 'no items', [400]))),
      admin(
        fc.tuple(validReason, fc.integer({ min: 10_001, max: 10_010 })).map(([r, n]) =>
          jsonCase(
            'POST',
            tq(COLLECTION, r),
            Array.from({ length: n }, (_, i) => ({ object: { id: `o${i}` } })),
            {},
            `${n} items`,
            [400],
          ),
        ),
      ),
      admin(
        fc
          .tuple(
            validReason,
            hostileJson.filter((v) => !Array.isArray(v)),
          )
          .map(([r, body]) => jsonCase('POST', tq(COLLECTION, r), body, {}, 'body not an array', [400])),
      ),
      admin(
        fc.tuple(validReason, validItems, badItem, fc.nat()).map(([r, body, bad, at]) => {
          const all: unknown[] = [...body];
          all.splice(at % (all.length + 1), 0, bad.item);
          return jsonCase('POST', tq(COLLECTION, r), all, {}, bad.poison, [400]);
        }),
      ),
      admin(
        fc.tuple(validReason, alnum).map(([r, id]) =>
          jsonCase(
            'POST',
            tq(COLLECTION, r),
            [
              { object: { id: 'a' }, token_id: `dup-${id}` },
              { object: { id: 'b' }, token_id: `dup-${id}` },
            ],
            {},
            'token_id twice',
            [400],
          ),
        ),
      ),
      // all or nothing: the new items before the taken ID must not be created
      admin(
        fc
          .tuple(validReason, validItems)
          .map(([r, body]) => jsonCase('POST', tq(COLLECTION, r), [...body, { object: { id: 'x' }, token_id: w.seededTokenIds[0] }], {}, 'a token_id already taken', [409])),
      ),
      admin(
        fc
          .tuple(validReason, alnum)
          .map(([r, t]) => jsonCase('POST', tq(COLLECTION, r), [{ object: { id: 'a' }, tenant_id: `other-${t}` }], { 'x-tenant-id': `mine-${t}` }, 'item tenant outside X-Tenant-Id', [403])),
      ),
      // the header's tenant is stored on the tokens: it must be an identifier, as a tenant_id in the body must
      admin(
        fc
          .tuple(validReason, validItems, fc.constantFrom('a b', 'a/b', 'a;b', 'x\ty', 'ok,a b'))
          .map(([r, body, t]) => jsonCase('POST', tq(COLLECTION, r), body, { 'x-tenant-id': t }, 'X-Tenant-Id not an identifier', [400])),
      ),
      admin(fc.tuple(collectionPoison, validReason, validItems).map(([p, r, body]) => jsonCase('POST', tq(p.segment, r), body, {}, p.poison, p.expect))),
    ],
  };

  const queryPath = (segment: string) => `${VAULT}/${segment}/query/tokens`;
  const qq = (segment: string, ...parts: Pairs[]) => withQuery(queryPath(segment), parts.flat());
  const validQueryBody = fc.oneof(
    items(1, 4).map((t) => ({ token_ids: t })),
    items(1, 4).map((t) => ({ tags: t })),
    fc.tuple(items(1, 3), items(1, 3)).map(([o, t]) => ({ object_ids: o, tags: t })),
  );
  const badQueryBody: fc.Arbitrary<{ body: unknown; poison: string }> = fc.oneof(
    fc.constant({ body: {}, poison: 'no criterion' }),
    fc.constantFrom('token_ids', 'object_ids', 'tags').map((k) => ({ body: { [k]: [] }, poison: `empty ${k}` })),
    fc.tuple(tooManyIds, fc.constantFrom('token_ids', 'object_ids')).map(([t, k]) => ({ body: { [k]: t }, poison: `${t.length} ${k}` })),
    tooManyTags.map((t) => ({ body: { tags: t }, poison: `${t.length} tags` })),
    fc.tuple(items(0, 2), badItemBody, fc.constantFrom('token_ids', 'object_ids', 'tags')).map(([ok, bad, k]) => ({ body: { [k]: [...ok, bad] }, poison: `bad item in ${k}` })),
    fc
      .tuple(
        fc.constantFrom('token_ids', 'object_ids', 'tags'),
        hostileJson.filter((v) => !Array.isArray(v) && v !== undefined),
      )
      .map(([k, v]) => ({ body: { [k]: v }, poison: `${k} not an array` })),
    fc.tuple(items(1, 2), alnum, hostileJson).map(([t, k, v]) => ({ body: { tags: t, [`x_${k}`]: v }, poison: 'extra key' })),
    hostileJson.filter((v) => !isObject(v)).map((body) => ({ body, poison: 'body not an object' })),
  );
  const querySpec: RouteSpec = {
    method: 'POST',
    template: `${VAULT}/:collection/query/tokens`,
    valid: fc.tuple(validReason, validQueryBody).map(([r, body]) => ({ url: qq(COLLECTION, r), body })),
    json: true,
    forbidden: nobodyAuth(w),
    poisons: [
      admin(fc.tuple(reasonPoison, validQueryBody).map(([p, body]) => jsonCase('POST', qq(COLLECTION, p.pairs), body, {}, p.poison, [400]))),
      admin(fc.tuple(validReason, unknownParam(['options', ...REASON_KEYS]), validQueryBody).map(([r, p, body]) => jsonCase('POST', qq(COLLECTION, r, p.pairs), body, {}, p.poison, [400]))),
      admin(fc.tuple(validReason, badQueryBody).map(([r, b]) => jsonCase('POST', qq(COLLECTION, r), b.body, {}, b.poison, [400]))),
      admin(fc.tuple(collectionPoison, validReason, validQueryBody).map(([p, r, body]) => jsonCase('POST', qq(p.segment, r), body, {}, p.poison, p.expect))),
    ],
  };

  const countPath = (segment: string) => `${VAULT}/${segment}/count/tokens`;
  const cq = (segment: string, ...parts: Pairs[]) => withQuery(countPath(segment), parts.flat());
  const countSpec: RouteSpec = {
    method: 'GET',
    template: `${VAULT}/:collection/count/tokens`,
    valid: validReason.map((r) => ({ url: cq(COLLECTION, r) })),
    forbidden: nobodyAuth(w),
    poisons: [
      admin(reasonPoison.map((p) => ({ method: 'GET', url: cq(COLLECTION, p.pairs), poison: p.poison, expect: [400] }))),
      admin(fc.tuple(validReason, unknownParam(REASON_KEYS)).map(([r, p]) => ({ method: 'GET', url: cq(COLLECTION, r, p.pairs), poison: p.poison, expect: [400] }))),
      admin(fc.tuple(collectionPoison, validReason).map(([p, r]) => ({ method: 'GET', url: cq(p.segment, r), poison: p.poison, expect: p.expect }))),
    ],
  };

  return {
    'DELETE /api/pvlt/1.0/data/collections/:collection/tokens': deleteSpec,
    'POST /api/pvlt/1.0/data/collections/:collection/rotate/tokens': rotateSpec,
    'POST /api/pvlt/1.0/data/collections/:collection/tokens': tokenizeSpec,
    'POST /api/pvlt/1.0/data/collections/:collection/query/tokens': querySpec,
    'GET /api/pvlt/1.0/data/collections/:collection/count/tokens': countSpec,
  };
}

describeHostileRoutes('vault', specs);
