import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errorRegistry } from '../../contracts/index.js';
import { bearer, call, createCollection, subjectWithToken, tokenize, uid } from '../helpers/api.js';
import { keystoneError, onezoneError, piianoError } from '../helpers/envelopes.js';
import { rawRequest } from '../helpers/http.js';
import { sleep } from '../helpers/sleep.js';
import { type Stack, startStack } from '../helpers/stack.js';

const COLLECTION = 'auth_cards';
const COUNT = `/api/pvlt/1.0/data/collections/${COLLECTION}/count/tokens?reason=AppFunctionality`;

/** Piiano's envelope for PV1005. */
const piiano401 = piianoError('PV1005');

describe('authentication and authorization', () => {
  let stack: Stack;

  beforeAll(async () => {
    stack = await startStack();
    await createCollection(stack, COLLECTION);
    await createCollection(stack, 'auth_other');
  });
  afterAll(() => stack?.close());

  describe('a missing credential', () => {
    it('is 401 PV1005 in the Piiano envelope on a Piiano route', async () => {
      const r = await call(stack, 'GET', COUNT);
      expect(r.status).toBe(401);
      expect(r.body).toEqual(piiano401);
    });

    it('is 401 PV1005 in the native envelope on a native route', async () => {
      const r = await call(stack, 'POST', '/v1/subjects', { body: { kind: 'user' } });
      expect(r.status).toBe(401);
      expect(r.body).toEqual(piiano401);
    });

    it('is 401 in the Keystone envelope on DELETE /v3/auth/tokens', async () => {
      const r = await call(stack, 'DELETE', '/v3/auth/tokens', { headers: { 'x-subject-token': 'whatever' } });
      expect(r.status).toBe(401);
      expect(r.body).toEqual(keystoneError(401));
    });

    it('is 401 in the Onezone envelope on an Onezone route', async () => {
      const r = await call(stack, 'DELETE', '/api/v3/onezone/users/someone/tokens/temporary');
      expect(r.status).toBe(401);
      expect(r.body).toEqual(onezoneError('unauthorized', 'PV1005'));
    });

    it('does not let the request have any effect', async () => {
      const id = uid('ghost');
      const r = await call(stack, 'POST', '/v1/subjects', { body: { id, kind: 'user' } });
      expect(r.status).toBe(401);
      const lookup = await call(stack, 'POST', `/v1/subjects/${id}/tokens`, { headers: stack.admin, body: { temporary: false } });
      expect(lookup.status).toBe(404);
    });
  });

  describe('a bad credential', () => {
    it.each([
      ['a Basic scheme', { authorization: 'Basic xyz' }],
      ['Bearer with nothing after it', { authorization: 'Bearer' }],
      ['Bearer with only spaces after it', { authorization: 'Bearer   ' }],
      ['an empty X-Auth-Token', { 'x-auth-token': '' }],
      ['an over-long token', { authorization: `Bearer ${'x'.repeat(600)}` }],
    ])('is 401 PV1005 for %s', async (_label, headers) => {
      const r = await call(stack, 'GET', COUNT, { headers });
      expect(r.status).toBe(401);
      expect(r.body.error_code).toBe('PV1005');
    });

    it('is 401 PV1005 for a well-formed but unknown token', async () => {
      const r = await call(stack, 'GET', COUNT, { headers: bearer(`rvk_${randomBytes(32).toString('base64url')}`) });
      expect(r.status).toBe(401);
      expect(r.body.error_code).toBe('PV1005');
    });

    it('is 401 PV1005 for an expired temporary token', async () => {
      const user = await subjectWithToken(stack, { id: uid('expiring'), kind: 'service', capabilities: ['tokens:read'] }, { temporary: true, ttl_seconds: 3 });
      // 3 s, not 1: the first call must come before the expiry even after a slow commit
      expect((await call(stack, 'GET', COUNT, { headers: user.headers })).status).toBe(200);
      await sleep(3200);
      const r = await call(stack, 'GET', COUNT, { headers: user.headers });
      expect(r.status).toBe(401);
      expect(r.body.error_code).toBe('PV1005');
    });
  });

  describe('a valid credential', () => {
    it('authenticates as X-Auth-Token just as it does as Bearer', async () => {
      const reader = await subjectWithToken(stack, { id: uid('reader'), kind: 'service', capabilities: ['tokens:read'] });
      const viaBearer = await call(stack, 'GET', COUNT, { headers: bearer(reader.token) });
      const viaXAuth = await call(stack, 'GET', COUNT, { headers: { 'x-auth-token': reader.token } });
      expect(viaBearer.status).toBe(200);
      expect(viaXAuth.status).toBe(200);
      expect(viaXAuth.body).toEqual(viaBearer.body);
    });

    it('accepts the Bearer scheme case-insensitively', async () => {
      const reader = await subjectWithToken(stack, { id: uid('reader'), kind: 'service', capabilities: ['tokens:read'] });
      expect((await call(stack, 'GET', COUNT, { headers: { authorization: `bearer ${reader.token}` } })).status).toBe(200);
    });
  });

  describe('capabilities', () => {
    it('forbids tokenize without tokens:tokenize: 403 PV1007, nothing created', async () => {
      const reader = await subjectWithToken(stack, { id: uid('reader'), kind: 'service', capabilities: ['tokens:read'] });
      const before = await call(stack, 'GET', COUNT, { headers: stack.admin });
      const r = await call(stack, 'POST', `/api/pvlt/1.0/data/collections/${COLLECTION}/tokens?reason=AppFunctionality`, { headers: reader.headers, body: [{ object: { id: 'o1' } }] });
      expect(r.status).toBe(403);
      expect(r.body).toMatchObject({ error_code: 'PV1007', message: errorRegistry.PV1007.message });
      expect((await call(stack, 'GET', COUNT, { headers: stack.admin })).body).toEqual(before.body);
    });

    it('forbids query and count without tokens:read', async () => {
      const tokenizer = await subjectWithToken(stack, { id: uid('tokenizer'), kind: 'service', capabilities: ['tokens:tokenize'] });
      const count = await call(stack, 'GET', COUNT, { headers: tokenizer.headers });
      expect(count.status).toBe(403);
      expect(count.body.error_code).toBe('PV1007');
      const query = await call(stack, 'POST', `/api/pvlt/1.0/data/collections/${COLLECTION}/query/tokens?reason=AppFunctionality`, { headers: tokenizer.headers, body: { tags: ['x'] } });
      expect(query.status).toBe(403);
      expect(query.body.error_code).toBe('PV1007');
    });

    it('forbids POST /v1/subjects without subjects:admin: 403 PV1007, no subject created', async () => {
      const almostAdmin = await subjectWithToken(stack, {
        id: uid('nonadmin'),
        kind: 'service',
        capabilities: ['tokens:write', 'tokens:tokenize', 'tokens:read', 'tokens:manage', 'security_admin', 'tokens:verify'],
      });
      const id = uid('wannabe');
      const r = await call(stack, 'POST', '/v1/subjects', { headers: almostAdmin.headers, body: { id, kind: 'user', capabilities: ['subjects:admin'] } });
      expect(r.status).toBe(403);
      expect(r.body.error_code).toBe('PV1007');
      expect((await call(stack, 'POST', `/v1/subjects/${id}/tokens`, { headers: stack.admin, body: { temporary: false } })).status).toBe(404);
    });

    it('forbids POST /v1/collections without subjects:admin', async () => {
      const reader = await subjectWithToken(stack, { id: uid('reader'), kind: 'service', capabilities: ['tokens:read'] });
      const r = await call(stack, 'POST', '/v1/collections', { headers: reader.headers, body: { name: 'not_mine' } });
      expect(r.status).toBe(403);
      expect(r.body.error_code).toBe('PV1007');
    });
  });

  describe('tenant scope', () => {
    it('answers 403 PV1006 when X-Tenant-Id names a tenant outside the subject tenant_ids', async () => {
      const reader = await subjectWithToken(stack, { id: uid('reader'), kind: 'service', capabilities: ['tokens:read'], tenant_ids: ['t-a'] });
      const r = await call(stack, 'GET', COUNT, { headers: { ...reader.headers, 'x-tenant-id': 't-b' } });
      expect(r.status).toBe(403);
      expect(r.body.error_code).toBe('PV1006');
      const mixed = await call(stack, 'GET', COUNT, { headers: { ...reader.headers, 'x-tenant-id': 't-a,t-b' } });
      expect(mixed.status).toBe(403);
      expect(mixed.body.error_code).toBe('PV1006');
    });

    it('narrows the scope with a comma-separated or a repeated X-Tenant-Id inside the subject scope', async () => {
      const collection = 'auth_tenants';
      await createCollection(stack, collection);
      await tokenize(stack, collection, [
        { object: { id: 'o1' }, tenant_id: 'n-1' },
        { object: { id: 'o2' }, tenant_id: 'n-2' },
        { object: { id: 'o3' }, tenant_id: 'n-3' },
      ]);
      const reader = await subjectWithToken(stack, { id: uid('reader'), kind: 'service', capabilities: ['tokens:read'], tenant_ids: ['n-1', 'n-2', 'n-3'] });
      const path = `/api/pvlt/1.0/data/collections/${collection}/count/tokens?reason=AppFunctionality`;
      expect((await call(stack, 'GET', path, { headers: reader.headers })).body).toEqual({ active: 3, archived: 0, total: 3 });
      const single = await call(stack, 'GET', path, { headers: { ...reader.headers, 'x-tenant-id': 'n-2' } });
      expect(single).toMatchObject({ status: 200, body: { active: 1, archived: 0, total: 1 } });
      const commaSeparated = await call(stack, 'GET', path, { headers: { ...reader.headers, 'x-tenant-id': 'n-1, n-3' } });
      expect(commaSeparated).toMatchObject({ status: 200, body: { active: 2, archived: 0, total: 2 } });
      const repeated = await rawRequest(stack.producer.url, 'GET', path, { headers: { ...reader.headers, 'x-tenant-id': ['n-1', 'n-2'] } });
      expect(repeated).toMatchObject({ status: 200, body: { active: 2, archived: 0, total: 2 } });
      const repeatedOutside = await rawRequest(stack.producer.url, 'GET', path, { headers: { ...reader.headers, 'x-tenant-id': ['n-1', 'elsewhere'] } });
      expect(repeatedOutside.status).toBe(403);
      expect(repeatedOutside.body.error_code).toBe('PV1006');
    });
  });

  describe('collection scope', () => {
    it('forbids a collection outside the subject collections with 403, and allows one inside', async () => {
      const reader = await subjectWithToken(stack, { id: uid('reader'), kind: 'service', capabilities: ['tokens:read', 'tokens:tokenize'], collections: [COLLECTION] });
      expect((await call(stack, 'GET', COUNT, { headers: reader.headers })).status).toBe(200);
      const outside = await call(stack, 'GET', '/api/pvlt/1.0/data/collections/auth_other/count/tokens?reason=AppFunctionality', { headers: reader.headers });
      expect(outside.status).toBe(403);
      expect(outside.body.error_code).toBe('PV1007');
      const tokenizeOutside = await call(stack, 'POST', '/api/pvlt/1.0/data/collections/auth_other/tokens?reason=AppFunctionality', { headers: reader.headers, body: [{ object: { id: 'o' } }] });
      expect(tokenizeOutside.status).toBe(403);
    });
  });

  describe('health checks', () => {
    it('answers /healthz without a credential', async () => {
      const r = await call(stack, 'GET', '/healthz');
      expect(r).toMatchObject({ status: 200, body: { status: 'ok' } });
    });

    it('answers /readyz without a credential and reports postgres and redis ok', async () => {
      const r = await call(stack, 'GET', '/readyz');
      expect(r.status).toBe(200);
      // the shared Redis runs with maxmemory-policy noeviction, so there is nothing to warn about
      expect(r.body).toEqual({ status: 'ready', checks: expect.objectContaining({ postgres: 'ok', redis: 'ok' }), warnings: [] });
    });

    it('ignores a bad credential on the health checks', async () => {
      expect((await call(stack, 'GET', '/healthz', { headers: { authorization: 'Basic nope' } })).status).toBe(200);
      expect((await call(stack, 'GET', '/readyz', { headers: bearer('unknown') })).status).toBe(200);
    });
  });
});
