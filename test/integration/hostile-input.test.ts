import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { maxHeaderSize as nodeMaxHeaderSize, STATUS_CODES } from 'node:http';
import { connect } from 'node:net';
import fc from 'fast-check';
import type { LightMyRequestResponse } from 'fastify';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AccessReason, COMMAND_QUEUE, commandTypes, decodeJobCursor, encodeJobCursor, errorRegistry, JobState } from '../../contracts/index.js';
import { insertAccessToken } from '../../db/repositories/access-token.repository.js';
import { BODY_LIMIT } from '../../producer/app.js';
import { hashSecret } from '../../producer/secrets.js';
import { createCollection, subjectWithToken, tokenize } from '../helpers/api.js';
import { servedRoutes } from '../helpers/routes.js';
import { ADMIN_TOKEN, type Stack, startStack } from '../helpers/stack.js';

/**
 * Hostile input (SPEC §4.6, §7): property-based tests (fast-check) that send malformed and
 * oversized requests to every route of the app. Every answer must be a 4xx in the route
 * family's envelope — never a 5xx, never a success — and leave Postgres and Redis exactly as
 * they were. The generated requests go through `app.inject()` (no sockets, for speed); the
 * body and header size limits are checked over real sockets, since `inject` enforces neither.
 *
 * Every generated case is invalid by construction: a valid request, plus one poison (a bad
 * credential, a wrong method, a malformed field, …). The poison names the expected status
 * where it is certain. Set FC_SEED to replay a failure fast-check reported.
 */

// ---------------------------------------------------------------------------------------------
// Route families and their envelopes (SPEC §7)
// ---------------------------------------------------------------------------------------------

type Family = 'piiano' | 'native' | 'keystone' | 'onezone';

/** The family of a URL, by the SPEC's route groups (not by the app's own helper). */
function familyOf(url: string): Family {
  if (url.startsWith('/api/pvlt/')) return 'piiano';
  if (url.startsWith('/v3/auth/')) return 'keystone';
  if (url.startsWith('/api/v3/onezone/')) return 'onezone';
  return 'native';
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const sameKeys = (o: Record<string, unknown>, keys: string[]) => Object.keys(o).sort().join(',') === [...keys].sort().join(',');
const registered = (code: unknown): code is keyof typeof errorRegistry => typeof code === 'string' && code in errorRegistry;

/** Why `body` is not `status` in the family's envelope; undefined when it is. */
function envelopeProblem(family: Family, status: number, contentType: string | undefined, text: string): string | undefined {
  if (!/^application\/json\b/.test(contentType ?? '')) return `content-type is ${contentType ?? 'missing'}, not application/json`;
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    return 'the body is not JSON';
  }
  if (!isObject(body)) return 'the body is not an object';
  if (family === 'piiano' || family === 'native') {
    if (!sameKeys(body, ['error_code', 'message', 'context'])) return 'not {error_code, message, context}';
    if (!registered(body.error_code)) return `error_code ${String(body.error_code)} is not in the registry`;
    if (errorRegistry[body.error_code].status !== status) return `${body.error_code} is registered as ${errorRegistry[body.error_code].status}, answered ${status}`;
    if (typeof body.message !== 'string' || body.message === '') return 'message is not a non-empty string';
    if (!isObject(body.context)) return 'context is not an object';
    const notText = Object.entries(body.context).find(([, value]) => typeof value !== 'string');
    if (notText) return `context.${notText[0]} is not a string (Piiano's schema types every context value as one)`;
    return undefined;
  }
  const error = body.error;
  if (!sameKeys(body, ['error']) || !isObject(error)) return 'not {error: {…}}';
  if (family === 'keystone') {
    if (!sameKeys(error, ['code', 'title', 'message'])) return 'not {error: {code, title, message}}';
    if (error.code !== status) return `error.code ${String(error.code)} is not the status ${status}`;
    if (error.title !== STATUS_CODES[status]) return `error.title ${String(error.title)} is not ${STATUS_CODES[status]}`;
    if (typeof error.message !== 'string' || error.message === '') return 'error.message is not a non-empty string';
    return undefined;
  }
  if (!sameKeys(error, ['id', 'details', 'description'])) return 'not {error: {id, details, description}}';
  if (typeof error.id !== 'string' || !/^[a-z][A-Za-z]*$/.test(error.id)) return `error.id ${String(error.id)} is not a camelCase id`;
  if (!isObject(error.details) || !registered(error.details.error_code)) return 'error.details.error_code is not in the registry';
  if (errorRegistry[error.details.error_code].status !== status) return `${error.details.error_code} is registered as ${errorRegistry[error.details.error_code].status}, answered ${status}`;
  if (typeof error.description !== 'string' || error.description === '') return 'error.description is not a non-empty string';
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

type Headers = Record<string, string>;

interface Case {
  method: string;
  url: string;
  headers: Headers;
  payload?: string;
  /** What makes the request invalid. */
  poison: string;
  /** The statuses this poison may answer; any 4xx when absent. */
  expect?: readonly number[];
}

type Pairs = [string, string][];

/**
 * Percent-encodes like encodeURIComponent, but also an unpaired surrogate (as the three bytes a
 * careless UTF-8 encoder, WTF-8, would send): a client can put those bytes on the wire.
 */
function pct(s: string): string {
  try {
    return encodeURIComponent(s); // throws URIError only on an unpaired surrogate
  } catch {
    // encoded below, one UTF-16 unit at a time
  }
  let out = '';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const next = s.charCodeAt(i + 1);
    if (c >= 0xd800 && c <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) {
      out += encodeURIComponent(s.slice(i, i + 2));
      i++;
    } else if (c >= 0xd800 && c <= 0xdfff) {
      out += [0xe0 | (c >> 12), 0x80 | ((c >> 6) & 0x3f), 0x80 | (c & 0x3f)].map((b) => `%${b.toString(16).toUpperCase()}`).join('');
    } else {
      out += encodeURIComponent(s[i]!);
    }
  }
  return out;
}

function withQuery(path: string, pairs: Pairs, raw = ''): string {
  const query = [...pairs.map(([k, v]) => `${pct(k)}=${pct(v)}`), ...(raw ? [raw] : [])].join('&');
  return query ? `${path}?${query}` : path;
}

/**
 * What a header value becomes on the wire: its UTF-8 bytes, read back as latin1 (as Node does),
 * without the bytes HTTP forbids in a header (Node refuses those before the app sees them).
 */
function wire(value: string): string {
  return Buffer.from(value, 'utf8')
    .toString('latin1')
    .replace(/[^\t\x20-\x7e\x80-\xff]/g, '');
}

const jsonHeaders: Headers = { 'content-type': 'application/json' };

function jsonCase(method: string, url: string, body: unknown, headers: Headers, poison: string, expectStatus?: readonly number[]): Case {
  return { method, url, headers: { ...jsonHeaders, ...headers }, payload: JSON.stringify(body), poison, ...(expectStatus && { expect: expectStatus }) };
}

// ---------------------------------------------------------------------------------------------
// Generators: hostile text
// ---------------------------------------------------------------------------------------------

/** Characters that break naive code: NUL, unpaired surrogates, bidi controls, separators, … */
const ODD = [
  '\u0000',
  '\ud800',
  '\udbff',
  '\udc00',
  '\udfff',
  '\u202e',
  '\u202d',
  '\u200f',
  '\u200e',
  '\u2066',
  '\u2069',
  '\ufeff',
  '\uffff',
  '\ufffe',
  '\u0085',
  '\u2028',
  '\u00a0',
  '\u0301',
  '\u3000',
  '\ud83d\ude00',
  'é',
  'İ',
  'ß',
  '\t',
  '\n',
  '\r\n',
  '\\',
  '"',
  "'",
  '%',
  '/',
  '..',
  ',',
  ';',
  '&',
  '=',
  '?',
  '#',
  '+',
  ' ',
  '\u0001',
  '\u007f',
  '{',
  '}',
  '[',
  ']',
  '$',
  '`',
];
/** Strings that look like injections or type confusion. */
const SQLISH = [
  "' OR '1'='1",
  "'; DROP TABLE vault_tokens; --",
  '" OR ""="',
  '1; SELECT pg_sleep(5)--',
  "%' --",
  "admin'--",
  "') OR ('1'='1",
  '$$ || $$',
  "'||(SELECT encode(secret_hash,'hex') FROM access_tokens LIMIT 1)||'",
  '1 UNION SELECT NULL--',
  '\\x00',
  "E'\\\\x27'",
  '*',
  '%',
  '_',
  'NULL',
  'null',
  'undefined',
  'true',
  'NaN',
  '-1',
  '1e309',
  '0x7fffffffffffffff',
  '9223372036854775808',
  '[]',
  '{}',
  '__proto__',
  'constructor',
  'prototype',
  'toString',
  'hasOwnProperty',
  '${jndi:ldap://x/a}',
  '{{7*7}}',
  '<script>alert(1)</script>',
  '../../etc/passwd',
  '..%2f..%2f',
  '%00',
  '%ff',
  '%',
  'a%2Cb',
  '\u0000--',
];
const ALNUM = 'abcdefghijklmnopqrstuvwxyz0123456789';
const alnum = fc.string({ unit: fc.constantFrom(...ALNUM), minLength: 1, maxLength: 12 });
const hostileChar = fc.oneof(
  { weight: 4, arbitrary: fc.string({ unit: 'grapheme-ascii', minLength: 1, maxLength: 1 }) },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }) },
  { weight: 3, arbitrary: fc.constantFrom(...ODD) },
);
/** Anything a client might send as a string. */
const hostileText = fc.oneof(
  { weight: 6, arbitrary: fc.string({ unit: hostileChar, maxLength: 24 }) },
  { weight: 3, arbitrary: fc.constantFrom(...SQLISH) },
  { weight: 2, arbitrary: fc.tuple(fc.constantFrom(...SQLISH), fc.constantFrom(...ODD), alnum).map(([a, b, c]) => a + b + c) },
  { weight: 1, arbitrary: fc.tuple(fc.integer({ min: 201, max: 5000 }), fc.constantFrom('x', '\u202e', '\ud83d\ude00', '%', '\u0000', '\u00e9')).map(([n, ch]) => ch.repeat(n)) },
);
/** Any JSON value a client might send where another type is expected. */
const hostileJson: fc.Arbitrary<unknown> = fc.oneof(
  hostileText,
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.constantFrom(1e308, -0, Number.MAX_SAFE_INTEGER + 2, 2 ** 63),
  fc.array(hostileText, { maxLength: 3 }),
  fc.dictionary(hostileText, hostileText, { maxKeys: 3 }),
  fc.jsonValue({ maxDepth: 3 }),
);
/** A header value a client can send (see `wire`), at most 512 characters. */
const headerText = hostileText.map(wire).filter((v) => v.length <= 512);

