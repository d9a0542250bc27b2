import { createHash, randomBytes, randomUUID } from 'node:crypto';
import fc from 'fast-check';
import type { LightMyRequestResponse } from 'fastify';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { insertAccessToken } from '../../../db/repositories/access-token.repository.js';
import { hashSecret } from '../../../producer/secrets.js';
import { createCollection, subjectWithToken, tokenize } from '../api.js';
import { envelopeProblem, familyOf } from '../envelopes.js';
import { servedRoutes } from '../routes.js';
import { ADMIN_TOKEN, type Stack, startStack } from '../stack.js';
import { ALL_METHODS, type Case, deepJson, type Headers, headerText, invalidJsonText, jsonHeaders, noise, NON_JSON_TYPES, pollutingJson, unknownSecret } from './generators.js';

/**
 * The harness of the hostile-input tests (SPEC §4.6, §7), one file per route family
 * (test/integration/hostile-input-*.test.ts): property-based tests that send malformed and
 * oversized requests to every route of the app. Every answer must be a 4xx in the route family's
 * envelope (never a 5xx, never a success) and leave Postgres and Redis exactly as they were.
 * The requests go through `app.inject()` (no sockets, for speed); the size limits, which
 * `inject` does not enforce, are tested over real sockets.
 *
 * Each file starts a world of its own (`describeHostileRoutes`, or `startWorld`): a stack with
 * no worker, its database and queue prefix, and the subjects, tokens and jobs the cases name.
 * Set FC_SEED to replay a failure fast-check reported.
 */

export const COLLECTION = 'hostile_cards';
export const VAULT = '/api/pvlt/1.0/data/collections';
export const VICTIM = 'hostile-victim';
/** A known secret that expired an hour ago: it must not authenticate. */
export const EXPIRED_SECRET = `rvk_expired_${randomBytes(16).toString('hex')}`;

/**
 * Every route with hostile cases, by the file that sends them, and how many cases each gets;
 * the route-coverage test (hostile-input-public) checks these against the app's own routes.
 */
export const HOSTILE_PLAN = {
  vault: {
    'DELETE /api/pvlt/1.0/data/collections/:collection/tokens': 900,
    'POST /api/pvlt/1.0/data/collections/:collection/rotate/tokens': 600,
    'POST /api/pvlt/1.0/data/collections/:collection/tokens': 800,
    'POST /api/pvlt/1.0/data/collections/:collection/query/tokens': 500,
    'GET /api/pvlt/1.0/data/collections/:collection/count/tokens': 400,
  },
  'native-commands': {
    'POST /v1/commands': 1500,
  },
  'jobs-subjects': {
    'POST /v1/collections': 500,
    'POST /v1/subjects': 500,
    'POST /v1/subjects/:id/tokens': 500,
    'GET /v1/subjects/:id': 200,
    'PATCH /v1/subjects/:id': 400,
    'GET /v1/subjects/:id/tokens': 300,
    'GET /v1/auth/verify': 300,
    'GET /v1/jobs/:id': 400,
    'POST /v1/jobs/:id/cancel': 300,
    'GET /v1/jobs': 500,
    'GET /v1/audit': 500,
  },
  'keystone-onezone': {
    'DELETE /v3/auth/tokens': 500,
    'GET /v3/auth/tokens': 300,
    'DELETE /api/v3/onezone/users/:id/tokens/temporary': 400,
    'GET /api/v3/onezone/users/:id/tokens/temporary': 300,
    'DELETE /api/v3/onezone/provider/tokens/temporary': 200,
    'GET /api/v3/onezone/provider/tokens/temporary': 200,
  },
} as const;

export type HostileFamily = keyof typeof HOSTILE_PLAN;

/** A family's route specs, one for each route of its plan. */
export type FamilySpecs<F extends HostileFamily> = Record<keyof (typeof HOSTILE_PLAN)[F], RouteSpec>;

export const PROPERTY_TIMEOUT = 180_000;

// ---------------------------------------------------------------------------------------------
// The world: a stack and what the cases name
// ---------------------------------------------------------------------------------------------

export interface RouteEntry {
  method: string;
  url: string;
}

type Principal = Awaited<ReturnType<typeof subjectWithToken>>;

