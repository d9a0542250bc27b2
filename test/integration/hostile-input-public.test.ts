import { maxHeaderSize as nodeMaxHeaderSize } from 'node:http';
import fc from 'fast-check';
import type { LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { COMMAND_QUEUE } from '../../contracts/index.js';
import { BODY_LIMIT } from '../../producer/app.js';
import { envelopeProblem, type Family } from '../helpers/envelopes.js';
import { RawConnection, type RawResponse, sendRaw } from '../helpers/http.js';
import {
  alnum,
  type Case,
  type Headers,
  headerText,
  hostileJson,
  hostileText,
  invalidJsonText,
  jsonHeaders,
  noise,
  type Pairs,
  pct,
  segment,
  unknownSecret,
  withQuery,
} from '../helpers/hostile/generators.js';
import {
  badCredential,
  COLLECTION,
  describeCase,
  EXPIRED_SECRET,
  HOSTILE_PLAN,
  PROPERTY_TIMEOUT,
  rejected,
  runProperty,
  snapshot,
  startWorld,
  VAULT,
  VICTIM,
  type World,
  wrongMethods,
} from '../helpers/hostile/harness.js';
import { ADMIN_TOKEN } from '../helpers/stack.js';

/**
 * Hostile input beside the route families' files (SPEC §4.6, §7): the check that every route of
 * the app has hostile cases in one of them (HOSTILE_PLAN); the public routes, the documentation
 * and the queue dashboard; and the body and header size limits, over real sockets (`inject`
 * enforces neither): a request over a limit is refused in its family's envelope where the app
 * sees it, before the body is read, and changes nothing. The generators and the harness are in
 * test/helpers/hostile/.
 */

/** Cases per property of this file. */
const OTHER_PROPERTIES = { public: 400, dashboard: 800, dashboardAdmin: 300 };

describe('hostile input to the public routes, the documentation and the queue dashboard; size limits', () => {
  let w: World;
  beforeAll(async () => {
    w = await startWorld();
  });
  afterAll(() => w?.close());

  const isPublic = (url: string) => url === '/healthz' || url === '/readyz' || url === '/metrics' || url === '/docs' || url.startsWith('/docs/');
  const isDashboard = (url: string) => url === '/admin/queues' || url.startsWith('/admin/queues/');

  /** Fills a route template's parameters and wildcard with hostile (or plausible) values. */
  const fill = (template: string): fc.Arbitrary<string> => {
    const parts = template.split(/(:[A-Za-z]+|\*)/).filter((p) => p !== '');
    const value = fc.oneof(fc.constant(COMMAND_QUEUE), alnum, segment(hostileText), fc.constantFrom('%', '%ff', '%00', '..%2f..%2f', 'a'.repeat(501), 'completed', 'failed', 'latest'));
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
    const pub = w.routes.filter((r) => isPublic(r.url));
    const paths = [...new Set(pub.map((r) => r.url))];
    return fc
      .tuple(
        fc.oneof(
          // methods the path does not have: 404 in the native envelope
          fc.constantFrom(...paths).chain((template) => {
            const wrong = wrongMethods(w, template);
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
    const dash = w.routes.filter((r) => isDashboard(r.url));
    const nonAdmin = fc.constantFrom<Headers>(
      { authorization: `Basic ${Buffer.from(`x:${w.reader.token}`).toString('base64')}` },
      { authorization: `Bearer ${w.reader.token}` },
      { 'x-auth-token': w.nobody.token },
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
    const reads = w.routes.filter((r) => isDashboard(r.url) && r.method === 'GET');
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

  it('has hostile cases for every route of the app (and the app documents no other)', async () => {
    const planned = new Map<string, number>(Object.values(HOSTILE_PLAN).flatMap((routes) => Object.entries(routes)));
    const uncovered = w.routes.filter((r) => r.method !== 'HEAD' && !planned.has(`${r.method} ${r.url}`) && !isPublic(r.url) && !isDashboard(r.url));
    expect(uncovered, 'routes without hostile cases').toEqual([]);
    const known = new Set(w.routes.map((r) => `${r.method} ${r.url}`));
    expect(
      [...planned.keys()].filter((k) => !known.has(k)),
      'planned routes the app does not have',
    ).toEqual([]);
    // the OpenAPI document lists only routes the app has
    const doc = await w.stack.producer.app.inject({ method: 'GET', url: '/docs/json' });
    const documented = Object.entries(JSON.parse(doc.body).paths as Record<string, Record<string, unknown>>).flatMap(([path, ops]) =>
      Object.keys(ops).map((m) => `${m.toUpperCase()} ${path.replace(/\{(\w+)\}/g, ':$1')}`),
    );
    expect(documented.length).toBeGreaterThan(10);
    expect(documented.filter((k) => !known.has(k))).toEqual([]);
    expect(documented.filter((k) => !planned.has(k) && !isPublic(k.split(' ')[1]!))).toEqual([]);
    const cases = [...planned.values(), ...Object.values(OTHER_PROPERTIES)].reduce((a, b) => a + b, 0);
    expect(cases).toBeGreaterThanOrEqual(10_000);
  });

  it(
    'public routes and documentation: wrong methods are 404, junk never a 5xx, no file outside the docs',
    async () => {
      await runProperty(w, 'public routes and /docs', publicCases(), OTHER_PROPERTIES.public, publicCheck);
    },
    PROPERTY_TIMEOUT,
  );

  it(
    'queue dashboard: every route, without an admin credential, is 401 (Basic challenge) or 403 and changes nothing',
    async () => {
      await runProperty(w, 'dashboard without an admin', dashboardCases(), OTHER_PROPERTIES.dashboard, dashboardCheck);
    },
    PROPERTY_TIMEOUT,
  );

  it(
    'queue dashboard: read routes, as an admin, with junk parameters never answer a 5xx',
    async () => {
      await runProperty(w, 'dashboard reads as an admin', dashboardAdminCases(), OTHER_PROPERTIES.dashboardAdmin, dashboardAdminCheck);
    },
    PROPERTY_TIMEOUT,
  );
  it(`ran the ${Object.values(OTHER_PROPERTIES).reduce((a, b) => a + b, 0)} generated cases of its plan`, () => {
    expect(w.executed).toBe(Object.values(OTHER_PROPERTIES).reduce((a, b) => a + b, 0));
  });

  // -------------------------------------------------------------------------------------------
  // Size limits: over a real socket (inject enforces neither limit)
  // -------------------------------------------------------------------------------------------

  describe('size limits, over a real socket', () => {
    /** The server's own setting if the app gave one, else Node's (--max-http-header-size). */
    const headerLimit = () => (w.stack.producer.app.server as unknown as { maxHeaderSize?: number }).maxHeaderSize ?? nodeMaxHeaderSize;
    const auth = () => ({ authorization: `Bearer ${ADMIN_TOKEN}` });

    /**
     * Sends the head of a request, then its body: `bytes` as they are, or `stream` bytes of a JSON
     * array as chunked transfer-encoding, stopping as soon as the server answers.
     */
    function send(method: string, path: string, headers: Headers, body?: { bytes: Buffer } | { stream: number }): Promise<RawResponse> {
      return sendRaw(w.stack.producer.url, async (connection) => {
        connection.write(RawConnection.request(method, path, headers));
        if (body && 'bytes' in body) connection.write(body.bytes);
        if (body && 'stream' in body) {
          const chunk = (bytes: Buffer) => connection.write(Buffer.concat([Buffer.from(`${bytes.length.toString(16)}\r\n`), bytes, Buffer.from('\r\n')]));
          const filler = Buffer.alloc(64 * 1024, 0x20);
          chunk(Buffer.from('['));
          for (let sent = 0; connection.received() === 0 && !connection.isClosed() && sent < body.stream; sent += filler.length) {
            if (!chunk(filler)) await connection.drained();
          }
          if (connection.received() === 0 && !connection.isClosed()) connection.write('1\r\n]\r\n0\r\n\r\n');
        }
      });
    }

    /** One route per family, each of which reads a body. */
    const bodyRoutes = () =>
      [
        { family: 'native', method: 'POST', path: '/v1/commands' },
        { family: 'piiano', method: 'POST', path: `${VAULT}/${COLLECTION}/tokens?reason=AppFunctionality` },
        { family: 'keystone', method: 'DELETE', path: '/v3/auth/tokens' },
        { family: 'onezone', method: 'DELETE', path: `/api/v3/onezone/users/${VICTIM}/tokens/temporary` },
      ] as const;

    function expectEnvelope(family: Family, r: RawResponse, status: number, code: string): void {
      expect(r.status, r.text).toBe(status);
      expect(envelopeProblem(family, r.status, r.headers['content-type'], r.text), r.text).toBeUndefined();
      const answered = family === 'keystone' ? undefined : family === 'onezone' ? r.body.error.details.error_code : r.body.error_code;
      if (answered !== undefined) expect(answered).toBe(code);
    }

    it('the app sets a body limit (8 MiB) and the HTTP server a header limit', () => {
      expect(BODY_LIMIT).toBe(8 * 1024 * 1024);
      expect(w.stack.producer.app.initialConfig.bodyLimit).toBe(BODY_LIMIT);
      // Not configured by the app: Node's default (16 KiB unless --max-http-header-size says otherwise).
      const limit = headerLimit();
      expect(limit).toBeGreaterThan(0);
      expect(limit).toBeLessThanOrEqual(64 * 1024);
      console.log(`limits: body ${BODY_LIMIT} bytes, headers ${limit} bytes`);
    });

    it('a body declared one byte over the limit is 413 in each family envelope, before it is read', async () => {
      const before = await snapshot(w.stack);
      for (const route of bodyRoutes()) {
        const extra: Headers = route.family === 'keystone' ? { 'x-subject-token': w.victim.token } : {};
        const r = await send(route.method, route.path, { ...auth(), ...extra, 'content-type': 'application/json', 'content-length': String(BODY_LIMIT + 1) });
        expectEnvelope(route.family, r, 413, 'PV1004');
      }
      expect(await snapshot(w.stack)).toEqual(before);
    });

    it('a chunked body that grows past the limit is cut off with 413 in the envelope', async () => {
      const before = await snapshot(w.stack);
      for (const route of bodyRoutes()) {
        const extra: Headers = route.family === 'keystone' ? { 'x-subject-token': w.victim.token } : {};
        const r = await send(route.method, route.path, { ...auth(), ...extra, 'content-type': 'application/json', 'transfer-encoding': 'chunked' }, { stream: BODY_LIMIT + 256 * 1024 });
        expectEnvelope(route.family, r, 413, 'PV1004');
      }
      expect(await snapshot(w.stack)).toEqual(before);
    });

    it('a body of exactly the limit is read, then refused by validation (400, not 413)', async () => {
      const before = await snapshot(w.stack);
      const body = Buffer.alloc(BODY_LIMIT, 0x20);
      body[0] = 0x5b; // [
      body[BODY_LIMIT - 1] = 0x5d; // ]: an empty list of items, padded
      const r = await send(
        'POST',
        `${VAULT}/${COLLECTION}/tokens?reason=AppFunctionality`,
        { ...auth(), 'content-type': 'application/json', 'content-length': String(BODY_LIMIT) },
        {
          bytes: body,
        },
      );
      expectEnvelope('piiano', r, 400, 'PV1002');
      expect(await snapshot(w.stack)).toEqual(before);
    });

    it('headers over the limit are 431 (answered by Node/Fastify before any route is known, so not in a family envelope)', async () => {
      const before = await snapshot(w.stack);
      const limit = headerLimit();
      const r = await send('DELETE', `${VAULT}/${COLLECTION}/tokens?tags=breach&reason=AppFunctionality`, { ...auth(), 'x-padding': 'p'.repeat(limit) });
      expect(r.status).toBe(431);
      // Fastify's default client-error answer: {"error":"Request Header Fields Too Large",…,"statusCode":431}
      expect(r.body).toMatchObject({ statusCode: 431 });
      // a request line (URL) longer than the limit too: 10,001 token IDs do not fit in a query string
      const ids = Array.from({ length: 10_001 }, (_, i) => `t${i}`).join(',');
      const long = await send('DELETE', `${VAULT}/${COLLECTION}/tokens?reason=AppFunctionality&token_ids=${ids}`, auth());
      expect(long.status).toBe(431);
      expect(await snapshot(w.stack)).toEqual(before);
    });

    it('headers just under the limit reach the app and are refused in the envelope', async () => {
      const before = await snapshot(w.stack);
      const limit = headerLimit();
      const tenants = 't'.repeat(limit - 1024);
      const r = await send('DELETE', `${VAULT}/${COLLECTION}/tokens?tags=breach&reason=AppFunctionality`, { ...auth(), 'x-tenant-id': tenants });
      expectEnvelope('piiano', r, 400, 'PV1002');
      const k = await send('DELETE', '/v3/auth/tokens', { ...auth(), 'x-subject-token': 's'.repeat(limit - 1024) });
      expectEnvelope('keystone', k, 400, 'PV1002');
      expect(await snapshot(w.stack)).toEqual(before);
    });
  });
});