const IDENTIFIER = /^[A-Za-z0-9._:@-]{1,200}$/;
const COLLECTION_NAME = /^[A-Za-z][A-Za-z0-9_]{0,63}$/;
const REASONS: readonly string[] = AccessReason.options;

const notIdentifier = hostileText.filter((s) => !IDENTIFIER.test(s));
const notCollectionName = hostileText.filter((s) => !COLLECTION_NAME.test(s));
/** A JSON value that is not a string matching `valid`. */
const notAString = (valid: RegExp) =>
  fc.oneof(
    hostileText.filter((s) => !valid.test(s)),
    hostileJson.filter((v) => typeof v !== 'string' || !valid.test(v)),
  );

/**
 * Items of a list (token IDs, object IDs, tags) that no list accepts, whichever way it is split
 * on commas and trimmed: white space or NUL inside, an unpaired surrogate (JSON bodies only: a
 * query string cannot carry one), or longer than 200 characters.
 */
const badItemQuery = fc.oneof(
  fc.tuple(alnum, fc.constantFrom('\u0000', ' ', '\t', '\u00a0', '\u2028', '\ufeff', '\u3000', '\n'), alnum).map(([a, b, c]) => a + b + c),
  fc.integer({ min: 201, max: 400 }).map((n) => 'i'.repeat(n)),
);
const badItemBody = fc.oneof(
  badItemQuery,
  fc.tuple(alnum, fc.constantFrom('\ud800', '\udc00', '\udbff', ','), alnum).map(([a, b, c]) => a + b + c),
);
const items = (min: number, max: number) => fc.uniqueArray(alnum, { minLength: min, maxLength: max });
/** 10,001 distinct IDs: one more than any request may name. */
const tooManyIds = fc.tuple(alnum, fc.integer({ min: 10_001, max: 10_020 })).map(([p, n]) => Array.from({ length: n }, (_, i) => `${p}${i}`));
const tooManyTags = items(11, 14);
/** Free text over its limit, or holding a NUL (or, in JSON, an unpaired surrogate). */
const badText = (max: number, json: boolean) =>
  fc.oneof(
    fc.integer({ min: max + 1, max: max + 40 }).map((n) => 'a'.repeat(n)),
    fc.tuple(alnum, fc.constantFrom('\u0000', ...(json ? ['\ud800', '\udfff'] : [])), alnum).map(([a, b, c]) => a + b + c),
  );