export interface World {
  stack: Stack;
  /** Every route of the app (its route tree), each checked with `findRoute`. */
  routes: RouteEntry[];
  /** A service with tokens:read only. */
  reader: Principal;
  /** A user with a temporary token: what revoke-all would act on. */
  victim: Principal;
  /** A subject with no capability at all. */
  nobody: Principal;
  /** Tokens in COLLECTION. */
  seededTokenIds: string[];
  /** A job of the admin's: not the reader's to see. */
  adminJobId: string;
  /** A job of the admin's that failed. */
  endedJobId: string;
  /** Cases run so far, and a line per property (logged by `close`). */
  executed: number;
  log: string[];
  close(): Promise<void>;
}

function appRoutes(stack: Stack): RouteEntry[] {
  const routes: RouteEntry[] = servedRoutes(stack.producer.app, true).map((r) => ({ method: r.method, url: r.path }));
  for (const route of routes) {
    if (!stack.producer.app.findRoute({ method: route.method, url: route.url })) throw new Error(`printRoutes parsed into a route the app does not have: ${route.method} ${route.url}`);
  }
  return routes;
}

/** A stack without a worker (the jobs stay queued), on a database and queue prefix of its own, and the fixtures. */
export async function startWorld(): Promise<World> {
  const stack = await startStack({ worker: false });
  const routes = appRoutes(stack);
  await createCollection(stack, COLLECTION);
  const reader = await subjectWithToken(stack, { id: 'hostile-reader', kind: 'service', capabilities: ['tokens:read'] });
  const victim = await subjectWithToken(stack, { id: VICTIM, kind: 'user' }, { temporary: true, ttl_seconds: 3600 });
  const nobody = await subjectWithToken(stack, { id: 'hostile-nobody', kind: 'service', capabilities: [] });
  // a provider: the one caller the provider routes accept (its credential is never sent)
  await subjectWithToken(stack, { id: 'hostile-provider', kind: 'provider' });
  const seededTokenIds = await tokenize(
    stack,
    COLLECTION,
    [1, 2, 3, 4, 5].map((i) => ({ object: { id: `obj-${i}` }, tags: ['breach'], token_id: `seed-${i}` })),
  );
  await insertAccessToken(stack.database.db, {
    id: randomUUID(),
    subject_id: 'admin',
    secret_hash: hashSecret(EXPIRED_SECRET),
    name: 'expired',
    temporary: false,
    generation: null,
    expires_at: new Date(Date.now() - 3_600_000),
  });
  const submit = async (type: string) => {
    const r = await stack.producer.app.inject({
      method: 'POST',
      url: '/v1/commands',
      headers: { ...jsonHeaders, authorization: `Bearer ${ADMIN_TOKEN}` },
      payload: JSON.stringify({ type, collection: COLLECTION, token_ids: ['no-such-token'], reason: 'AppFunctionality' }),
    });
    expect(r.statusCode).toBe(202);
    return (JSON.parse(r.body) as { job_id: string }).job_id;
  };
  const adminJobId = await submit('tokens.delete');
  // a job that ended (no worker runs here): cancelling it is 409
  const endedJobId = await submit('tokens.rotate');
  await stack.database.db
    .updateTable('commands')
    .set({ state: 'failed', finished_at: new Date(), error: JSON.stringify({ error_code: 'PV3087', message: 'One or more token IDs not found.', context: { token_ids: 'no-such-token' } }) })
    .where('id', '=', endedJobId)
    .execute();
  const world: World = {
    stack,
    routes,
    reader,
    victim,
    nobody,
    seededTokenIds,
    adminJobId,
    endedJobId,
    executed: 0,
    log: [],
    async close() {
      if (world.log.length > 0) console.log(`hostile input: ${world.executed} generated cases\n  ${world.log.join('\n  ')}`);
      await stack.close();
    },
  };
  return world;
}

// ---------------------------------------------------------------------------------------------
// Credentials
// ---------------------------------------------------------------------------------------------

export const adminAuth = fc.constantFrom<Headers>({ authorization: `Bearer ${ADMIN_TOKEN}` }, { 'x-auth-token': ADMIN_TOKEN }, { authorization: `bearer   ${ADMIN_TOKEN}` });

/** A case sent with the admin credential. */
export const admin = (arb: fc.Arbitrary<Omit<Case, 'headers'> & { headers?: Headers }>): fc.Arbitrary<Case> =>
  fc.tuple(arb, adminAuth).map(([c, auth]) => ({ ...c, headers: { ...c.headers, ...auth } }));

export const nobodyAuth = (w: World) => fc.constantFrom<Headers>({ authorization: `Bearer ${w.nobody.token}` }, { 'x-auth-token': w.nobody.token });
export const readerAuth = (w: World) => fc.constantFrom<Headers>({ authorization: `Bearer ${w.reader.token}` }, { 'x-auth-token': w.reader.token });

