import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JobView } from '../../contracts/index.js';
import { bearer, call, issueToken, type SubjectSpec, subjectWithToken, uid, waitForJob } from '../helpers/api.js';
import { keystoneError, onezoneError } from '../helpers/envelopes.js';
import { sleep } from '../helpers/sleep.js';
import { type Stack, startStack } from '../helpers/stack.js';

const WAIT = { prefer: 'wait=10' };

describe('Keystone and Onezone revocation routes', () => {
  let stack: Stack;

  beforeAll(async () => {
    stack = await startStack();
  });
  afterAll(() => stack?.close());

  /** A subject with a named token; more tokens via `issue`. */
  async function subject(spec: SubjectSpec) {
    return subjectWithToken(stack, { id: uid(spec.kind), ...spec });
  }

  /** GET /v1/auth/verify as the admin (tokens:verify). */
  function verify(secret: string, headers: Record<string, string> = stack.admin) {
    return call(stack, 'GET', '/v1/auth/verify', { headers: { ...headers, 'x-subject-token': secret } });
  }

  /** Whether `secret` still authenticates (any authenticated route will do). */
  async function authStatus(secret: string): Promise<number> {
    return (await call(stack, 'GET', `/v1/jobs/${'00000000-0000-4000-8000-000000000000'}`, { headers: bearer(secret) })).status;
  }

  describe('DELETE /v3/auth/tokens', () => {
    it('lets a user delete their own token with no capability: 204 with Prefer: wait', async () => {
      const user = await subject({ kind: 'user', capabilities: [] });
      const r = await call(stack, 'DELETE', '/v3/auth/tokens', { headers: { 'x-auth-token': user.token, 'x-subject-token': user.token, ...WAIT } });
      expect(r.status).toBe(204);
      expect(r.body).toBeUndefined();
      expect(await authStatus(user.token)).toBe(401);
    });

    it('answers 202 with the job view with Prefer: respond-async, and the job succeeds', async () => {
      const user = await subject({ kind: 'user', capabilities: [] });
      const second = await issueToken(stack, user.subject.id, { temporary: false });
      const r = await call(stack, 'DELETE', '/v3/auth/tokens', { headers: { prefer: 'respond-async', 'x-auth-token': user.token, 'x-subject-token': second.token } });
      expect(r.status).toBe(202);
      expect(JobView.parse(r.body).type).toBe('access_token.revoke');
      expect(r.headers.location).toBe(`/v1/jobs/${r.body.job_id}`);
      const job = await waitForJob(stack, r.body.job_id, user.headers);
      expect(job).toMatchObject({ state: 'succeeded', result: { token_id: second.tokenId } });
      expect(await authStatus(second.token)).toBe(401);
      expect(await authStatus(user.token)).not.toBe(401);
    });

    it('afterwards verify answers 404 not_found for the deleted token, and it no longer authenticates', async () => {
      const user = await subject({ kind: 'user', capabilities: [] });
      const victim = await issueToken(stack, user.subject.id, { temporary: true });
      expect((await verify(victim.token)).status).toBe(200);
      const r = await call(stack, 'DELETE', '/v3/auth/tokens', { headers: { 'x-auth-token': user.token, 'x-subject-token': victim.token, ...WAIT } });
      expect(r.status).toBe(204);
      const verified = await verify(victim.token);
      expect(verified.status).toBe(404);
      expect(verified.body.context).toMatchObject({ reason: 'not_found' });
      expect(await authStatus(victim.token)).toBe(401);
      const asVictim = await call(stack, 'DELETE', '/v3/auth/tokens', { headers: { 'x-auth-token': victim.token, 'x-subject-token': user.token } });
      expect(asVictim.status).toBe(401);
      expect(asVictim.body).toEqual(keystoneError(401));
    });

    it('deletes an expired token too', async () => {
      const user = await subject({ kind: 'user', capabilities: [] });
      const shortLived = await issueToken(stack, user.subject.id, { temporary: true, ttl_seconds: 1 });
      const deadline = Date.now() + 10_000;
      while ((await verify(shortLived.token)).status === 200 && Date.now() < deadline) await sleep(200);
      expect((await verify(shortLived.token)).body.context).toMatchObject({ reason: 'expired' });
      const r = await call(stack, 'DELETE', '/v3/auth/tokens', { headers: { 'x-auth-token': user.token, 'x-subject-token': shortLived.token, ...WAIT } });
      expect(r.status).toBe(204);
      expect((await verify(shortLived.token)).body.context).toMatchObject({ reason: 'not_found' });
    });

    it("refuses another user's token to a caller without security_admin with 403 in the Keystone envelope", async () => {
      const domain = uid('dom');
      const victim = await subject({ kind: 'user', domain_id: domain });
      const other = await subject({ kind: 'user', domain_id: domain, capabilities: ['tokens:manage', 'tokens:write'] });
      const r = await call(stack, 'DELETE', '/v3/auth/tokens', { headers: { 'x-auth-token': other.token, 'x-subject-token': victim.token, ...WAIT } });
      expect(r.status).toBe(403);
      expect(r.body).toEqual(keystoneError(403));
      expect(await authStatus(victim.token)).not.toBe(401);
    });

    it("refuses another domain's user token to a security_admin with 403", async () => {
      const victim = await subject({ kind: 'user', domain_id: uid('dom') });
      const admin = await subject({ kind: 'user', domain_id: uid('dom'), capabilities: ['security_admin'] });
      const r = await call(stack, 'DELETE', '/v3/auth/tokens', { headers: { 'x-auth-token': admin.token, 'x-subject-token': victim.token, ...WAIT } });
      expect(r.status).toBe(403);
      expect(r.body).toEqual(keystoneError(403));
      expect(await authStatus(victim.token)).not.toBe(401);
    });

    it("lets a security_admin of the same domain delete another user's token", async () => {
      const domain = uid('dom');
      const victim = await subject({ kind: 'user', domain_id: domain });
      const admin = await subject({ kind: 'user', domain_id: domain, capabilities: ['security_admin'] });
      const r = await call(stack, 'DELETE', '/v3/auth/tokens', { headers: { 'x-auth-token': admin.token, 'x-subject-token': victim.token, ...WAIT } });
      expect(r.status).toBe(204);
      expect(await authStatus(victim.token)).toBe(401);
    });

    it('answers 404 in the Keystone envelope for an unknown or already-deleted subject token', async () => {
      const user = await subject({ kind: 'user' });
      const unknown = await call(stack, 'DELETE', '/v3/auth/tokens', { headers: { 'x-auth-token': user.token, 'x-subject-token': 'rvk_not-a-real-token', ...WAIT } });
      expect(unknown.status).toBe(404);
      expect(unknown.body).toEqual(keystoneError(404));

      const gone = await issueToken(stack, user.subject.id, { temporary: false });
      const first = await call(stack, 'DELETE', '/v3/auth/tokens', { headers: { 'x-auth-token': user.token, 'x-subject-token': gone.token, ...WAIT } });
      expect(first.status).toBe(204);
      const again = await call(stack, 'DELETE', '/v3/auth/tokens', { headers: { 'x-auth-token': user.token, 'x-subject-token': gone.token, ...WAIT } });
      expect(again.status).toBe(404);
      expect(again.body).toEqual(keystoneError(404));
    });

    it('answers 400 in the Keystone envelope without X-Subject-Token', async () => {
      const user = await subject({ kind: 'user' });
      const r = await call(stack, 'DELETE', '/v3/auth/tokens', { headers: { 'x-auth-token': user.token, ...WAIT } });
      expect(r.status).toBe(400);
      expect(r.body).toEqual(keystoneError(400));
      expect(await authStatus(user.token)).not.toBe(401);
    });

    it("refuses an X-Tenant-Id outside the caller's tenant scope with 403, and revokes nothing", async () => {
      // SPEC §2: naming a tenant outside the subject's scope is 403, on every route.
      const user = await subject({ kind: 'user', tenant_ids: ['tenant-a'] });
      const spare = await issueToken(stack, user.subject.id, { temporary: false });
      const keystone = await call(stack, 'DELETE', '/v3/auth/tokens', { headers: { 'x-auth-token': user.token, 'x-subject-token': spare.token, 'x-tenant-id': 'tenant-z', ...WAIT } });
      expect(keystone.status).toBe(403);
      expect(keystone.body).toEqual(keystoneError(403));
      expect(await authStatus(spare.token)).not.toBe(401);
      const onezone = await call(stack, 'DELETE', `/api/v3/onezone/users/${user.subject.id}/tokens/temporary`, { headers: { 'x-auth-token': user.token, 'x-tenant-id': 'tenant-z', ...WAIT } });
      expect(onezone.status).toBe(403);
      expect(onezone.body).toEqual(onezoneError());
    });

    it('answers 401 in the Keystone envelope without X-Auth-Token', async () => {
      const user = await subject({ kind: 'user' });
      const r = await call(stack, 'DELETE', '/v3/auth/tokens', { headers: { 'x-subject-token': user.token } });
      expect(r.status).toBe(401);
      expect(r.body).toEqual(keystoneError(401));
    });
  });

  describe('Onezone: revoke all temporary tokens of a user', () => {
    const userUrl = (id: string) => `/api/v3/onezone/users/${id}/tokens/temporary`;

    it('lets the user revoke their own: 204, old temporary tokens stop working and verify as revoked, named ones keep working', async () => {
      const user = await subject({ kind: 'user' });
      const temp1 = await issueToken(stack, user.subject.id, { temporary: true });
      const temp2 = await issueToken(stack, user.subject.id, { temporary: true, ttl_seconds: 600 });
      expect(await authStatus(temp1.token)).not.toBe(401);

      const r = await call(stack, 'DELETE', userUrl(user.subject.id), { headers: { 'x-auth-token': user.token, ...WAIT } });
      expect(r.status).toBe(204);

      for (const temp of [temp1, temp2]) {
        expect(await authStatus(temp.token)).toBe(401);
        const verified = await verify(temp.token, user.headers);
        expect(verified.status).toBe(404);
        expect(verified.body.context).toMatchObject({ reason: 'revoked' });
      }
      expect(await authStatus(user.token)).not.toBe(401);
      expect((await verify(user.token, user.headers)).status).toBe(200);

      // a temporary token issued after the revocation works
      const fresh = await issueToken(stack, user.subject.id, { temporary: true });
      expect(fresh.generation).toBe(1);
      expect(await authStatus(fresh.token)).not.toBe(401);
    });

    it('answers 202 with the job view with Prefer: respond-async, and the job reports the new generation', async () => {
      const user = await subject({ kind: 'user' });
      const r = await call(stack, 'DELETE', userUrl(user.subject.id), { headers: { prefer: 'respond-async', 'x-auth-token': user.token } });
      expect(r.status).toBe(202);
      expect(JobView.parse(r.body).type).toBe('temporary_tokens.revoke_all');
      expect(r.headers.location).toBe(`/v1/jobs/${r.body.job_id}`);
      const job = await waitForJob(stack, r.body.job_id, user.headers);
      expect(job).toMatchObject({ state: 'succeeded', result: { subject: { kind: 'user', id: user.subject.id }, generation: 1 } });
    });

    it('refuses another user without tokens:manage with 403 in the Onezone envelope', async () => {
      const victim = await subject({ kind: 'user' });
      const temp = await issueToken(stack, victim.subject.id, { temporary: true });
      const other = await subject({ kind: 'user', capabilities: ['security_admin'] });
      const r = await call(stack, 'DELETE', userUrl(victim.subject.id), { headers: { 'x-auth-token': other.token, ...WAIT } });
      expect(r.status).toBe(403);
      expect(r.body).toEqual(onezoneError());
      expect(await authStatus(temp.token)).not.toBe(401);
      const generation = await call(stack, 'GET', userUrl(victim.subject.id), { headers: stack.admin });
      expect(generation.body).toEqual({ generation: 0 });
    });

    it('lets a caller with tokens:manage revoke any user', async () => {
      const victim = await subject({ kind: 'user' });
      const temp = await issueToken(stack, victim.subject.id, { temporary: true });
      const manager = await subject({ kind: 'service', capabilities: ['tokens:manage'] });
      const r = await call(stack, 'DELETE', userUrl(victim.subject.id), { headers: { 'x-auth-token': manager.token, ...WAIT } });
      expect(r.status).toBe(204);
      expect(await authStatus(temp.token)).toBe(401);
      expect(await authStatus(victim.token)).not.toBe(401);
    });

    it('answers 404 in the Onezone envelope for an unknown user', async () => {
      const manager = await subject({ kind: 'service', capabilities: ['tokens:manage'] });
      const r = await call(stack, 'DELETE', userUrl(uid('nobody')), { headers: { 'x-auth-token': manager.token, ...WAIT } });
      expect(r.status).toBe(404);
      expect(r.body).toEqual(onezoneError());
      const get = await call(stack, 'GET', userUrl(uid('nobody')), { headers: { 'x-auth-token': manager.token } });
      expect(get.status).toBe(404);
      expect(get.body).toEqual(onezoneError());
    });

    it('answers {generation: N} and increments it after each revoke-all', async () => {
      const user = await subject({ kind: 'user' });
      const headers = { 'x-auth-token': user.token };
      expect((await call(stack, 'GET', userUrl(user.subject.id), { headers })).body).toEqual({ generation: 0 });
      for (const expected of [1, 2, 3]) {
        const r = await call(stack, 'DELETE', userUrl(user.subject.id), { headers: { ...headers, ...WAIT } });
        expect(r.status).toBe(204);
        const get = await call(stack, 'GET', userUrl(user.subject.id), { headers });
        expect(get.status).toBe(200);
        expect(get.body).toEqual({ generation: expected });
      }
    });

    it("refuses to show another user's generation without tokens:manage", async () => {
      const victim = await subject({ kind: 'user' });
      const other = await subject({ kind: 'user' });
      const r = await call(stack, 'GET', userUrl(victim.subject.id), { headers: { 'x-auth-token': other.token } });
      expect(r.status).toBe(403);
      expect(r.body).toEqual(onezoneError());
    });
  });

  describe('Onezone: revoke all temporary tokens of the current provider', () => {
    const providerUrl = '/api/v3/onezone/provider/tokens/temporary';

    it('lets a provider revoke its own temporary tokens: 204, generation increments, named token keeps working', async () => {
      const provider = await subject({ kind: 'provider' });
      const temp = await issueToken(stack, provider.subject.id, { temporary: true });
      const headers = { 'x-auth-token': provider.token };
      expect((await call(stack, 'GET', providerUrl, { headers })).body).toEqual({ generation: 0 });

      const r = await call(stack, 'DELETE', providerUrl, { headers: { ...headers, ...WAIT } });
      expect(r.status).toBe(204);
      expect(await authStatus(temp.token)).toBe(401);
      expect((await verify(temp.token, provider.headers)).body.context).toMatchObject({ reason: 'revoked' });

      const get = await call(stack, 'GET', providerUrl, { headers });
      expect(get.status).toBe(200);
      expect(get.body).toEqual({ generation: 1 });

      expect((await call(stack, 'DELETE', providerUrl, { headers: { ...headers, ...WAIT } })).status).toBe(204);
      expect((await call(stack, 'GET', providerUrl, { headers })).body).toEqual({ generation: 2 });
    });

    it('refuses a user (not a provider) with 403 in the Onezone envelope', async () => {
      const user = await subject({ kind: 'user', capabilities: ['tokens:manage'] });
      const temp = await issueToken(stack, user.subject.id, { temporary: true });
      const r = await call(stack, 'DELETE', providerUrl, { headers: { 'x-auth-token': user.token, ...WAIT } });
      expect(r.status).toBe(403);
      expect(r.body).toEqual(onezoneError());
      expect(await authStatus(temp.token)).not.toBe(401);
      const get = await call(stack, 'GET', providerUrl, { headers: { 'x-auth-token': user.token } });
      expect(get.status).toBe(403);
      expect(get.body).toEqual(onezoneError());
    });

    it('lets no one but the provider revoke its temporary tokens through POST /v1/commands, tokens:manage and the admin included', async () => {
      const provider = await subject({ kind: 'provider' });
      const temp = await issueToken(stack, provider.subject.id, { temporary: true });
      const manager = await subject({ kind: 'user', capabilities: ['tokens:manage'] });
      const otherProvider = await subject({ kind: 'provider', capabilities: ['tokens:manage'] });
      const body = { type: 'temporary_tokens.revoke_all', subject: { kind: 'provider', id: provider.subject.id } };
      for (const headers of [manager.headers, otherProvider.headers, stack.admin]) {
        const r = await call(stack, 'POST', '/v1/commands', { headers: { ...headers, ...WAIT }, body });
        expect(r.status).toBe(403);
        expect(r.body).toMatchObject({ error_code: 'PV1007' });
      }
      expect((await call(stack, 'GET', providerUrl, { headers: { 'x-auth-token': provider.token } })).body).toEqual({ generation: 0 });
      expect(await authStatus(temp.token)).not.toBe(401);

      const own = await call(stack, 'POST', '/v1/commands', { headers: { ...provider.headers, ...WAIT }, body });
      expect(own.status).toBe(200);
      expect(own.body).toMatchObject({ state: 'succeeded', result: { generation: 1 } });
      expect(await authStatus(temp.token)).toBe(401);
    });

    it('answers 401 in the Onezone envelope without a credential', async () => {
      const r = await call(stack, 'DELETE', providerUrl);
      expect(r.status).toBe(401);
      expect(r.body).toEqual(onezoneError());
    });
  });
});
