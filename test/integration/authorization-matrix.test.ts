import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Capability, capabilities, COMMAND_QUEUE, CommandPreview, type ErrorCode, errorRegistry, JobView } from '../../contracts/index.js';
import { bearer, call, createCollection, type SubjectSpec, subjectWithToken, uid, waitForJob } from '../helpers/api.js';
import { type Family, keystoneError, onezoneError, piianoError } from '../helpers/envelopes.js';
import { servedRoutes } from '../helpers/routes.js';
import { type Stack, startStack } from '../helpers/stack.js';

/**
 * One table: every route the app serves × every credential situation of SPEC §2 / §6, each
 * cell the documented status in the route family's error envelope (SPEC §7), or "n/a" with
 * the reason. The route list comes from the running app, so a new route without a row fails.
 */

const COLLECTION = 'mx_cards';
const OTHER_COLLECTION = 'mx_other';
/** Mutating dashboard routes are aimed at a queue that does not exist, so an admin changes nothing. */
const NO_SUCH_QUEUE = 'mx-no-such-queue';
const WAIT = { prefer: 'wait=30' };
const TENANT_A = 'mx-tenant-a';
const OUTSIDE_TENANT = { 'x-tenant-id': 'mx-tenant-b' };

/**
 * The columns. Credential situations (401 wherever a credential is needed): none; malformed
 * (`Bearer two words`); unknown (well-formed, never issued); expired (a temporary token past
 * its expiry); revoked (a temporary token of an older generation). Then, each with a caller that
 * would otherwise be allowed: missingCapability (every capability but the route's),
 * collectionOutsideScope, tenantOutsideScope (X-Tenant-Id outside the subject's tenants),
 * otherDomain (Keystone: a security_admin of another domain), otherUser (acting on another
 * user's tokens, job, audit), providerVsUser (a user on the Onezone provider routes), entitled
 * (the least-privileged caller the docs allow: the positive control), admin (the bootstrap admin).
 */
const SITUATIONS = [
  'noCredential',
  'malformed',
  'unknown',
  'expired',
  'revoked',
  'missingCapability',
  'collectionOutsideScope',
  'tenantOutsideScope',
  'otherDomain',
  'otherUser',
  'providerVsUser',
  'entitled',
  'admin',
] as const;
type Situation = (typeof SITUATIONS)[number];

type Headers = Record<string, string>;

interface Principal {
  id: string;
  token: string;
  tokenId: string;
  headers: Headers;
}

/** Everything the cells act with, made once in beforeAll. */
interface Fixtures {
  stack: Stack;
  /** A user holding every capability (no scope): whatever it is refused, no capability is missing. */
  root: Principal;
  /** Credentials that authenticated once: a temporary token past its expiry, and one of an older generation. */
  expired: Record<'user' | 'provider', Headers>;
  revoked: Record<'user' | 'provider', Headers>;
  /** Every capability, limited to OTHER_COLLECTION. */
  collectionScoped: Principal;
  /** Every capability, limited to TENANT_A; a user and a provider. */
  tenantUser: Principal;
  tenantProvider: Principal;
  /** Every capability (security_admin included), but in another domain than everybody else. */
  otherDomainAdmin: Principal;
  /** Users with no capability at all. */
  plain: Principal;
  otherPlain: Principal;
  /** A provider with no capability. */
  provider: Principal;
  /** The user whose tokens the admin acts on. */
  victim: Principal;
  /** A job `plain` submitted, finished, with audit rows. */
  plainJobId: string;
  /** A job of `plain`'s that was cancelled: cancelling it again answers it (200), changing nothing. */
  plainCancelledJobId: string;
  /** A subject holding every capability but `capability` (same domain, no scope). */
  allBut(capability: Capability): Promise<Principal>;
  /** A subject holding exactly these capabilities. */
  only(...held: Capability[]): Promise<Principal>;
  /** Issues `subjectId` another access token (as the admin); returns its secret. */
  issue(subjectId: string, body?: { temporary: boolean; ttl_seconds?: number }): Promise<string>;
}

interface Req {
  url: string;
  headers?: Headers;
  body?: unknown;
}

interface Res {
  status: number;
  headers: Record<string, string | string[] | number | undefined>;
  body: any;
}

interface Outcome {
  status: number;
  /** An error: the registry code, checked through the family's envelope. */
  code?: ErrorCode;
  /** More to check on the answer (success bodies). */
  check?: (res: Res, fx: Fixtures, label: string) => void;
  /** Only "our gate let the caller through": not 401/403, not 5xx (bull-board's own answers). */
  gate?: true;
}

interface Act extends Outcome {
  /** Who calls; the credential situations and `admin` have their own. */
  caller?: (fx: Fixtures) => Headers | Promise<Headers>;
  /** The request, when it is not the row's. */
  request?: (fx: Fixtures) => Req | Promise<Req>;
  /** Extra headers (X-Tenant-Id). */
  headers?: Headers;
}

type Cell = { na: string } | Act;

interface Row {
  family: Family;
  /** The bull-board dashboard: a 401 carries a Basic challenge. */
  dashboard?: true;
  /** Whose expired and revoked credentials to try: a provider's on the provider routes. */
  principal?: 'user' | 'provider';
  /** The request the admin (and the credential situations) send. */
  request: (fx: Fixtures) => Req | Promise<Req>;
  cells: Record<Situation, Cell>;
}

const na = (why: string): Cell => ({ na: why });
const refused = (status: number, code: ErrorCode): Outcome => ({ status, code });

/** The five ways of not being authenticated: 401 PV1005 on every route that needs a credential. */
const UNAUTHENTICATED = {
  noCredential: refused(401, 'PV1005'),
  malformed: refused(401, 'PV1005'),
  unknown: refused(401, 'PV1005'),
  expired: refused(401, 'PV1005'),
  revoked: refused(401, 'PV1005'),
} satisfies Partial<Record<Situation, Cell>>;

/** Public routes read no credential, good or bad. */
const IGNORES_CREDENTIALS = {
  noCredential: { status: 200 },
  malformed: { status: 200 },
  unknown: { status: 200 },
  expired: { status: 200 },
  revoked: { status: 200 },
} satisfies Partial<Record<Situation, Cell>>;

