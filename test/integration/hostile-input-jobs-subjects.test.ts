import fc from 'fast-check';
import { commandTypes, decodeJobCursor, encodeJobCursor, JobState } from '../../contracts/index.js';
import {
  alnum,
  badText,
  COLLECTION_NAME,
  hostileJson,
  hostileText,
  IDENTIFIER,
  idSegmentPoison,
  isObject,
  items,
  jsonCase,
  missingId,
  notAString,
  notCollectionName,
  notIdentifier,
  type Pairs,
  poisonedGet,
  segment,
  type QueryPoison,
  subjectTokenPoison,
  unknownParam,
  withQuery,
} from '../helpers/hostile/generators.js';
import { admin, COLLECTION, describeHostileRoutes, type FamilySpecs, nobodyAuth, readerAuth, type RouteSpec, VICTIM, type World } from '../helpers/hostile/harness.js';

/**
 * Hostile input to the native routes for collections, subjects and their tokens, jobs and the
 * audit trail (SPEC §4.6, §7): every generated request is a 4xx in the native envelope and
 * changes nothing. The generators and the harness are in test/helpers/hostile/.
 */
/** A capabilities value no subject takes: an unknown capability, more than there are, not a list. */
const badCapabilities = fc.oneof(
  hostileText
    .filter((c) => !(['tokens:write', 'tokens:tokenize', 'tokens:read', 'tokens:manage', 'security_admin', 'tokens:verify', 'subjects:admin'] as string[]).includes(c))
    .map((c) => ['tokens:read', c]),
  fc.constant(Array(8).fill('tokens:read')),
  hostileJson.filter((v) => !Array.isArray(v)),
);
/** A tenant_ids or collections value no subject takes: empty, over 1,000 names, a bad name, not a list (null is "any"). */
const badScope = fc.oneof(
  fc.constant([] as unknown[]),
  fc.constant(Array.from({ length: 1001 }, (_, i) => `t${i}`)),
  notIdentifier.map((t) => [t]),
  hostileJson.filter((v) => !Array.isArray(v) && JSON.stringify(v ?? null) !== 'null'),
);