/** Credentials that authenticate no one (on an API route: Basic is for the dashboard only). */
export const badCredential = (): fc.Arbitrary<{ headers: Headers; poison: string }> =>
  fc.oneof(
    fc.constant({ headers: {}, poison: 'no credential' }),
    unknownSecret.map((t) => ({ headers: { authorization: `Bearer ${t}` }, poison: 'unknown Bearer token' })),
    unknownSecret.map((t) => ({ headers: { 'x-auth-token': t }, poison: 'unknown X-Auth-Token' })),
    headerText.map((v) => ({ headers: { authorization: v }, poison: 'garbage Authorization' })),
    headerText.map((v) => ({ headers: { 'x-auth-token': v }, poison: 'garbage X-Auth-Token' })),
    fc
      .constantFrom<Headers>(
        { authorization: `Basic ${Buffer.from(`admin:${ADMIN_TOKEN}`).toString('base64')}` },
        { authorization: `Bearer ${ADMIN_TOKEN} ${ADMIN_TOKEN}` },
        { authorization: `Bearer ${ADMIN_TOKEN}x` },
        { authorization: `Bearer x${ADMIN_TOKEN}` },
        { authorization: `Bearer ${ADMIN_TOKEN.toUpperCase()}` },
        { authorization: `Bearer ${ADMIN_TOKEN.slice(0, -1)}` },
        { authorization: `Token ${ADMIN_TOKEN}` },
        { authorization: `Bearer ${EXPIRED_SECRET}` },
        { 'x-auth-token': EXPIRED_SECRET },
        { authorization: 'Bearer nope', 'x-auth-token': ADMIN_TOKEN },
        { authorization: `Bearer ${'a'.repeat(513)}` },
        { 'x-auth-token': ' ' },
        { authorization: '' },
      )
      .map((headers) => ({ headers, poison: `bad credential ${JSON.stringify(headers).slice(0, 60)}` })),
  );

// ---------------------------------------------------------------------------------------------
// A route's cases
// ---------------------------------------------------------------------------------------------

/** Methods the path does not have (HEAD counts as GET's). */
export function wrongMethods(w: World, template: string): string[] {
  const have = new Set(w.routes.filter((r) => r.url === template).map((r) => r.method));
  return ALL_METHODS.filter((m) => !have.has(m));
}

export interface RouteSpec {
  method: string;
  template: string;
  /** A request that would succeed (and have an effect, for writes) with the admin credential. */
  valid: fc.Arbitrary<{ url: string; body?: unknown; headers?: Headers }>;
  /** Requests made invalid by one poison, sent with the admin credential. */
  poisons: fc.Arbitrary<Case>[];
  /** A caller who may not make the valid request (403). */
  forbidden?: fc.Arbitrary<Headers>;
  /** The route records commands: a malformed Idempotency-Key is a poison. */
  commands?: boolean;
  /** The route reads a JSON body: malformed bodies are poisons. */
  json?: boolean;
}