const PUBLIC_NA = {
  missingCapability: na('public route: needs no credential, so no capability'),
  collectionOutsideScope: na('public route: touches no collection'),
  tenantOutsideScope: na('public route: there is no caller whose tenant scope X-Tenant-Id could leave'),
  otherDomain: na('public route: no caller, no domain'),
  otherUser: na('public route: acts on nobody'),
  providerVsUser: na('public route: no caller kind'),
  entitled: na('public route: anyone is entitled, see noCredential'),
} satisfies Partial<Record<Situation, Cell>>;

const ONLY_ADMIN = 'only subjects:admin may call it: see the admin cell';

/** 202 with the job view and its Location (SPEC §5). */
function accepted(res: Res, _fx: Fixtures, label: string): void {
  const parsed = JobView.safeParse(res.body);
  expect.soft(parsed.success, `${label}: 202 body is a job view`).toBe(true);
  expect.soft(res.headers.location, `${label}: Location`).toBe(`/v1/jobs/${res.body?.job_id}`);
}

/** A seed route's own answer once its job ended (SPEC §5): `body`, and the job's Location. */
function answered(body: unknown) {
  return (res: Res, _fx: Fixtures, label: string): void => {
    expect.soft(res.body, label).toEqual(body);
    expect.soft(res.headers.location, `${label}: Location`).toMatch(/^\/v1\/jobs\/[0-9a-f-]{36}$/);
  };
}
const nothingMatched = { status: 404, check: answered(piianoError('PV3009', {})) };
const noContent = { status: 204, check: answered(undefined) };

/** `{ generation: N }` of the Onezone GET routes. */
function generation(res: Res, _fx: Fixtures, label: string): void {
  expect.soft(res.body, label).toEqual({ generation: expect.any(Number) });
}

const vaultUrl = (collection: string, rest: string) => `/api/pvlt/1.0/data/collections/${collection}/${rest}`;

/** A Piiano vault-token route: its capability, collection and tenant scope, and its success answer. */
function vaultRow(needs: Capability, request: (collection: string) => Req, ok: Outcome): Row {
  return {
    family: 'piiano',
    request: () => request(COLLECTION),
    cells: {
      ...UNAUTHENTICATED,
      missingCapability: { caller: async (fx) => (await fx.allBut(needs)).headers, ...refused(403, 'PV1007') },
      collectionOutsideScope: { caller: (fx) => fx.collectionScoped.headers, ...refused(403, 'PV1007') },
      tenantOutsideScope: { caller: (fx) => fx.tenantUser.headers, headers: OUTSIDE_TENANT, ...refused(403, 'PV1006') },
      otherDomain: na('vault tokens have no domain: domains only matter to Keystone'),
      otherUser: na('vault tokens belong to tenants, not users: see tenant-isolation.test.ts'),
      providerVsUser: na('only the Onezone provider routes look at the caller kind'),
      entitled: { caller: async (fx) => (await fx.only(needs)).headers, ...ok },
      admin: ok,
    },
  };
}

const onezoneUserUrl = (id: string) => `/api/v3/onezone/users/${id}/tokens/temporary`;
const PROVIDER_URL = '/api/v3/onezone/provider/tokens/temporary';

/** The Onezone user routes (DELETE revokes, GET reads the generation): the user, or tokens:manage. */
function onezoneUserRow(ok: Outcome): Row {
  return {
    family: 'onezone',
    request: (fx) => ({ url: onezoneUserUrl(fx.victim.id) }),
    cells: {
      ...UNAUTHENTICATED,
      missingCapability: { caller: async (fx) => (await fx.allBut('tokens:manage')).headers, ...refused(403, 'PV1007') },
      collectionOutsideScope: na('temporary tokens are not in collections'),
      tenantOutsideScope: { caller: (fx) => fx.tenantUser.headers, request: (fx) => ({ url: onezoneUserUrl(fx.tenantUser.id) }), headers: OUTSIDE_TENANT, ...refused(403, 'PV1006') },
      otherDomain: na('Onezone has no domains: tokens:manage covers every user'),
      otherUser: { caller: (fx) => fx.plain.headers, request: (fx) => ({ url: onezoneUserUrl(fx.otherPlain.id) }), ...refused(403, 'PV1007') },
      // a provider naming its own ID on the *user* route is not that user
      providerVsUser: { caller: (fx) => fx.provider.headers, request: (fx) => ({ url: onezoneUserUrl(fx.provider.id) }), ...refused(403, 'PV1007') },
      entitled: { caller: (fx) => fx.plain.headers, request: (fx) => ({ url: onezoneUserUrl(fx.plain.id) }), ...ok },
      admin: ok,
    },
  };
}

/** The Onezone provider routes: the calling provider only, whatever its capabilities. */
function onezoneProviderRow(ok: Outcome): Row {
  return {
    family: 'onezone',
    principal: 'provider',
    request: () => ({ url: PROVIDER_URL }),
    cells: {
      ...UNAUTHENTICATED,
      missingCapability: na('needs no capability: the route acts on the calling provider itself'),
      collectionOutsideScope: na('temporary tokens are not in collections'),
      tenantOutsideScope: { caller: (fx) => fx.tenantProvider.headers, headers: OUTSIDE_TENANT, ...refused(403, 'PV1006') },
      otherDomain: na('Onezone has no domains'),
      otherUser: na('the route names no subject: it acts on the caller only'),
      providerVsUser: { caller: (fx) => fx.root.headers, ...refused(403, 'PV1007') },
      entitled: { caller: (fx) => fx.provider.headers, ...ok },
      // the bootstrap admin is a service: not a provider, so refused like any user
      admin: refused(403, 'PV1007'),
    },
  };
}

/** An admin-only native route (one that creates something makes a fresh name per call). */
function adminOnlyRow(request: (fx: Fixtures) => Req | Promise<Req>, ok: Outcome): Row {
  return {
    family: 'native',
    request,
    cells: {
      ...UNAUTHENTICATED,
      missingCapability: { caller: async (fx) => (await fx.allBut('subjects:admin')).headers, ...refused(403, 'PV1007') },
      collectionOutsideScope: na('subjects:admin is not limited by a collection scope'),
      tenantOutsideScope: { caller: (fx) => fx.tenantUser.headers, headers: OUTSIDE_TENANT, ...refused(403, 'PV1006') },
      otherDomain: na('subjects:admin acts on subjects and collections of every domain'),
      otherUser: na('only subjects:admin acts on subjects and collections: see missingCapability'),
      providerVsUser: na('only the Onezone provider routes look at the caller kind'),
      entitled: na(ONLY_ADMIN),
      admin: ok,
    },
  };
}

