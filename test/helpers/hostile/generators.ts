import fc from 'fast-check';
import { AccessReason } from '../../../contracts/index.js';

/**
 * The generators of the hostile-input tests (SPEC §4.6, §7; test/integration/hostile-input-*):
 * requests as fast-check cases, hostile text and JSON, and the poisons several routes share.
 * They need no running service; what does (credentials, fixtures, the checks) is in harness.ts.
 *
 * Every generated case is invalid by construction: a valid request, plus one poison (a bad
 * credential, a wrong method, a malformed field, …). The poison names the expected status
 * where it is certain.
 */

export const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

export type Headers = Record<string, string>;

export interface Case {
  method: string;
  url: string;
  headers: Headers;
  payload?: string;
  /** What makes the request invalid. */
  poison: string;
  /** The statuses this poison may answer; any 4xx when absent. */
  expect?: readonly number[];
}

export type Pairs = [string, string][];

/**
 * Percent-encodes like encodeURIComponent, but also an unpaired surrogate (as the three bytes a
 * careless UTF-8 encoder, WTF-8, would send): a client can put those bytes on the wire.
 */
export function pct(s: string): string {
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

export function withQuery(path: string, pairs: Pairs, raw = ''): string {
  const query = [...pairs.map(([k, v]) => `${pct(k)}=${pct(v)}`), ...(raw ? [raw] : [])].join('&');
  return query ? `${path}?${query}` : path;
}

/**
 * What a header value becomes on the wire: its UTF-8 bytes, read back as latin1 (as Node does),
 * without the bytes HTTP forbids in a header (Node refuses those before the app sees them).
 */
export function wire(value: string): string {
  return Buffer.from(value, 'utf8')
    .toString('latin1')
    .replace(/[^\t\x20-\x7e\x80-\xff]/g, '');
}

/**
 * Text as one path segment, percent-encoded; never empty and never a dot segment ("." or ".."),
 * which URL parsing (the client's, or inject's) removes, so the request would name another route.
 */
export const segment = (text: fc.Arbitrary<string>) => text.filter((s) => s !== '' && s !== '.' && s !== '..').map(pct);

export const jsonHeaders: Headers = { 'content-type': 'application/json' };

export function jsonCase(method: string, url: string, body: unknown, headers: Headers, poison: string, expectStatus?: readonly number[]): Case {
  return { method, url, headers: { ...jsonHeaders, ...headers }, payload: JSON.stringify(body), poison, ...(expectStatus && { expect: expectStatus }) };
}

// ---------------------------------------------------------------------------------------------
// Hostile text and JSON
// ---------------------------------------------------------------------------------------------

/** Characters that break naive code: NUL, unpaired surrogates, bidi controls, separators, … */
export const ODD = [
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
export const SQLISH = [
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
export const alnum = fc.string({ unit: fc.constantFrom(...ALNUM), minLength: 1, maxLength: 12 });
export const hostileChar = fc.oneof(
  { weight: 4, arbitrary: fc.string({ unit: 'grapheme-ascii', minLength: 1, maxLength: 1 }) },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }) },
  { weight: 3, arbitrary: fc.constantFrom(...ODD) },
);
/** Anything a client might send as a string. */
export const hostileText = fc.oneof(
  { weight: 6, arbitrary: fc.string({ unit: hostileChar, maxLength: 24 }) },
  { weight: 3, arbitrary: fc.constantFrom(...SQLISH) },
  { weight: 2, arbitrary: fc.tuple(fc.constantFrom(...SQLISH), fc.constantFrom(...ODD), alnum).map(([a, b, c]) => a + b + c) },
  { weight: 1, arbitrary: fc.tuple(fc.integer({ min: 201, max: 5000 }), fc.constantFrom('x', '\u202e', '\ud83d\ude00', '%', '\u0000', '\u00e9')).map(([n, ch]) => ch.repeat(n)) },
);
/** Any JSON value a client might send where another type is expected. */
export const hostileJson: fc.Arbitrary<unknown> = fc.oneof(
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
export const headerText = hostileText.map(wire).filter((v) => v.length <= 512);

export const IDENTIFIER = /^[A-Za-z0-9._:@-]{1,200}$/;
export const COLLECTION_NAME = /^[A-Za-z][A-Za-z0-9_]{0,63}$/;
export const REASONS: readonly string[] = AccessReason.options;

export const notIdentifier = hostileText.filter((s) => !IDENTIFIER.test(s));
export const notCollectionName = hostileText.filter((s) => !COLLECTION_NAME.test(s));
/** A JSON value that is not a string matching `valid`. */
export const notAString = (valid: RegExp) =>
  fc.oneof(
    hostileText.filter((s) => !valid.test(s)),
    hostileJson.filter((v) => typeof v !== 'string' || !valid.test(v)),
  );

/**
 * Items of a list (token IDs, object IDs, tags) that no list accepts, whichever way it is split
 * on commas and trimmed: white space or NUL inside, an unpaired surrogate (JSON bodies only: a
 * query string cannot carry one), or longer than 200 characters.
 */
export const badItemQuery = fc.oneof(
  fc.tuple(alnum, fc.constantFrom('\u0000', ' ', '\t', '\u00a0', '\u2028', '\ufeff', '\u3000', '\n'), alnum).map(([a, b, c]) => a + b + c),
  fc.integer({ min: 201, max: 400 }).map((n) => 'i'.repeat(n)),
);
export const badItemBody = fc.oneof(
  badItemQuery,
  fc.tuple(alnum, fc.constantFrom('\ud800', '\udc00', '\udbff', ','), alnum).map(([a, b, c]) => a + b + c),
);
export const items = (min: number, max: number) => fc.uniqueArray(alnum, { minLength: min, maxLength: max });
/** 10,001 distinct IDs: one more than any request may name. */
export const tooManyIds = fc.tuple(alnum, fc.integer({ min: 10_001, max: 10_020 })).map(([p, n]) => Array.from({ length: n }, (_, i) => `${p}${i}`));
export const tooManyTags = items(11, 14);
/** Free text over its limit, or holding a NUL (or, in JSON, an unpaired surrogate). */
export const badText = (max: number, json: boolean) =>
  fc.oneof(
    fc.integer({ min: max + 1, max: max + 40 }).map((n) => 'a'.repeat(n)),
    fc.tuple(alnum, fc.constantFrom('\u0000', ...(json ? ['\ud800', '\udfff'] : [])), alnum).map(([a, b, c]) => a + b + c),
  );

/** An `rvk_…` secret nobody was issued. */
export const unknownSecret = fc.string({ unit: fc.constantFrom(...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'), minLength: 43, maxLength: 43 }).map((s) => `rvk_${s}`);

/** Headers that do not change what a request means: they must never change the answer's class. */
export const noise: fc.Arbitrary<Headers> = fc.record(
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

export const ALL_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'TRACE'];
export const NON_JSON_TYPES = [
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
export const invalidJsonText = fc.oneof(
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
export const pollutingJson = fc.constantFrom('{"__proto__":{"admin":true}}', '{"constructor":{"prototype":{"admin":true}}}', '[{"__proto__":{"x":1},"object":{"id":"a"}}]');
export const deepJson = fc.tuple(fc.integer({ min: 1000, max: 20_000 }), fc.boolean()).map(([n, arrays]) => (arrays ? '['.repeat(n) + ']'.repeat(n) : '{"a":'.repeat(n) + '1' + '}'.repeat(n)));

// ---------------------------------------------------------------------------------------------
// Poisons several routes share
// ---------------------------------------------------------------------------------------------

export const validReason: fc.Arbitrary<Pairs> = fc.oneof(
  fc.constantFrom(...REASONS.filter((r) => r !== 'Other')).map((r): Pairs => [['reason', r]]),
  alnum.map((a): Pairs => [
    ['reason', 'Other'],
    ['adhoc_reason', a],
  ]),
);

export interface QueryPoison {
  pairs: Pairs;
  poison: string;
}

/** Access-reason parameters no vault route accepts (FORCE_ACCESS_REASON is on). */
export const reasonPoison: fc.Arbitrary<QueryPoison> = fc.oneof(
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

/** A GET of `path`: the valid parameters, the poison's in place of those of the same name. */
export const poisonedGet = (path: string, valid: fc.Arbitrary<Pairs>, poison: fc.Arbitrary<QueryPoison>) =>
  fc.tuple(valid, poison).map(([ok, p]) => ({ method: 'GET', url: withQuery(path, [...ok.filter(([k]) => !p.pairs.some(([pk]) => pk === k)), ...p.pairs]), poison: p.poison, expect: [400] }));

/** A query parameter the route does not know (its querystring schema is strict). */
export const unknownParam = (known: string[]): fc.Arbitrary<QueryPoison> =>
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

export const REASON_KEYS = ['reason', 'adhoc_reason', 'custom_audit', 'reload_cache'];

/** An identifier path segment (subject or user id) that is malformed or raw bytes. */
export const idSegmentPoison = fc.oneof(
  notIdentifier.map((s) => ({ segment: pct(s), poison: `bad id ${JSON.stringify(s).slice(0, 40)}` })),
  fc.constantFrom('%', '%zz', '%ff', '%c0%af', '%ED%A0%80', '%00', 'a'.repeat(501), 'x;y=1', '%20', '..%2f..%2fadmin').map((raw) => ({ segment: raw, poison: `raw id segment ${raw.slice(0, 40)}` })),
);
export const missingId = alnum.map((a) => `zz-missing-${a}`);

/** A value for an X-Subject-Token that names no token: absent, blank, oversized, or unknown. */
export const subjectTokenPoison = fc.oneof(
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