/** An `rvk_…` secret nobody was issued. */
const unknownSecret = fc.string({ unit: fc.constantFrom(...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'), minLength: 43, maxLength: 43 }).map((s) => `rvk_${s}`);

/** Headers that do not change what a request means: they must never change the answer's class. */
const noise: fc.Arbitrary<Headers> = fc.record(
  {
    'x-request-id': headerText,
    'user-agent': headerText,
    accept: fc.constantFrom('*/*', 'application/xml', 'text/html', ';;', '', 'application/json;q=0'),
    'accept-language': headerText,
    'x-forwarded-for': headerText,
    'x-request-source': fc.constantFrom('cli', 'client', 'http', 'system', 'evil'),
    'x-junk': headerText,
    'x-huge': fc.integer({ min: 1000, max: 12_000 }).map((n) => 'h'.repeat(n)),
    prefer: fc.constantFrom('wait=0', 'respond-async', 'wait=abc', 'wait=-1', 'handling=strict'),
    cookie: headerText,
    origin: headerText,
  },
  { requiredKeys: [] },
);

const ALL_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'TRACE'];
const NON_JSON_TYPES = [
  'text/plain',
  'text/html',
  'application/x-www-form-urlencoded',
  'multipart/form-data; boundary=xyz',
  'application/xml',
  'application/octet-stream',
  'application/jsonx',
  'application/vnd.api+json',
  'json',
  ';;;',
  'image/png',
  'application/javascript',
];

const throwsOnParse = (text: string) => {
  try {
    JSON.parse(text);
    return false;
  } catch {
    return true;
  }
};
const invalidJsonText = fc.oneof(
  fc.constantFrom(
    '{',
    '[',
    '{"a":',
    '{"a":1,}',
    '[1,]',
    "{'a':1}",
    'NaN',
    'Infinity',
    'undefined',
    '{"a":1}}',
    '{"a" 1}',
    '"unterminated',
    '{"a":"\\x41"}',
    '{"a":"\\u12"}',
    '01',
    '- 1',
    '[1 2]',
    'tru',
    'nul',
    '\u0000',
    '{"a":1}\u0000',
    '  ',
  ),
  fc.string({ unit: hostileChar, minLength: 1, maxLength: 30 }).filter(throwsOnParse),
);
/** JSON that the server's parser refuses although JSON.parse takes it: prototype pollution. */
const pollutingJson = fc.constantFrom('{"__proto__":{"admin":true}}', '{"constructor":{"prototype":{"admin":true}}}', '[{"__proto__":{"x":1},"object":{"id":"a"}}]');
const deepJson = fc.tuple(fc.integer({ min: 1000, max: 20_000 }), fc.boolean()).map(([n, arrays]) => (arrays ? '['.repeat(n) + ']'.repeat(n) : '{"a":'.repeat(n) + '1' + '}'.repeat(n)));

// ---------------------------------------------------------------------------------------------
// The app's routes
// ---------------------------------------------------------------------------------------------

interface RouteEntry {
  method: string;
  url: string;
}

/** Every route of the app (its route tree), each checked with `findRoute`. */
function appRoutes(stack: Stack): RouteEntry[] {
  const routes: RouteEntry[] = servedRoutes(stack.producer.app, true).map((r) => ({ method: r.method, url: r.path }));
  for (const route of routes) {
    if (!stack.producer.app.findRoute({ method: route.method, url: route.url })) throw new Error(`printRoutes parsed into a route the app does not have: ${route.method} ${route.url}`);
  }
  return routes;
}

// ---------------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------------

const COLLECTION = 'hostile_cards';
const VAULT = `/api/pvlt/1.0/data/collections`;
const EXPIRED_SECRET = `rvk_expired_${randomBytes(16).toString('hex')}`;
const VICTIM = 'hostile-victim';

describe('hostile input to every route', () => {
  let stack: Stack;
  let routes: RouteEntry[];
  /** A service with tokens:read only. */
  let reader: Awaited<ReturnType<typeof subjectWithToken>>;
  /** A user with a temporary token: what revoke-all would act on. */
  let victim: Awaited<ReturnType<typeof subjectWithToken>>;
  let seededTokenIds: string[];
  /** A job of the admin's: not the reader's to see. */
  let adminJobId: string;
  /** A job of the admin's that failed. */
  let endedJobId: string;
  let executed = 0;
  const perProperty: string[] = [];

  const adminAuth = fc.constantFrom<Headers>({ authorization: `Bearer ${ADMIN_TOKEN}` }, { 'x-auth-token': ADMIN_TOKEN }, { authorization: `bearer   ${ADMIN_TOKEN}` });

  /** Credentials that authenticate no one (on an API route: Basic is for the dashboard only). */
  const badCredential = (): fc.Arbitrary<{ headers: Headers; poison: string }> =>
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

  /** Methods the path does not have (HEAD counts as GET's). */
  function wrongMethods(template: string): string[] {
    const have = new Set(routes.filter((r) => r.url === template).map((r) => r.method));
    return ALL_METHODS.filter((m) => !have.has(m));
  }

  interface RouteSpec {
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
  function hostileRoute(spec: RouteSpec): fc.Arbitrary<Case> {
    const { method, valid } = spec;
    const head = (headers: Headers | undefined, body: unknown) => ({ ...(body !== undefined ? jsonHeaders : {}), ...headers });
    const payload = (body: unknown) => (body !== undefined ? { payload: JSON.stringify(body) } : {});
    const kinds: fc.Arbitrary<Case>[] = [
      ...spec.poisons,
      fc.tuple(valid, badCredential()).map(([v, bad]) => ({ method, url: v.url, headers: { ...head(v.headers, v.body), ...bad.headers }, ...payload(v.body), poison: bad.poison, expect: [401] })),
    ];
    const wrong = wrongMethods(spec.template);
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
        fc
          .tuple(valid, deepJson, adminAuth)
          .map(([v, t, auth]) => ({ method, url: v.url, headers: { ...v.headers, ...jsonHeaders, ...auth }, payload: t, poison: 'deeply nested JSON', expect: [400] })),
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

  /** A case sent with the admin credential. */
  const admin = (arb: fc.Arbitrary<Omit<Case, 'headers'> & { headers?: Headers }>): fc.Arbitrary<Case> => fc.tuple(arb, adminAuth).map(([c, auth]) => ({ ...c, headers: { ...c.headers, ...auth } }));

  // -------------------------------------------------------------------------------------------
  // Effects: every table of the database, every key of the test's Redis namespace
  // -------------------------------------------------------------------------------------------

  async function tables(): Promise<string[]> {
    const rows = await sql<{ table_name: string }>`
      select table_name from information_schema.tables
      where table_schema = 'public' and table_type = 'BASE TABLE' order by table_name`.execute(stack.database.db);
    return rows.rows.map((r) => r.table_name);
  }

  /** Row count and a digest of every row of every table, and a digest of every Redis key. */
  async function snapshot(): Promise<Record<string, string>> {
    const state: Record<string, string> = {};
    for (const table of await tables()) {
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
  async function runProperty(name: string, arb: fc.Arbitrary<Case>, numRuns: number, check: (c: Case, r: LightMyRequestResponse) => void): Promise<void> {
    const before = await snapshot();
    const seed = process.env.FC_SEED ? Number(process.env.FC_SEED) : undefined;
    const started = performance.now();
    await fc.assert(
      fc.asyncProperty(arb, async (c) => {
        const r = await stack.producer.app.inject({ method: c.method as 'GET', url: c.url, headers: c.headers, ...(c.payload !== undefined && { payload: c.payload }) });
        check(c, r);
      }),
      { numRuns, ...(seed !== undefined && { seed }) },
    );
    executed += numRuns;
    perProperty.push(`${name}: ${numRuns} cases in ${((performance.now() - started) / 1000).toFixed(1)} s`);
    expect(await snapshot(), `${name} changed the database or Redis`).toEqual(before);
  }

  function describeCase(c: Case, r: LightMyRequestResponse): string {
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
  function rejected(c: Case, r: LightMyRequestResponse): void {
    if (r.statusCode < 400 || r.statusCode > 499) throw new Error(`not a 4xx: ${describeCase(c, r)}`);
    const routing = unroutable(c.url);
    const expected = routing === 'undecodable' ? [400] : routing === 'long segment' && c.expect ? [...c.expect, 400] : c.expect;
    if (expected && !expected.includes(r.statusCode)) throw new Error(`expected ${expected.join(' or ')}: ${describeCase(c, r)}`);
    if (c.method === 'HEAD') return;
    const problem = envelopeProblem(familyOf(c.url), r.statusCode, r.headers['content-type'] as string | undefined, r.body);
    if (problem) throw new Error(`not the ${familyOf(c.url)} envelope (${problem}): ${describeCase(c, r)}`);
  }

  beforeAll(async () => {
    stack = await startStack({ worker: false });
    routes = appRoutes(stack);
    await createCollection(stack, COLLECTION);
    reader = await subjectWithToken(stack, { id: 'hostile-reader', kind: 'service', capabilities: ['tokens:read'] });
    victim = await subjectWithToken(stack, { id: VICTIM, kind: 'user' }, { temporary: true, ttl_seconds: 3600 });
    nobody = await subjectWithToken(stack, { id: 'hostile-nobody', kind: 'service', capabilities: [] });
    // a provider: the one caller the provider routes accept (its credential is never sent)
    await subjectWithToken(stack, { id: 'hostile-provider', kind: 'provider' });
    seededTokenIds = await tokenize(
      stack,
      COLLECTION,
      [1, 2, 3, 4, 5].map((i) => ({ object: { id: `obj-${i}` }, tags: ['breach'], token_id: `seed-${i}` })),
    );
    // an access token that expired an hour ago: a known secret that must not authenticate
    await insertAccessToken(stack.database.db, {
      id: randomUUID(),
      subject_id: 'admin',
      secret_hash: hashSecret(EXPIRED_SECRET),
      name: 'expired',
      temporary: false,
      generation: null,
      expires_at: new Date(Date.now() - 3_600_000),
    });
    const job = await stack.producer.app.inject({
      method: 'POST',
      url: '/v1/commands',
      headers: { ...jsonHeaders, authorization: `Bearer ${ADMIN_TOKEN}` },
      payload: JSON.stringify({ type: 'tokens.delete', collection: COLLECTION, token_ids: ['no-such-token'], reason: 'AppFunctionality' }),
    });
    expect(job.statusCode).toBe(202);
    adminJobId = (JSON.parse(job.body) as { job_id: string }).job_id;
    // a job that ended (no worker runs here): cancelling it is 409
    const ended = await stack.producer.app.inject({
      method: 'POST',
      url: '/v1/commands',
      headers: { ...jsonHeaders, authorization: `Bearer ${ADMIN_TOKEN}` },
      payload: JSON.stringify({ type: 'tokens.rotate', collection: COLLECTION, token_ids: ['no-such-token'], reason: 'AppFunctionality' }),
    });
    endedJobId = (JSON.parse(ended.body) as { job_id: string }).job_id;
    await stack.database.db
      .updateTable('commands')
      .set({ state: 'failed', finished_at: new Date(), error: JSON.stringify({ error_code: 'PV3087', message: 'One or more token IDs not found.', context: { token_ids: 'no-such-token' } }) })
      .where('id', '=', endedJobId)
      .execute();
  });

  afterAll(async () => {
    if (perProperty.length > 0) console.log(`hostile input: ${executed} generated cases\n  ${perProperty.join('\n  ')}`);
    await stack?.close();
  });

  // -------------------------------------------------------------------------------------------
  // Shared poisons
  // -------------------------------------------------------------------------------------------

  const nobodyAuth = () => fc.constantFrom<Headers>({ authorization: `Bearer ${nobody.token}` }, { 'x-auth-token': nobody.token });
  const readerAuth = () => fc.constantFrom<Headers>({ authorization: `Bearer ${reader.token}` }, { 'x-auth-token': reader.token });
  /** A subject with no capability at all. */
  let nobody: Awaited<ReturnType<typeof subjectWithToken>>;

  const validReason: fc.Arbitrary<Pairs> = fc.oneof(
    fc.constantFrom(...REASONS.filter((r) => r !== 'Other')).map((r): Pairs => [['reason', r]]),
    alnum.map((a): Pairs => [
      ['reason', 'Other'],
      ['adhoc_reason', a],
    ]),
  );

  interface QueryPoison {
    pairs: Pairs;
    poison: string;
  }

  /** Access-reason parameters no vault route accepts (FORCE_ACCESS_REASON is on). */
  const reasonPoison: fc.Arbitrary<QueryPoison> = fc.oneof(
    fc.constant({ pairs: [] as Pairs, poison: 'no reason' }),
    hostileText.filter((s) => !REASONS.includes(s)).map((s) => ({ pairs: [['reason', s]] as Pairs, poison: 'unknown reason' })),
    fc.tuple(fc.constantFrom(...REASONS), fc.constantFrom(...REASONS)).map(([a, b]) => ({
      pairs: [
        ['reason', a],
        ['reason', b],
      ] as Pairs,
      poison: 'reason repeated',
    })),
    fc.constant({ pairs: [['reason', 'Other']] as Pairs, poison: 'Other without adhoc_reason' }),
    fc.oneof(fc.constant(''), badText(1000, false)).map((s) => ({
      pairs: [
        ['reason', 'Other'],
        ['adhoc_reason', s],
      ] as Pairs,
      poison: `adhoc_reason of ${s.length} chars / NUL`,
    })),
    badText(4000, false).map((s) => ({
      pairs: [
        ['reason', 'AppFunctionality'],
        ['custom_audit', s],
      ] as Pairs,
      poison: `custom_audit of ${s.length} chars / NUL`,
    })),
    hostileText
      .filter((s) => s !== 'true' && s !== 'false')
      .map((s) => ({
        pairs: [
          ['reason', 'AppFunctionality'],
          ['reload_cache', s],
        ] as Pairs,
        poison: 'reload_cache not true/false',
      })),
  );

  /** A query parameter the route does not know (its querystring schema is strict). */
  const unknownParam = (known: string[]): fc.Arbitrary<QueryPoison> =>
    fc
      .tuple(
        fc.oneof(
          alnum.map((k) => `x_${k}`),
          fc.constantFrom(
            '__proto__',
            'constructor',
            'reason[]',
            'token_ids[0]',
            'hasOwnProperty',
            'REASON',
            'Reason',
            'tags[]',
            'limit[]',
            'options',
            'tags',
            'token_ids',
            'object_ids',
            'tenant_id',
            'expiration_secs',
          ),
        ),
        hostileText,
      )
      .filter(([k]) => !known.includes(k))
      .map(([k, v]) => ({ pairs: [[k, v]] as Pairs, poison: `unknown parameter ${k}` }));

  const REASON_KEYS = ['reason', 'adhoc_reason', 'custom_audit', 'reload_cache'];

  /** A collection path segment that names no collection: malformed, raw bytes, or missing. */
  const collectionPoison = fc.oneof(
    notCollectionName.map((c) => ({ segment: pct(c), poison: `bad collection ${JSON.stringify(c).slice(0, 40)}`, expect: [400, 404] })),
    fc
      .constantFrom('%', '%zz', '%ff', '%c0%af', '%ED%A0%80', '%00', `${COLLECTION}%2f..`, '%2e%2e', `${COLLECTION};x=1`, `%20${COLLECTION}`, `${COLLECTION}%00`, 'a'.repeat(501))
      .map((raw) => ({ segment: raw, poison: `raw collection segment ${raw.slice(0, 40)}`, expect: [400, 404] })),
    alnum.map((a) => ({ segment: `zzmissing_${a}`, poison: 'no such collection', expect: [404] })),
  );

  /** An identifier path segment (subject or user id) that is malformed or raw bytes. */
  const idSegmentPoison = fc.oneof(
    notIdentifier.map((s) => ({ segment: pct(s), poison: `bad id ${JSON.stringify(s).slice(0, 40)}` })),
    fc.constantFrom('%', '%zz', '%ff', '%c0%af', '%ED%A0%80', '%00', 'a'.repeat(501), 'x;y=1', '%20', '..%2f..%2fadmin').map((raw) => ({ segment: raw, poison: `raw id segment ${raw.slice(0, 40)}` })),
  );
  const missingId = alnum.map((a) => `zz-missing-${a}`);

  /** A value for an X-Subject-Token that names no token: absent, blank, oversized, or unknown. */
  const subjectTokenPoison = fc.oneof(
    fc.constant({ headers: {}, poison: 'no X-Subject-Token', expect: [400] }),
    fc.constantFrom('', ' ', '\t').map((v) => ({ headers: { 'x-subject-token': v }, poison: 'blank X-Subject-Token', expect: [400] })),
    fc.integer({ min: 513, max: 4000 }).map((n) => ({ headers: { 'x-subject-token': 't'.repeat(n) }, poison: 'oversized X-Subject-Token', expect: [400] })),
    fc
      .oneof(
        unknownSecret,
        headerText.filter((v) => v.trim() !== '' && v.length <= 512),
      )
      .map((v) => ({ headers: { 'x-subject-token': v }, poison: 'unknown X-Subject-Token', expect: [404] })),
  );

  // -------------------------------------------------------------------------------------------
  // The routes, one spec each
  // -------------------------------------------------------------------------------------------

  function vaultSpecs(): Record<string, { spec: RouteSpec; numRuns: number }> {
    const tokensPath = (segment: string) => `${VAULT}/${segment}/tokens`;
    const criteria: fc.Arbitrary<Pairs> = fc.oneof(
      items(1, 5).map((xs): Pairs => [['token_ids', xs.join(',')]]),
      items(1, 5).map((xs): Pairs => xs.map((x) => ['token_ids', x])),
      fc.constant<Pairs>([['token_ids', seededTokenIds.join(',')]]),
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
      forbidden: nobodyAuth(),
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
      fc.constant<Pairs>([['token_ids', seededTokenIds.join(',')]]),
    );
    const rq = (segment: string, ...parts: Pairs[]) => withQuery(rotatePath(segment), parts.flat());
    const rotateSpec: RouteSpec = {
      method: 'POST',
      template: `${VAULT}/:collection/rotate/tokens`,
      valid: fc.tuple(ids, validReason).map(([i, r]) => ({ url: rq(COLLECTION, i, r) })),
      commands: true,
      forbidden: nobodyAuth(),
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
      forbidden: nobodyAuth(),
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
            .map(([r, body]) => jsonCase('POST', tq(COLLECTION, r), [...body, { object: { id: 'x' }, token_id: seededTokenIds[0] }], {}, 'a token_id already taken', [409])),
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
      forbidden: nobodyAuth(),
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
      forbidden: nobodyAuth(),
      poisons: [
        admin(reasonPoison.map((p) => ({ method: 'GET', url: cq(COLLECTION, p.pairs), poison: p.poison, expect: [400] }))),
        admin(fc.tuple(validReason, unknownParam(REASON_KEYS)).map(([r, p]) => ({ method: 'GET', url: cq(COLLECTION, r, p.pairs), poison: p.poison, expect: [400] }))),
        admin(fc.tuple(collectionPoison, validReason).map(([p, r]) => ({ method: 'GET', url: cq(p.segment, r), poison: p.poison, expect: p.expect }))),
      ],
    };

    return {
      [`DELETE ${deleteSpec.template}`]: { spec: deleteSpec, numRuns: 900 },
      [`POST ${rotateSpec.template}`]: { spec: rotateSpec, numRuns: 600 },
      [`POST ${tokenizeSpec.template}`]: { spec: tokenizeSpec, numRuns: 800 },
      [`POST ${querySpec.template}`]: { spec: querySpec, numRuns: 500 },
      [`GET ${countSpec.template}`]: { spec: countSpec, numRuns: 400 },
    };
  }

  function nativeSpecs(): Record<string, { spec: RouteSpec; numRuns: number }> {
    const collections: RouteSpec = {
      method: 'POST',
      template: '/v1/collections',
      valid: alnum.map((a) => ({ url: '/v1/collections', body: { name: `Fz${a}` } })),
      json: true,
      forbidden: nobodyAuth(),
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
      forbidden: nobodyAuth(),
      poisons: [
        admin(fc.tuple(validSubject, notAString(/^(user|provider|service)$/)).map(([s, kind]) => jsonCase('POST', '/v1/subjects', { ...s, kind }, {}, 'bad kind', [400]))),
        admin(validSubject.map(({ kind: _kind, ...s }) => jsonCase('POST', '/v1/subjects', s, {}, 'no kind', [400]))),
        admin(fc.tuple(validSubject, notAString(IDENTIFIER), fc.constantFrom('id', 'domain_id')).map(([s, v, k]) => jsonCase('POST', '/v1/subjects', { ...s, [k]: v }, {}, `bad ${k}`, [400]))),
        admin(
          fc
            .tuple(
              validSubject,
              fc.oneof(
                hostileText
                  .filter((c) => !(['tokens:write', 'tokens:tokenize', 'tokens:read', 'tokens:manage', 'security_admin', 'tokens:verify', 'subjects:admin'] as string[]).includes(c))
                  .map((c) => ['tokens:read', c]),
                fc.constant(Array(8).fill('tokens:read')),
                hostileJson.filter((v) => !Array.isArray(v)),
              ),
            )
            .map(([s, capabilities]) => jsonCase('POST', '/v1/subjects', { ...s, capabilities }, {}, 'bad capabilities', [400])),
        ),
        admin(
          fc
            .tuple(
              validSubject,
              fc.constantFrom('tenant_ids', 'collections'),
              fc.oneof(
                fc.constant([] as unknown[]),
                fc.constant(Array.from({ length: 1001 }, (_, i) => `t${i}`)),
                notIdentifier.map((t) => [t]),
                hostileJson.filter((v) => !Array.isArray(v) && JSON.stringify(v ?? null) !== 'null'),
              ),
            )
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
      forbidden: nobodyAuth(),
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
        fc.tuple(readerAuth(), alnum).map(([auth, name]) => jsonCase('POST', issuePath('hostile-reader'), { temporary: false, name }, auth, 'a named token for oneself', [403])),
      ],
    };

    const subjectPath = (segment: string) => `/v1/subjects/${segment}`;
    const subjectRead: RouteSpec = {
      method: 'GET',
      template: '/v1/subjects/:id',
      valid: fc.constant({ url: subjectPath(VICTIM) }),
      forbidden: nobodyAuth(),
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
      fc
        .oneof(
          hostileText
            .filter((c) => !(['tokens:write', 'tokens:tokenize', 'tokens:read', 'tokens:manage', 'security_admin', 'tokens:verify', 'subjects:admin'] as string[]).includes(c))
            .map((c) => ['tokens:read', c]),
          fc.constant(Array(8).fill('tokens:read')),
          hostileJson.filter((v) => !Array.isArray(v)),
        )
        .map((capabilities) => ({ body: { capabilities }, poison: 'bad capabilities' })),
      fc
        .tuple(
          fc.constantFrom('tenant_ids', 'collections'),
          fc.oneof(
            fc.constant([] as unknown[]),
            fc.constant(Array.from({ length: 1001 }, (_, i) => `t${i}`)),
            notIdentifier.map((t) => [t]),
            hostileJson.filter((v) => !Array.isArray(v) && JSON.stringify(v ?? null) !== 'null'),
          ),
        )
        .map(([k, v]) => ({ body: { [k]: v }, poison: `bad ${k}` })),
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
      forbidden: nobodyAuth(),
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
      forbidden: nobodyAuth(),
      poisons: [
        admin(
          fc
            .tuple(validPage, pagePoison)
            .map(([ok, p]) => ({ method: 'GET', url: withQuery(issuePath(VICTIM), [...ok.filter(([k]) => !p.pairs.some(([pk]) => pk === k)), ...p.pairs]), poison: p.poison, expect: [400] })),
        ),
        admin(idSegmentPoison.map((p) => ({ method: 'GET', url: issuePath(p.segment), poison: p.poison, expect: [400, 404] }))),
        admin(missingId.map((id) => ({ method: 'GET', url: issuePath(id), poison: 'no such subject', expect: [404] }))),
      ],
    };

    const verify: RouteSpec = {
      method: 'GET',
      template: '/v1/auth/verify',
      valid: fc.constant({ url: '/v1/auth/verify', headers: { 'x-subject-token': victim.token } }),
      forbidden: readerAuth(),
      poisons: [admin(subjectTokenPoison.map((p) => ({ method: 'GET', url: '/v1/auth/verify', headers: p.headers, poison: p.poison, expect: p.expect })))],
    };

    const validCommand: fc.Arbitrary<Record<string, unknown>> = fc.oneof(
      fc.tuple(items(1, 3), fc.constantFrom(...REASONS.filter((r) => r !== 'Other'))).map(([tags, reason]) => ({ type: 'tokens.delete', collection: COLLECTION, tags, reason })),
      fc.constantFrom(...REASONS.filter((r) => r !== 'Other')).map((reason) => ({ type: 'tokens.delete', collection: COLLECTION, token_ids: seededTokenIds, archived: false, reason })),
      fc.constantFrom(...REASONS.filter((r) => r !== 'Other')).map((reason) => ({ type: 'tokens.rotate', collection: COLLECTION, token_ids: seededTokenIds, reason, custom_audit: 'x' })),
      fc.constant({ type: 'access_token.revoke', token_id: victim.tokenId }),
      fc.constant({ type: 'temporary_tokens.revoke_all', subject: { kind: 'user', id: VICTIM } }),
      fc.constantFrom('subject.lockout', 'subject.unlock').map((type) => ({ type, subject: { kind: 'user', id: VICTIM } })),
    );
    const vaultCommand = validCommand.filter((c) => c.type === 'tokens.delete' || c.type === 'tokens.rotate');
    const deleteCommand = validCommand.filter((c) => c.type === 'tokens.delete');
    const without = (o: Record<string, unknown>, ...keys: string[]) => Object.fromEntries(Object.entries(o).filter(([k]) => !keys.includes(k)));
    const cmd = (body: unknown, poison: string, expectStatus: readonly number[] = [400], headers: Headers = {}) => jsonCase('POST', '/v1/commands', body, headers, poison, expectStatus);
    /** A dry run (SPEC §10) goes through the same validation and authorization: every poison is one with `?dry_run=true` too. */
    const orDryRun = (arb: fc.Arbitrary<Case>): fc.Arbitrary<Case> =>
      fc.tuple(arb, fc.boolean()).map(([c, dry]) => (dry && !c.url.includes('?') ? { ...c, url: `${c.url}?dry_run=true`, poison: `${c.poison} (dry run)` } : c));
    const dryRunPoison: fc.Arbitrary<{ query: string; poison: string }> = fc.oneof(
      hostileText.filter((v) => v !== 'true' && v !== 'false').map((v) => ({ query: `dry_run=${pct(v)}`, poison: `dry_run=${v.slice(0, 20)}` })),
      fc
        .constantFrom('dry_run=true&dry_run=true', 'dry_run=true&dry_run=false', 'dry_run', 'dry_run[]=true', 'dryrun=true', 'DRY_RUN=true', 'dry_run=TRUE', 'dry_run=1')
        .map((query) => ({ query, poison: `query ${query}` })),
      unknownParam(['dry_run']).map((p) => ({ query: p.pairs.map(([k, v]) => `${pct(k)}=${pct(v)}`).join('&'), poison: p.poison })),
      fc.tuple(unknownParam(['dry_run']), fc.boolean()).map(([p, before]) => {
        const unknown = p.pairs.map(([k, v]) => `${pct(k)}=${pct(v)}`).join('&');
        return { query: before ? `${unknown}&dry_run=true` : `dry_run=true&${unknown}`, poison: `${p.poison} beside dry_run=true` };
      }),
    );
    const commands: RouteSpec = {
      method: 'POST',
      template: '/v1/commands',
      valid: fc.tuple(validCommand, fc.boolean()).map(([body, dry]) => ({ url: dry ? '/v1/commands?dry_run=true' : '/v1/commands', body })),
      json: true,
      commands: true,
      forbidden: nobodyAuth(),
      poisons: [
        admin(fc.tuple(validCommand, dryRunPoison).map(([c, p]) => jsonCase('POST', `/v1/commands?${p.query}`, c, {}, p.poison, [400]))),
        orDryRun(
          admin(
            fc
              .tuple(
                validCommand,
                fc.oneof(
                  hostileText.filter((t) => !(commandTypes as string[]).includes(t)),
                  hostileJson.filter((v) => typeof v !== 'string'),
                ),
              )
              .map(([c, type]) => cmd({ ...c, type }, 'bad type')),
          ),
        ),
        orDryRun(admin(validCommand.map((c) => cmd(without(c, 'type'), 'no type')))),
        orDryRun(admin(fc.tuple(validCommand, alnum, hostileJson).map(([c, k, v]) => cmd({ ...c, [`x_${k}`]: v }, 'extra key')))),
        orDryRun(admin(hostileJson.filter((v) => !isObject(v)).map((body) => cmd(body, 'body not an object')))),
        orDryRun(admin(deleteCommand.map((c) => cmd(without(c, 'tags', 'token_ids', 'object_ids'), 'delete without criterion')))),
        orDryRun(
          admin(
            fc
              .tuple(
                vaultCommand,
                fc.oneof(
                  fc.constant([] as unknown[]),
                  tooManyIds,
                  fc.tuple(items(0, 2), badItemBody).map(([ok, bad]) => [...ok, bad]),
                  hostileJson.filter((v) => !Array.isArray(v)),
                ),
              )
              .map(([c, token_ids]) => cmd({ ...c, token_ids }, 'bad token_ids')),
          ),
        ),
        orDryRun(
          admin(
            fc
              .tuple(
                deleteCommand,
                fc.oneof(
                  tooManyTags,
                  fc.constant([] as string[]),
                  badItemBody.map((t) => [t]),
                ),
              )
              .map(([c, tags]) => cmd({ ...c, tags }, 'bad tags')),
          ),
        ),
        orDryRun(
          admin(
            fc
              .tuple(
                deleteCommand,
                fc.oneof(
                  badItemBody.map((o) => [o]),
                  fc.constant([] as string[]),
                ),
              )
              .map(([c, object_ids]) => cmd({ ...c, object_ids }, 'bad object_ids')),
          ),
        ),
        orDryRun(
          admin(
            fc
              .tuple(
                deleteCommand,
                hostileJson.filter((v) => typeof v !== 'boolean'),
              )
              .map(([c, archived]) => cmd({ ...c, archived }, 'archived not a boolean')),
          ),
        ),
        orDryRun(admin(fc.tuple(deleteCommand, notAString(IDENTIFIER)).map(([c, tenant_id]) => cmd({ ...c, tenant_id }, 'bad tenant_id')))),
        orDryRun(admin(fc.tuple(vaultCommand, notAString(COLLECTION_NAME)).map(([c, collection]) => cmd({ ...c, collection }, 'bad collection')))),
        orDryRun(admin(fc.tuple(vaultCommand, alnum).map(([c, a]) => cmd({ ...c, collection: `zzmissing_${a}` }, 'no such collection', [404])))),
        orDryRun(admin(vaultCommand.map((c) => cmd(without(c, 'reason'), 'no reason')))),
        orDryRun(
          admin(
            fc
              .tuple(
                validCommand,
                hostileJson.filter((v) => typeof v !== 'string' || !REASONS.includes(v)).filter((v) => v !== undefined),
              )
              .map(([c, reason]) => cmd({ ...c, reason }, 'unknown reason')),
          ),
        ),
        orDryRun(admin(validCommand.map((c) => cmd({ ...c, reason: 'Other' }, 'Other without adhoc_reason')))),
        orDryRun(
          admin(
            fc
              .tuple(
                validCommand,
                fc.oneof(
                  fc.constant(''),
                  badText(1000, true),
                  hostileJson.filter((v) => typeof v !== 'string' && v !== undefined),
                ),
              )
              .map(([c, adhoc]) => cmd({ ...c, reason: 'Other', adhoc_reason: adhoc }, 'bad adhoc_reason')),
          ),
        ),
        orDryRun(
          admin(
            fc
              .tuple(
                validCommand,
                fc.oneof(
                  badText(4000, true),
                  hostileJson.filter((v) => typeof v !== 'string' && v !== undefined),
                ),
              )
              .map(([c, custom]) => cmd({ ...c, reason: 'AppFunctionality', custom_audit: custom }, 'bad custom_audit')),
          ),
        ),
        orDryRun(admin(fc.oneof(notAString(IDENTIFIER), fc.constant(undefined)).map((token_id) => cmd({ type: 'access_token.revoke', token_id }, 'bad token_id')))),
        orDryRun(admin(missingId.map((token_id) => cmd({ type: 'access_token.revoke', token_id }, 'no such access token', [404])))),
        orDryRun(
          admin(
            fc
              .oneof(
                hostileJson.filter((v) => !isObject(v)).map((subject) => ({ subject, poison: 'subject not an object' })),
                notAString(/^(user|provider)$/).map((kind) => ({ subject: { kind, id: VICTIM }, poison: 'bad subject kind' })),
                notAString(IDENTIFIER).map((id) => ({ subject: { kind: 'user', id }, poison: 'bad subject id' })),
                fc.tuple(alnum, hostileJson).map(([k, v]) => ({ subject: { kind: 'user', id: VICTIM, [`x_${k}`]: v }, poison: 'extra key in subject' })),
              )
              .map((s) => cmd({ type: 'temporary_tokens.revoke_all', subject: s.subject }, s.poison)),
          ),
        ),
        orDryRun(admin(missingId.map((id) => cmd({ type: 'temporary_tokens.revoke_all', subject: { kind: 'user', id } }, 'no such subject', [404])))),
        orDryRun(
          admin(
            fc
              .tuple(
                fc.constantFrom('subject.lockout', 'subject.unlock'),
                fc.oneof(
                  hostileJson.filter((v) => !isObject(v)).map((subject) => ({ subject, poison: 'subject not an object' })),
                  notAString(/^(user|provider|service)$/).map((kind) => ({ subject: { kind, id: VICTIM }, poison: 'bad subject kind' })),
                  notAString(IDENTIFIER).map((id) => ({ subject: { kind: 'user', id }, poison: 'bad subject id' })),
                  fc.tuple(alnum, hostileJson).map(([k, v]) => ({ subject: { kind: 'user', id: VICTIM, [`x_${k}`]: v }, poison: 'extra key in subject' })),
                ),
              )
              .map(([type, s]) => cmd({ type, subject: s.subject }, `${type}: ${s.poison}`)),
          ),
        ),
        orDryRun(admin(fc.tuple(fc.constantFrom('subject.lockout', 'subject.unlock'), missingId).map(([type, id]) => cmd({ type, subject: { kind: 'user', id } }, `${type}: no such subject`, [404])))),
        orDryRun(
          admin(
            fc
              .tuple(fc.constantFrom('subject.lockout', 'subject.unlock'), fc.constantFrom('provider', 'service'))
              .map(([type, kind]) => cmd({ type, subject: { kind, id: VICTIM } }, `${type}: a subject of another kind`, [404])),
          ),
        ),
        // a security_admin may lock out a subject of its own domain only: none is missing, the reader holds none
        orDryRun(
          fc
            .tuple(readerAuth(), fc.constantFrom('subject.lockout', 'subject.unlock'))
            .map(([auth, type]) => cmd({ type, subject: { kind: 'user', id: VICTIM } }, `${type} without security_admin`, [403], auth)),
        ),
        // a provider's temporary tokens are that provider's alone to revoke: the admin is refused before any lookup
        orDryRun(admin(missingId.map((id) => cmd({ type: 'temporary_tokens.revoke_all', subject: { kind: 'provider', id } }, "another provider's tokens", [403])))),
        orDryRun(admin(fc.constantFrom('admin', 'hostile-reader').map((id) => cmd({ type: 'temporary_tokens.revoke_all', subject: { kind: 'user', id } }, 'a subject that is not a user', [404])))),
        orDryRun(admin(validCommand.map((c) => cmd(c, 'X-Tenant-Id over 200 characters', [400], { 'x-tenant-id': 'x'.repeat(201) })))),
      ],
    };

    const jobs: RouteSpec = {
      method: 'GET',
      template: '/v1/jobs/:id',
      valid: fc.constant({ url: `/v1/jobs/${adminJobId}` }),
      poisons: [
        // an empty ID is no poison: /v1/jobs/ is the job list (GET /v1/jobs, trailing slashes ignored)
        admin(
          fc
            .oneof(
              hostileText.filter((s) => s !== '').map(pct),
              fc.constantFrom('%', '%zz', '%ff', '%00', 'a'.repeat(501), `${adminJobId}%00`, `${adminJobId};x`, adminJobId.toUpperCase().replace(/-/g, ''), `{${adminJobId}}`),
            )
            .map((id) => ({ method: 'GET', url: `/v1/jobs/${id}`, poison: 'bad job id', expect: [400, 404] })),
        ),
        admin(fc.uuid().map((id) => ({ method: 'GET', url: `/v1/jobs/${id}`, poison: 'no such job', expect: [404] }))),
        // another subject's job does not exist for the reader
        readerAuth().map((auth) => ({ method: 'GET', url: `/v1/jobs/${adminJobId}`, headers: auth, poison: "another subject's job", expect: [404] })),
      ],
    };

    const cancelPath = (id: string) => `/v1/jobs/${id}/cancel`;
    const cancelJob: RouteSpec = {
      method: 'POST',
      template: '/v1/jobs/:id/cancel',
      valid: fc.constant({ url: cancelPath(adminJobId) }),
      poisons: [
        admin(
          fc
            .oneof(
              hostileText.map(pct),
              fc.constantFrom('%', '%zz', '%ff', '%00', 'a'.repeat(501), `${adminJobId}%00`, `${adminJobId};x`, adminJobId.toUpperCase().replace(/-/g, ''), `{${adminJobId}}`),
            )
            .map((id) => ({ method: 'POST', url: cancelPath(id), poison: 'bad job id', expect: [400, 404] })),
        ),
        admin(fc.uuid().map((id) => ({ method: 'POST', url: cancelPath(id), poison: 'no such job', expect: [404] }))),
        // another subject's job does not exist for the reader: not cancelled, not even found
        readerAuth().map((auth) => ({ method: 'POST', url: cancelPath(adminJobId), headers: auth, poison: "another subject's job", expect: [404] })),
        admin(fc.constant({ method: 'POST', url: cancelPath(endedJobId), poison: 'a job that ended (failed)', expect: [409] })),
      ],
    };

    const LOOSE_UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
    const LOOSE_ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)$/;
    const validLimit = (s: string) => {
      const n = Number(s);
      return Number.isInteger(n) && n >= 1 && n <= 1000;
    };
    const validAudit = fc.subarray<[string, string]>([
      ['job_id', adminJobId],
      ['collection', COLLECTION],
      ['since', '2020-01-01T00:00:00Z'],
      ['after_id', '0'],
      ['limit', '10'],
    ]);
    const auditPoison: fc.Arbitrary<QueryPoison> = fc.oneof(
      hostileText.filter((s) => !LOOSE_UUID.test(s)).map((s) => ({ pairs: [['job_id', s]] as Pairs, poison: 'bad job_id' })),
      notCollectionName.map((s) => ({ pairs: [['collection', s]] as Pairs, poison: 'bad collection' })),
      fc
        .oneof(
          hostileText.filter((s) => !LOOSE_ISO.test(s)),
          fc.constantFrom('2021-02-30T00:00:00Z', '2021-13-01T00:00:00Z', '2021-01-01T24:00:00Z', '2021-01-01T00:00:00+99:99', '2021-01-01', '1612137600'),
        )
        .map((s) => ({ pairs: [['since', s]] as Pairs, poison: 'bad since' })),
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
          [k, k === 'limit' ? '5' : k === 'job_id' ? adminJobId : k === 'since' ? '2020-01-01T00:00:00Z' : k === 'after_id' ? '1' : COLLECTION],
          [k, k === 'limit' ? '6' : k === 'job_id' ? adminJobId : k === 'since' ? '2020-01-01T00:00:00Z' : k === 'after_id' ? '2' : COLLECTION],
        ] as Pairs,
        poison: `${k} repeated`,
      })),
      unknownParam(['job_id', 'collection', 'since', 'after_id', 'limit']),
    );
    const audit: RouteSpec = {
      method: 'GET',
      template: '/v1/audit',
      valid: validAudit.map((pairs) => ({ url: withQuery('/v1/audit', pairs) })),
      poisons: [
        admin(
          fc
            .tuple(validAudit, auditPoison)
            .map(([ok, p]) => ({ method: 'GET', url: withQuery('/v1/audit', [...ok.filter(([k]) => !p.pairs.some(([pk]) => pk === k)), ...p.pairs]), poison: p.poison, expect: [400] })),
        ),
      ],
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
      fc
        .oneof(
          hostileText.filter((s) => !LOOSE_ISO.test(s) && !/^\d{4}-\d\d-\d\d$/.test(s)),
          fc.constantFrom('2021-02-30T00:00:00Z', '2021-02-30', '2021-13-01', '2021-01-01T00:00:00', '0000-01-01T00:00:00Z', '0000-01-01', '1612137600'),
        )
        .map((s) => ({ pairs: [['since', s]] as Pairs, poison: 'bad since' })),
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
      poisons: [
        admin(
          fc
            .tuple(validJobList, jobListPoison)
            .map(([ok, p]) => ({ method: 'GET', url: withQuery('/v1/jobs', [...ok.filter(([k]) => !p.pairs.some(([pk]) => pk === k)), ...p.pairs]), poison: p.poison, expect: [400] })),
        ),
      ],
    };

    return {
      'POST /v1/collections': { spec: collections, numRuns: 500 },
      'POST /v1/subjects': { spec: subjects, numRuns: 500 },
      'POST /v1/subjects/:id/tokens': { spec: issue, numRuns: 500 },
      'GET /v1/subjects/:id': { spec: subjectRead, numRuns: 200 },
      'PATCH /v1/subjects/:id': { spec: subjectUpdate, numRuns: 400 },
      'GET /v1/subjects/:id/tokens': { spec: subjectTokens, numRuns: 300 },
      'GET /v1/auth/verify': { spec: verify, numRuns: 300 },
      'POST /v1/commands': { spec: commands, numRuns: 1500 },
      'GET /v1/jobs/:id': { spec: jobs, numRuns: 400 },
      'POST /v1/jobs/:id/cancel': { spec: cancelJob, numRuns: 300 },
      'GET /v1/jobs': { spec: jobList, numRuns: 500 },
      'GET /v1/audit': { spec: audit, numRuns: 500 },
    };
  }

  function seedRouteSpecs(): Record<string, { spec: RouteSpec; numRuns: number }> {
    const keystone: RouteSpec = {
      method: 'DELETE',
      template: '/v3/auth/tokens',
      valid: fc.constant({ url: '/v3/auth/tokens', headers: { 'x-subject-token': victim.token } }),
      commands: true,
      forbidden: readerAuth(),
      poisons: [admin(subjectTokenPoison.map((p) => ({ method: 'DELETE', url: '/v3/auth/tokens', headers: p.headers, poison: p.poison, expect: p.expect })))],
    };
    const keystoneValidate: RouteSpec = {
      method: 'GET',
      template: '/v3/auth/tokens',
      valid: fc.constant({ url: '/v3/auth/tokens', headers: { 'x-subject-token': victim.token } }),
      forbidden: readerAuth(),
      poisons: [admin(subjectTokenPoison.map((p) => ({ method: 'GET', url: '/v3/auth/tokens', headers: p.headers, poison: p.poison, expect: p.expect })))],
    };
    const userPath = (segment: string) => `/api/v3/onezone/users/${segment}/tokens/temporary`;
    const userPoisons = (method: string) => [
      admin(idSegmentPoison.map((p) => ({ method, url: userPath(p.segment), poison: p.poison, expect: [400, 404] }))),
      admin(missingId.map((id) => ({ method, url: userPath(id), poison: 'no such user', expect: [404] }))),
      admin(fc.constantFrom('admin', 'hostile-reader', 'hostile-provider').map((id) => ({ method, url: userPath(id), poison: 'a subject that is not a user', expect: [404] }))),
    ];
    const userDelete: RouteSpec = {
      method: 'DELETE',
      template: '/api/v3/onezone/users/:id/tokens/temporary',
      valid: fc.constant({ url: userPath(VICTIM) }),
      commands: true,
      forbidden: readerAuth(),
      poisons: userPoisons('DELETE'),
    };
    const userGet: RouteSpec = {
      method: 'GET',
      template: '/api/v3/onezone/users/:id/tokens/temporary',
      valid: fc.constant({ url: userPath(VICTIM) }),
      forbidden: readerAuth(),
      poisons: userPoisons('GET'),
    };
    // The provider routes act on the calling provider: any other caller is the poison.
    const notProvider = () =>
      fc.constantFrom<Headers>({ authorization: `Bearer ${ADMIN_TOKEN}` }, { 'x-auth-token': reader.token }, { authorization: `Bearer ${victim.token}` }, { authorization: `Bearer ${nobody.token}` });
    const providerPath = '/api/v3/onezone/provider/tokens/temporary';
    const providerDelete: RouteSpec = { method: 'DELETE', template: providerPath, valid: fc.constant({ url: providerPath }), forbidden: notProvider(), poisons: [] };
    const providerGet: RouteSpec = { method: 'GET', template: providerPath, valid: fc.constant({ url: providerPath }), forbidden: notProvider(), poisons: [] };
    return {
      'DELETE /v3/auth/tokens': { spec: keystone, numRuns: 500 },
      'GET /v3/auth/tokens': { spec: keystoneValidate, numRuns: 300 },
      'DELETE /api/v3/onezone/users/:id/tokens/temporary': { spec: userDelete, numRuns: 400 },
      'GET /api/v3/onezone/users/:id/tokens/temporary': { spec: userGet, numRuns: 300 },
      [`DELETE ${providerPath}`]: { spec: providerDelete, numRuns: 200 },
      [`GET ${providerPath}`]: { spec: providerGet, numRuns: 200 },
    };
  }

  /** Every seed and native route: key "METHOD template" → its spec and number of cases. */
  const productSpecs = () => ({ ...vaultSpecs(), ...nativeSpecs(), ...seedRouteSpecs() });

  /** GET routes are also asked with HEAD now and then (Fastify answers HEAD for every GET). */
  const sometimesHead = (arb: fc.Arbitrary<Case>) => fc.tuple(arb, fc.integer({ min: 0, max: 5 })).map(([c, dice]) => (c.method === 'GET' && dice === 0 ? { ...c, method: 'HEAD' } : c));

  // -------------------------------------------------------------------------------------------
  // Public routes, documentation, the queue dashboard
  // -------------------------------------------------------------------------------------------

  const isPublic = (url: string) => url === '/healthz' || url === '/readyz' || url === '/metrics' || url === '/docs' || url.startsWith('/docs/');
  const isDashboard = (url: string) => url === '/admin/queues' || url.startsWith('/admin/queues/');

  /** Fills a route template's parameters and wildcard with hostile (or plausible) values. */
  const fill = (template: string): fc.Arbitrary<string> => {
    const parts = template.split(/(:[A-Za-z]+|\*)/).filter((p) => p !== '');
    // never empty and never a dot segment: those would name another route (URL parsing removes dot segments)
    const value = fc
      .oneof(fc.constant(COMMAND_QUEUE), alnum, hostileText.map(pct), fc.constantFrom('%', '%ff', '%00', '..%2f..%2f', 'a'.repeat(501), 'completed', 'failed', 'latest'))
      .filter((v) => v !== '' && !/^(\.|%2e){1,2}$/i.test(v));
    return fc.tuple(...parts.map((p) => (p.startsWith(':') || p === '*' ? value : fc.constant(p)))).map((xs) => xs.join(''));
  };
  const junkQuery = fc.array(fc.tuple(hostileText, hostileText), { maxLength: 3 }) as fc.Arbitrary<Pairs>;
  const junkBody = fc.option(
    fc.oneof(
      hostileJson.map((v) => JSON.stringify(v) ?? 'null'),
      invalidJsonText,
    ),
    { nil: undefined },
  );

  function publicCases(): fc.Arbitrary<Case> {
    const pub = routes.filter((r) => isPublic(r.url));
    const paths = [...new Set(pub.map((r) => r.url))];
    return fc
      .tuple(
        fc.oneof(
          // methods the path does not have: 404 in the native envelope
          fc.constantFrom(...paths).chain((template) => {
            const wrong = wrongMethods(template);
            return fc
              .tuple(fill(template), fc.constantFrom(...wrong), junkQuery)
              .map(([url, method, q]) => ({ method, url: withQuery(url, q), headers: {}, poison: `wrong method ${method}`, expect: [404, 405] }));
          }),
          // the methods it has, with junk: answered without a 5xx
          fc.constantFrom(...pub).chain((r) =>
            fc.tuple(fill(r.url), junkQuery, junkBody, badCredential()).map(([url, q, body, bad]) => ({
              method: r.method,
              url: withQuery(url, q),
              headers: { ...bad.headers, ...(body !== undefined && jsonHeaders) },
              ...(body !== undefined && { payload: body }),
              poison: 'junk on a public route',
            })),
          ),
          // paths under /docs that are not there, traversal included
          fc
            .oneof(
              hostileText.map(pct),
              fc.constantFrom(
                '..%2f..%2fpackage.json',
                '%2e%2e/%2e%2e/package.json',
                'static/..%2f..%2f..%2fpackage.json',
                'static/%2e%2e%2f%2e%2e%2fpackage.json',
                '..\\..\\package.json',
                'static/%00',
                'json%00',
                '%ff',
              ),
            )
            .map((p) => ({ method: 'GET', url: `/docs/${p}`, headers: {}, poison: 'a path under /docs' })),
        ),
        noise,
      )
      .map(([c, n]) => ({ ...c, headers: { ...n, ...c.headers } }));
  }

  /** No 5xx; an error in the native envelope; never a file from outside the documentation. */
  function publicCheck(c: Case, r: LightMyRequestResponse): void {
    if (c.expect) return rejected(c, r);
    if (r.statusCode >= 500) throw new Error(`a 5xx: ${describeCase(c, r)}`);
    if (r.body.includes('"devDependencies"') || r.body.includes('BOOTSTRAP_ADMIN_TOKEN=')) throw new Error(`served a file it should not: ${describeCase(c, r)}`);
    if (r.statusCode >= 400 && c.method !== 'HEAD') {
      const problem = envelopeProblem('native', r.statusCode, r.headers['content-type'] as string | undefined, r.body);
      if (problem) throw new Error(`not the native envelope (${problem}): ${describeCase(c, r)}`);
    }
  }

  /** Dashboard credentials that are not an admin's: 401 with a Basic challenge. */
  const dashboardBadCredential = (): fc.Arbitrary<Headers> =>
    fc.oneof(
      fc.constant<Headers>({}),
      unknownSecret.map((t) => ({ authorization: `Basic ${Buffer.from(`admin:${t}`).toString('base64')}` })),
      headerText.map((v) => ({ authorization: `Basic ${v}` })),
      headerText.map((v) => ({ authorization: `Basic ${Buffer.from(v, 'latin1').toString('base64')}` })),
      unknownSecret.map((t) => ({ authorization: `Bearer ${t}` })),
      unknownSecret.map((t) => ({ 'x-auth-token': t })),
      fc.constantFrom<Headers>(
        { authorization: `Basic ${Buffer.from('admin:').toString('base64')}` },
        { authorization: `Basic ${Buffer.from(`${ADMIN_TOKEN}:x`).toString('base64')}` },
        { authorization: `Basic ${Buffer.from(ADMIN_TOKEN).toString('base64')}` },
        { authorization: `Basic ${Buffer.from(`admin:${EXPIRED_SECRET}`).toString('base64')}` },
        { authorization: `Basic ${ADMIN_TOKEN}` },
        { authorization: `Digest username="admin", response="${ADMIN_TOKEN}"` },
      ),
    );

  function dashboardCases(): fc.Arbitrary<Case> {
    const dash = routes.filter((r) => isDashboard(r.url));
    const nonAdmin = fc.constantFrom<Headers>(
      { authorization: `Basic ${Buffer.from(`x:${reader.token}`).toString('base64')}` },
      { authorization: `Bearer ${reader.token}` },
      { 'x-auth-token': nobody.token },
    );
    return fc
      .tuple(
        fc.constantFrom(...dash).chain((r) => fc.tuple(fc.constant(r.method), fill(r.url))),
        junkQuery,
        junkBody,
        fc.oneof(
          dashboardBadCredential().map((h) => ({ headers: h, expect: [401] })),
          nonAdmin.map((h) => ({ headers: h, expect: [403] })),
        ),
        noise,
      )
      .map(([[method, url], q, body, auth, n]) => ({
        method,
        url: withQuery(url, q),
        headers: { ...n, ...(body !== undefined && jsonHeaders), ...auth.headers },
        ...(body !== undefined && { payload: body }),
        poison: auth.expect[0] === 401 ? 'dashboard without an admin credential' : 'dashboard as a non-admin',
        expect: auth.expect,
      }));
  }

  function dashboardCheck(c: Case, r: LightMyRequestResponse): void {
    rejected(c, r);
    if (r.statusCode === 401 && !/^Basic realm="[^"]+"/.test(String(r.headers['www-authenticate']))) throw new Error(`401 without a Basic challenge: ${describeCase(c, r)}`);
  }

  /** The dashboard's read-only pages and API, as an admin, with junk parameters. */
  function dashboardAdminCases(): fc.Arbitrary<Case> {
    const reads = routes.filter((r) => isDashboard(r.url) && r.method === 'GET');
    const basicAdmin = { authorization: `Basic ${Buffer.from(`ops:${ADMIN_TOKEN}`).toString('base64')}` };
    return fc
      .tuple(
        fc.constantFrom(...reads).chain((r) => fill(r.url)),
        junkQuery,
        fc.constantFrom<Headers>(basicAdmin, { authorization: `Bearer ${ADMIN_TOKEN}` }),
        noise,
      )
      .map(([url, q, auth, n]) => ({ method: 'GET', url: withQuery(url, q), headers: { ...n, ...auth }, poison: 'dashboard read with junk parameters' }));
  }

  /**
   * bull-board answers its own API's errors in its own format (`{error: {key}}`, read by its
   * UI): the family envelopes are for the service's routes. What is checked here: no 5xx.
   */
  function dashboardAdminCheck(c: Case, r: LightMyRequestResponse): void {
    if (r.statusCode >= 500) throw new Error(`a 5xx: ${describeCase(c, r)}`);
  }

  // -------------------------------------------------------------------------------------------
  // The properties
  // -------------------------------------------------------------------------------------------

  const PROPERTY_TIMEOUT = 180_000;
  const OTHER_PROPERTIES = { public: 400, dashboard: 800, dashboardAdmin: 300 };

  it('has hostile cases for every route of the app (and the app documents no other)', async () => {
    const specs = productSpecs();
    const uncovered = routes.filter((r) => r.method !== 'HEAD' && !(`${r.method} ${r.url}` in specs) && !isPublic(r.url) && !isDashboard(r.url));
    expect(uncovered, 'routes without hostile cases').toEqual([]);
    const known = new Set(routes.map((r) => `${r.method} ${r.url}`));
    expect(
      Object.keys(specs).filter((k) => !known.has(k)),
      'specs of routes the app does not have',
    ).toEqual([]);
    // the OpenAPI document lists only routes the app has
    const doc = await stack.producer.app.inject({ method: 'GET', url: '/docs/json' });
    const documented = Object.entries(JSON.parse(doc.body).paths as Record<string, Record<string, unknown>>).flatMap(([path, ops]) =>
      Object.keys(ops).map((m) => `${m.toUpperCase()} ${path.replace(/\{(\w+)\}/g, ':$1')}`),
    );
    expect(documented.length).toBeGreaterThan(10);
    expect(documented.filter((k) => !known.has(k))).toEqual([]);
    expect(documented.filter((k) => !(k in specs) && !isPublic(k.split(' ')[1]!))).toEqual([]);
    const planned = Object.values(specs).reduce((n, s) => n + s.numRuns, 0) + Object.values(OTHER_PROPERTIES).reduce((a, b) => a + b, 0);
    expect(planned).toBeGreaterThanOrEqual(10_000);
  });

  // the specs need the subjects made in beforeAll: built when each property runs
  const productKeys = [
    `DELETE ${VAULT}/:collection/tokens`,
    `POST ${VAULT}/:collection/rotate/tokens`,
    `POST ${VAULT}/:collection/tokens`,
    `POST ${VAULT}/:collection/query/tokens`,
    `GET ${VAULT}/:collection/count/tokens`,
    'POST /v1/collections',
    'POST /v1/subjects',
    'POST /v1/subjects/:id/tokens',
    'GET /v1/subjects/:id',
    'PATCH /v1/subjects/:id',
    'GET /v1/subjects/:id/tokens',
    'GET /v1/auth/verify',
    'POST /v1/commands',
    'GET /v1/jobs/:id',
    'POST /v1/jobs/:id/cancel',
    'GET /v1/jobs',
    'GET /v1/audit',
    'DELETE /v3/auth/tokens',
    'GET /v3/auth/tokens',
    'DELETE /api/v3/onezone/users/:id/tokens/temporary',
    'GET /api/v3/onezone/users/:id/tokens/temporary',
    'DELETE /api/v3/onezone/provider/tokens/temporary',
    'GET /api/v3/onezone/provider/tokens/temporary',
  ];
  for (const key of productKeys) {
    it(
      `${key}: generated hostile requests get a 4xx in the family's envelope and change nothing`,
      async () => {
        const entry = productSpecs()[key];
        expect(entry, `a spec for ${key}`).toBeDefined();
        await runProperty(key, sometimesHead(hostileRoute(entry!.spec)), entry!.numRuns, rejected);
      },
      PROPERTY_TIMEOUT,
    );
  }

  it(
    'public routes and documentation: wrong methods are 404, junk never a 5xx, no file outside the docs',
    async () => {
      await runProperty('public routes and /docs', publicCases(), OTHER_PROPERTIES.public, publicCheck);
    },
    PROPERTY_TIMEOUT,
  );

  it(
    'queue dashboard: every route, without an admin credential, is 401 (Basic challenge) or 403 and changes nothing',
    async () => {
      await runProperty('dashboard without an admin', dashboardCases(), OTHER_PROPERTIES.dashboard, dashboardCheck);
    },
    PROPERTY_TIMEOUT,
  );

  it(
    'queue dashboard: read routes, as an admin, with junk parameters never answer a 5xx',
    async () => {
      await runProperty('dashboard reads as an admin', dashboardAdminCases(), OTHER_PROPERTIES.dashboardAdmin, dashboardAdminCheck);
    },
    PROPERTY_TIMEOUT,
  );

  it('ran at least 10,000 generated cases', () => {
    console.log(`hostile input: ${executed} generated cases ran`);
    expect(executed).toBeGreaterThanOrEqual(10_000);
  });

  // -------------------------------------------------------------------------------------------
  // Size limits: over a real socket (inject enforces neither limit)
  // -------------------------------------------------------------------------------------------

  describe('size limits, over a real socket', () => {
    interface RawResponse {
      status: number;
      headers: Record<string, string>;
      body: string;
    }

    /** Parses a complete HTTP/1.1 response (Content-Length framed, or ended by close). */
    function parseResponse(data: Buffer, closed: boolean): RawResponse | undefined {
      const end = data.indexOf('\r\n\r\n');
      if (end < 0) return undefined;
      const [statusLine, ...lines] = data.subarray(0, end).toString('latin1').split('\r\n');
      const headers: Record<string, string> = {};
      for (const line of lines) {
        const colon = line.indexOf(':');
        headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
      }
      const body = data.subarray(end + 4);
      const length = headers['content-length'] !== undefined ? Number(headers['content-length']) : undefined;
      if (length !== undefined ? body.length < length : !closed) return undefined;
      return { status: Number(statusLine!.split(' ')[1]), headers, body: body.subarray(0, length ?? body.length).toString('utf8') };
    }

    /**
     * Sends `head` and then the body: `bytes` as is, or `stream` bytes of a JSON array as chunked
     * transfer-encoding, stopping as soon as the server answers. Resolves with the answer.
     */
    function rawRequest(head: string, body?: { bytes: Buffer } | { stream: number }): Promise<RawResponse> {
      const { hostname, port } = new URL(stack.producer.url);
      return new Promise((resolve, reject) => {
        const socket = connect(Number(port), hostname);
        let received = Buffer.alloc(0);
        let settled = false;
        const settle = (closed: boolean) => {
          if (settled) return;
          const parsed = parseResponse(received, closed);
          if (parsed) {
            settled = true;
            socket.destroy();
            resolve(parsed);
          } else if (closed) {
            settled = true;
            reject(new Error(`the connection closed without a complete answer: ${received.toString('latin1').slice(0, 300)}`));
          }
        };
        socket.on('data', (chunk: Buffer) => {
          received = Buffer.concat([received, chunk]);
          settle(false);
        });
        socket.on('close', () => settle(true));
        socket.on('error', () => {}); // a reset after the answer is expected; 'close' follows
        socket.on(
          'connect',
          () =>
            void (async () => {
              socket.write(head);
              if (body && 'bytes' in body) socket.write(body.bytes);
              if (body && 'stream' in body) {
                const filler = Buffer.alloc(64 * 1024, 0x20);
                let sent = 0;
                const send = (chunk: Buffer) => {
                  socket.write(`${chunk.length.toString(16)}\r\n`);
                  socket.write(chunk);
                  return socket.write('\r\n');
                };
                send(Buffer.from('['));
                while (!settled && !socket.destroyed && sent < body.stream) {
                  sent += filler.length;
                  if (!send(filler)) await new Promise((resume) => (socket.once('drain', resume), socket.once('close', resume)));
                }
                if (!settled && !socket.destroyed) socket.write(`1\r\n]\r\n0\r\n\r\n`);
              }
            })(),
        );
      });
    }

    /** The server's own setting if the app gave one, else Node's (--max-http-header-size). */
    const headerLimit = () => (stack.producer.app.server as unknown as { maxHeaderSize?: number }).maxHeaderSize ?? nodeMaxHeaderSize;
    const host = () => new URL(stack.producer.url).host;
    const head = (method: string, path: string, headers: Record<string, string>) =>
      `${method} ${path} HTTP/1.1\r\nHost: ${host()}\r\n${Object.entries(headers)
        .map(([k, v]) => `${k}: ${v}\r\n`)
        .join('')}\r\n`;
    const auth = () => ({ authorization: `Bearer ${ADMIN_TOKEN}` });

    /** One route per family, each of which reads a body. */
    const bodyRoutes = () =>
      [
        { family: 'native', method: 'POST', path: '/v1/commands' },
        { family: 'piiano', method: 'POST', path: `${VAULT}/${COLLECTION}/tokens?reason=AppFunctionality` },
        { family: 'keystone', method: 'DELETE', path: '/v3/auth/tokens' },
        { family: 'onezone', method: 'DELETE', path: `/api/v3/onezone/users/${VICTIM}/tokens/temporary` },
      ] as const;

    function expectEnvelope(family: Family, r: RawResponse, status: number, code: string): void {
      expect(r.status, r.body).toBe(status);
      expect(envelopeProblem(family, r.status, r.headers['content-type'], r.body), r.body).toBeUndefined();
      const body = JSON.parse(r.body);
      const answered = family === 'keystone' ? undefined : family === 'onezone' ? body.error.details.error_code : body.error_code;
      if (answered !== undefined) expect(answered).toBe(code);
    }

    it('the app sets a body limit (8 MiB) and the HTTP server a header limit', () => {
      expect(BODY_LIMIT).toBe(8 * 1024 * 1024);
      expect(stack.producer.app.initialConfig.bodyLimit).toBe(BODY_LIMIT);
      // Not configured by the app: Node's default (16 KiB unless --max-http-header-size says otherwise).
      const limit = headerLimit();
      expect(limit).toBeGreaterThan(0);
      expect(limit).toBeLessThanOrEqual(64 * 1024);
      console.log(`limits: body ${BODY_LIMIT} bytes, headers ${limit} bytes`);
    });

    it('a body declared one byte over the limit is 413 in each family envelope, before it is read', async () => {
      const before = await snapshot();
      for (const route of bodyRoutes()) {
        const extra: Headers = route.family === 'keystone' ? { 'x-subject-token': victim.token } : {};
        const r = await rawRequest(head(route.method, route.path, { ...auth(), ...extra, 'content-type': 'application/json', 'content-length': String(BODY_LIMIT + 1) }));
        expectEnvelope(route.family, r, 413, 'PV1004');
      }
      expect(await snapshot()).toEqual(before);
    });

    it('a chunked body that grows past the limit is cut off with 413 in the envelope', async () => {
      const before = await snapshot();
      for (const route of bodyRoutes()) {
        const extra: Headers = route.family === 'keystone' ? { 'x-subject-token': victim.token } : {};
        const r = await rawRequest(head(route.method, route.path, { ...auth(), ...extra, 'content-type': 'application/json', 'transfer-encoding': 'chunked' }), { stream: BODY_LIMIT + 256 * 1024 });
        expectEnvelope(route.family, r, 413, 'PV1004');
      }
      expect(await snapshot()).toEqual(before);
    });

    it('a body of exactly the limit is read, then refused by validation (400, not 413)', async () => {
      const before = await snapshot();
      const body = Buffer.alloc(BODY_LIMIT, 0x20);
      body[0] = 0x5b; // [
      body[BODY_LIMIT - 1] = 0x5d; // ]: an empty list of items, padded
      const r = await rawRequest(head('POST', `${VAULT}/${COLLECTION}/tokens?reason=AppFunctionality`, { ...auth(), 'content-type': 'application/json', 'content-length': String(BODY_LIMIT) }), {
        bytes: body,
      });
      expectEnvelope('piiano', r, 400, 'PV1002');
      expect(await snapshot()).toEqual(before);
    });

    it('headers over the limit are 431 (answered by Node/Fastify before any route is known, so not in a family envelope)', async () => {
      const before = await snapshot();
      const limit = headerLimit();
      const r = await rawRequest(head('DELETE', `${VAULT}/${COLLECTION}/tokens?tags=breach&reason=AppFunctionality`, { ...auth(), 'x-padding': 'p'.repeat(limit) }));
      expect(r.status).toBe(431);
      // Fastify's default client-error answer: {"error":"Request Header Fields Too Large",…,"statusCode":431}
      expect(JSON.parse(r.body)).toMatchObject({ statusCode: 431 });
      // a request line (URL) longer than the limit too: 10,001 token IDs do not fit in a query string
      const ids = Array.from({ length: 10_001 }, (_, i) => `t${i}`).join(',');
      const long = await rawRequest(head('DELETE', `${VAULT}/${COLLECTION}/tokens?reason=AppFunctionality&token_ids=${ids}`, auth()));
      expect(long.status).toBe(431);
      expect(await snapshot()).toEqual(before);
    });

    it('headers just under the limit reach the app and are refused in the envelope', async () => {
      const before = await snapshot();
      const limit = headerLimit();
      const tenants = 't'.repeat(limit - 1024);
      const r = await rawRequest(head('DELETE', `${VAULT}/${COLLECTION}/tokens?tags=breach&reason=AppFunctionality`, { ...auth(), 'x-tenant-id': tenants }));
      expectEnvelope('piiano', r, 400, 'PV1002');
      const k = await rawRequest(head('DELETE', '/v3/auth/tokens', { ...auth(), 'x-subject-token': 's'.repeat(limit - 1024) }));
      expectEnvelope('keystone', k, 400, 'PV1002');
      expect(await snapshot()).toEqual(before);
    });
  });
});