/** A public operational route. */
function publicRow(): Row {
  return { family: 'native', request: () => ({ url: '' }), cells: { ...IGNORES_CREDENTIALS, ...PUBLIC_NA, admin: { status: 200 } } };
}

/**
 * Routes bull-board serves under /admin/queues, as Fastify lists them. Listed one by one so a
 * bull-board upgrade that adds a route fails this test until the route is looked at.
 */
const DASHBOARD_ROUTES = [
  'GET /admin/queues',
  'GET /admin/queues/metrics-history',
  'GET /admin/queues/job-schedulers',
  'GET /admin/queues/queue/:queueName',
  'GET /admin/queues/queue/:queueName/:jobId',
  'GET /admin/queues/api/redis/stats',
  'GET /admin/queues/api/queues',
  'PUT /admin/queues/api/queues/pause',
  'PUT /admin/queues/api/queues/resume',
  'GET /admin/queues/api/queues/:queueName/metrics',
  'GET /admin/queues/api/queues/:queueName/default-job-options',
  'GET /admin/queues/api/queues/:queueName/workers',
  'GET /admin/queues/api/queues/:queueName/rate-limit',
  'PUT /admin/queues/api/queues/:queueName/rate-limit',
  'PUT /admin/queues/api/queues/:queueName/rate-limit/release',
  'PUT /admin/queues/api/queues/:queueName/retry/:queueStatus',
  'PUT /admin/queues/api/queues/:queueName/resume',
  'GET /admin/queues/api/queues/:queueName/job-data-schema',
  'PATCH /admin/queues/api/queues/:queueName/job-schedulers/:schedulerId',
  'PUT /admin/queues/api/queues/:queueName/job-schedulers/:schedulerId/remove',
  'PUT /admin/queues/api/queues/:queueName/job-schedulers/:schedulerId/run',
  'POST /admin/queues/api/queues/:queueName/add',
  'PUT /admin/queues/api/queues/:queueName/promote',
  'PUT /admin/queues/api/queues/:queueName/pause',
  'PUT /admin/queues/api/queues/:queueName/clean/:queueStatus',
  'PUT /admin/queues/api/queues/:queueName/concurrency',
  'PUT /admin/queues/api/queues/:queueName/empty',
  'PUT /admin/queues/api/queues/:queueName/obliterate',
  'GET /admin/queues/api/queues/:queueName/:jobId',
  'GET /admin/queues/api/queues/:queueName/:jobId/logs',
  'GET /admin/queues/api/queues/:queueName/:jobId/flow',
  'PUT /admin/queues/api/queues/:queueName/:jobId/retry',
  'PUT /admin/queues/api/queues/:queueName/:jobId/remove-unprocessed-children',
  'PUT /admin/queues/api/queues/:queueName/:jobId/clean',
  'PUT /admin/queues/api/queues/:queueName/:jobId/promote',
  'PATCH /admin/queues/api/queues/:queueName/:jobId/priority',
  'PATCH /admin/queues/api/queues/:queueName/:jobId/update-data',
  'PATCH /admin/queues/api/queues/:queueName/:jobId/delay',
  'GET /admin/queues/api/job-schedulers',
  // bull-board's static assets (/admin/queues/static/*): printRoutes shows that wildcard as a bare `*` child
  'GET /admin/queues*',
] as const;

/** Dashboard routes that act on every queue at once: an admin call would pause this stack's worker. */
const DASHBOARD_GLOBAL_ACTIONS = new Set(['PUT /admin/queues/api/queues/pause', 'PUT /admin/queues/api/queues/resume']);

function dashboardRow(route: string): Row {
  const [method, path] = route.split(' ') as [string, string];
  const mutating = method !== 'GET';
  const url = path
    .replace(':queueName', mutating ? NO_SUCH_QUEUE : COMMAND_QUEUE)
    .replace(':jobId', 'mx-no-such-job')
    .replace(':queueStatus', 'failed')
    .replace(':schedulerId', 'mx-no-such-scheduler')
    .replace('*', '/static/favicon.ico');
  return {
    family: 'native',
    dashboard: true,
    request: () => ({ url }),
    cells: {
      ...UNAUTHENTICATED,
      missingCapability: { caller: async (fx) => (await fx.allBut('subjects:admin')).headers, ...refused(403, 'PV1007') },
      collectionOutsideScope: na('the dashboard shows queues, not collections'),
      tenantOutsideScope: { caller: (fx) => fx.tenantUser.headers, headers: OUTSIDE_TENANT, ...refused(403, 'PV1006') },
      otherDomain: na('the dashboard is not per domain'),
      otherUser: na('the dashboard is not per user'),
      providerVsUser: na('the dashboard does not look at the caller kind'),
      entitled: na(ONLY_ADMIN),
      admin: DASHBOARD_GLOBAL_ACTIONS.has(route) ? na('pauses or resumes every queue of this stack; the GET rows show the admin gets through the gate') : { status: 0, gate: true },
    },
  };
}

/** Served routes left out of the table on purpose, each with the reason. Exact (method, path) pairs. */
const NOT_IN_MATRIX: Record<string, string> = {
  'GET /docs': 'public API documentation (Swagger UI), no data; openapi.test.ts',
  'GET /docs/json': 'public OpenAPI document; openapi.test.ts',
  'GET /docs/yaml': 'public OpenAPI document; openapi.test.ts',
  'GET /docs/static/index.html': 'Swagger UI static asset',
  'GET /docs/static/swagger-initializer.js': 'Swagger UI static asset',
  'GET /docs*': 'Swagger UI static assets (/docs/static/*, which printRoutes shows as a bare `*` child)',
};