/** A spec per route of the plan: its valid requests and its poisons, naming the world's fixtures. */
function specs(w: World): FamilySpecs<'jobs-subjects'> {
  const collections: RouteSpec = {
    method: 'POST',
    template: '/v1/collections',
    valid: alnum.map((a) => ({ url: '/v1/collections', body: { name: `Fz${a}` } })),
    json: true,
    forbidden: nobodyAuth(w),
    poisons: [
      admin(notAString(COLLECTION_NAME).map((name) => jsonCase('POST', '/v1/collections', { name }, {}, 'bad name', [400]))),
      admin(fc.constant(jsonCase('POST', '/v1/collections', {}, {}, 'no name', [400]))),
      admin(fc.tuple(alnum, hostileText, hostileJson).map(([a, k, v]) => jsonCase('POST', '/v1/collections', { name: `Fz${a}`, [k === 'name' ? 'x' : k]: v }, {}, 'extra key', [400]))),
      admin(hostileJson.filter((v) => !isObject(v)).map((body) => jsonCase('POST', '/v1/collections', body, {}, 'body not an object', [400]))),
      admin(fc.constant(jsonCase('POST', '/v1/collections', { name: COLLECTION }, {}, 'collection exists', [409]))),
    ],
  };

  const kinds = ['user', 'provider', 'service'] as const;
  const validSubject = fc.record(
    {
      id: alnum.map((a) => `fz-${a}`),
      kind: fc.constantFrom(...kinds),
      capabilities: fc.subarray(['tokens:read', 'tokens:write', 'tokens:manage']),
      tenant_ids: fc.oneof(items(1, 3), fc.constant(null)),
      collections: fc.constant([COLLECTION]),
    },
    { requiredKeys: ['kind'] },
  );
  const subjects: RouteSpec = {
    method: 'POST',
    template: '/v1/subjects',
    valid: validSubject.map((body) => ({ url: '/v1/subjects', body })),
    json: true,
    forbidden: nobodyAuth(w),
    poisons: [
      admin(fc.tuple(validSubject, notAString(/^(user|provider|service)$/)).map(([s, kind]) => jsonCase('POST', '/v1/subjects', { ...s, kind }, {}, 'bad kind', [400]))),
      admin(validSubject.map(({ kind: _kind, ...s }) => jsonCase('POST', '/v1/subjects', s, {}, 'no kind', [400]))),
      admin(fc.tuple(validSubject, notAString(IDENTIFIER), fc.constantFrom('id', 'domain_id')).map(([s, v, k]) => jsonCase('POST', '/v1/subjects', { ...s, [k]: v }, {}, `bad ${k}`, [400]))),
      admin(fc.tuple(validSubject, badCapabilities).map(([s, capabilities]) => jsonCase('POST', '/v1/subjects', { ...s, capabilities }, {}, 'bad capabilities', [400]))),
      admin(
        fc
          .tuple(validSubject, fc.constantFrom('tenant_ids', 'collections'), badScope)
          .filter(([, k, v]) => !(k === 'collections' && Array.isArray(v) && v.length === 1001)) // 1001 names: also invalid, but keep it to tenant_ids
          .map(([s, k, v]) => jsonCase('POST', '/v1/subjects', { ...s, [k]: v }, {}, `bad ${k}`, [400])),
      ),
      admin(fc.tuple(validSubject, notCollectionName).map(([s, c]) => jsonCase('POST', '/v1/subjects', { ...s, collections: [c] }, {}, 'bad collection name', [400]))),
      admin(fc.tuple(validSubject, alnum, hostileJson).map(([s, k, v]) => jsonCase('POST', '/v1/subjects', { ...s, [`x_${k}`]: v }, {}, 'extra key', [400]))),
      admin(hostileJson.filter((v) => !isObject(v)).map((body) => jsonCase('POST', '/v1/subjects', body, {}, 'body not an object', [400]))),
      admin(fc.tuple(validSubject, fc.constantFrom('admin', 'hostile-reader', VICTIM)).map(([s, id]) => jsonCase('POST', '/v1/subjects', { ...s, id }, {}, 'subject exists', [409]))),
    ],
  };

  const validIssue = fc.oneof(
    fc.record({ temporary: fc.constant(true), ttl_seconds: fc.integer({ min: 1, max: 604_800 }), name: alnum }, { requiredKeys: ['temporary'] }),
    fc.record({ temporary: fc.constant(false), name: alnum }, { requiredKeys: ['temporary'] }),
  );
  const issuePath = (segment: string) => `/v1/subjects/${segment}/tokens`;
  const issue: RouteSpec = {
    method: 'POST',
    template: '/v1/subjects/:id/tokens',
    valid: validIssue.map((body) => ({ url: issuePath(VICTIM), body })),
    json: true,
    forbidden: nobodyAuth(w),
    poisons: [
      admin(fc.tuple(idSegmentPoison, validIssue).map(([p, body]) => jsonCase('POST', issuePath(p.segment), body, {}, p.poison, [400, 404]))),
      admin(fc.tuple(missingId, validIssue).map(([id, body]) => jsonCase('POST', issuePath(id), body, {}, 'no such subject', [404]))),
      admin(hostileJson.filter((v) => typeof v !== 'boolean').map((temporary) => jsonCase('POST', issuePath(VICTIM), { temporary }, {}, 'temporary not a boolean', [400]))),
      admin(fc.constant(jsonCase('POST', issuePath(VICTIM), { name: 'x' }, {}, 'no temporary', [400]))),
      admin(
        fc
          .oneof(
            fc.integer({ max: 0 }),
            fc.integer({ min: 604_801 }),
            fc.double().filter((d) => !Number.isInteger(d)),
            hostileJson.filter((v) => typeof v !== 'number'),
          )
          .map((ttl) => jsonCase('POST', issuePath(VICTIM), { temporary: true, ttl_seconds: ttl }, {}, 'bad ttl_seconds', [400])),
      ),
      admin(fc.integer({ min: 1, max: 3600 }).map((ttl) => jsonCase('POST', issuePath(VICTIM), { temporary: false, ttl_seconds: ttl }, {}, 'ttl_seconds on a named token', [400]))),
      admin(
        fc
          .tuple(
            fc.boolean(),
            fc.oneof(
              fc.constant(''),
              badText(200, true),
              hostileJson.filter((v) => typeof v !== 'string'),
            ),
          )
          .map(([temporary, name]) => jsonCase('POST', issuePath(VICTIM), { temporary, name }, {}, 'bad name', [400])),
      ),
      admin(fc.tuple(alnum, hostileJson).map(([k, v]) => jsonCase('POST', issuePath(VICTIM), { temporary: true, [`x_${k}`]: v }, {}, 'extra key', [400]))),
      admin(hostileJson.filter((v) => !isObject(v)).map((body) => jsonCase('POST', issuePath(VICTIM), body, {}, 'body not an object', [400]))),
      // a subject may issue itself temporary tokens only
      fc.tuple(readerAuth(w), alnum).map(([auth, name]) => jsonCase('POST', issuePath('hostile-reader'), { temporary: false, name }, auth, 'a named token for oneself', [403])),
    ],
  };

  const subjectPath = (segment: string) => `/v1/subjects/${segment}`;
  const subjectRead: RouteSpec = {
    method: 'GET',
    template: '/v1/subjects/:id',
    valid: fc.constant({ url: subjectPath(VICTIM) }),
    forbidden: nobodyAuth(w),
    poisons: [
      // an empty segment is /v1/subjects, which has POST only: 405
      admin(idSegmentPoison.map((p) => ({ method: 'GET', url: subjectPath(p.segment), poison: p.poison, expect: [400, 404, 405] }))),
      admin(missingId.map((id) => ({ method: 'GET', url: subjectPath(id), poison: 'no such subject', expect: [404] }))),
    ],
  };

  const validGrants = fc
    .record(
      {
        capabilities: fc.subarray(['tokens:read', 'tokens:write', 'tokens:manage']),
        tenant_ids: fc.oneof(items(1, 3), fc.constant(null)),
        collections: fc.oneof(fc.constant([COLLECTION]), fc.constant(null)),
      },
      { requiredKeys: [] },
    )
    .filter((g) => Object.keys(g).length > 0);
  const badGrant: fc.Arbitrary<{ body: unknown; poison: string }> = fc.oneof(
    fc.constant({ body: {}, poison: 'no grant named' }),
    badCapabilities.map((capabilities) => ({ body: { capabilities }, poison: 'bad capabilities' })),
    fc.tuple(fc.constantFrom('tenant_ids', 'collections'), badScope).map(([k, v]) => ({ body: { [k]: v }, poison: `bad ${k}` })),
    notCollectionName.map((c) => ({ body: { collections: [c] }, poison: 'bad collection name' })),
    fc
      .tuple(
        fc.oneof(
          alnum.map((k) => `x_${k}`),
          fc.constantFrom('id', 'kind', 'domain_id', 'temporary_generation', 'disabled_at'),
        ),
        hostileJson,
      )
      .map(([k, v]) => ({ body: { capabilities: [], [k]: v }, poison: `key ${k}` })),
    hostileJson.filter((v) => !isObject(v)).map((body) => ({ body, poison: 'body not an object' })),
  );
  const subjectUpdate: RouteSpec = {
    method: 'PATCH',
    template: '/v1/subjects/:id',
    valid: validGrants.map((body) => ({ url: subjectPath(VICTIM), body })),
    json: true,
    forbidden: nobodyAuth(w),
    poisons: [
      admin(badGrant.map((b) => jsonCase('PATCH', subjectPath(VICTIM), b.body, {}, b.poison, [400]))),
      admin(fc.tuple(idSegmentPoison, validGrants).map(([p, body]) => jsonCase('PATCH', subjectPath(p.segment), body, {}, p.poison, [400, 404, 405]))),
      admin(fc.tuple(missingId, validGrants).map(([id, body]) => jsonCase('PATCH', subjectPath(id), body, {}, 'no such subject', [404]))),
    ],
  };

  const validPageLimit = (v: string) => {
    const n = Number(v);
    return Number.isInteger(n) && n >= 1 && n <= 1000;
  };
  const validPage = fc.subarray<[string, string]>([
    ['limit', '10'],
    ['after', 'a'],
  ]);
  const pagePoison: fc.Arbitrary<QueryPoison> = fc.oneof(
    fc
      .oneof(hostileText, fc.integer().map(String), fc.double().map(String))
      .filter((v) => !validPageLimit(v))
      .map((v) => ({ pairs: [['limit', v]] as Pairs, poison: `bad limit ${v.slice(0, 25)}` })),
    notIdentifier.map((v) => ({ pairs: [['after', v]] as Pairs, poison: 'bad after' })),
    fc.constantFrom('limit', 'after').map((k) => ({
      pairs: [
        [k, k === 'limit' ? '5' : 'a'],
        [k, k === 'limit' ? '6' : 'b'],
      ] as Pairs,
      poison: `${k} repeated`,
    })),
    unknownParam(['limit', 'after']),
  );
  const subjectTokens: RouteSpec = {
    method: 'GET',
    template: '/v1/subjects/:id/tokens',
    valid: validPage.map((pairs) => ({ url: withQuery(issuePath(VICTIM), pairs) })),
    forbidden: nobodyAuth(w),
    poisons: [
      admin(poisonedGet(issuePath(VICTIM), validPage, pagePoison)),
      admin(idSegmentPoison.map((p) => ({ method: 'GET', url: issuePath(p.segment), poison: p.poison, expect: [400, 404] }))),
      admin(missingId.map((id) => ({ method: 'GET', url: issuePath(id), poison: 'no such subject', expect: [404] }))),
    ],
  };

  const verify: RouteSpec = {
    method: 'GET',
    template: '/v1/auth/verify',
    valid: fc.constant({ url: '/v1/auth/verify', headers: { 'x-subject-token': w.victim.token } }),
    forbidden: readerAuth(w),
    poisons: [admin(subjectTokenPoison.map((p) => ({ method: 'GET', url: '/v1/auth/verify', headers: p.headers, poison: p.poison, expect: p.expect })))],
  };
  const jobs: RouteSpec = {
    method: 'GET',
    template: '/v1/jobs/:id',
    valid: fc.constant({ url: `/v1/jobs/${w.adminJobId}` }),
    poisons: [
      admin(
        fc
          .oneof(
            segment(hostileText),
            fc.constantFrom('%', '%zz', '%ff', '%00', 'a'.repeat(501), `${w.adminJobId}%00`, `${w.adminJobId};x`, w.adminJobId.toUpperCase().replace(/-/g, ''), `{${w.adminJobId}}`),
          )
          .map((id) => ({ method: 'GET', url: `/v1/jobs/${id}`, poison: 'bad job id', expect: [400, 404] })),
      ),
      admin(fc.uuid().map((id) => ({ method: 'GET', url: `/v1/jobs/${id}`, poison: 'no such job', expect: [404] }))),
      // another subject's job does not exist for the reader
      readerAuth(w).map((auth) => ({ method: 'GET', url: `/v1/jobs/${w.adminJobId}`, headers: auth, poison: "another subject's job", expect: [404] })),
    ],
  };

  const cancelPath = (id: string) => `/v1/jobs/${id}/cancel`;
  const cancelJob: RouteSpec = {
    method: 'POST',
    template: '/v1/jobs/:id/cancel',
    valid: fc.constant({ url: cancelPath(w.adminJobId) }),
    poisons: [
      admin(
        fc
          .oneof(
            segment(hostileText),
            fc.constantFrom('%', '%zz', '%ff', '%00', 'a'.repeat(501), `${w.adminJobId}%00`, `${w.adminJobId};x`, w.adminJobId.toUpperCase().replace(/-/g, ''), `{${w.adminJobId}}`),
          )
          .map((id) => ({ method: 'POST', url: cancelPath(id), poison: 'bad job id', expect: [400, 404] })),
      ),
      admin(fc.uuid().map((id) => ({ method: 'POST', url: cancelPath(id), poison: 'no such job', expect: [404] }))),
      // another subject's job does not exist for the reader: not cancelled, not even found
      readerAuth(w).map((auth) => ({ method: 'POST', url: cancelPath(w.adminJobId), headers: auth, poison: "another subject's job", expect: [404] })),
      admin(fc.constant({ method: 'POST', url: cancelPath(w.endedJobId), poison: 'a job that ended (failed)', expect: [409] })),
    ],
  };

  const LOOSE_UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
  const LOOSE_ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)$/;
  const validLimit = (s: string) => {
    const n = Number(s);
    return Number.isInteger(n) && n >= 1 && n <= 1000;
  };
  const validAudit = fc.subarray<[string, string]>([
    ['job_id', w.adminJobId],
    ['collection', COLLECTION],
    ['since', '2020-01-01T00:00:00Z'],
    ['after_id', '0'],
    ['limit', '10'],
  ]);
  /** A `since` that GET /v1/audit and GET /v1/jobs both refuse: they take a date-time with an offset, or a date. */
  const badSince: fc.Arbitrary<QueryPoison> = fc
    .oneof(
      hostileText.filter((s) => !LOOSE_ISO.test(s) && !/^\d{4}-\d\d-\d\d$/.test(s)),
      fc.constantFrom(
        '2021-02-30T00:00:00Z',
        '2021-13-01T00:00:00Z',
        '2021-01-01T24:00:00Z',
        '2021-01-01T00:00:00+99:99',
        '2021-02-30',
        '2021-13-01',
        '2021-01-01T00:00:00',
        '0000-01-01T00:00:00Z',
        '0000-01-01',
        '1612137600',
      ),
    )
    .map((s) => ({ pairs: [['since', s]] as Pairs, poison: 'bad since' }));
  const auditPoison: fc.Arbitrary<QueryPoison> = fc.oneof(
    hostileText.filter((s) => !LOOSE_UUID.test(s)).map((s) => ({ pairs: [['job_id', s]] as Pairs, poison: 'bad job_id' })),
    notCollectionName.map((s) => ({ pairs: [['collection', s]] as Pairs, poison: 'bad collection' })),
    badSince,
    fc
      .oneof(
        hostileText.filter((s) => !/^\d{1,19}$/.test(s)),
        fc.bigInt({ min: 2n ** 63n, max: 10n ** 19n - 1n }).map(String),
        fc.bigInt({ min: 10n ** 19n, max: 10n ** 30n }).map(String),
      )
      .map((s) => ({ pairs: [['after_id', s]] as Pairs, poison: `bad after_id ${s.slice(0, 25)}` })),
    fc
      .oneof(hostileText, fc.integer().map(String), fc.double().map(String))
      .filter((s) => !validLimit(s))
      .map((s) => ({ pairs: [['limit', s]] as Pairs, poison: `bad limit ${s.slice(0, 25)}` })),
    fc.constantFrom('job_id', 'collection', 'since', 'after_id', 'limit').map((k) => ({
      pairs: [
        [k, k === 'limit' ? '5' : k === 'job_id' ? w.adminJobId : k === 'since' ? '2020-01-01T00:00:00Z' : k === 'after_id' ? '1' : COLLECTION],
        [k, k === 'limit' ? '6' : k === 'job_id' ? w.adminJobId : k === 'since' ? '2020-01-01T00:00:00Z' : k === 'after_id' ? '2' : COLLECTION],
      ] as Pairs,
      poison: `${k} repeated`,
    })),
    unknownParam(['job_id', 'collection', 'since', 'after_id', 'limit']),
  );
  const audit: RouteSpec = {
    method: 'GET',
    template: '/v1/audit',
    valid: validAudit.map((pairs) => ({ url: withQuery('/v1/audit', pairs) })),
    poisons: [admin(poisonedGet('/v1/audit', validAudit, auditPoison))],
  };

  const JOB_LIST_KEYS = ['state', 'type', 'since', 'limit', 'cursor'];
  const jobCursor = encodeJobCursor({ createdAt: '2030-01-01T00:00:00.000000Z', id: '00000000-0000-4000-8000-000000000000' });
  const validJobList = fc.subarray<[string, string]>([
    ['state', 'failed'],
    ['type', 'tokens.delete'],
    ['since', '2020-01-01'],
    ['limit', '10'],
    ['cursor', jobCursor],
  ]);
  const forgedCursor = (text: string) => Buffer.from(text, 'utf8').toString('base64url');
  const jobListPoison: fc.Arbitrary<QueryPoison> = fc.oneof(
    fc
      .oneof(hostileText, fc.constantFrom('FAILED', 'failed ', 'done', ''))
      .filter((s) => !JobState.options.includes(s as JobState))
      .map((s) => ({ pairs: [['state', s]] as Pairs, poison: 'bad state' })),
    fc
      .oneof(hostileText, fc.constantFrom('TOKENS.DELETE', 'tokens', 'tokens.delete,tokens.rotate'))
      .filter((s) => !(commandTypes as string[]).includes(s))
      .map((s) => ({ pairs: [['type', s]] as Pairs, poison: 'bad type' })),
    badSince,
    fc
      .oneof(hostileText, fc.integer().map(String), fc.double().map(String))
      .filter((s) => !validLimit(s) || Number(s) > 500)
      .map((s) => ({ pairs: [['limit', s]] as Pairs, poison: `bad limit ${s.slice(0, 25)}` })),
    fc
      .oneof(
        hostileText,
        hostileText.map(forgedCursor),
        fc.constantFrom('2021-02-30T00:00:00.000000Z', '0000-01-01T00:00:00.000000Z', '2030-01-01T00:00:00Z').map((t) => forgedCursor(`${t} 00000000-0000-4000-8000-000000000000`)),
        fc.constant(`${jobCursor}%00`),
      )
      .filter((s) => decodeJobCursor(s) === undefined)
      .map((s) => ({ pairs: [['cursor', s]] as Pairs, poison: 'bad cursor' })),
    fc.constantFrom(...JOB_LIST_KEYS).map((k) => {
      const v = { state: 'failed', type: 'tokens.delete', since: '2020-01-01', limit: '5', cursor: jobCursor }[k]!;
      return {
        pairs: [
          [k, v],
          [k, v],
        ] as Pairs,
        poison: `${k} repeated`,
      };
    }),
    unknownParam(JOB_LIST_KEYS),
  );
  const jobList: RouteSpec = {
    method: 'GET',
    template: '/v1/jobs',
    valid: validJobList.map((pairs) => ({ url: withQuery('/v1/jobs', pairs) })),
    poisons: [admin(poisonedGet('/v1/jobs', validJobList, jobListPoison))],
  };

  return {
    'POST /v1/collections': collections,
    'POST /v1/subjects': subjects,
    'POST /v1/subjects/:id/tokens': issue,
    'GET /v1/subjects/:id': subjectRead,
    'PATCH /v1/subjects/:id': subjectUpdate,
    'GET /v1/subjects/:id/tokens': subjectTokens,
    'GET /v1/auth/verify': verify,
    'GET /v1/jobs/:id': jobs,
    'POST /v1/jobs/:id/cancel': cancelJob,
    'GET /v1/jobs': jobList,
    'GET /v1/audit': audit,
  };
}

describeHostileRoutes('jobs-subjects', specs);