/** The cases of one route: its own poisons, and the ones every authenticated route shares. */
export function hostileRoute(w: World, spec: RouteSpec): fc.Arbitrary<Case> {
  const { method, valid } = spec;
  const head = (headers: Headers | undefined, body: unknown) => ({ ...(body !== undefined ? jsonHeaders : {}), ...headers });
  const payload = (body: unknown) => (body !== undefined ? { payload: JSON.stringify(body) } : {});
  const kinds: fc.Arbitrary<Case>[] = [
    ...spec.poisons,
    fc.tuple(valid, badCredential()).map(([v, bad]) => ({ method, url: v.url, headers: { ...head(v.headers, v.body), ...bad.headers }, ...payload(v.body), poison: bad.poison, expect: [401] })),
  ];
  const wrong = wrongMethods(w, spec.template);
  if (wrong.length > 0) {
    kinds.push(
      fc
        .tuple(valid, fc.constantFrom(...wrong), adminAuth)
        .map(([v, m, auth]) => ({ method: m, url: v.url, headers: { ...head(v.headers, v.body), ...auth }, ...payload(v.body), poison: `wrong method ${m}`, expect: [404, 405] })),
    );
  }
  if (spec.forbidden) {
    kinds.push(
      fc
        .tuple(valid, spec.forbidden)
        .map(([v, auth]) => ({ method, url: v.url, headers: { ...head(v.headers, v.body), ...auth }, ...payload(v.body), poison: 'caller without the capability', expect: [403] })),
    );
  }
  if (spec.commands) {
    const badKey = fc.oneof(
      fc.constant(''),
      fc.integer({ min: 256, max: 2000 }).map((n) => 'k'.repeat(n)),
    );
    kinds.push(
      fc.tuple(valid, badKey, adminAuth).map(([v, key, auth]) => ({
        method,
        url: v.url,
        headers: { ...head(v.headers, v.body), ...auth, 'idempotency-key': key },
        ...payload(v.body),
        poison: `Idempotency-Key of ${key.length} characters`,
        expect: [400],
      })),
    );
  }
  if (spec.json) {
    const text = (v: { body?: unknown }) => JSON.stringify(v.body ?? {});
    kinds.push(
      fc
        .tuple(valid, invalidJsonText, adminAuth)
        .map(([v, t, auth]) => ({ method, url: v.url, headers: { ...v.headers, ...jsonHeaders, ...auth }, payload: t, poison: 'invalid JSON', expect: [400] })),
      fc
        .tuple(valid, pollutingJson, adminAuth)
        .map(([v, t, auth]) => ({ method, url: v.url, headers: { ...v.headers, ...jsonHeaders, ...auth }, payload: t, poison: 'prototype-polluting JSON', expect: [400] })),
      fc.tuple(valid, deepJson, adminAuth).map(([v, t, auth]) => ({ method, url: v.url, headers: { ...v.headers, ...jsonHeaders, ...auth }, payload: t, poison: 'deeply nested JSON', expect: [400] })),
      fc.tuple(valid, adminAuth).map(([v, auth]) => ({ method, url: v.url, headers: { ...v.headers, ...jsonHeaders, ...auth }, payload: '', poison: 'empty JSON body', expect: [400] })),
      fc.tuple(valid, adminAuth).map(([v, auth]) => ({ method, url: v.url, headers: { ...v.headers, ...auth }, payload: text(v), poison: 'a body without Content-Type', expect: [415] })),
      fc
        .tuple(valid, fc.constantFrom(...NON_JSON_TYPES), adminAuth)
        .map(([v, type, auth]) => ({ method, url: v.url, headers: { ...v.headers, ...auth, 'content-type': type }, payload: text(v), poison: `Content-Type ${type}`, expect: [400, 415] })),
      fc.tuple(valid, fc.integer({ min: 1, max: 50 }), fc.boolean(), adminAuth).map(([v, d, more, auth]) => {
        const body = text(v);
        const length = more ? Buffer.byteLength(body) + d : Math.max(0, Buffer.byteLength(body) - d);
        return {
          method,
          url: v.url,
          headers: { ...v.headers, ...jsonHeaders, ...auth, 'content-length': String(length) },
          payload: body,
          poison: `Content-Length ${length} for ${Buffer.byteLength(body)} bytes`,
          expect: [400],
        };
      }),
    );
  }
  return fc.tuple(fc.oneof(...kinds), noise).map(([c, n]) => ({ ...c, headers: { ...n, ...c.headers } }));
}

/** GET routes are also asked with HEAD now and then (Fastify answers HEAD for every GET). */
export const sometimesHead = (arb: fc.Arbitrary<Case>) => fc.tuple(arb, fc.integer({ min: 0, max: 5 })).map(([c, dice]) => (c.method === 'GET' && dice === 0 ? { ...c, method: 'HEAD' } : c));

// ---------------------------------------------------------------------------------------------
// Effects: every table of the database, every key of the world's Redis namespace
// ---------------------------------------------------------------------------------------------

/** Row count and a digest of every row of every table, and a digest of every Redis key. */
export async function snapshot(stack: Stack): Promise<Record<string, string>> {
  const state: Record<string, string> = {};
  const tables = await sql<{ table_name: string }>`
    select table_name from information_schema.tables
    where table_schema = 'public' and table_type = 'BASE TABLE' order by table_name`.execute(stack.database.db);
  for (const { table_name: table } of tables.rows) {
    const r = await sql<{ n: number; digest: string }>`
      select count(*)::int as n, coalesce(md5(string_agg(t::text, '|' order by t::text)), '') as digest
      from ${sql.table(table)} t`.execute(stack.database.db);
    state[`pg:${table}`] = `${r.rows[0]!.n} rows ${r.rows[0]!.digest}`;
  }
  let cursor = '0';
  do {
    const [next, keys] = await stack.redis.scan(cursor, 'MATCH', `${stack.config.QUEUE_PREFIX}:*`, 'COUNT', 1000);
    cursor = next;
    for (const key of keys) {
      const dump = await stack.redis.dumpBuffer(key);
      state[`redis:${key}`] = dump ? createHash('sha256').update(dump).digest('hex') : 'gone';
    }
  } while (cursor !== '0');
  return state;
}