const MATRIX: Record<string, Row> = {
  'POST /api/pvlt/1.0/data/collections/:collection/tokens': vaultRow('tokens:tokenize', (c) => ({ url: vaultUrl(c, 'tokens?reason=AppFunctionality'), body: [{ object: { id: 'mx-object' } }] }), {
    status: 200,
    check: (res, _fx, label) => expect.soft(res.body, label).toEqual([{ token_id: expect.any(String) }]),
  }),
  'POST /api/pvlt/1.0/data/collections/:collection/query/tokens': vaultRow('tokens:read', (c) => ({ url: vaultUrl(c, 'query/tokens?reason=AppFunctionality'), body: { tags: ['mx-none'] } }), {
    status: 200,
    check: (res, _fx, label) => expect.soft(res.body, label).toEqual([]),
  }),
  'GET /api/pvlt/1.0/data/collections/:collection/count/tokens': vaultRow('tokens:read', (c) => ({ url: vaultUrl(c, 'count/tokens?reason=AppFunctionality') }), {
    status: 200,
    check: (res, _fx, label) => expect.soft(res.body, label).toEqual({ active: expect.any(Number), archived: expect.any(Number), total: expect.any(Number) }),
  }),
  // an entitled caller's job runs and finds nothing: the seed's own answer
  'DELETE /api/pvlt/1.0/data/collections/:collection/tokens': vaultRow('tokens:write', (c) => ({ url: vaultUrl(c, 'tokens?tags=mx-none&reason=AppFunctionality') }), nothingMatched),
  'POST /api/pvlt/1.0/data/collections/:collection/rotate/tokens': vaultRow('tokens:write', (c) => ({ url: vaultUrl(c, 'rotate/tokens?token_ids=mx-none&reason=AppFunctionality') }), {
    status: 404,
    check: answered(piianoError('PV3087', { token_ids: 'mx-none' })),
  }),

  'DELETE /v3/auth/tokens': {
    family: 'keystone',
    request: async (fx) => ({ url: '/v3/auth/tokens', headers: { 'x-subject-token': await fx.issue(fx.victim.id) } }),
    cells: {
      ...UNAUTHENTICATED,
      // the same domain as the victim, every capability but security_admin
      missingCapability: { caller: async (fx) => (await fx.allBut('security_admin')).headers, ...refused(403, 'PV1007') },
      collectionOutsideScope: na('access tokens are not in collections'),
      tenantOutsideScope: {
        caller: (fx) => fx.tenantUser.headers,
        request: async (fx) => ({ url: '/v3/auth/tokens', headers: { 'x-subject-token': await fx.issue(fx.tenantUser.id) } }),
        headers: OUTSIDE_TENANT,
        ...refused(403, 'PV1006'),
      },
      otherDomain: { caller: (fx) => fx.otherDomainAdmin.headers, ...refused(403, 'PV1007') },
      otherUser: na("Keystone decides another user's token by security_admin (missingCapability) and domain (otherDomain)"),
      providerVsUser: na('Keystone does not look at the caller kind'),
      entitled: {
        caller: (fx) => fx.plain.headers,
        request: async (fx) => ({ url: '/v3/auth/tokens', headers: { 'x-subject-token': await fx.issue(fx.plain.id) } }),
        ...noContent,
      },
      admin: noContent,
    },
  },

  'GET /v3/auth/tokens': {
    family: 'keystone',
    request: (fx) => ({ url: '/v3/auth/tokens', headers: { 'x-subject-token': fx.victim.token } }),
    cells: {
      ...UNAUTHENTICATED,
      // someone else's token, every capability but tokens:verify
      missingCapability: { caller: async (fx) => (await fx.allBut('tokens:verify')).headers, ...refused(403, 'PV1007') },
      collectionOutsideScope: na('access tokens are not in collections'),
      tenantOutsideScope: {
        caller: (fx) => fx.tenantUser.headers,
        request: (fx) => ({ url: '/v3/auth/tokens', headers: { 'x-subject-token': fx.tenantUser.token } }),
        headers: OUTSIDE_TENANT,
        ...refused(403, 'PV1006'),
      },
      otherDomain: na('validation is tokens:verify or oneself, whatever the domain'),
      otherUser: { caller: (fx) => fx.plain.headers, ...refused(403, 'PV1007') },
      providerVsUser: na('validation does not look at the caller kind'),
      entitled: {
        caller: (fx) => fx.plain.headers,
        request: (fx) => ({ url: '/v3/auth/tokens', headers: { 'x-subject-token': fx.plain.token } }),
        status: 200,
        check: (res, fx, label) => expect.soft(res.body?.token?.user?.id, label).toBe(fx.plain.id),
      },
      admin: { status: 200, check: (res, fx, label) => expect.soft(res.body?.token?.user?.id, label).toBe(fx.victim.id) },
    },
  },

  'DELETE /api/v3/onezone/users/:id/tokens/temporary': onezoneUserRow(noContent),
  'GET /api/v3/onezone/users/:id/tokens/temporary': onezoneUserRow({ status: 200, check: generation }),
  'DELETE /api/v3/onezone/provider/tokens/temporary': onezoneProviderRow(noContent),
  'GET /api/v3/onezone/provider/tokens/temporary': onezoneProviderRow({ status: 200, check: generation }),

  'POST /v1/commands': {
    family: 'native',
    request: () => ({ url: '/v1/commands', body: { type: 'tokens.delete', collection: COLLECTION, tags: ['mx-none'], reason: 'AppFunctionality' } }),
    cells: {
      ...UNAUTHENTICATED,
      missingCapability: { caller: async (fx) => (await fx.allBut('tokens:write')).headers, ...refused(403, 'PV1007') },
      collectionOutsideScope: { caller: (fx) => fx.collectionScoped.headers, ...refused(403, 'PV1007') },
      tenantOutsideScope: { caller: (fx) => fx.tenantUser.headers, headers: OUTSIDE_TENANT, ...refused(403, 'PV1006') },
      otherDomain: {
        caller: (fx) => fx.otherDomainAdmin.headers,
        request: (fx) => ({ url: '/v1/commands', body: { type: 'access_token.revoke', token_id: fx.victim.tokenId } }),
        ...refused(403, 'PV1007'),
      },
      otherUser: {
        caller: (fx) => fx.plain.headers,
        request: (fx) => ({ url: '/v1/commands', body: { type: 'temporary_tokens.revoke_all', subject: { kind: 'user', id: fx.otherPlain.id } } }),
        ...refused(403, 'PV1007'),
      },
      providerVsUser: {
        caller: (fx) => fx.plain.headers,
        request: (fx) => ({ url: '/v1/commands', body: { type: 'temporary_tokens.revoke_all', subject: { kind: 'provider', id: fx.provider.id } } }),
        ...refused(403, 'PV1007'),
      },
      entitled: { caller: async (fx) => (await fx.only('tokens:write')).headers, status: 202, check: accepted },
      admin: { status: 202, check: accepted },
    },
  },

  // the cells cancel a job that is cancelled already (idempotent: 200, nothing changes); cancel.test.ts cancels live ones
  'POST /v1/jobs/:id/cancel': {
    family: 'native',
    request: (fx) => ({ url: `/v1/jobs/${fx.plainCancelledJobId}/cancel` }),
    cells: {
      ...UNAUTHENTICATED,
      missingCapability: na('needs no capability: a job is cancelled by its submitter (entitled) or subjects:admin (admin)'),
      collectionOutsideScope: na('a job is found by its ID, not in a collection'),
      tenantOutsideScope: { caller: (fx) => fx.tenantUser.headers, headers: OUTSIDE_TENANT, ...refused(403, 'PV1006') },
      otherDomain: na('jobs are not per domain'),
      otherUser: { caller: (fx) => fx.otherPlain.headers, ...refused(404, 'PV3005') },
      providerVsUser: na('jobs do not look at the caller kind'),
      entitled: { caller: (fx) => fx.plain.headers, status: 200, check: (res, fx, label) => expect.soft(res.body, label).toMatchObject({ job_id: fx.plainCancelledJobId, state: 'cancelled' }) },
      admin: { status: 200, check: (res, fx, label) => expect.soft(res.body, label).toMatchObject({ job_id: fx.plainCancelledJobId, state: 'cancelled' }) },
    },
  },

  'GET /v1/jobs/:id': {
    family: 'native',
    request: (fx) => ({ url: `/v1/jobs/${fx.plainJobId}` }),
    cells: {
      ...UNAUTHENTICATED,
      missingCapability: na('needs no capability: a job is visible to its submitter (entitled) and to subjects:admin (admin)'),
      collectionOutsideScope: na('a job is found by its ID, not in a collection'),
      // the tenant-scoped caller holds subjects:admin, so only its X-Tenant-Id is wrong
      tenantOutsideScope: { caller: (fx) => fx.tenantUser.headers, headers: OUTSIDE_TENANT, ...refused(403, 'PV1006') },
      otherDomain: na('jobs are not per domain'),
      otherUser: { caller: (fx) => fx.otherPlain.headers, ...refused(404, 'PV3005') },
      providerVsUser: na('jobs do not look at the caller kind'),
      entitled: { caller: (fx) => fx.plain.headers, status: 200, check: (res, fx, label) => expect.soft(res.body?.job_id, label).toBe(fx.plainJobId) },
      admin: { status: 200, check: (res, fx, label) => expect.soft(res.body?.job_id, label).toBe(fx.plainJobId) },
    },
  },

  'GET /v1/jobs': {
    family: 'native',
    request: () => ({ url: '/v1/jobs?limit=500' }),
    cells: {
      ...UNAUTHENTICATED,
      missingCapability: na('needs no capability: without subjects:admin the list holds the caller’s own jobs (entitled, otherUser)'),
      collectionOutsideScope: na('jobs are listed by submitter, not by collection'),
      tenantOutsideScope: { caller: (fx) => fx.tenantUser.headers, headers: OUTSIDE_TENANT, ...refused(403, 'PV1006') },
      otherDomain: na('jobs are not per domain'),
      otherUser: { caller: (fx) => fx.otherPlain.headers, status: 200, check: (res, _fx, label) => expect.soft(res.body, `${label}: none of plain’s jobs`).toEqual({ jobs: [], next_cursor: null }) },
      providerVsUser: na('jobs do not look at the caller kind'),
      entitled: {
        caller: (fx) => fx.plain.headers,
        status: 200,
        // other rows' cells submit more of plain's jobs; jobs-list.test.ts checks the list is exactly the caller's
        check: (res, fx, label) =>
          expect
            .soft(
              res.body?.jobs?.map((j: JobView) => j.job_id),
              `${label}: its own job`,
            )
            .toContain(fx.plainJobId),
      },
      admin: {
        status: 200,
        check: (res, fx, label) =>
          expect
            .soft(
              res.body?.jobs?.map((j: JobView) => j.job_id),
              label,
            )
            .toContain(fx.plainJobId),
      },
    },
  },

  'GET /v1/audit': {
    family: 'native',
    request: () => ({ url: '/v1/audit?limit=1000' }),
    cells: {
      ...UNAUTHENTICATED,
      missingCapability: na('needs no capability: without subjects:admin the trail is filtered (entitled, otherUser)'),
      collectionOutsideScope: na('the collection filter narrows what the caller may see anyway'),
      tenantOutsideScope: { caller: (fx) => fx.tenantUser.headers, headers: OUTSIDE_TENANT, ...refused(403, 'PV1006') },
      otherDomain: na('the audit trail is not per domain'),
      otherUser: {
        caller: (fx) => fx.otherPlain.headers,
        status: 200,
        check: (res, fx, label) => {
          const actors: string[] = (res.body?.entries ?? []).map((e: { actor: { id: string } }) => e.actor.id);
          expect.soft(actors, `${label}: nothing of ${fx.plain.id}`).not.toContain(fx.plain.id);
          expect
            .soft(
              actors.filter((a) => a !== fx.otherPlain.id),
              `${label}: only its own entries`,
            )
            .toEqual([]);
        },
      },
      providerVsUser: na('the audit trail does not look at the caller kind'),
      entitled: {
        caller: (fx) => fx.plain.headers,
        status: 200,
        check: (res, fx, label) => {
          const entries: { actor: { id: string }; job_id: string | null }[] = res.body?.entries ?? [];
          expect
            .soft(
              entries.map((e) => e.job_id),
              `${label}: its own job's entries`,
            )
            .toContain(fx.plainJobId);
          expect
            .soft(
              entries.filter((e) => e.actor.id !== fx.plain.id),
              `${label}: only its own entries`,
            )
            .toEqual([]);
        },
      },
      admin: {
        status: 200,
        check: (res, fx, label) =>
          expect
            .soft(
              res.body?.entries?.map((e: { job_id: string | null }) => e.job_id),
              label,
            )
            .toContain(fx.plainJobId),
      },
    },
  },

  'POST /v1/collections': adminOnlyRow(() => ({ url: '/v1/collections', body: { name: `mx_${randomBytes(5).toString('hex')}` } }), {
    status: 201,
    check: (res, _fx, label) => expect.soft(res.body, label).toEqual({ name: expect.stringMatching(/^mx_/), created_at: expect.any(String) }),
  }),
  'POST /v1/subjects': adminOnlyRow(() => ({ url: '/v1/subjects', body: { id: uid('mx-made'), kind: 'user' } }), {
    status: 201,
    check: (res, _fx, label) => expect.soft(res.body, label).toMatchObject({ id: expect.stringMatching(/^mx-made_/), kind: 'user', capabilities: [] }),
  }),

  'GET /v1/subjects/:id': adminOnlyRow((fx) => ({ url: `/v1/subjects/${fx.victim.id}` }), {
    status: 200,
    check: (res, fx, label) => expect.soft(res.body, label).toMatchObject({ id: fx.victim.id, kind: 'user', disabled_at: null }),
  }),
  // each call changes a subject of its own, made for it
  'PATCH /v1/subjects/:id': adminOnlyRow(
    async (fx) => {
      const made = await call(fx.stack, 'POST', '/v1/subjects', { headers: fx.stack.admin, body: { id: uid('mx-patched'), kind: 'user' } });
      expect(made.status).toBe(201);
      return { url: `/v1/subjects/${made.body.id}`, body: { capabilities: ['tokens:read'] } };
    },
    { status: 200, check: (res, _fx, label) => expect.soft(res.body, label).toMatchObject({ id: expect.stringMatching(/^mx-patched_/), capabilities: ['tokens:read'] }) },
  ),
  'GET /v1/subjects/:id/tokens': adminOnlyRow((fx) => ({ url: `/v1/subjects/${fx.victim.id}/tokens` }), {
    status: 200,
    check: (res, fx, label) =>
      expect
        .soft(
          res.body?.tokens?.map((t: { token_id: string }) => t.token_id),
          label,
        )
        .toContain(fx.victim.tokenId),
  }),

  'POST /v1/subjects/:id/tokens': {
    family: 'native',
    request: (fx) => ({ url: `/v1/subjects/${fx.victim.id}/tokens`, body: { temporary: false } }),
    cells: {
      ...UNAUTHENTICATED,
      // a named token, even for oneself, needs subjects:admin
      missingCapability: { caller: (fx) => fx.plain.headers, request: (fx) => ({ url: `/v1/subjects/${fx.plain.id}/tokens`, body: { temporary: false } }), ...refused(403, 'PV1007') },
      collectionOutsideScope: na('access tokens are not in collections'),
      tenantOutsideScope: {
        caller: (fx) => fx.tenantUser.headers,
        request: (fx) => ({ url: `/v1/subjects/${fx.tenantUser.id}/tokens`, body: { temporary: true } }),
        headers: OUTSIDE_TENANT,
        ...refused(403, 'PV1006'),
      },
      otherDomain: na('issuing is subjects:admin or oneself, whatever the domain'),
      otherUser: { caller: (fx) => fx.plain.headers, request: (fx) => ({ url: `/v1/subjects/${fx.otherPlain.id}/tokens`, body: { temporary: true } }), ...refused(403, 'PV1007') },
      providerVsUser: na('issuing does not look at the caller kind'),
      entitled: {
        caller: (fx) => fx.plain.headers,
        request: (fx) => ({ url: `/v1/subjects/${fx.plain.id}/tokens`, body: { temporary: true } }),
        status: 201,
        check: (res, _fx, label) => expect.soft(res.body, label).toMatchObject({ temporary: true, token: expect.any(String) }),
      },
      admin: { status: 201, check: (res, _fx, label) => expect.soft(res.body, label).toMatchObject({ temporary: false, token: expect.any(String) }) },
    },
  },

  'GET /v1/auth/verify': {
    family: 'native',
    request: (fx) => ({ url: '/v1/auth/verify', headers: { 'x-subject-token': fx.victim.token } }),
    cells: {
      ...UNAUTHENTICATED,
      missingCapability: na("needs no capability for one's own token; someone else's needs tokens:verify: see otherUser"),
      collectionOutsideScope: na('access tokens are not in collections'),
      tenantOutsideScope: {
        caller: (fx) => fx.tenantUser.headers,
        request: (fx) => ({ url: '/v1/auth/verify', headers: { 'x-subject-token': fx.tenantUser.token } }),
        headers: OUTSIDE_TENANT,
        ...refused(403, 'PV1006'),
      },
      otherDomain: na('verification is tokens:verify or oneself, whatever the domain'),
      otherUser: { caller: (fx) => fx.plain.headers, ...refused(403, 'PV1007') },
      providerVsUser: na('verification does not look at the caller kind'),
      entitled: {
        caller: (fx) => fx.plain.headers,
        request: (fx) => ({ url: '/v1/auth/verify', headers: { 'x-subject-token': fx.plain.token } }),
        status: 200,
        check: (res, fx, label) => expect.soft(res.body?.subject?.id, label).toBe(fx.plain.id),
      },
      admin: { status: 200, check: (res, fx, label) => expect.soft(res.body?.subject?.id, label).toBe(fx.victim.id) },
    },
  },

  'GET /healthz': { ...publicRow(), request: () => ({ url: '/healthz' }) },
  'GET /readyz': { ...publicRow(), request: () => ({ url: '/readyz' }) },
  'GET /metrics': { ...publicRow(), request: () => ({ url: '/metrics' }) },

  ...Object.fromEntries(DASHBOARD_ROUTES.map((route) => [route, dashboardRow(route)])),
};

