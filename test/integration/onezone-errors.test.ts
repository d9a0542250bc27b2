import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, type SubjectSpec, subjectWithToken, uid } from '../helpers/api.js';
import { onezoneError } from '../helpers/envelopes.js';
import { type Stack, startStack } from '../helpers/stack.js';

const PROVIDER_PATH = '/api/v3/onezone/provider/tokens/temporary';
const userPath = (id: string) => `/api/v3/onezone/users/${id}/tokens/temporary`;

/**
 * SPEC §6/§7: Onezone routes answer with Onedata's own error ids (ctool's errors:to_json). The
 * requests are the Onezone documents' curl examples: `curl -H "x-auth-token: $TOKEN" -X DELETE …`.
 */
describe("Onezone errors carry Onedata's error ids", () => {
  let stack: Stack;

  beforeAll(async () => {
    stack = await startStack();
  });
  afterAll(() => stack?.close());

  async function subject(spec: SubjectSpec) {
    return subjectWithToken(stack, { id: uid(spec.kind), ...spec });
  }

  it('400: a user ID that is not an identifier is badValueIdentifier naming the key "id"', async () => {
    const manager = await subject({ kind: 'service', capabilities: ['tokens:manage'] });
    for (const method of ['DELETE', 'GET'] as const) {
      const r = await call(stack, method, userPath('not%20an%20id'), { headers: { 'x-auth-token': manager.token, prefer: 'wait=10' } });
      expect(r.status, method).toBe(400);
      expect(r.body).toEqual(onezoneError('badValueIdentifier', 'PV1002', { key: 'id' }));
    }
  });

  it('400: a bad X-Tenant-Id is badValueIdentifier, a bad Idempotency-Key badValueString, each naming its header', async () => {
    const provider = await subject({ kind: 'provider' });
    const tenant = await call(stack, 'GET', PROVIDER_PATH, { headers: { 'x-auth-token': provider.token, 'x-tenant-id': 'not a tenant' } });
    expect(tenant.status).toBe(400);
    expect(tenant.body).toEqual(onezoneError('badValueIdentifier', 'PV1002', { key: 'X-Tenant-Id' }));
    const key = await call(stack, 'DELETE', PROVIDER_PATH, { headers: { 'x-auth-token': provider.token, 'idempotency-key': 'k'.repeat(256) } });
    expect(key.status).toBe(400);
    expect(key.body).toEqual(onezoneError('badValueString', 'PV1002', { key: 'Idempotency-Key' }));
    // nothing was revoked
    expect((await call(stack, 'GET', PROVIDER_PATH, { headers: { 'x-auth-token': provider.token } })).body).toEqual({ generation: 0 });
  });

  it('401: no token, or a token that does not authenticate, is unauthorized', async () => {
    for (const headers of [{}, { 'x-auth-token': 'rvk_never-issued' }] as Record<string, string>[]) {
      for (const [method, url] of [
        ['DELETE', PROVIDER_PATH],
        ['GET', userPath('someone')],
      ] as const) {
        const r = await call(stack, method, url, { headers });
        expect(r.status, `${method} ${url}`).toBe(401);
        expect(r.body).toEqual(onezoneError('unauthorized', 'PV1005'));
      }
    }
  });

  it("403: another user's tokens without tokens:manage, a user on the provider path, or a tenant outside the scope is forbidden", async () => {
    const victim = await subject({ kind: 'user' });
    const user = await subject({ kind: 'user', tenant_ids: ['tenant-a'] });
    const cases = [
      { method: 'DELETE', url: userPath(victim.subject.id), headers: {}, code: 'PV1007' },
      { method: 'GET', url: userPath(victim.subject.id), headers: {}, code: 'PV1007' },
      { method: 'DELETE', url: PROVIDER_PATH, headers: {}, code: 'PV1007' },
      { method: 'GET', url: userPath(user.subject.id), headers: { 'x-tenant-id': 'tenant-z' }, code: 'PV1006' },
    ] as const;
    for (const c of cases) {
      const r = await call(stack, c.method, c.url, { headers: { 'x-auth-token': user.token, prefer: 'wait=10', ...c.headers } });
      expect(r.status, `${c.method} ${c.url}`).toBe(403);
      expect(r.body).toEqual(onezoneError('forbidden', c.code));
    }
    expect((await call(stack, 'GET', userPath(victim.subject.id), { headers: stack.admin })).body).toEqual({ generation: 0 });
  });

  it('404: an unknown user, or a path Onezone does not have, is notFound', async () => {
    const manager = await subject({ kind: 'service', capabilities: ['tokens:manage'] });
    for (const method of ['DELETE', 'GET'] as const) {
      const r = await call(stack, method, userPath(uid('nobody')), { headers: { 'x-auth-token': manager.token, prefer: 'wait=10' } });
      expect(r.status, method).toBe(404);
      expect(r.body).toEqual(onezoneError('notFound', 'PV3003'));
    }
    const path = await call(stack, 'GET', '/api/v3/onezone/users/x/tokens/named', { headers: { 'x-auth-token': manager.token } });
    expect(path.status).toBe(404);
    expect(path.body).toEqual(onezoneError('notFound', 'PV1008'));
  });
});