/** Runs a property over `numRuns` generated cases; the state must not change. */
export async function runProperty(w: World, name: string, arb: fc.Arbitrary<Case>, numRuns: number, check: (c: Case, r: LightMyRequestResponse) => void): Promise<void> {
  const before = await snapshot(w.stack);
  const seed = process.env.FC_SEED ? Number(process.env.FC_SEED) : undefined;
  const started = performance.now();
  await fc.assert(
    fc.asyncProperty(arb, async (c) => {
      const r = await w.stack.producer.app.inject({ method: c.method as 'GET', url: c.url, headers: c.headers, ...(c.payload !== undefined && { payload: c.payload }) });
      check(c, r);
    }),
    { numRuns, ...(seed !== undefined && { seed }) },
  );
  w.executed += numRuns;
  w.log.push(`${name}: ${numRuns} cases in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  expect(await snapshot(w.stack), `${name} changed the database or Redis`).toEqual(before);
}

// ---------------------------------------------------------------------------------------------
// The checks
// ---------------------------------------------------------------------------------------------

export function describeCase(c: Case, r: LightMyRequestResponse): string {
  const url = c.url.length > 200 ? `${c.url.slice(0, 200)}…(${c.url.length} chars)` : c.url;
  return `[${c.poison}] ${c.method} ${url} → ${r.statusCode} ${r.body.slice(0, 300)}`;
}

/**
 * Why the router may refuse a path before matching a route: it is not valid percent-encoded
 * UTF-8, or a segment is longer than a parameter may be (500; only if it is a parameter).
 */
function unroutable(url: string): 'undecodable' | 'long segment' | undefined {
  try {
    return url
      .split('?')[0]!
      .split('/')
      .some((segment) => decodeURIComponent(segment).length > 500)
      ? 'long segment'
      : undefined;
  } catch {
    return 'undecodable';
  }
}

/**
 * A 4xx (the poison's status if it names one) in the family's envelope. A path the router
 * cannot take is refused 400 before anything else (method, credential, …) is looked at.
 */
export function rejected(c: Case, r: LightMyRequestResponse): void {
  if (r.statusCode < 400 || r.statusCode > 499) throw new Error(`not a 4xx: ${describeCase(c, r)}`);
  const routing = unroutable(c.url);
  const expected = routing === 'undecodable' ? [400] : routing === 'long segment' && c.expect ? [...c.expect, 400] : c.expect;
  if (expected && !expected.includes(r.statusCode)) throw new Error(`expected ${expected.join(' or ')}: ${describeCase(c, r)}`);
  if (c.method === 'HEAD') return;
  const problem = envelopeProblem(familyOf(c.url), r.statusCode, r.headers['content-type'] as string | undefined, r.body);
  if (problem) throw new Error(`not the ${familyOf(c.url)} envelope (${problem}): ${describeCase(c, r)}`);
}

// ---------------------------------------------------------------------------------------------
// A family's file
// ---------------------------------------------------------------------------------------------

/**
 * The tests of one family's file: a world of its own, and for each route of its plan a property
 * over the route's generated cases (`specs`, built once the world is there: they name its
 * fixtures), then a check that every planned case ran.
 */
export function describeHostileRoutes<F extends HostileFamily>(family: F, specs: (w: World) => FamilySpecs<F>): void {
  const plan: Record<string, number> = HOSTILE_PLAN[family];
  const planned = Object.values(plan).reduce((a, b) => a + b, 0);
  describe(`hostile input to the ${family} routes`, () => {
    let world: World;
    beforeAll(async () => {
      world = await startWorld();
    });
    afterAll(() => world?.close());

    for (const [key, numRuns] of Object.entries(plan)) {
      it(
        `${key}: generated hostile requests get a 4xx in the family's envelope and change nothing`,
        async () => {
          const spec = (specs(world) as Record<string, RouteSpec>)[key];
          expect(spec, `a spec for ${key}`).toBeDefined();
          expect(`${spec!.method} ${spec!.template}`).toBe(key);
          await runProperty(world, key, sometimesHead(hostileRoute(world, spec!)), numRuns, rejected);
        },
        PROPERTY_TIMEOUT,
      );
    }

    it(`ran the ${planned} generated cases of its plan`, () => {
      expect(world.executed).toBe(planned);
    });
  });
}