/** Whether a concrete URL is one the route template matches (the row calls its own route). */
function matchesTemplate(template: string, url: string): boolean {
  const path = url.split('?')[0] ?? '';
  const pattern = template
    .split('/')
    .map((part) => (part.startsWith(':') ? '[^/]+' : part.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace('*', '.*')))
    .join('/');
  return new RegExp(`^${pattern}/?$`).test(path);
}

/** Onedata's error ids (ctool's errors:to_json) of the codes the Onezone rows answer. */
const ONEDATA_IDS: Partial<Record<ErrorCode, string>> = { PV1005: 'unauthorized', PV1006: 'forbidden', PV1007: 'forbidden', PV3003: 'notFound' };

function onedataId(code: ErrorCode): string {
  const id = ONEDATA_IDS[code];
  if (id === undefined) throw new Error(`no Onedata id expected for ${code}: add it to ONEDATA_IDS`);
  return id;
}

/** The body of an error `code` in a family's envelope (SPEC §7). */
function envelope(family: Family, code: ErrorCode): unknown {
  switch (family) {
    case 'piiano':
    case 'native':
      return piianoError(code);
    case 'keystone':
      return keystoneError(errorRegistry[code].status);
    case 'onezone':
      return onezoneError(onedataId(code), code);
  }
}

describe('authorization matrix', () => {
  let stack: Stack;
  let fx: Fixtures;

  async function principal(spec: SubjectSpec, token?: { temporary: boolean; ttl_seconds?: number }): Promise<Principal> {
    const made = await subjectWithToken(stack, { id: uid(`mx-${spec.kind}`), ...spec }, token);
    return { id: made.subject.id as string, token: made.token, tokenId: made.tokenId, headers: made.headers };
  }

  /** Whether a credential authenticates (and is not refused anything on this route). */
  async function authenticates(headers: Headers): Promise<boolean> {
    return (await call(stack, 'GET', '/v1/audit?limit=1', { headers })).status === 200;
  }

  beforeAll(async () => {
    stack = await startStack();
    await createCollection(stack, COLLECTION);
    await createCollection(stack, OTHER_COLLECTION);
    const every = [...capabilities];

    const memo = new Map<string, Promise<Principal>>();
    const once = (key: string, make: () => Promise<Principal>) => {
      if (!memo.has(key)) memo.set(key, make());
      return memo.get(key)!;
    };

    const root = await principal({ kind: 'user', capabilities: every });

    // credentials that worked once, then expired / were revoked; each checked both ways
    const expired = { user: await principal({ kind: 'user', capabilities: every }, { temporary: true }), provider: await principal({ kind: 'provider', capabilities: every }, { temporary: true }) };
    const revoked = { user: await principal({ kind: 'user', capabilities: every }, { temporary: true }), provider: await principal({ kind: 'provider', capabilities: every }, { temporary: true }) };
    for (const p of [...Object.values(expired), ...Object.values(revoked)]) expect(await authenticates(p.headers)).toBe(true);
    for (const p of Object.values(expired)) {
      await stack.database.db
        .updateTable('access_tokens')
        .set({ expires_at: new Date(Date.now() - 60_000) })
        .where('id', '=', p.tokenId)
        .execute();
    }
    const bumpUser = await call(stack, 'DELETE', onezoneUserUrl(revoked.user.id), { headers: { ...stack.admin, ...WAIT } });
    expect(bumpUser.status).toBe(204);
    const bumpProvider = await call(stack, 'DELETE', PROVIDER_URL, { headers: { ...(await subjectToken(revoked.provider.id)), ...WAIT } });
    expect(bumpProvider.status).toBe(204);
    for (const [state, group] of [
      ['expired', expired],
      ['revoked', revoked],
    ] as const) {
      for (const p of Object.values(group)) {
        const verified = await call(stack, 'GET', '/v1/auth/verify', { headers: { ...stack.admin, 'x-subject-token': p.token } });
        expect(verified.body?.context?.reason).toBe(state);
      }
    }

    const plain = await principal({ kind: 'user' });
    const job = await call(stack, 'DELETE', onezoneUserUrl(plain.id), { headers: { ...plain.headers, prefer: 'respond-async' } });
    expect(job.status).toBe(202);
    expect(await waitForJob(stack, job.body.job_id, plain.headers)).toMatchObject({ state: 'succeeded' });
    // a cancelled job of plain's (written as a cancel leaves it: a worker would run a queued one at once)
    const plainCancelledJobId = randomUUID();
    const audit = { actor: { id: plain.id, kind: 'user' }, tenant_ids: null, reason: null, adhoc_reason: null, custom_audit: null, request_id: 'mx', source: 'http' };
    await stack.database.db
      .insertInto('commands')
      .values({
        id: plainCancelledJobId,
        type: 'temporary_tokens.revoke_all',
        payload: JSON.stringify({ type: 'temporary_tokens.revoke_all', subject: { kind: 'user', id: plain.id } }),
        payload_hash: 'mx',
        submitter_id: plain.id,
        audit: JSON.stringify(audit),
        state: 'cancelled',
        finished_at: new Date(),
      })
      .execute();

    fx = {
      stack,
      root,
      expired: { user: expired.user.headers, provider: expired.provider.headers },
      revoked: { user: revoked.user.headers, provider: revoked.provider.headers },
      collectionScoped: await principal({ kind: 'user', capabilities: every, collections: [OTHER_COLLECTION] }),
      tenantUser: await principal({ kind: 'user', capabilities: every, tenant_ids: [TENANT_A] }),
      tenantProvider: await principal({ kind: 'provider', capabilities: every, tenant_ids: [TENANT_A] }),
      otherDomainAdmin: await principal({ kind: 'user', capabilities: every, domain_id: 'mx-elsewhere' }),
      plain,
      otherPlain: await principal({ kind: 'user' }),
      provider: await principal({ kind: 'provider' }),
      victim: await principal({ kind: 'user' }),
      plainJobId: job.body.job_id,
      plainCancelledJobId,
      allBut: (capability) => once(`but:${capability}`, () => principal({ kind: 'user', capabilities: every.filter((c) => c !== capability) })),
      only: (...held) => once(`only:${held.join(',')}`, () => principal({ kind: 'service', capabilities: held })),
      async issue(subjectId, body = { temporary: false }) {
        const r = await call(stack, 'POST', `/v1/subjects/${subjectId}/tokens`, { headers: stack.admin, body });
        expect(r.status).toBe(201);
        return r.body.token as string;
      },
    };
  });
  afterAll(() => stack?.close());

  /** A fresh named token of a subject, as headers. */
  async function subjectToken(subjectId: string): Promise<Headers> {
    const r = await call(stack, 'POST', `/v1/subjects/${subjectId}/tokens`, { headers: stack.admin, body: { temporary: false } });
    expect(r.status).toBe(201);
    return bearer(r.body.token);
  }

  async function credentialFor(situation: Situation, row: Row, cell: Act): Promise<Headers> {
    const kind = row.principal ?? 'user';
    switch (situation) {
      case 'noCredential':
        return {};
      case 'malformed':
        return { authorization: 'Bearer two words' };
      case 'unknown':
        return bearer(`rvk_${randomBytes(32).toString('base64url')}`);
      case 'expired':
        return fx.expired[kind];
      case 'revoked':
        return fx.revoked[kind];
      case 'admin':
        return cell.caller ? cell.caller(fx) : stack.admin;
      default:
        if (!cell.caller) throw new Error(`${situation}: the cell names no caller`);
        return cell.caller(fx);
    }
  }

  async function send(method: string, req: Req, headers: Headers): Promise<Res> {
    const response = await stack.producer.app.inject({
      method: method as 'GET',
      url: req.url,
      headers: { ...(req.body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
      ...(req.body !== undefined ? { payload: JSON.stringify(req.body) } : {}),
    });
    let body: unknown;
    try {
      body = response.body ? JSON.parse(response.body) : undefined;
    } catch {
      body = response.body;
    }
    return { status: response.statusCode, headers: response.headers, body };
  }

  it('answers every served route × credential situation as documented, in the route family envelope', async () => {
    // 1. the table covers exactly the routes the app serves
    const routes = servedRoutes(stack.producer.app);
    // a HEAD is left out only where the same path has a GET (Fastify adds those itself)
    const served = routes.filter((r) => r.method !== 'HEAD' || !routes.some((g) => g.method === 'GET' && g.path === r.path)).map((r) => `${r.method} ${r.path}`);
    expect(served).toEqual(expect.arrayContaining(['POST /v1/commands', 'GET /v1/jobs/:id', 'DELETE /v3/auth/tokens', 'GET /admin/queues']));
    const withoutRow = served.filter((route) => !(route in MATRIX) && !(route in NOT_IN_MATRIX));
    expect(withoutRow, 'served routes with no row in the matrix (add one, or an allow-list entry with a reason)').toEqual([]);
    const stale = [...Object.keys(MATRIX), ...Object.keys(NOT_IN_MATRIX)].filter((route) => !served.includes(route));
    expect(stale, 'rows for routes the app does not serve').toEqual([]);

    // 2. every cell
    let ran = 0;
    let notApplicable = 0;
    for (const [route, row] of Object.entries(MATRIX)) {
      const [method, template] = route.split(' ') as [string, string];
      for (const situation of SITUATIONS) {
        const cell = row.cells[situation];
        const label = `${route} × ${situation}`;
        if ('na' in cell) {
          expect(cell.na.length, `${label}: n/a needs a reason`).toBeGreaterThan(10);
          notApplicable += 1;
          continue;
        }
        const req = await (cell.request ?? row.request)(fx);
        expect(matchesTemplate(template, req.url), `${label}: ${req.url} is not this row's route`).toBe(true);
        const headers = { ...req.headers, ...(await credentialFor(situation, row, cell)), ...cell.headers };
        const res = await send(method, req, headers);
        ran += 1;

        if (cell.gate) {
          expect.soft([401, 403], `${label}: the admin is let through (got ${res.status})`).not.toContain(res.status);
          expect.soft(res.status, `${label}: no server error`).toBeLessThan(500);
          continue;
        }
        expect.soft(res.status, `${label}: status (body ${JSON.stringify(res.body)?.slice(0, 200)})`).toBe(cell.status);
        if (cell.code) {
          expect.soft(String(res.headers['content-type']), `${label}: content type`).toMatch(/^application\/json/);
          expect.soft(res.body, `${label}: ${row.family} envelope of ${cell.code}`).toEqual(envelope(row.family, cell.code));
          if (row.dashboard) {
            const challenge = res.headers['www-authenticate'];
            if (cell.status === 401) expect.soft(String(challenge), `${label}: Basic challenge`).toMatch(/^Basic realm="/);
            else expect.soft(challenge, `${label}: no challenge`).toBeUndefined();
          }
        }
        cell.check?.(res, fx, label);
      }
    }
    expect(ran + notApplicable).toBe(Object.keys(MATRIX).length * SITUATIONS.length);
    expect(ran).toBeGreaterThan(notApplicable);
  });

  it('answers POST /v1/commands?dry_run=true in every situation as the submission: the same refusals, and a 200 preview where it accepts (SPEC §10)', async () => {
    const row = MATRIX['POST /v1/commands']!;
    const commandsBefore = await stack.database.db
      .selectFrom('commands')
      .select((eb) => eb.fn.countAll<string>().as('n'))
      .executeTakeFirstOrThrow();
    let ran = 0;
    for (const situation of SITUATIONS) {
      const cell = row.cells[situation];
      if ('na' in cell) continue;
      const label = `POST /v1/commands?dry_run=true × ${situation}`;
      const req = await (cell.request ?? row.request)(fx);
      const res = await send('POST', { ...req, url: `${req.url}?dry_run=true` }, { ...req.headers, ...(await credentialFor(situation, row, cell)), ...cell.headers });
      ran += 1;
      if (cell.status === 202) {
        expect.soft(res.status, `${label}: a preview`).toBe(200);
        expect.soft(CommandPreview.safeParse(res.body).success, `${label}: the preview body`).toBe(true);
        expect.soft(res.headers.location, `${label}: no job`).toBeUndefined();
        continue;
      }
      expect.soft(res.status, `${label}: status (body ${JSON.stringify(res.body)?.slice(0, 200)})`).toBe(cell.status);
      if (cell.code) expect.soft(res.body, `${label}: native envelope of ${cell.code}`).toEqual(envelope('native', cell.code));
    }
    expect(ran).toBeGreaterThan(5);
    const commandsAfter = await stack.database.db
      .selectFrom('commands')
      .select((eb) => eb.fn.countAll<string>().as('n'))
      .executeTakeFirstOrThrow();
    expect(commandsAfter.n, 'a dry run records nothing').toBe(commandsBefore.n);
  });
});
